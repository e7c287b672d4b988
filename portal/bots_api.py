"""The portal's API for the bots (``/api/robots``, not in the public OpenAPI): access requests
made and decided in Matrix through @documents, and the share links it asks for.

The bots show the stack's ``portal_bots_token``; they act for the Matrix user who typed the
command, whose right to do it the portal checks (an agent asks for themselves; only the head
of the service asked for, the direction or an admin decide).
"""

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from maillage.i18n import t
from maillage.portal.access import AccessRequests, Asked, DecisionRefused
from maillage.portal.api import ApiRefused
from maillage.portal.errors import OrganisationError
from maillage.portal.links import LinkAsked, ShareLinks


class AskBody(BaseModel):
    demandeur: str = Field(max_length=255)
    service: str = Field(max_length=40)
    ressource: str = Field(max_length=20)
    droit: str = Field(default="", max_length=20)
    jusqu_au: str = Field(default="", max_length=20)
    motif: str = Field(default="", max_length=1000)


class LinkBody(BaseModel):
    cle: str = Field(min_length=1, max_length=255)
    chemin: str = Field(min_length=1, max_length=1000)
    salon: str = Field(min_length=1, max_length=255)
    auteur: str = Field(min_length=1, max_length=255)
    jours: int = 7


class RevocationBody(BaseModel):
    salon: str = Field(min_length=1, max_length=255)
    auteur: str = Field(min_length=1, max_length=255)


class DecisionBody(BaseModel):
    decideur: str = Field(max_length=255)
    accord: bool
    motif: str = Field(default="", max_length=1000)


def bots_router(requests_of: Callable[[Request], AccessRequests], links_of: Callable[[Request], ShareLinks],
                token: str) -> APIRouter:
    router = APIRouter(prefix="/api/robots", include_in_schema=False)

    def check(authorization: str) -> None:
        offered = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        if not token or not offered or not hmac.compare_digest(offered.encode(), token.encode()):
            raise ApiRefused(401, t("api.token_missing"))

    @router.get("/acces/annonces")
    async def to_announce(request: Request, authorization: Annotated[str, Header()] = "") -> list[dict[str, Any]]:
        check(authorization)
        return await requests_of(request).to_announce()

    @router.post("/acces/{request_id}/annoncee")
    async def announced(request: Request, request_id: int, authorization: Annotated[str, Header()] = ""
                        ) -> dict[str, str]:
        check(authorization)
        await requests_of(request).announced(request_id)
        return {"etat": "ok"}

    @router.post("/acces", status_code=201)
    async def ask(request: Request, body: AskBody, authorization: Annotated[str, Header()] = "") -> dict[str, int]:
        check(authorization)
        try:
            made = await requests_of(request).ask(Asked(body.demandeur, body.service, body.ressource, body.droit,
                                                        body.jusqu_au, body.motif))
        except OrganisationError as exc:
            raise ApiRefused(422, exc.message, exc.field) from None
        return {"numero": made.id}

    @router.post("/acces/{request_id}/decision")
    async def decide(request: Request, request_id: int, body: DecisionBody,
                     authorization: Annotated[str, Header()] = "") -> dict[str, Any]:
        check(authorization)
        try:
            decided = await requests_of(request).decide(request_id, body.decideur, body.accord, body.motif)
        except DecisionRefused as exc:
            raise ApiRefused(exc.status, exc.message) from None
        except OrganisationError as exc:
            raise ApiRefused(422, exc.message, exc.field) from None
        return {"numero": decided.number, "etat": decided.state, "nom": decided.requester_name,
                "ressource": decided.resource, "nom_service": decided.service_name}

    @router.post("/liens", status_code=201)
    async def make_link(request: Request, body: LinkBody, authorization: Annotated[str, Header()] = ""
                        ) -> dict[str, Any]:
        check(authorization)
        try:
            link, url = await links_of(request).make(LinkAsked(body.cle, body.chemin, body.salon, body.auteur,
                                                               body.jours))
        except OrganisationError as exc:
            raise ApiRefused(422, exc.message, exc.field) from None
        return {"numero": link.id, "url": url, "nom": link.name, "expire": link.expires_at}

    @router.get("/liens")
    async def room_links(request: Request, salon: str, authorization: Annotated[str, Header()] = ""
                         ) -> list[dict[str, Any]]:
        check(authorization)
        return [{"numero": link.id, "nom": link.name, "auteur": link.created_by, "expire": link.expires_at,
                 "telechargements": link.downloads} for link in await links_of(request).of_room(salon)]

    @router.post("/liens/{number}/retrait")
    async def revoke_link(request: Request, number: int, body: RevocationBody,
                          authorization: Annotated[str, Header()] = "") -> dict[str, Any]:
        check(authorization)
        try:
            link = await links_of(request).revoke(number, body.salon, body.auteur)
        except OrganisationError as exc:
            raise ApiRefused(404, exc.message) from None
        return {"numero": link.id, "nom": link.name, "auteur": link.created_by}

    return router
