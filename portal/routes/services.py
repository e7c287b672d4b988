"""Services: the list, a service's creation (and its resumption), its page, renaming, archiving.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from maillage.i18n import t
from maillage.portal.db import Agent, Service, ServiceRoom
from maillage.portal.errors import OrganisationError
from maillage.portal.web import Admin, Csrf, check_csrf, dav_urls, page, portal_of

router = APIRouter(include_in_schema=False)  # pages: not in the API's OpenAPI description


async def services_page(request: Request, *, errors: dict[str, str] | None = None,
                        values: dict[str, str] | None = None, done: str = "", status: int = 200) -> Response:
    async with portal_of(request).database.session() as session:
        services = (await session.execute(select(Service).order_by(Service.name))).scalars().all()
    return page(request, "services.html", {"services": services, "errors": errors or {}, "values": values or {},
                                           "done": done, "section": "services"}, status=status)


@router.get("/services", response_class=HTMLResponse)
async def services(request: Request, user: Admin) -> Response:
    return await services_page(request)


@router.post("/services", response_class=HTMLResponse)
async def create_service(request: Request, user: Admin, csrf: Csrf = "", cle: Annotated[str, Form()] = "",
                         nom: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    try:
        service = await portal_of(request).organisation.create_service(user.email, cle, nom)
    except OrganisationError as exc:
        return await services_page(request, errors={exc.field or "general": exc.message},
                                   values={"cle": cle, "nom": nom}, status=422)
    return await services_page(request, done=t("portal.service_created", name=service.name))


async def service_view(request: Request, key: str, *, done: str = "", errors: dict[str, str] | None = None,
                       values: dict[str, str] | None = None, status: int = 200) -> Response:
    async with portal_of(request).database.session() as session:
        service = (await session.execute(select(Service).where(Service.key == key))).scalar_one_or_none()
        if service is None:
            raise StarletteHTTPException(404)
        rooms = (await session.execute(select(ServiceRoom).where(ServiceRoom.service_id == service.id))
                 ).scalars().all()
        agents = (await session.execute(select(Agent).where(Agent.service_id == service.id)
                                        .order_by(Agent.display_name))).scalars().all()
    mailboxes = [] if service.archived else await portal_of(request).organisation.mailboxes(key)
    return page(request, "service.html", {
        "service": service, "rooms": rooms, "agents": agents, "section": "services", "done": done,
        "mailboxes": mailboxes,
        "dav": dav_urls(portal_of(request).config, key), "errors": errors or {},
        "values": values or {"nom": service.name}}, status=status)


@router.get("/services/{key}", response_class=HTMLResponse)
async def service_page(request: Request, key: str, user: Admin) -> Response:
    return await service_view(request, key)


@router.post("/services/{key}/renommer", response_class=HTMLResponse)
async def rename_service(request: Request, key: str, user: Admin, csrf: Csrf = "",
                         nom: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    try:
        await portal_of(request).organisation.rename_service(user.email, key, nom)
    except OrganisationError as exc:
        return await service_view(request, key, errors={exc.field or "general": exc.message},
                                  values={"nom": nom}, status=422)
    return await service_view(request, key, done=t("portal.service_renamed"))


@router.post("/services/{key}/courriel", response_class=HTMLResponse)
async def add_mailbox(request: Request, key: str, user: Admin, csrf: Csrf = "",
                      adresse: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    try:
        address = await portal_of(request).organisation.add_mailbox(user.email, key, adresse)
    except OrganisationError as exc:
        return await service_view(request, key, errors={exc.field or "general": exc.message},
                                  values={"adresse": adresse}, status=422)
    return await service_view(request, key, done=t("portal.mailbox_added", address=address))


@router.post("/services/{key}/courriel/retirer", response_class=HTMLResponse)
async def remove_mailbox(request: Request, key: str, user: Admin, csrf: Csrf = "",
                         adresse: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    try:
        address = await portal_of(request).organisation.remove_mailbox(user.email, key, adresse)
    except OrganisationError as exc:
        return await service_view(request, key, errors={exc.field or "general": exc.message}, status=422)
    return await service_view(request, key, done=t("portal.mailbox_removed", address=address))


@router.post("/services/{key}/archiver", response_class=HTMLResponse)
async def archive_service(request: Request, key: str, user: Admin, csrf: Csrf = "",
                          confirmation: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    if confirmation != "oui":
        return await service_view(request, key, errors={"confirmation": t("portal.archive_confirm_needed")},
                                  status=422)
    try:
        await portal_of(request).organisation.archive_service(user.email, key)
    except OrganisationError as exc:
        return await service_view(request, key, errors={"general": exc.message}, status=422)
    return await service_view(request, key, done=t("portal.service_archived"))


@router.post("/services/{key}/reprendre", response_class=HTMLResponse)
async def resume_service(request: Request, key: str, user: Admin, csrf: Csrf = "") -> Response:
    check_csrf(user, csrf)
    portal = portal_of(request)
    async with portal.database.session() as session:
        service = (await session.execute(select(Service).where(Service.key == key))).scalar_one_or_none()
    if service is None:
        raise StarletteHTTPException(404)
    try:
        await portal.organisation.provision(service.id)
    except OrganisationError as exc:
        return await services_page(request, errors={"general": exc.message}, status=502)
    return RedirectResponse(f"/services/{key}", status_code=303)
