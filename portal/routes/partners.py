"""« Partenaires »: the partner homeservers (federation allowlist) and the external accounts.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from maillage.config import ConfigError
from maillage.portal.auth import CurrentUser
from maillage.portal.errors import OrganisationError
from maillage.portal.partners import KINDS, NewExternal
from maillage.portal.web import Admin, Csrf, check_csrf, page, portal_of

router = APIRouter(include_in_schema=False)  # pages: not in the API's OpenAPI description

Field = Annotated[str, Form()]


async def partners_page(request: Request, user: CurrentUser, *, done: str = "", failed: bool = False,
                        made: tuple[str, str] | None = None, errors: dict[str, str] | None = None,
                        values: dict[str, str] | None = None, status: int = 200) -> Response:
    partners = portal_of(request).partners
    try:
        servers, open_to_all = partners.servers()
        unreadable = ""
    except ConfigError as exc:  # the file edited by hand and broken: said, not a crash
        servers, open_to_all, unreadable = [], False, str(exc)
    return page(request, "partenaires.html", {
        "section": "partenaires", "servers": servers, "open_to_all": open_to_all, "unreadable": unreadable,
        "externals": await partners.externals(), "today": partners.today().isoformat(), "kinds": KINDS,
        "done": done, "failed": failed, "made": made, "errors": errors or {}, "values": values or {}},
        status=status)


@router.get("/partenaires", response_class=HTMLResponse)
async def partners(request: Request, user: Admin) -> Response:
    return await partners_page(request, user)


@router.post("/partenaires/serveurs", response_class=HTMLResponse)
async def change_server(request: Request, user: Admin, csrf: Csrf = "", serveur: Field = "",
                        action: Field = "ajouter") -> Response:
    check_csrf(user, csrf)
    try:
        applied = await portal_of(request).partners.change_server(user.email, serveur, add=action != "retirer")
    except OrganisationError as exc:
        return await partners_page(request, user, errors={exc.field or "serveur": str(exc)},
                                   values={"serveur": serveur}, status=422)
    return await partners_page(request, user, done=applied.message, failed=applied.failed,
                               status=502 if applied.failed else 200)


@router.post("/partenaires/externes", response_class=HTMLResponse)
async def make_external(request: Request, user: Admin, csrf: Csrf = "", identifiant: Field = "", nom: Field = "",
                        email: Field = "", organisme: Field = "", type: Field = "partenaire",
                        fin: Field = "") -> Response:
    check_csrf(user, csrf)
    values = {"identifiant": identifiant, "nom": nom, "email": email, "organisme": organisme, "type": type,
              "fin": fin}
    try:
        made = await portal_of(request).partners.create_external(
            user.email, NewExternal(identifiant, nom, email, organisme, type, fin))
    except OrganisationError as exc:
        return await partners_page(request, user, errors={exc.field or "general": str(exc)}, values=values,
                                   status=422)
    return await partners_page(request, user, made=made)


@router.post("/partenaires/externes/{user_id}", response_class=HTMLResponse)
async def external_last_day(request: Request, user_id: str, user: Admin, csrf: Csrf = "", fin: Field = "",
                            action: Field = "prolonger") -> Response:
    check_csrf(user, csrf)
    try:
        await portal_of(request).partners.set_last_day(user.email, user_id, None if action == "clore" else fin)
    except OrganisationError as exc:
        return await partners_page(request, user, errors={"general": str(exc)}, status=422)
    return RedirectResponse("/partenaires", status_code=303)
