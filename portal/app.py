"""The provisioning portal: FastAPI, server-rendered pages, OIDC login.

``create_app`` is the whole portal for one stack; ``maillage portail`` serves it with
uvicorn (and ``maillage up`` starts it with the rest). Pages are French first; every form
carries its session's CSRF token; admin pages answer 403 to agents.
"""


import asyncio
import contextlib
import csv
import hmac
import io
import logging
import secrets
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from maillage.config import Config
from maillage.i18n import t
from maillage.portal import imports
from maillage.portal.access import AccessRequests, Asked
from maillage.portal.api import ApiRefused, api_router, refused_answer
from maillage.portal.auth import (
    SESSION_COOKIE,
    SESSION_HOURS,
    CurrentUser,
    LoginError,
    OidcLogin,
    close_session,
    digest,
    is_admin,
    open_session,
    session_user,
)
from maillage.portal.bots_api import bots_router
from maillage.portal.dashboard import Dashboard
from maillage.portal.dav import DavAccess, MadePassword, account_rights, dav_login
from maillage.portal.db import (
    ROLES,
    Agent,
    ApiToken,
    Database,
    Service,
    ServiceRoom,
    audit,
    database_urls,
    migrate,
)
from maillage.portal.errors import OrganisationError
from maillage.portal.idp_dev import Directory
from maillage.portal.organisation import FORMULA_STARTS, NewAgent, Organisation, audit_entries
from maillage.portal.pages import STATIC_DIR, templates
from maillage.secretstore import Secrets, load_secrets

log = logging.getLogger("maillage.portal")

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self' http: https:",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


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
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def dav(self) -> DavAccess:
        return self.organisation.dav

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


EXPIRY_SECONDS = 60.0


async def expiring(access: AccessRequests) -> None:
    """Grants past their last day taken back, looked for every minute while the portal runs."""
    while True:
        try:
            await access.expire()
        except Exception as error:
            log.warning("access grants not expired yet: %s", type(error).__name__)
        await asyncio.sleep(EXPIRY_SECONDS)


def dev_directory(config: Config) -> Directory | None:
    """The bundled provider's accounts, when it is the provider."""
    return None if config.portail.oidc_emetteur else Directory(config.data_dir / "oidc-dev" / "annuaire.json")


def create_app(config: Config, stack_secrets: Secrets) -> FastAPI:
    async_url, sync_url = database_urls(config)

    async def admin_token() -> str:
        from maillage.deploy.provisioning import ensure_admin_token  # the launcher's, shared

        # Read again: the launcher may have made the admin account since this process started.
        return await ensure_admin_token(config, load_secrets(config.data_dir))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, sync_url)
        database = Database(async_url)
        organisation = Organisation(config, stack_secrets, database, admin_token, dev_directory(config))
        portal = Portal(config, stack_secrets, database, OidcLogin(config, stack_secrets.portal_oidc_secret, database),
                        organisation,
                        Dashboard(config, database, admin_token), AccessRequests(organisation))
        app.state.portal = portal
        portal.in_background(portal.dashboard.run())
        portal.in_background(expiring(portal.access))
        await portal.dav.publish()  # what a crash may have left committed and not yet published
        for job_id in await imports.unfinished(database):  # cut by a stop or a crash: taken up again
            portal.in_background(imports.run(portal.organisation, database, job_id))
        yield
        for task in list(portal.tasks):
            task.cancel()
        await portal.organisation.close()
        await database.close()

    app = FastAPI(title=t("portal.api_title"), lifespan=lifespan, docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    secure_cookie = config.portal_url.startswith("https://") or "//localhost" in config.portal_url

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, exc: NeedLogin) -> Response:
        return RedirectResponse(f"/connexion?suite={exc.next_page}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return page(request, "erreur.html", {"title": t("portal.forbidden_title"), "message": t("portal.forbidden")},
                    status=403)

    @app.exception_handler(BadCsrf)
    async def bad_csrf(request: Request, exc: BadCsrf) -> Response:
        return page(request, "erreur.html", {"title": t("portal.csrf_title"), "message": t("portal.csrf")}, status=403)

    @app.exception_handler(ApiRefused)
    async def api_refused(request: Request, exc: ApiRefused) -> Response:
        return refused_answer(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):
            where = next((e.get("loc", ()) for e in exc.errors()), ())
            field = str(where[-1]) if where and where[0] == "body" and len(where) > 1 else ""
            body = {"detail": t("api.invalid_field", field=field) if field else t("portal.request_invalid")}
            return JSONResponse({**body, **({"champ": field} if field else {})}, status_code=422)
        return page(request, "erreur.html", {"title": t("portal.request_invalid_title"),
                                             "message": t("portal.request_invalid")}, status=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": t("portal.not_found") if exc.status_code == 404 else str(exc.detail)},
                                status_code=exc.status_code)
        message = t("portal.not_found") if exc.status_code == 404 else str(exc.detail)
        return page(request, "erreur.html", {"title": message, "message": message}, status=exc.status_code)

    def portal_of(request: Request) -> Portal:
        return request.app.state.portal  # type: ignore[no-any-return]

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        user = getattr(request.state, "user", None)
        return templates.TemplateResponse(request, name, {"user": user, "organisation": config.collectivite.nom,
                                                          **context}, status_code=status)

    async def optional_user(request: Request) -> CurrentUser | None:
        user = await session_user(portal_of(request).database, request.cookies.get(SESSION_COOKIE))
        request.state.user = user
        return user

    async def signed_in(request: Request, user: Annotated[CurrentUser | None, Depends(optional_user)]) -> CurrentUser:
        if user is None:
            raise NeedLogin(request.url.path)
        return user

    async def admin(user: Annotated[CurrentUser, Depends(signed_in)]) -> CurrentUser:
        if not user.is_admin:
            raise Forbidden()
        return user

    def check_csrf(user: CurrentUser, token: str) -> None:
        if not token or not hmac.compare_digest(token, user.csrf):
            raise BadCsrf()

    User = Annotated[CurrentUser, Depends(signed_in)]
    Admin = Annotated[CurrentUser, Depends(admin)]
    Csrf = Annotated[str, Form(alias="csrf")]

    # --- login -----------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request, user: Annotated[CurrentUser | None, Depends(optional_user)]) -> Response:
        if user is None:
            return page(request, "accueil.html", {})
        if not user.is_admin:
            return RedirectResponse("/moi", status_code=303)
        return page(request, "tableau.html", {"section": "accueil",
                                              "figures": await portal_of(request).dashboard.figures_html()})

    @app.post("/tableau/actualiser")
    async def refresh_dashboard(request: Request, user: Admin, csrf: Csrf = "") -> Response:
        check_csrf(user, csrf)
        await portal_of(request).dashboard.refresh()
        return RedirectResponse("/", status_code=303)

    @app.get("/connexion")
    async def login(request: Request, suite: str = "/") -> Response:
        try:
            return RedirectResponse(await portal_of(request).login.start(suite), status_code=303)
        except LoginError as exc:
            return page(request, "erreur.html", {"title": t("portal.login_failed"), "message": str(exc)}, status=502)

    @app.get("/connexion/retour")
    async def login_back(request: Request, code: str = "", state: str = "", error: str = "") -> Response:
        portal = portal_of(request)
        try:
            if error or not code:
                raise LoginError(t("portal.login_refused_by_provider"))
            identity, id_token, next_page = await portal.login.finish(code, state)
        except LoginError as exc:
            return page(request, "erreur.html", {"title": t("portal.login_failed"), "message": str(exc)}, status=400)
        admin_rights = is_admin(config, identity)
        async with portal.database.session() as session:
            known = (await session.execute(select(Agent).where(Agent.email == identity.email,
                                                               Agent.active.is_(True)))).scalar_one_or_none()
        if not admin_rights and known is None:
            return page(request, "erreur.html", {"title": t("portal.login_failed"),
                                                 "message": t("portal.login_unknown_agent", email=identity.email)},
                        status=403)
        token = await open_session(portal.database, identity, id_token, admin_rights)
        response = RedirectResponse(next_page, status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_HOURS * 3600, httponly=True, secure=secure_cookie,
                            samesite="lax", path="/")
        return response

    @app.post("/deconnexion")
    async def logout(request: Request, user: User, csrf: Csrf = "") -> Response:
        check_csrf(user, csrf)
        portal = portal_of(request)
        id_token = await close_session(portal.database, user)
        target = "/deconnecte"
        if id_token:
            with contextlib.suppress(LoginError):  # provider down: the portal's session is closed anyway
                target = await portal.login.logout_url(id_token)
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/deconnecte", response_class=HTMLResponse)
    async def logged_out(request: Request) -> Response:
        return page(request, "deconnecte.html", {})

    # --- services --------------------------------------------------------------------------

    async def services_page(request: Request, *, errors: dict[str, str] | None = None,
                            values: dict[str, str] | None = None, done: str = "", status: int = 200) -> Response:
        async with portal_of(request).database.session() as session:
            services = (await session.execute(select(Service).order_by(Service.name))).scalars().all()
        return page(request, "services.html", {"services": services, "errors": errors or {}, "values": values or {},
                                               "done": done, "section": "services"}, status=status)

    @app.get("/services", response_class=HTMLResponse)
    async def services(request: Request, user: Admin) -> Response:
        return await services_page(request)

    @app.post("/services", response_class=HTMLResponse)
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
        return page(request, "service.html", {"service": service, "rooms": rooms, "agents": agents,
                                              "section": "services", "dav": dav_urls(config, key), "done": done,
                                              "errors": errors or {}, "values": values or {"nom": service.name}},
                    status=status)

    @app.get("/services/{key}", response_class=HTMLResponse)
    async def service_page(request: Request, key: str, user: Admin) -> Response:
        return await service_view(request, key)

    @app.post("/services/{key}/renommer", response_class=HTMLResponse)
    async def rename_service(request: Request, key: str, user: Admin, csrf: Csrf = "",
                             nom: Annotated[str, Form()] = "") -> Response:
        check_csrf(user, csrf)
        try:
            await portal_of(request).organisation.rename_service(user.email, key, nom)
        except OrganisationError as exc:
            return await service_view(request, key, errors={exc.field or "general": exc.message},
                                      values={"nom": nom}, status=422)
        return await service_view(request, key, done=t("portal.service_renamed"))

    @app.post("/services/{key}/archiver", response_class=HTMLResponse)
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

    @app.post("/services/{key}/reprendre", response_class=HTMLResponse)
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

    # --- agents ----------------------------------------------------------------------------

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

    @app.get("/agents", response_class=HTMLResponse)
    async def agents(request: Request, user: Admin) -> Response:
        return await agents_page(request)

    @app.post("/agents", response_class=HTMLResponse)
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

    # --- API tokens and the API ------------------------------------------------------------

    async def token_owner_is_admin(email: str) -> bool:
        return email in config.portail.administrateurs

    app.include_router(bots_router(lambda request: portal_of(request).access, stack_secrets.portal_bots_token))
    app.include_router(api_router(lambda request: portal_of(request).database,
                                  lambda request: portal_of(request).organisation, token_owner_is_admin))

    async def tokens_page(request: Request, user: CurrentUser, *, made: str = "", errors: dict[str, str] | None = None,
                          status: int = 200) -> Response:
        async with portal_of(request).database.session() as session:
            tokens = (await session.execute(select(ApiToken).where(ApiToken.revoked.is_(False))
                                            .order_by(ApiToken.id))).scalars().all()
        return page(request, "jetons.html", {"tokens": tokens, "made": made, "errors": errors or {},
                                             "section": "jetons",
                                             "can_make": await token_owner_is_admin(user.email)}, status=status)

    @app.get("/jetons", response_class=HTMLResponse)
    async def tokens(request: Request, user: Admin) -> Response:
        return await tokens_page(request, user)

    @app.post("/jetons", response_class=HTMLResponse)
    async def make_token(request: Request, user: Admin, csrf: Csrf = "", nom: Annotated[str, Form()] = "") -> Response:
        check_csrf(user, csrf)
        name = " ".join(nom.split())
        if not 2 <= len(name) <= 80:
            return await tokens_page(request, user, errors={"nom": t("api.token_name_invalid")}, status=422)
        if not await token_owner_is_admin(user.email):
            return await tokens_page(request, user, errors={"general": t("api.token_config_admins_only")},
                                     status=403)
        secret = secrets.token_urlsafe(32)
        async with portal_of(request).database.session() as session:
            session.add(ApiToken(name=name, token_hash=digest(secret), created_by=user.email))
            audit(session, user.email, "jeton.creation", name)
            await session.commit()
        return await tokens_page(request, user, made=secret)

    @app.post("/jetons/{token_id}/revoquer")
    async def revoke_token(request: Request, token_id: int, user: Admin, csrf: Csrf = "") -> Response:
        check_csrf(user, csrf)
        async with portal_of(request).database.session() as session:
            token = await session.get(ApiToken, token_id)
            if token is not None and not token.revoked:
                token.revoked = True
                audit(session, user.email, "jeton.revocation", token.name)
                await session.commit()
        return RedirectResponse("/jetons", status_code=303)

    # --- CSV import ------------------------------------------------------------------------

    @app.get("/agents/import", response_class=HTMLResponse)
    async def import_form(request: Request, user: Admin) -> Response:
        return page(request, "import.html", {"section": "agents", "errors": {}})

    @app.post("/agents/import", response_class=HTMLResponse)
    async def import_preview(request: Request, user: Admin, csrf: Csrf = "",
                             fichier: Annotated[UploadFile | None, File()] = None) -> Response:
        check_csrf(user, csrf)
        portal = portal_of(request)
        if fichier is None or not fichier.filename:
            return page(request, "import.html", {"section": "agents", "errors": {"fichier": t("import.no_file")}},
                        status=422)
        data = await fichier.read(imports.MAX_BYTES + 1)
        try:
            checked = await imports.preview(portal.organisation, portal.database, fichier.filename, data)
        except imports.ImportFileError as exc:
            return page(request, "import.html", {"section": "agents", "errors": {"fichier": str(exc)}}, status=422)
        job_id = None
        if not checked.errors and checked.new:
            job_id = await imports.write_down(portal.database, user.email, checked)
        return page(request, "import_apercu.html", {"section": "agents", "preview": checked, "job_id": job_id},
                    status=422 if checked.errors else 200)

    @app.post("/agents/import/{job_id}/lancer")
    async def import_start(request: Request, job_id: int, user: Admin, csrf: Csrf = "") -> Response:
        check_csrf(user, csrf)
        portal = portal_of(request)
        if await imports.confirm(portal.database, job_id, user.email) or \
                await imports.restart_interrupted(portal.database, job_id):
            portal.in_background(imports.run(portal.organisation, portal.database, job_id))
        return RedirectResponse(f"/agents/import/{job_id}", status_code=303)

    @app.get("/agents/import/{job_id}", response_class=HTMLResponse)
    async def import_progress(request: Request, job_id: int, user: Admin) -> Response:
        found = await imports.progress(portal_of(request).database, job_id)
        if found is None:
            raise StarletteHTTPException(404)
        return page(request, "import_suivi.html", {"section": "agents", "progress": found,
                                                    "dev_provider": not config.portail.oidc_emetteur})

    @app.get("/agents/import/{job_id}/etat")
    async def import_state(request: Request, job_id: int, user: Admin) -> dict[str, Any]:
        found = await imports.progress(portal_of(request).database, job_id)
        if found is None:
            raise StarletteHTTPException(404)
        return {"etat": found.job.state, "total": found.job.total, "faits": found.done,
                "erreurs": [{"ligne": row.line, "message": row.message} for row in found.failed]}

    @app.post("/agents/import/{job_id}/mots-de-passe")
    async def import_passwords(request: Request, job_id: int, user: Admin, csrf: Csrf = "") -> Response:
        check_csrf(user, csrf)
        portal = portal_of(request)
        found = await imports.take_first_passwords(portal.database, job_id)
        async with portal.database.session() as session:
            audit(session, user.email, "import.mots_de_passe", str(job_id), after={"comptes": len(found)})
            await session.commit()
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";")
        writer.writerow([t("portal.email"), t("import.first_password")])
        writer.writerows([csv_cell(email), password] for email, password in found)
        return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="premiers-mots-de-passe-{job_id}.csv"'})

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

    @app.get("/agents/{user_id}", response_class=HTMLResponse)
    async def agent_detail(request: Request, user_id: str, user: Admin) -> Response:
        return await agent_page(request, user_id)

    @app.post("/agents/{user_id}", response_class=HTMLResponse)
    async def change_agent(request: Request, user_id: str, user: Admin, csrf: Csrf = "",
                           service: Annotated[str, Form()] = "", role: Annotated[str, Form()] = "") -> Response:
        check_csrf(user, csrf)
        try:
            await portal_of(request).organisation.change_agent(user.email, user_id, service, role)
        except OrganisationError as exc:
            return await agent_page(request, user_id, errors={exc.field or "general": exc.message},
                                    values={"service": service, "role": role}, status=422)
        return await agent_page(request, user_id, done=t("portal.agent_changed"))

    @app.post("/agents/{user_id}/depart", response_class=HTMLResponse)
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
                      calendars.get(other.key) or calendars.get("*", ""), dav_urls(config, other.key))
                     for other in services if folders.get(other.key) or folders.get("*")]
        return page(request, "moi.html", {
            "agent": agent, "service": service, "rooms": rooms, "section": "moi", "reachable": reachable,
            "login": dav_login(agent.user_id) if agent else "", "made": made, "errors": errors or {},
            "passwords": await portal.dav.passwords(agent) if agent else [],
            "others": [other for other in services if not service or other.id != service.id],
            "requests": await portal.access.of_agent(agent.user_id) if agent else [],
            "asked": asked, "values": values or {}}, status=status)

    @app.get("/moi", response_class=HTMLResponse)
    async def me(request: Request, user: User) -> Response:
        return await me_page(request, user)

    @app.post("/moi/mots-de-passe", response_class=HTMLResponse)
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

    @app.post("/moi/acces", response_class=HTMLResponse)
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

    @app.post("/moi/mots-de-passe/{password_id}/revoquer")
    async def revoke_app_password(request: Request, password_id: int, user: User, csrf: Csrf = "") -> Response:
        check_csrf(user, csrf)
        agent = await agent_of(request, user)
        if agent is None or not await portal_of(request).dav.revoke_password(agent, password_id):
            raise StarletteHTTPException(404)
        return RedirectResponse("/moi", status_code=303)

    @app.get("/journal", response_class=HTMLResponse)
    async def audit_log(request: Request, user: Admin, q: str = "") -> Response:
        entries = await audit_entries(portal_of(request).database, q)
        return page(request, "journal.html", {"entries": entries, "q": q, "section": "journal"})

    @app.get("/journal.csv")
    async def audit_csv(request: Request, user: Admin, q: str = "") -> Response:
        entries = await audit_entries(portal_of(request).database, q, limit=100_000)
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";")
        writer.writerow([t("portal.audit_when"), t("portal.audit_who"), t("portal.audit_what"),
                         t("portal.audit_target"), t("portal.audit_before"), t("portal.audit_after")])
        from maillage.portal.pages import when

        for entry in entries:
            writer.writerow([csv_cell(value) for value in (when(entry.at), entry.actor, entry.action, entry.target,
                                                            entry.before, entry.after)])
        return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="journal-maillage.csv"'})

    @app.get("/sante")
    async def health() -> dict[str, str]:
        return {"etat": "ok"}

    for route in app.routes:  # the OpenAPI description is the API's, not the pages'
        if isinstance(route, APIRoute) and not route.path.startswith("/api/"):
            route.include_in_schema = False
    return app


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
