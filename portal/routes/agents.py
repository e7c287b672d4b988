"""Agents: the list and a new agent; one agent's page: another service or role, their departure.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from maillage.i18n import t
from maillage.portal.db import ROLES, Agent, Service
from maillage.portal.errors import OrganisationError
from maillage.portal.organisation import NewAgent
from maillage.portal.web import Admin, Csrf, check_csrf, page, portal_of

router = APIRouter(include_in_schema=False)  # pages: not in the API's OpenAPI description


async def agents_page(request: Request, *, errors: dict[str, str] | None = None,
                      values: dict[str, str] | None = None, created: Any = None, status: int = 200) -> Response:
    async with portal_of(request).database.session() as session:
        agents = (await session.execute(select(Agent).order_by(Agent.display_name))).scalars().all()
        services = (await session.execute(select(Service).where(Service.archived.is_(False))
                                          .order_by(Service.name))).scalars().all()
    names = {service.id: service.name for service in services}
    return page(request, "agents.html", {"agents": agents, "services": services, "service_names": names,
                                         "roles": ROLES, "errors": errors or {}, "values": values or {},
                                         "created": created, "section": "agents"}, status=status)


@router.get("/agents", response_class=HTMLResponse)
async def agents(request: Request, user: Admin) -> Response:
    return await agents_page(request)


@router.post("/agents", response_class=HTMLResponse)
async def create_agent(request: Request, user: Admin, csrf: Csrf = "", email: Annotated[str, Form()] = "",
                       prenom: Annotated[str, Form()] = "", nom: Annotated[str, Form()] = "",
                       service: Annotated[str, Form()] = "", role: Annotated[str, Form()] = "agent") -> Response:
    check_csrf(user, csrf)
    values = {"email": email, "prenom": prenom, "nom": nom, "service": service, "role": role}
    try:
        created = await portal_of(request).organisation.create_agent(
            user.email, NewAgent(email, prenom, nom, service, role))
    except OrganisationError as exc:
        return await agents_page(request, errors={exc.field or "general": exc.message}, values=values, status=422)
    return await agents_page(request, created=created)



# --- one agent: another service or role, their departure --------------------------------


async def agent_page(request: Request, user_id: str, *, done: str = "", errors: dict[str, str] | None = None,
                     values: dict[str, str] | None = None, status: int = 200) -> Response:
    portal = portal_of(request)
    async with portal.database.session() as session:
        agent = (await session.execute(select(Agent).where(Agent.user_id == user_id))).scalar_one_or_none()
        if agent is None:
            raise StarletteHTTPException(404)
        services = (await session.execute(select(Service).where(Service.archived.is_(False))
                                          .order_by(Service.name))).scalars().all()
        service = await session.get(Service, agent.service_id) if agent.service_id else None
    return page(request, "agent.html", {
        "agent": agent, "service": service, "services": services, "roles": ROLES, "done": done,
        "errors": errors or {}, "section": "agents", "work": await portal.organisation.open_work(user_id),
        "values": values or {"service": service.key if service else "", "role": agent.role}}, status=status)


@router.get("/agents/{user_id}", response_class=HTMLResponse)
async def agent_detail(request: Request, user_id: str, user: Admin) -> Response:
    return await agent_page(request, user_id)


@router.post("/agents/{user_id}", response_class=HTMLResponse)
async def change_agent(request: Request, user_id: str, user: Admin, csrf: Csrf = "",
                       service: Annotated[str, Form()] = "", role: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    try:
        await portal_of(request).organisation.change_agent(user.email, user_id, service, role)
    except OrganisationError as exc:
        return await agent_page(request, user_id, errors={exc.field or "general": exc.message},
                                values={"service": service, "role": role}, status=422)
    return await agent_page(request, user_id, done=t("portal.agent_changed"))


@router.post("/agents/{user_id}/depart", response_class=HTMLResponse)
async def offboard_agent(request: Request, user_id: str, user: Admin, csrf: Csrf = "",
                         confirmation: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    if confirmation != "oui":
        return await agent_page(request, user_id, errors={"confirmation": t("portal.offboard_confirm_needed")},
                                status=422)
    try:
        await portal_of(request).organisation.offboard(user.email, user_id)
    except OrganisationError as exc:
        return await agent_page(request, user_id, errors={"general": exc.message}, status=422)
    return await agent_page(request, user_id, done=t("portal.agent_offboarded"))
