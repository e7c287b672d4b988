"""The audit log: searched, exported as CSV (no cell a spreadsheet would take for a formula).

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

import csv
import io

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from maillage.i18n import t
from maillage.portal.organisation import audit_entries
from maillage.portal.pages import when
from maillage.portal.web import Admin, csv_cell, page, portal_of

router = APIRouter(include_in_schema=False)  # pages: not in the API's OpenAPI description


@router.get("/journal", response_class=HTMLResponse)
async def audit_log(request: Request, user: Admin, q: str = "") -> Response:
    entries = await audit_entries(portal_of(request).database, q)
    return page(request, "journal.html", {"entries": entries, "q": q, "section": "journal"})


@router.get("/journal.csv")
async def audit_csv(request: Request, user: Admin, q: str = "") -> Response:
    entries = await audit_entries(portal_of(request).database, q, limit=100_000)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow([t("portal.audit_when"), t("portal.audit_who"), t("portal.audit_what"),
                     t("portal.audit_target"), t("portal.audit_before"), t("portal.audit_after")])
    for entry in entries:
        writer.writerow([csv_cell(value) for value in (when(entry.at), entry.actor, entry.action, entry.target,
                                                        entry.before, entry.after)])
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="journal-maillage.csv"'})
