"""The agents' CSV import: the file checked whole, confirmed, run in the background with its
progress; the first passwords taken once.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

import csv
import io
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from maillage.i18n import t
from maillage.portal import imports
from maillage.portal.db import audit
from maillage.portal.web import Admin, Csrf, check_csrf, csv_cell, page, portal_of

router = APIRouter(include_in_schema=False)  # pages: not in the API's OpenAPI description


# --- CSV import ------------------------------------------------------------------------


@router.get("/agents/import", response_class=HTMLResponse)
async def import_form(request: Request, user: Admin) -> Response:
    return page(request, "import.html", {"section": "agents", "errors": {}})


@router.post("/agents/import", response_class=HTMLResponse)
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


@router.post("/agents/import/{job_id}/lancer")
async def import_start(request: Request, job_id: int, user: Admin, csrf: Csrf = "") -> Response:
    check_csrf(user, csrf)
    portal = portal_of(request)
    if await imports.confirm(portal.database, job_id, user.email) or \
            await imports.restart_interrupted(portal.database, job_id):
        portal.in_background(imports.run(portal.organisation, portal.database, job_id))
    return RedirectResponse(f"/agents/import/{job_id}", status_code=303)


@router.get("/agents/import/{job_id}", response_class=HTMLResponse)
async def import_progress(request: Request, job_id: int, user: Admin) -> Response:
    found = await imports.progress(portal_of(request).database, job_id)
    if found is None:
        raise StarletteHTTPException(404)
    return page(request, "import_suivi.html", {"section": "agents", "progress": found,
                                                "dev_provider": not portal_of(request).config.portail.oidc_emetteur})


@router.get("/agents/import/{job_id}/etat")
async def import_state(request: Request, job_id: int, user: Admin) -> dict[str, Any]:
    found = await imports.progress(portal_of(request).database, job_id)
    if found is None:
        raise StarletteHTTPException(404)
    return {"etat": found.job.state, "total": found.job.total, "faits": found.done,
            "erreurs": [{"ligne": row.line, "message": row.message} for row in found.failed]}


@router.post("/agents/import/{job_id}/mots-de-passe")
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
