"""``/partage/<token>``: a document given by a share link, to anyone who has the link.

No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases.
"""

import mimetypes
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from maillage.i18n import t
from maillage.portal.links import LinkGone
from maillage.portal.web import page, portal_of

router = APIRouter(include_in_schema=False)


@router.get("/partage/{token}")
async def download(request: Request, token: str) -> Response:
    address = request.client.host if request.client else ""
    try:
        found = await portal_of(request).links.open(token[:200], address)
    except LinkGone as gone:
        return page(request, "erreur.html", {"title": t("links.gone_title"), "message": str(gone)},
                    status=gone.status)
    ascii_name = found.name.encode("ascii", "replace").decode().replace('"', "_")
    return StreamingResponse(found.chunks, media_type=mimetypes.guess_type(found.name)[0] or "application/octet-stream",
                             headers={"Content-Length": str(found.size), "Referrer-Policy": "no-referrer",
                                      "Content-Disposition": f'attachment; filename="{ascii_name}"; '
                                                             f"filename*=UTF-8''{quote(found.name)}"})
