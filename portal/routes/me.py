"""« Mon espace »: an agent's service, rooms, DAV addresses with their rights, app passwords and access requests.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from maillage.portal.access import Asked
from maillage.portal.auth import CurrentUser
from maillage.portal.dav import MadePassword, account_rights, dav_login
from maillage.portal.db import Agent, Service, ServiceRoom
from maillage.portal.errors import OrganisationError
from maillage.portal.web import Csrf, Forbidden, User, check_csrf, dav_urls, page, portal_of

router = APIRouter(include_in_schema=False)  # pages: not in the API's OpenAPI description


# --- the agent's own page, the audit ---------------------------------------------------


async def agent_of(request: Request, user: CurrentUser) -> Agent | None:
    async with portal_of(request).database.session() as session:
        return (await session.execute(select(Agent).where(Agent.email == user.email,
                                                          Agent.active.is_(True)))).scalar_one_or_none()


async def me_page(request: Request, user: CurrentUser, *, made: MadePassword | None = None,
                  errors: dict[str, str] | None = None, asked: int = 0, values: dict[str, str] | None = None,
                  status: int = 200) -> Response:
    portal = portal_of(request)
    agent = await agent_of(request, user)
    async with portal.database.session() as session:
        service = await session.get(Service, agent.service_id) if agent and agent.service_id else None
        rooms = (await session.execute(select(ServiceRoom).where(ServiceRoom.service_id == service.id))
                 ).scalars().all() if service else []
        services = (await session.execute(select(Service).where(Service.archived.is_(False))
                                          .order_by(Service.name))).scalars().all()
    folders, calendars = account_rights(agent.role, service.key if service else None) if agent else ({}, {})
    reachable = [(other, folders.get(other.key) or folders.get("*", ""),
                  calendars.get(other.key) or calendars.get("*", ""), dav_urls(portal.config, other.key))
                 for other in services if folders.get(other.key) or folders.get("*")]
    return page(request, "moi.html", {
        "agent": agent, "service": service, "rooms": rooms, "section": "moi", "reachable": reachable,
        "login": dav_login(agent.user_id) if agent else "", "made": made, "errors": errors or {},
        "passwords": await portal.dav.passwords(agent) if agent else [],
        "others": [other for other in services if not service or other.id != service.id],
        "requests": await portal.access.of_agent(agent.user_id) if agent else [],
        "asked": asked, "values": values or {}}, status=status)


@router.get("/moi", response_class=HTMLResponse)
async def me(request: Request, user: User) -> Response:
    return await me_page(request, user)


@router.post("/moi/mots-de-passe", response_class=HTMLResponse)
async def make_app_password(request: Request, user: User, csrf: Csrf = "",
                            nom: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    agent = await agent_of(request, user)
    if agent is None:
        raise Forbidden()
    try:
        made = await portal_of(request).dav.make_password(agent, nom)
    except OrganisationError as exc:
        return await me_page(request, user, errors={exc.field or "general": exc.message}, status=422)
    return await me_page(request, user, made=made)


@router.post("/moi/acces", response_class=HTMLResponse)
async def ask_access(request: Request, user: User, csrf: Csrf = "", service: Annotated[str, Form()] = "",
                     ressource: Annotated[str, Form()] = "", droit: Annotated[str, Form()] = "",
                     jusqu_au: Annotated[str, Form()] = "", motif: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    agent = await agent_of(request, user)
    if agent is None:
        raise Forbidden()
    values = {"service": service, "ressource": ressource, "droit": droit, "jusqu_au": jusqu_au, "motif": motif}
    try:
        made = await portal_of(request).access.ask(Asked(agent.user_id, service, ressource, droit, jusqu_au,
                                                          motif))
    except OrganisationError as exc:
        return await me_page(request, user, errors={exc.field or "general": exc.message}, values=values,
                             status=422)
    return await me_page(request, user, asked=made.id)


@router.post("/moi/mots-de-passe/{password_id}/revoquer")
async def revoke_app_password(request: Request, password_id: int, user: User, csrf: Csrf = "") -> Response:
    check_csrf(user, csrf)
    agent = await agent_of(request, user)
    if agent is None or not await portal_of(request).dav.revoke_password(agent, password_id):
        raise StarletteHTTPException(404)
    return RedirectResponse("/moi", status_code=303)
