"""The provisioning portal: FastAPI, server-rendered pages, OIDC login.

``create_app`` is the whole portal for one stack; ``maillage portail`` serves it with
uvicorn (and ``maillage up`` starts it with the rest). The pages live in ``routes/`` (one
router per part), what they share in ``web.py``. Pages are French first; every form
carries its session's CSRF token; admin pages answer 403 to agents.
"""


import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from maillage.config import Config
from maillage.i18n import t
from maillage.portal import imports
from maillage.portal.access import AccessRequests
from maillage.portal.api import ApiRefused, api_router, refused_answer
from maillage.portal.auth import OidcLogin
from maillage.portal.bots_api import bots_router
from maillage.portal.dashboard import Dashboard
from maillage.portal.db import Database, database_urls, migrate
from maillage.portal.idp_dev import Directory
from maillage.portal.links import ShareLinks
from maillage.portal.matrix_sso import MatrixSso
from maillage.portal.metrics import PortalMetrics, add_metrics
from maillage.portal.organisation import Organisation
from maillage.portal.pages import STATIC_DIR
from maillage.portal.partners import Partners
from maillage.portal.routes import (
    agent_import,
    agents,
    audit,
    drift,
    links,
    login,
    matrix_sso,
    me,
    partners,
    services,
    tokens,
)
from maillage.portal.web import BadCsrf, Forbidden, NeedLogin, Portal, config_admin, page, portal_of
from maillage.secretstore import Secrets, load_secrets

log = logging.getLogger("maillage.portal")

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self' http: https:",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
EXPIRY_SECONDS = 60.0
# In this order: « /agents/import » before « /agents/{user_id} ».
PAGES = (login, services, agent_import, agents, tokens, me, audit, matrix_sso, partners, links, drift)


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
                        organisation, Dashboard(config, database, admin_token), AccessRequests(organisation),
                        MatrixSso(config, stack_secrets.synapse_oidc_secret, database),
                        Partners(config, database, organisation.synapse),
                        ShareLinks(config, database, stack_secrets.portal_bots_token, organisation.webdav))
        app.state.portal = portal
        portal.in_background(portal.dashboard.run())
        portal.in_background(expiring(portal.access))
        await portal.dav.publish()  # what a crash may have left committed and not yet published
        await portal.partners.publish()
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
    add_refusals(app)
    app.state.metrics = PortalMetrics()
    add_metrics(app, app.state.metrics)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def token_owner_is_admin(email: str) -> bool:
        return config_admin(config, email)

    for pages in PAGES:
        app.include_router(pages.router)
    app.include_router(bots_router(lambda request: portal_of(request).access, lambda request: portal_of(request).links,
                                   stack_secrets.portal_bots_token))
    app.include_router(api_router(lambda request: portal_of(request).database,
                                  lambda request: portal_of(request).organisation,
                                  lambda request: portal_of(request).partners, token_owner_is_admin))
    return app


def add_refusals(app: FastAPI) -> None:
    """What the app answers when a page or the API refuses: a French page, or French JSON."""

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
