"""The portal's HTTP API (``/api/v1``), for the collectivité's HR or directory tools.

The same operations as the pages, through the same write path, documented by OpenAPI
(``/api/docs``). A request carries ``Authorization: Bearer <jeton>``: a token an
administrator made on the « Jetons d’API » page, acting for them (the audit says which
token). Errors are JSON with a French ``detail`` and, for a wrong value, the ``champ`` at fault.
"""


from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from maillage.i18n import t
from maillage.portal.auth import digest
from maillage.portal.db import ROLES, Agent, ApiToken, Database, Service
from maillage.portal.errors import OrganisationError
from maillage.portal.organisation import NewAgent, Organisation, audit_entries


class ServiceIn(BaseModel):
    cle: str = Field(description="Identifiant : minuscules, chiffres, tirets (3 à 40)", max_length=200)
    nom: str = Field(description="Nom du service, tel que les agents le lisent", max_length=500)


class ServiceOut(BaseModel):
    cle: str
    nom: str
    espace: str | None = Field(description="Identifiant de l’espace Matrix")
    pret: bool = Field(description="Toutes les étapes de création sont faites")
    archive: bool


class AgentIn(BaseModel):
    email: str = Field(max_length=400)
    prenom: str = Field(max_length=200)
    nom: str = Field(max_length=200)
    service: str = Field(description="Identifiant du service", max_length=200)
    role: str = Field(default="agent", description="agent, chef, direction, elu ou admin", max_length=40,
                      json_schema_extra={"enum": list(ROLES)})


class AgentOut(BaseModel):
    identifiant_matrix: str
    email: str
    nom: str
    service: str | None
    role: str
    actif: bool


class AuditOut(BaseModel):
    quand_ms: int
    qui: str
    action: str
    objet: str
    avant: str
    apres: str


class Problem(BaseModel):
    detail: str
    champ: str = ""


class ApiRefused(Exception):
    def __init__(self, status: int, detail: str, field: str = "") -> None:
        self.status, self.detail, self.field = status, detail, field


def api_router(database_of: Callable[[Request], Database], organisation_of: Callable[[Request], Organisation],
               is_admin: Callable[[str], Awaitable[bool]]) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["portail"],
                       responses={401: {"model": Problem}, 403: {"model": Problem}})

    async def caller(request: Request, authorization: Annotated[str, Header()] = "") -> str:
        """Who acts: the token's administrator, named with the token in the audit."""
        if not authorization.lower().startswith("bearer ") or len(authorization) > 300:
            raise ApiRefused(401, t("api.token_missing"))
        async with database_of(request).session() as session:
            token = (await session.execute(select(ApiToken).where(
                ApiToken.token_hash == digest(authorization[7:].strip()), ApiToken.revoked.is_(False)))
            ).scalar_one_or_none()
        if token is None:
            raise ApiRefused(401, t("api.token_unknown"))
        if not await is_admin(token.created_by):
            raise ApiRefused(403, t("api.token_owner_not_admin"))
        return f"{token.created_by} (jeton « {token.name} »)"

    Caller = Annotated[str, Depends(caller)]

    @router.get("/services", response_model=list[ServiceOut], summary="Les services")
    async def services(request: Request, who: Caller) -> list[ServiceOut]:
        async with database_of(request).session() as session:
            rows = (await session.execute(select(Service).order_by(Service.key))).scalars().all()
        return [ServiceOut(cle=s.key, nom=s.name, espace=s.space_id, pret=s.provisioned, archive=s.archived)
                for s in rows]

    @router.post("/services", status_code=201, response_model=ServiceOut, summary="Créer un service",
                 responses={422: {"model": Problem}, 502: {"model": Problem}})
    async def create_service(request: Request, body: ServiceIn, who: Caller) -> ServiceOut:
        try:
            service = await organisation_of(request).create_service(who, body.cle, body.nom)
        except OrganisationError as exc:
            raise ApiRefused(422 if exc.field else 502, exc.message, exc.field) from None
        return ServiceOut(cle=service.key, nom=service.name, espace=service.space_id, pret=service.provisioned,
                          archive=service.archived)

    @router.get("/agents", response_model=list[AgentOut], summary="Les agents")
    async def agents(request: Request, who: Caller) -> list[AgentOut]:
        async with database_of(request).session() as session:
            keys = dict((await session.execute(select(Service.id, Service.key))).all())
            rows = (await session.execute(select(Agent).order_by(Agent.user_id))).scalars().all()
        return [AgentOut(identifiant_matrix=a.user_id, email=a.email, nom=a.display_name,
                         service=keys.get(a.service_id) if a.service_id else None, role=a.role, actif=a.active)
                for a in rows]

    @router.post("/agents", status_code=201, response_model=AgentOut, summary="Créer un agent",
                 responses={422: {"model": Problem}, 502: {"model": Problem}})
    async def create_agent(request: Request, body: AgentIn, who: Caller) -> AgentOut:
        try:
            created = await organisation_of(request).create_agent(
                who, NewAgent(body.email, body.prenom, body.nom, body.service, body.role))
        except OrganisationError as exc:
            raise ApiRefused(422 if exc.field else 502, exc.message, exc.field) from None
        async with database_of(request).session() as session:
            agent = (await session.execute(select(Agent).where(Agent.user_id == created.user_id))).scalar_one()
        return AgentOut(identifiant_matrix=agent.user_id, email=agent.email, nom=agent.display_name,
                        service=body.service, role=agent.role, actif=agent.active)

    @router.get("/journal", response_model=list[AuditOut], summary="Le journal des actions")
    async def journal(request: Request, who: Caller,
                      q: Annotated[str, Query(max_length=200, description="Texte cherché")] = "",
                      limite: Annotated[int, Query(ge=1, le=10_000)] = 500) -> list[AuditOut]:
        rows = await audit_entries(database_of(request), q, limite)
        return [AuditOut(quand_ms=e.at, qui=e.actor, action=e.action, objet=e.target, avant=e.before, apres=e.after)
                for e in rows]

    return router


def refused_answer(exc: ApiRefused) -> JSONResponse:
    body: dict[str, Any] = {"detail": exc.detail}
    if exc.field:
        body["champ"] = exc.field
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    return JSONResponse(body, status_code=exc.status, headers=headers)
