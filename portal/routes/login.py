"""Signing in and out (OIDC), the home page (the dashboard for admins, « Mon espace » for
agents), the health endpoint.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from maillage.config import Config
from maillage.i18n import t
from maillage.portal.auth import SESSION_COOKIE, SESSION_HOURS, LoginError, close_session, is_admin, open_session
from maillage.portal.db import Agent
from maillage.portal.web import Admin, Csrf, MaybeUser, User, check_csrf, page, portal_of

router = APIRouter(include_in_schema=False)  # pages: not in the API's OpenAPI description


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, user: MaybeUser) -> Response:
    if user is None:
        return page(request, "accueil.html", {})
    if not user.is_admin:
        return RedirectResponse("/moi", status_code=303)
    return page(request, "tableau.html", {"section": "accueil",
                                          "figures": await portal_of(request).dashboard.figures_html()})


@router.post("/tableau/actualiser")
async def refresh_dashboard(request: Request, user: Admin, csrf: Csrf = "") -> Response:
    check_csrf(user, csrf)
    await portal_of(request).dashboard.refresh()
    return RedirectResponse("/", status_code=303)


@router.get("/connexion")
async def login(request: Request, suite: str = "/") -> Response:
    try:
        return RedirectResponse(await portal_of(request).login.start(suite), status_code=303)
    except LoginError as exc:
        return page(request, "erreur.html", {"title": t("portal.login_failed"), "message": str(exc)}, status=502)


@router.get("/connexion/retour")
async def login_back(request: Request, code: str = "", state: str = "", error: str = "") -> Response:
    portal = portal_of(request)
    try:
        if error or not code:
            raise LoginError(t("portal.login_refused_by_provider"))
        identity, id_token, next_page = await portal.login.finish(code, state)
    except LoginError as exc:
        return page(request, "erreur.html", {"title": t("portal.login_failed"), "message": str(exc)}, status=400)
    admin_rights = is_admin(portal.config, identity)
    async with portal.database.session() as session:
        known = (await session.execute(select(Agent).where(Agent.email == identity.email,
                                                           Agent.active.is_(True)))).scalar_one_or_none()
    if not admin_rights and known is None:
        return page(request, "erreur.html", {"title": t("portal.login_failed"),
                                             "message": t("portal.login_unknown_agent", email=identity.email)},
                    status=403)
    token = await open_session(portal.database, identity, id_token, admin_rights)
    request.app.state.metrics.sign_ins.inc()
    response = RedirectResponse(next_page, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_HOURS * 3600, httponly=True,
                        secure=secure_cookie(portal.config), samesite="lax", path="/")
    return response


@router.post("/deconnexion")
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


@router.get("/deconnecte", response_class=HTMLResponse)
async def logged_out(request: Request) -> Response:
    return page(request, "deconnecte.html", {})


@router.get("/sante")
async def health() -> dict[str, str]:
    return {"etat": "ok"}


def secure_cookie(config: Config) -> bool:
    """Secure cookies on HTTPS, and on localhost (browsers accept them there over HTTP)."""
    return config.portal_url.startswith("https://") or "//localhost" in config.portal_url
