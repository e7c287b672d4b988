"""« Vérification »: the portal compared with Synapse and the DAV servers, repaired on request.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from maillage.i18n import t
from maillage.portal.drift import UNREACHABLE, DriftCheck, Gap, Repaired
from maillage.portal.web import Admin, Csrf, check_csrf, page, portal_of

router = APIRouter(include_in_schema=False)  # pages: not in the API's OpenAPI description


def drift_page(request: Request, *, gaps: list[Gap] | None = None, repaired: list[Repaired] | None = None,
               error: str = "") -> Response:
    return page(request, "verification.html", {"section": "verification", "gaps": gaps, "repaired": repaired,
                                               "error": error})


@router.get("/verification", response_class=HTMLResponse)
async def drift(request: Request, user: Admin) -> Response:
    return drift_page(request)


@router.post("/verification", response_class=HTMLResponse)
async def check(request: Request, user: Admin, csrf: Csrf = "") -> Response:
    check_csrf(user, csrf)
    try:
        return drift_page(request, gaps=await DriftCheck(portal_of(request).organisation).find())
    except UNREACHABLE as exc:  # said, nothing changed
        return drift_page(request, error=t("drift.unreachable", detail=type(exc).__name__))


@router.post("/verification/reparer", response_class=HTMLResponse)
async def repair(request: Request, user: Admin, csrf: Csrf = "") -> Response:
    check_csrf(user, csrf)
    checker = DriftCheck(portal_of(request).organisation)
    try:  # found again: what is repaired is what differs now, not what differed a while ago
        return drift_page(request, repaired=await checker.repair(user.email, await checker.find()))
    except UNREACHABLE as exc:
        return drift_page(request, error=t("drift.unreachable", detail=type(exc).__name__))
