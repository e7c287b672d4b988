"""API tokens: made by the administrators named in the configuration, shown once, revoked.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from maillage.i18n import t
from maillage.portal.auth import CurrentUser, digest
from maillage.portal.db import ApiToken, audit
from maillage.portal.web import Admin, Csrf, check_csrf, config_admin, page, portal_of

router = APIRouter(include_in_schema=False)  # pages: not in the API's OpenAPI description


async def tokens_page(request: Request, user: CurrentUser, *, made: str = "", errors: dict[str, str] | None = None,
                      status: int = 200) -> Response:
    async with portal_of(request).database.session() as session:
        tokens = (await session.execute(select(ApiToken).where(ApiToken.revoked.is_(False))
                                        .order_by(ApiToken.id))).scalars().all()
    return page(request, "jetons.html", {"tokens": tokens, "made": made, "errors": errors or {}, "section": "jetons",
                                         "can_make": config_admin(portal_of(request).config, user.email)},
                status=status)


@router.get("/jetons", response_class=HTMLResponse)
async def tokens(request: Request, user: Admin) -> Response:
    return await tokens_page(request, user)


@router.post("/jetons", response_class=HTMLResponse)
async def make_token(request: Request, user: Admin, csrf: Csrf = "", nom: Annotated[str, Form()] = "") -> Response:
    check_csrf(user, csrf)
    name = " ".join(nom.split())
    if not 2 <= len(name) <= 80:
        return await tokens_page(request, user, errors={"nom": t("api.token_name_invalid")}, status=422)
    if not config_admin(portal_of(request).config, user.email):
        return await tokens_page(request, user, errors={"general": t("api.token_config_admins_only")},
                                 status=403)
    secret = secrets.token_urlsafe(32)
    async with portal_of(request).database.session() as session:
        session.add(ApiToken(name=name, token_hash=digest(secret), created_by=user.email))
        audit(session, user.email, "jeton.creation", name)
        await session.commit()
    return await tokens_page(request, user, made=secret)


@router.post("/jetons/{token_id}/revoquer")
async def revoke_token(request: Request, token_id: int, user: Admin, csrf: Csrf = "") -> Response:
    check_csrf(user, csrf)
    async with portal_of(request).database.session() as session:
        token = await session.get(ApiToken, token_id)
        if token is not None and not token.revoked:
            token.revoked = True
            audit(session, user.email, "jeton.revocation", token.name)
            await session.commit()
    return RedirectResponse("/jetons", status_code=303)
