"""What every page of the portal shares: the running portal (``portal_of``), rendering a page,
who is signed in (``User``, ``Admin``), the form's CSRF token (``Csrf``), and the refusals
the app turns into pages (``NeedLogin``, ``Forbidden``, ``BadCsrf``).

No ``from __future__ import annotations`` here: FastAPI reads the ``Annotated`` aliases.
"""

import asyncio
import hmac
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import Response

from maillage.config import Config
from maillage.portal.access import AccessRequests
from maillage.portal.auth import SESSION_COOKIE, CurrentUser, OidcLogin, session_user
from maillage.portal.dashboard import Dashboard
from maillage.portal.dav import DavAccess
from maillage.portal.db import Database
from maillage.portal.links import ShareLinks
from maillage.portal.matrix_sso import MatrixSso
from maillage.portal.organisation import FORMULA_STARTS, Organisation
from maillage.portal.pages import templates
from maillage.portal.partners import Partners
from maillage.secretstore import Secrets


class NeedLogin(Exception):
    def __init__(self, next_page: str) -> None:
        self.next_page = next_page


class Forbidden(Exception):
    pass


class BadCsrf(Exception):
    pass


@dataclass
class Portal:
    config: Config
    secrets: Secrets
    database: Database
    login: OidcLogin
    organisation: Organisation
    dashboard: Dashboard
    access: AccessRequests
    matrix_sso: MatrixSso
    partners: Partners
    links: ShareLinks
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def dav(self) -> DavAccess:
        return self.organisation.dav

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def portal_of(request: Request) -> Portal:
    return request.app.state.portal  # type: ignore[no-any-return]


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    user = getattr(request.state, "user", None)
    return templates.TemplateResponse(request, name, {"user": user,
                                                      "organisation": portal_of(request).config.collectivite.nom,
                                                      **context}, status_code=status)


async def optional_user(request: Request) -> CurrentUser | None:
    user = await session_user(portal_of(request).database, request.cookies.get(SESSION_COOKIE))
    request.state.user = user
    return user


async def signed_in(request: Request, user: Annotated[CurrentUser | None, Depends(optional_user)]) -> CurrentUser:
    if user is None:
        raise NeedLogin(request.url.path)
    return user


async def admin_only(user: Annotated[CurrentUser, Depends(signed_in)]) -> CurrentUser:
    if not user.is_admin:
        raise Forbidden()
    return user


def check_csrf(user: CurrentUser, token: str) -> None:
    if not token or not hmac.compare_digest(token, user.csrf):
        raise BadCsrf()


MaybeUser = Annotated[CurrentUser | None, Depends(optional_user)]
User = Annotated[CurrentUser, Depends(signed_in)]
Admin = Annotated[CurrentUser, Depends(admin_only)]
Csrf = Annotated[str, Form(alias="csrf")]


def config_admin(config: Config, email: str) -> bool:
    """An administrator named in the configuration (not only by the provider's claim)."""
    return email in config.portail.administrateurs


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: never a formula (=, +, -, @, tab, CR first)."""
    return "'" + value if value[:1] in FORMULA_STARTS else value


def dav_urls(config: Config, key: str) -> dict[str, str]:
    """Where an agent's apps find the service's files and calendars."""
    host = "localhost"
    webdav = config.webdav.url or f"http://{host}:{config.reseau.port_webdav}/"
    caldav = config.caldav.url or f"http://{host}:{config.reseau.port_caldav}/{config.caldav.utilisateur}/"
    return {"dossier": f"{webdav.rstrip('/')}/{key}/", "agenda": f"{caldav.rstrip('/')}/{key}/",
            "taches": f"{caldav.rstrip('/')}/{key}-taches/"}
