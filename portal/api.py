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
from maillage.portal.partners import NewExternal, Partners


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


class AgentChange(BaseModel):
    service: str = Field(description="Identifiant du nouveau service", max_length=200)
    role: str = Field(description="agent, chef, direction, elu ou admin", max_length=40,
                      json_schema_extra={"enum": list(ROLES)})


class ServiceName(BaseModel):
    nom: str = Field(description="Nouveau nom du service", max_length=500)


class ExternalIn(BaseModel):
    identifiant: str = Field(description="Partie locale de l’adresse Matrix", max_length=200)
    nom: str = Field(max_length=500)
    email: str = Field(default="", max_length=400)
    organisme: str = Field(default="", max_length=500)
    type: str = Field(default="partenaire", json_schema_extra={"enum": ["partenaire", "administre"]}, max_length=40)
    dernier_jour: str = Field(description="AAAA-MM-JJ, au plus un an", max_length=40)


class ExternalOut(BaseModel):
    identifiant_matrix: str
    nom: str
    organisme: str
    type: str
    dernier_jour: str
    mot_de_passe: str = Field(default="", description="Premier mot de passe, à la création seulement")


class LastDay(BaseModel):
    dernier_jour: str = Field(description="AAAA-MM-JJ ; « aujourd’hui » passé, le compte est clos", max_length=40)


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
               partners_of: Callable[[Request], Partners], is_admin: Callable[[str], Awaitable[bool]]) -> APIRouter:
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

    async def agent_out(request: Request, user_id: str) -> AgentOut:
        async with database_of(request).session() as session:
            agent = (await session.execute(select(Agent).where(Agent.user_id == user_id))).scalar_one_or_none()
            if agent is None:
                raise ApiRefused(404, t("portal.agent_unknown"))
            service = await session.get(Service, agent.service_id) if agent.service_id else None
        return AgentOut(identifiant_matrix=agent.user_id, email=agent.email, nom=agent.display_name,
                        service=service.key if service else None, role=agent.role, actif=agent.active)

    @router.get("/agents/{identifiant_matrix}", response_model=AgentOut, summary="Un agent",
                responses={404: {"model": Problem}})
    async def agent(request: Request, identifiant_matrix: str, who: Caller) -> AgentOut:
        return await agent_out(request, identifiant_matrix)

    @router.patch("/agents/{identifiant_matrix}", response_model=AgentOut,
                  summary="Changer le service ou le rôle d’un agent (salons, pouvoirs et droits suivent)",
                  responses={404: {"model": Problem}, 409: {"model": Problem}, 422: {"model": Problem},
                             502: {"model": Problem}})
    async def change_agent(request: Request, identifiant_matrix: str, body: AgentChange, who: Caller) -> AgentOut:
        if not (await agent_out(request, identifiant_matrix)).actif:
            raise ApiRefused(409, t("portal.agent_unknown"))
        try:
            await organisation_of(request).change_agent(who, identifiant_matrix, body.service, body.role)
        except OrganisationError as exc:
            raise ApiRefused(422 if exc.field else 502, exc.message, exc.field) from None
        return await agent_out(request, identifiant_matrix)

    @router.post("/agents/{identifiant_matrix}/depart", response_model=AgentOut,
                 summary="Enregistrer le départ d’un agent (compte fermé, messages gardés, accès DAV retirés)",
                 responses={404: {"model": Problem}, 409: {"model": Problem}, 502: {"model": Problem}})
    async def offboard(request: Request, identifiant_matrix: str, who: Caller) -> AgentOut:
        if not (await agent_out(request, identifiant_matrix)).actif:
            raise ApiRefused(409, t("portal.agent_unknown"))
        try:
            await organisation_of(request).offboard(who, identifiant_matrix)
        except OrganisationError as exc:
            raise ApiRefused(422 if exc.field else 502, exc.message, exc.field) from None
        return await agent_out(request, identifiant_matrix)

    async def service_out(request: Request, key: str) -> ServiceOut:
        async with database_of(request).session() as session:
            service = (await session.execute(select(Service).where(Service.key == key))).scalar_one_or_none()
        if service is None:
            raise ApiRefused(404, t("portal.service_unknown"))
        return ServiceOut(cle=service.key, nom=service.name, espace=service.space_id, pret=service.provisioned,
                          archive=service.archived)

    @router.patch("/services/{cle}", response_model=ServiceOut, summary="Renommer un service",
                  responses={404: {"model": Problem}, 422: {"model": Problem}, 502: {"model": Problem}})
    async def rename_service(request: Request, cle: str, body: ServiceName, who: Caller) -> ServiceOut:
        await service_out(request, cle)
        try:
            await organisation_of(request).rename_service(who, cle, body.nom)
        except OrganisationError as exc:
            raise ApiRefused(422 if exc.field else 502, exc.message, exc.field) from None
        return await service_out(request, cle)

    @router.post("/services/{cle}/archivage", response_model=ServiceOut,
                 summary="Archiver un service (salons en lecture seule, données gardées ; sans agents)",
                 responses={404: {"model": Problem}, 422: {"model": Problem}, 502: {"model": Problem}})
    async def archive_service(request: Request, cle: str, who: Caller) -> ServiceOut:
        await service_out(request, cle)
        try:
            await organisation_of(request).archive_service(who, cle)
        except OrganisationError as exc:
            raise ApiRefused(422, exc.message, exc.field) from None
        return await service_out(request, cle)

    @router.get("/externes", response_model=list[ExternalOut], summary="Les comptes externes")
    async def externals(request: Request, who: Caller) -> list[ExternalOut]:
        return [ExternalOut(identifiant_matrix=e.user_id, nom=e.display_name, organisme=e.organisation, type=e.kind,
                            dernier_jour=e.last_day) for e in await partners_of(request).externals()]

    @router.post("/externes", status_code=201, response_model=ExternalOut,
                 summary="Créer un compte externe (partenaire, administré) jusqu’à son dernier jour",
                 responses={422: {"model": Problem}, 502: {"model": Problem}})
    async def create_external(request: Request, body: ExternalIn, who: Caller) -> ExternalOut:
        try:
            user_id, password = await partners_of(request).create_external(who, NewExternal(
                body.identifiant, body.nom, body.email, body.organisme, body.type, body.dernier_jour))
        except OrganisationError as exc:
            raise ApiRefused(422 if exc.field else 502, exc.message, exc.field) from None
        made = next(e for e in await partners_of(request).externals() if e.user_id == user_id)
        return ExternalOut(identifiant_matrix=user_id, nom=made.display_name, organisme=made.organisation,
                           type=made.kind, dernier_jour=made.last_day, mot_de_passe=password)

    @router.patch("/externes/{identifiant_matrix}", response_model=ExternalOut,
                  summary="Changer le dernier jour d’un compte externe",
                  responses={404: {"model": Problem}, 422: {"model": Problem}})
    async def external_last_day(request: Request, identifiant_matrix: str, body: LastDay, who: Caller
                                ) -> ExternalOut:
        try:
            await partners_of(request).set_last_day(who, identifiant_matrix, body.dernier_jour)
        except OrganisationError as exc:
            raise ApiRefused(422 if exc.field else 404, exc.message, exc.field) from None
        found = next(e for e in await partners_of(request).externals() if e.user_id == identifiant_matrix)
        return ExternalOut(identifiant_matrix=found.user_id, nom=found.display_name, organisme=found.organisation,
                           type=found.kind, dernier_jour=found.last_day)

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
