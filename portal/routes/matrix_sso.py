"""Synapse's OpenID provider (``matrix_sso``): the authorisation page agents pass through on
their way into Element or any Matrix client, the token and key endpoints Synapse calls.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from maillage.i18n import t
from maillage.portal.matrix_sso import PREFIX, MatrixSso, SsoRefusal, TokenRefusal
from maillage.portal.web import MaybeUser, page, portal_of

router = APIRouter(include_in_schema=False)


def sso_of(request: Request) -> MatrixSso:
    return portal_of(request).matrix_sso


@router.get(PREFIX + "/.well-known/openid-configuration")
async def discovery(request: Request) -> dict[str, Any]:
    return sso_of(request).metadata()


@router.get(PREFIX + "/cles")
async def keys(request: Request) -> dict[str, Any]:
    return sso_of(request).keys()


@router.get(PREFIX + "/autorisation")
async def authorise(request: Request, user: MaybeUser) -> Response:
    sso = sso_of(request)
    asked = {key: str(value) for key, value in request.query_params.items()}
    try:
        checked = sso.checked(asked)
    except SsoRefusal as refusal:
        return page(request, "erreur.html", {"title": t("portal.sso_refused"), "message": str(refusal)}, status=400)
    if user is None:  # signed in at the identity provider first, then back here
        here = f"{PREFIX}/autorisation?{urlencode(asked)}"
        return RedirectResponse(f"/connexion?{urlencode({'suite': here})}", status_code=303)
    try:
        return RedirectResponse(await sso.grant(checked, user.email), status_code=303)
    except SsoRefusal as refusal:  # shown here, in French; Synapse would show its own words
        return page(request, "erreur.html", {"title": t("portal.sso_refused"), "message": str(refusal)}, status=403)


@router.post(PREFIX + "/jeton")
async def token(request: Request) -> Response:
    form = {key: str(value) for key, value in (await request.form()).items()}
    try:
        answer = await sso_of(request).token(form, request.headers.get("authorization", ""))
    except TokenRefusal as refusal:
        return JSONResponse({"error": refusal.error}, status_code=refusal.status, headers={"Cache-Control": "no-store"})
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
