"""Access requests: an agent asks for another service's room, folder or calendar; the head of
that service decides in Matrix (through @documents); the grant runs until an optional last
day, then is taken back. Every step is audited.

Who decides: the chef de service of the service asked for, the direction, an admin —
nobody else (the bot relays the refusal). A room is granted by joining the agent to the
service's space and rooms (power 0); a folder or a calendar by the DAV servers' rights
(``DavAccess.publish`` reads the grants).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from maillage.i18n import t
from maillage.portal.db import AccessRequest, Agent, Service, ServiceRoom, audit, now_ms
from maillage.portal.errors import OrganisationError
from maillage.portal.organisation import FORMULA_STARTS, Organisation, rooms_of
from maillage.synapse_admin import AdminApiError

RESOURCES = ("salon", "dossier", "agenda")
RIGHTS = {"lecture": "r", "ecriture": "rw", "écriture": "rw", "read": "r", "write": "rw", "r": "r", "rw": "rw"}
DECIDERS = ("chef", "direction", "admin")
PENDING, GRANTED, REFUSED, EXPIRED = "en_attente", "accordee", "refusee", "expiree"
LONGEST_DAYS = 366


class DecisionRefused(OrganisationError):
    """The person deciding may not decide this request (403), or it is decided already (409)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Decision:
    number: int
    state: str
    requester_name: str
    resource: str
    service_name: str


@dataclass(frozen=True)
class Asked:
    requester: str  # Matrix ID
    service_key: str
    resource: str
    right: str  # lecture, écriture (or r, rw)
    until: str  # "" or a day: YYYY-MM-DD or DD/MM/YYYY
    reason: str


def read_day(text: str) -> date:
    text = text.strip()
    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise OrganisationError(t("access.until_invalid", value=text[:20]), "jusqu_au")


class AccessRequests:
    def __init__(self, organisation: Organisation) -> None:
        self.organisation = organisation
        self.database = organisation.database
        self.zone = ZoneInfo(organisation.config.collectivite.fuseau_horaire)

    def today(self) -> date:
        return datetime.now(self.zone).date()

    async def ask(self, asked: Asked) -> AccessRequest:
        resource = asked.resource.strip().lower()
        if resource not in RESOURCES:
            raise OrganisationError(t("access.resource_invalid"), "ressource")
        right = "r" if resource == "salon" else RIGHTS.get(asked.right.strip().lower() or "lecture", "")
        if not right:
            raise OrganisationError(t("access.right_invalid"), "droit")
        until = None
        if asked.until.strip():
            day = read_day(asked.until)
            if not self.today() <= day <= self.today() + timedelta(days=LONGEST_DAYS):
                raise OrganisationError(t("access.until_out_of_range", days=LONGEST_DAYS), "jusqu_au")
            until = day.isoformat()
        reason = " ".join(asked.reason.split())
        if not 5 <= len(reason) <= 300 or reason[0] in FORMULA_STARTS:
            raise OrganisationError(t("access.reason_invalid"), "motif")
        async with self.database.session() as session:
            agent = await _active(session, asked.requester)
            service = (await session.execute(select(Service).where(Service.key == asked.service_key.strip().lower(),
                                                                    Service.archived.is_(False)))).scalar_one_or_none()
            if service is None:
                raise OrganisationError(t("portal.agent_service_unknown"), "service")
            if service.id == agent.service_id:
                raise OrganisationError(t("access.own_service"), "service")
            twice = (await session.execute(select(AccessRequest.id).where(
                AccessRequest.agent_id == agent.id, AccessRequest.service_id == service.id,
                AccessRequest.resource == resource, AccessRequest.state.in_((PENDING, GRANTED))))).first()
            if twice is not None:
                raise OrganisationError(t("access.already_asked", number=twice[0]), "ressource")
            request = AccessRequest(agent_id=agent.id, service_id=service.id, resource=resource, right=right,
                                    reason=reason, until=until)
            session.add(request)
            await session.flush()
            audit(session, agent.user_id, "acces.demande", f"n°{request.id}",
                  after={"service": service.key, "ressource": resource, "droit": right, "jusqu_au": until,
                         "motif": reason})
            await session.commit()
            return request

    async def to_announce(self) -> list[dict[str, Any]]:
        """Requests not yet told in their service's team room, with what the bot says."""
        async with self.database.session() as session:
            rows = (await session.execute(
                select(AccessRequest, Agent, Service).join(Agent, Agent.id == AccessRequest.agent_id)
                .join(Service, Service.id == AccessRequest.service_id)
                .where(AccessRequest.state == PENDING, AccessRequest.announced.is_(False))
                .order_by(AccessRequest.id))).all()
            found = []
            for request, agent, service in rows:
                rooms = (await session.execute(select(ServiceRoom.room_id).where(
                    ServiceRoom.service_id == service.id, ServiceRoom.kind == "equipe"))).scalars().all()
                heads = (await session.execute(select(Agent.user_id).where(
                    Agent.service_id == service.id, Agent.role == "chef", Agent.active.is_(True)))).scalars().all()
                own = await session.get(Service, agent.service_id) if agent.service_id else None
                if rooms and rooms[0]:
                    found.append({"numero": request.id, "demandeur": agent.user_id, "nom": agent.display_name,
                                  "service_demandeur": own.name if own else "", "service": service.key,
                                  "nom_service": service.name, "salon": rooms[0], "responsables": list(heads),
                                  "ressource": request.resource, "droit": request.right,
                                  "jusqu_au": request.until, "motif": request.reason})
            return found

    async def announced(self, request_id: int) -> None:
        async with self.database.session() as session:
            request = await session.get(AccessRequest, request_id)
            if request is not None:
                request.announced = True
                await session.commit()

    async def decide(self, request_id: int, decider_id: str, accept: bool, note: str) -> Decision:
        note = " ".join(note.split())
        async with self.database.session() as session:
            request = await session.get(AccessRequest, request_id)
            if request is None:
                raise DecisionRefused(t("access.unknown", number=request_id), 404)
            if request.state != PENDING:
                raise DecisionRefused(t("access.already_decided", number=request_id,
                                        state=t(f"access.state_{request.state}")), 409)
            decider = (await session.execute(select(Agent).where(Agent.user_id == decider_id,
                                                                 Agent.active.is_(True)))).scalar_one_or_none()
            service = await session.get(Service, request.service_id)
            assert service is not None
            if decider is None or decider.role not in DECIDERS or (
                    decider.role == "chef" and decider.service_id != request.service_id):
                raise DecisionRefused(t("access.not_a_decider", service=service.name), 403)
            if not accept and len(note) < 3:
                raise OrganisationError(t("access.refusal_needs_reason"), "motif")
            requester = await session.get(Agent, request.agent_id)
            assert requester is not None
        if accept and request.resource == "salon":
            await self._join(requester.user_id, service)
        async with self.database.session() as session:
            row = await session.get(AccessRequest, request_id)
            assert row is not None
            row.state, row.decided_by, row.decided_at, row.decision_note = (
                GRANTED if accept else REFUSED, decider_id, now_ms(), note)
            audit(session, decider_id, "acces.accord" if accept else "acces.refus", f"n°{request_id}",
                  before={"etat": PENDING}, after={"etat": row.state, "demandeur": requester.user_id,
                                                   "service": service.key, "ressource": row.resource,
                                                   "droit": row.right, "jusqu_au": row.until, "motif": note})
            await session.commit()
        if accept:
            await self.organisation.dav.publish()
        return Decision(request_id, GRANTED if accept else REFUSED, requester.display_name, request.resource,
                        service.name)

    async def expire(self) -> int:
        """Grants past their last day taken back; how many."""
        today = self.today().isoformat()
        async with self.database.session() as session:
            due = (await session.execute(select(AccessRequest, Agent, Service)
                                         .join(Agent, Agent.id == AccessRequest.agent_id)
                                         .join(Service, Service.id == AccessRequest.service_id)
                                         .where(AccessRequest.state == GRANTED, AccessRequest.until.is_not(None),
                                                AccessRequest.until < today))).all()
        for request, agent, service in due:
            if request.resource == "salon" and agent.service_id != service.id:  # not if they moved there
                await self._leave(agent.user_id, service)
            async with self.database.session() as session:
                row = await session.get(AccessRequest, request.id)
                assert row is not None
                row.state = EXPIRED
                audit(session, "portail", "acces.expiration", f"n°{request.id}",
                      before={"etat": GRANTED}, after={"etat": EXPIRED, "demandeur": agent.user_id,
                                                       "service": service.key, "ressource": request.resource})
                await session.commit()
        if due:
            await self.organisation.dav.publish()
        return len(due)

    async def of_agent(self, user_id: str) -> list[tuple[AccessRequest, Service]]:
        async with self.database.session() as session:
            return [(request, service) for request, service in (await session.execute(
                select(AccessRequest, Service).join(Service, Service.id == AccessRequest.service_id)
                .join(Agent, Agent.id == AccessRequest.agent_id).where(Agent.user_id == user_id)
                .order_by(AccessRequest.id.desc()))).tuples()]

    async def _join(self, user_id: str, service: Service) -> None:
        async with self.database.session() as session:
            rooms = await rooms_of(session, service)
        try:
            async with self.organisation.synapse() as admin:
                for room_id in rooms:
                    await admin.force_join(room_id, user_id)
        except AdminApiError as exc:
            raise OrganisationError(t("access.apply_failed", detail=f"Synapse {exc.status}")) from None

    async def _leave(self, user_id: str, service: Service) -> None:
        async with self.database.session() as session:
            rooms = await rooms_of(session, service)
        async with self.organisation.synapse() as admin:
            for room_id in reversed(rooms):
                await admin.kick(room_id, user_id, t("access.expired_reason"))


async def _active(session: AsyncSession, user_id: str) -> Agent:
    agent = (await session.execute(select(Agent).where(Agent.user_id == user_id,
                                                       Agent.active.is_(True)))).scalar_one_or_none()
    if agent is None:
        raise OrganisationError(t("access.requester_unknown"))
    return agent
