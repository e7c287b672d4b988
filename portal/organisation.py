"""The one write path for the organisation: services and agents, pushed everywhere they live.

Creating a service makes its Matrix space and team room (joined through the space:
restricted join rule), its WebDAV folder, its calendar and task list on the CalDAV
server, and binds the bots to them through the room's state. Each step is recorded when
done, so a creation cut short (a server down, a crash) is resumed by running it again,
never repeated. Creating an agent makes their Matrix account linked to their identity at
the OIDC provider, and puts them in their service's space and rooms with the power of
their role.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from maillage.bots.caldav.client import CalDav, CalDavError
from maillage.bots.documents.webdav import WebDav, WebDavError
from maillage.config import Config, url_host
from maillage.i18n import t
from maillage.portal.dav import DavAccess
from maillage.portal.db import (
    Agent,
    AppPassword,
    AuditEntry,
    Database,
    ProvisioningStep,
    Service,
    ServiceRoom,
    WebSession,
    audit,
    now_ms,
)
from maillage.portal.errors import OrganisationError
from maillage.portal.idp_dev import Directory
from maillage.portal.idp_dev import first_password as first_password_for_dev
from maillage.secretstore import Secrets
from maillage.synapse_admin import AdminApiError, SynapseAdmin

IDP_ID = "oidc-maillage"  # Synapse's name for the provider (idp_id « maillage »)
POWER_OF_ROLE = {"agent": 0, "elu": 0, "chef": 50, "direction": 75, "admin": 100}
BOT_POWER = 50
SERVICE_KEY = re.compile(r"[a-z][a-z0-9-]{1,38}[a-z0-9]")
LOCALPART = re.compile(r"[a-z0-9._=-]{1,60}")
EMAIL = re.compile(r"[^@\s]{1,64}@[a-z0-9.-]{1,253}\.[a-z]{2,63}")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
TEAM_ROOM = "equipe"
MAILBOX_EVENT = "fr.maillage.courriel"  # the email bridge's addresses of a room
MAILBOX = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
READ_ONLY = 100  # an archived service's rooms: only admins could still post


@dataclass(frozen=True)
class NewAgent:
    email: str
    given_name: str
    usual_name: str
    service_key: str
    role: str


@dataclass(frozen=True)
class CreatedAgent:
    user_id: str
    # The first password at the development provider, shown once to the admin; empty with
    # ProConnect or Keycloak, where the agent already has their identity.
    first_password: str


class Organisation:
    def __init__(self, config: Config, stack_secrets: Secrets, database: Database,
                 admin_token: Callable[[], Awaitable[str]], directory: Directory | None) -> None:
        self.config = config
        self.secrets = stack_secrets
        self.database = database
        self.admin_token = admin_token
        self.directory = directory  # the development provider's accounts, when it is the provider
        self._power_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._synapse: SynapseAdmin | None = None
        self.dav = DavAccess(config, database)

    @asynccontextmanager
    async def synapse(self) -> AsyncIterator[SynapseAdmin]:
        """The Admin API through one client kept open (its connections reused across requests)."""
        if self._synapse is None:
            self._synapse = SynapseAdmin(self.config.synapse_url, await self.admin_token())
        yield self._synapse

    async def close(self) -> None:
        if self._synapse is not None:
            await self._synapse.__aexit__()

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.config.collectivite.nom_serveur}"

    # --- services ---------------------------------------------------------------------------

    async def create_service(self, actor: str, key: str, name: str) -> Service:
        key, name = key.strip().lower(), " ".join(name.split())
        if not SERVICE_KEY.fullmatch(key):
            raise OrganisationError(t("portal.service_key_invalid"), "cle")
        if not 2 <= len(name) <= 120:
            raise OrganisationError(t("portal.service_name_invalid"), "nom")
        async with self.database.session() as session:
            if (await session.execute(select(Service).where(Service.key == key))).scalar_one_or_none():
                raise OrganisationError(t("portal.service_key_taken", key=key), "cle")
            service = Service(key=key, name=name)
            session.add(service)
            await session.flush()
            session.add(ServiceRoom(service_id=service.id, kind=TEAM_ROOM, name=t("portal.team_room", service=name)))
            audit(session, actor, "service.creation", key, after={"cle": key, "nom": name})
            await session.commit()
        return await self.provision(service.id)

    async def provision(self, service_id: int) -> Service:
        """Every step of the service not done yet; raises OrganisationError naming the one that failed."""
        async with self.database.session() as session:
            service = await session.get(Service, service_id)
            assert service is not None
            done = {row.step: row.value for row in (await session.execute(
                select(ProvisioningStep).where(ProvisioningStep.service_id == service_id))).scalars()}
            rooms = list((await session.execute(
                select(ServiceRoom).where(ServiceRoom.service_id == service_id))).scalars())
        steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [("espace", lambda: self._make_space(service))]
        for room in rooms:
            steps.append((f"salle:{room.kind}", _bound(self._make_room, service, room, done)))
        steps += [("dossier", lambda: self.make_folder(service)),
                  ("agenda", lambda: self.make_list(service.key, service.name, "VEVENT")),
                  ("taches", lambda: self.make_list(f"{service.key}-taches",
                                                     t("portal.task_list", service=service.name), "VTODO"))]
        team = next(room for room in rooms if room.kind == TEAM_ROOM)
        steps += [(f"liaison:{bot}", _bound(self._bind, bot, event, content, team, done))
                  for bot, event, content in self.bindings_of(service)]
        for step, work in steps:
            if step in done:
                continue
            try:
                value = await work()
            except (AdminApiError, WebDavError, CalDavError, OSError) as exc:
                raise OrganisationError(t("portal.provisioning_failed", step=t(f"portal.step_{step.split(':')[0]}"),
                                          service=service.name, detail=_short(exc))) from None
            done[step] = value
            async with self.database.session() as session:
                session.add(ProvisioningStep(service_id=service_id, step=step, value=value))
                if step == "espace":
                    (await session.get(Service, service_id)).space_id = value  # type: ignore[union-attr]
                if step.startswith("salle:"):
                    room_row = await session.get(ServiceRoom, next(r.id for r in rooms if f"salle:{r.kind}" == step))
                    room_row.room_id = value  # type: ignore[union-attr]
                await session.commit()
        async with self.database.session() as session:
            refreshed = await session.get(Service, service_id)
            assert refreshed is not None
            refreshed.provisioned = True
            await session.commit()
            return refreshed

    async def rename_service(self, actor: str, key: str, name: str) -> None:
        """A new name for the service, its space and its rooms (its identifier, folder, calendar
        and task list keep theirs: apps and links that know them go on working)."""
        name = " ".join(name.split())
        if not 2 <= len(name) <= 120:
            raise OrganisationError(t("portal.service_name_invalid"), "nom")
        async with self.database.session() as session:
            service = await _service(session, key)
            rooms = list((await session.execute(select(ServiceRoom).where(ServiceRoom.service_id == service.id)
                                                )).scalars())
        if name == service.name:
            return
        named = [(service.space_id, name)] + [
            (room.room_id, t("portal.team_room", service=name)) for room in rooms if room.kind == TEAM_ROOM]
        try:
            async with self.synapse() as admin:
                for room_id, room_name in named:
                    if room_id:
                        await admin.send_state(room_id, "m.room.name", "", {"name": room_name})
        except AdminApiError as exc:
            raise OrganisationError(t("portal.service_change_failed", detail=_short(exc))) from None
        async with self.database.session() as session:
            row = await session.get(Service, service.id)
            assert row is not None
            row.name = name
            for room in rooms:
                if room.kind == TEAM_ROOM:
                    room_row = await session.get(ServiceRoom, room.id)
                    assert room_row is not None
                    room_row.name = t("portal.team_room", service=name)
            audit(session, actor, "service.renommage", key, before={"nom": service.name}, after={"nom": name})
            await session.commit()

    def mail_domain(self) -> str:
        return (self.config.courriel.domaine or self.config.collectivite.nom_serveur.rsplit(":", 1)[0]).lower()

    async def _team_rooms(self, key: str) -> tuple[Service, dict[int, str], dict[int, str]]:
        """The service, every service's team room, every service's name."""
        async with self.database.session() as session:
            service = await _service(session, key)
            teams = {room.service_id: room.room_id for room in (await session.execute(
                select(ServiceRoom).where(ServiceRoom.kind == TEAM_ROOM))).scalars() if room.room_id}
            names = dict((await session.execute(select(Service.id, Service.name))).tuples().all())
        return service, teams, names

    async def mailboxes(self, key: str) -> list[str] | None:
        """The full addresses of the service's team room; None when Synapse cannot say now."""
        service, teams, _ = await self._team_rooms(key)
        team = teams.get(service.id)
        if team is None:
            return []
        try:
            async with self.synapse() as admin:
                return [f"{local}@{self.mail_domain()}" for local in await _mailboxes(admin, team)]
        except (AdminApiError, OSError):
            return None

    async def add_mailbox(self, actor: str, key: str, local: str) -> str:
        """An email address for the service's team room (the bridge's ``!mail adresse``, from the
        portal): @courriel invited with the power to keep it, the address added to the room's
        state; refused when another service's room has it. The full address."""
        local = local.strip().lower()
        if not MAILBOX.fullmatch(local) or ".." in local:
            raise OrganisationError(t("portal.mailbox_invalid"), "adresse")
        service, teams, names = await self._team_rooms(key)
        team = teams.get(service.id)
        if team is None:
            raise OrganisationError(t("portal.service_unknown"))
        address = f"{local}@{self.mail_domain()}"
        try:
            async with self.synapse() as admin:
                for service_id, room_id in teams.items():
                    if service_id != service.id and local in await _mailboxes(admin, room_id):
                        raise OrganisationError(t("portal.mailbox_taken", address=address,
                                                  service=names.get(service_id, "?")), "adresse")
                current = await _mailboxes(admin, team)
                if local not in current:
                    await bind_room(admin, team, self.user_id("courriel"), MAILBOX_EVENT,
                                    {**await _mailbox_state(admin, team), "adresses": sorted([*current, local])})
        except AdminApiError as exc:
            raise OrganisationError(t("portal.service_change_failed", detail=_short(exc))) from None
        async with self.database.session() as session:
            audit(session, actor, "service.courriel", key, after={"adresse": address})
            await session.commit()
        return address

    async def remove_mailbox(self, actor: str, key: str, address: str) -> str:
        """The address no longer leads to the service's team room (mail to it is then refused at
        RCPT, 550); the messages already in the room stay. The full address."""
        local = address.strip().lower().split("@", 1)[0]
        service, teams, _ = await self._team_rooms(key)
        team = teams.get(service.id)
        full = f"{local}@{self.mail_domain()}"
        try:
            async with self.synapse() as admin:
                current = await _mailboxes(admin, team) if team else []
                if local not in current:
                    raise OrganisationError(t("portal.mailbox_not_here", address=full[:120]), "adresse")
                assert team is not None
                await admin.send_state(team, MAILBOX_EVENT, "", {
                    **await _mailbox_state(admin, team), "adresses": [a for a in current if a != local]})
        except AdminApiError as exc:
            raise OrganisationError(t("portal.service_change_failed", detail=_short(exc))) from None
        async with self.database.session() as session:
            audit(session, actor, "service.courriel.retrait", key, before={"adresse": full})
            await session.commit()
        return full

    async def archive_service(self, actor: str, key: str) -> None:
        """The service closed, its data kept: its rooms read-only (history readable, nobody
        posts), its folder, calendar and task list left as they are for the stack's account
        (and the bots), out of agents' DAV rights. Its agents must have been moved first."""
        async with self.database.session() as session:
            service = await _service(session, key)
            active = (await session.execute(select(func.count()).select_from(Agent).where(
                Agent.service_id == service.id, Agent.active.is_(True)))).scalar_one()
            if active:
                raise OrganisationError(t("portal.service_has_agents", count=active))
            rooms = await rooms_of(session, service)
        try:
            async with self.synapse() as admin:
                for room_id in rooms:
                    async with self._power_locks[room_id]:
                        levels = await admin.state(room_id, "m.room.power_levels")
                        if levels.get("events_default") != READ_ONLY:
                            await admin.send_state(room_id, "m.room.power_levels", "",
                                                   {**levels, "events_default": READ_ONLY})
                    await admin.send_state(room_id, "m.room.topic", "", {"topic": t("portal.archived_topic")})
        except AdminApiError as exc:
            raise OrganisationError(t("portal.service_change_failed", detail=_short(exc))) from None
        async with self.database.session() as session:
            row = await session.get(Service, service.id)
            assert row is not None
            row.archived = True
            audit(session, actor, "service.archivage", key, before={"archive": False}, after={"archive": True})
            await session.commit()
        await self.dav.publish()

    def bindings_of(self, service: Service) -> list[tuple[str, str, dict[str, str]]]:
        return [("documents", "fr.maillage.documents", {"dossier": service.key}),
                ("agenda", "fr.maillage.agenda", {"calendrier": service.key}),
                ("projets", "fr.maillage.projet", {"liste": f"{service.key}-taches"})]

    async def _make_space(self, service: Service) -> str:
        async with self.synapse() as admin:
            return await admin.create_room({"name": service.name, "preset": "private_chat", "visibility": "private",
                                            "creation_content": {"type": "m.space"},
                                            "topic": t("portal.space_topic", service=service.name)})

    async def _make_room(self, service: Service, room: ServiceRoom, done: dict[str, str]) -> str:
        """A room members of the space join by themselves (restricted join rule), encrypted."""
        space = done["espace"]
        server = self.config.collectivite.nom_serveur
        async with self.synapse() as admin:
            room_id = await admin.create_room({
                "name": room.name, "preset": "private_chat", "visibility": "private",
                "initial_state": [
                    {"type": "m.room.join_rules", "state_key": "",
                     "content": {"join_rule": "restricted",
                                 "allow": [{"type": "m.room_membership", "room_id": space}]}},
                    {"type": "m.space.parent", "state_key": space, "content": {"via": [server], "canonical": True}},
                ]})
            await admin.send_state(space, "m.space.child", room_id, {"via": [server]})
        return room_id

    def webdav(self) -> WebDav:
        """The WebDAV server with the stack's account (the caller closes it)."""
        config = self.config
        base = config.webdav.url or f"http://{url_host(config.reseau.adresse_ecoute)}:{config.reseau.port_webdav}/"
        return WebDav(base, config.webdav.utilisateur, self.secrets.dav_password)

    async def make_folder(self, service: Service) -> str:
        dav = self.webdav()
        try:
            await dav.make_folders(service.key)
        finally:
            await dav.close()
        return service.key

    async def make_list(self, list_id: str, name: str, component: str) -> str:
        caldav = CalDav.for_stack(self.config, self.secrets.dav_password)
        try:
            if await caldav.calendar(list_id) is None:
                await caldav.make_calendar(list_id, name, component)
        finally:
            await caldav.close()
        return list_id

    async def _bind(self, bot: str, event_type: str, content: dict[str, str], team: ServiceRoom,
                    done: dict[str, str]) -> str:
        room_id = done[f"salle:{team.kind}"]
        async with self.synapse() as admin:
            await bind_room(admin, room_id, self.user_id(bot), event_type, content)
        return room_id

    # --- agents -----------------------------------------------------------------------------

    def checked(self, new: NewAgent) -> NewAgent:
        """The agent as they will be written (spaces folded, e-mail in lower case), or the first
        field at fault; nothing is looked up."""
        email = new.email.strip().lower()
        if not EMAIL.fullmatch(email):
            raise OrganisationError(t("portal.agent_email_invalid"), "email")
        given, usual = " ".join(new.given_name.split()), " ".join(new.usual_name.split())
        for field, value in (("prenom", given), ("nom", usual)):
            if not value or len(value) > 80:
                raise OrganisationError(t("portal.agent_name_invalid"), field)
            if value[0] in FORMULA_STARTS:  # a name never starts like a spreadsheet formula
                raise OrganisationError(t("portal.agent_name_formula"), field)
        if new.role not in POWER_OF_ROLE:
            raise OrganisationError(t("portal.agent_role_invalid"), "role")
        localpart = email.split("@")[0]
        if not LOCALPART.fullmatch(localpart):
            raise OrganisationError(t("portal.agent_localpart_invalid", localpart=localpart), "email")
        if localpart in (self.config.webdav.utilisateur, self.config.caldav.utilisateur):  # the DAV login
            raise OrganisationError(t("portal.agent_localpart_reserved", localpart=localpart), "email")
        return NewAgent(email, given, usual, new.service_key.strip(), new.role)

    async def create_agent(self, actor: str, new: NewAgent, *, adopt: bool = False) -> CreatedAgent:
        """The agent's account, in their service's space and rooms, and their row; ``adopt`` takes
        over a Synapse account an interrupted import of this agent made already."""
        new = self.checked(new)
        user_id = self.user_id(new.email.split("@")[0])
        async with self.database.session() as session:
            service = (await session.execute(select(Service).where(Service.key == new.service_key,
                                                                    Service.archived.is_(False)))).scalar_one_or_none()
            if service is None:
                raise OrganisationError(t("portal.agent_service_unknown"), "service")
            taken = (await session.execute(select(Agent).where(
                (Agent.email == new.email) | (Agent.user_id == user_id)))).scalar_one_or_none()
            if taken is not None:
                raise OrganisationError(t("portal.agent_taken", user_id=taken.user_id), "email")
            rooms = [r.room_id for r in (await session.execute(
                select(ServiceRoom).where(ServiceRoom.service_id == service.id))).scalars() if r.room_id]
        first_password, sub = "", None
        if self.directory is not None:
            first_password = first_password_for_dev()
            sub = self.directory.put(new.email, new.given_name, new.usual_name, first_password).sub
        display = f"{new.given_name} {new.usual_name}"
        async with self.synapse() as admin:
            if not adopt and await admin.user(user_id) is not None:
                raise OrganisationError(t("portal.agent_taken", user_id=user_id), "email")
            # Agents sign in to Matrix through the portal (matrix_sso), whose subject is the
            # localpart; with the development provider the first password opens it too.
            await admin.put_user(user_id, password=first_password or None, displayname=display,
                                 external_ids=[{"auth_provider": IDP_ID, "external_id": user_id[1:].split(":")[0]}],
                                 threepids=[{"medium": "email", "address": new.email}])
            for room_id in [service.space_id, *rooms]:
                if room_id:
                    await admin.force_join(room_id, user_id)
                    if POWER_OF_ROLE[new.role] or adopt:  # a new account has no power to take back
                        async with self._power_locks[room_id]:  # read-modify-write of one state event
                            await set_power(admin, room_id, user_id, POWER_OF_ROLE[new.role])
        async with self.database.session() as session:
            session.add(Agent(user_id=user_id, email=new.email, display_name=display, service_id=service.id,
                              role=new.role, oidc_sub=sub))
            audit(session, actor, "agent.creation", user_id,
                  after={"email": new.email, "nom": display, "service": new.service_key, "role": new.role})
            await session.commit()
        return CreatedAgent(user_id, first_password)


    async def change_agent(self, actor: str, user_id: str, service_key: str, role: str) -> None:
        """Another service or another role: memberships and powers follow, and so do folder and
        calendar rights. Synapse first (every call safe to repeat), the database last: a change
        cut short is told, changes nothing in the portal, and is made whole by asking again."""
        if role not in POWER_OF_ROLE:
            raise OrganisationError(t("portal.agent_role_invalid"), "role")
        async with self.database.session() as session:
            agent = await _active_agent(session, user_id)
            new = (await session.execute(select(Service).where(Service.key == service_key.strip(),
                                                                Service.archived.is_(False)))).scalar_one_or_none()
            if new is None:
                raise OrganisationError(t("portal.agent_service_unknown"), "service")
            old = await session.get(Service, agent.service_id) if agent.service_id else None
            new_rooms = await rooms_of(session, new)
            old_rooms = await rooms_of(session, old) if old is not None and old.id != new.id else []
        before = {"service": old.key if old else None, "role": agent.role}
        after = {"service": new.key, "role": role}
        if before == after:
            return
        try:
            async with self.synapse() as admin:
                for room_id in new_rooms:
                    await admin.force_join(room_id, user_id)
                    async with self._power_locks[room_id]:
                        await set_power(admin, room_id, user_id, POWER_OF_ROLE[role])
                for room_id in reversed(old_rooms):  # the rooms, then the space
                    async with self._power_locks[room_id]:
                        await set_power(admin, room_id, user_id, 0)
                    await admin.kick(room_id, user_id, t("portal.moved_reason", service=new.name))
        except AdminApiError as exc:
            raise OrganisationError(t("portal.agent_change_failed", detail=_short(exc))) from None
        async with self.database.session() as session:
            row = await session.get(Agent, agent.id)
            assert row is not None
            row.service_id, row.role = new.id, role
            audit(session, actor, "agent.modification", user_id, before=before, after=after)
            await session.commit()
        await self.dav.publish()

    async def offboard(self, actor: str, user_id: str) -> None:
        """The agent leaves: their Matrix account closed (messages kept), their app passwords
        revoked and their DAV access gone; their row kept, inactive, for the audit."""
        async with self.database.session() as session:
            agent = await _active_agent(session, user_id)
            service = await session.get(Service, agent.service_id) if agent.service_id else None
        try:
            async with self.synapse() as admin:
                await admin.deactivate(user_id)
        except AdminApiError as exc:
            raise OrganisationError(t("portal.agent_offboard_failed", detail=_short(exc))) from None
        async with self.database.session() as session:
            row = await session.get(Agent, agent.id)
            assert row is not None
            row.active = False
            await session.execute(update(AppPassword).where(AppPassword.agent_id == agent.id,
                                                            AppPassword.revoked_at.is_(None))
                                  .values(revoked_at=now_ms()))
            # Signed out of the portal too: an open session would still reach « Mon espace ».
            await session.execute(delete(WebSession).where(WebSession.email == agent.email))
            audit(session, actor, "agent.depart", user_id,
                  before={"service": service.key if service else None, "role": agent.role}, after={"actif": False})
            await session.commit()
        await self.dav.publish()

    async def open_work(self, user_id: str) -> dict[str, Any] | None:
        """The agent's open tasks and the circuit steps waiting for them (the bots' read API),
        or None when the bots cannot be asked."""
        url = f"http://{url_host(self.config.reseau.adresse_ecoute)}:{self.config.bots.port_sante}/api/travail"
        try:
            async with httpx.AsyncClient(timeout=20) as http:
                response = await http.get(url, params={"agent": user_id},
                                          headers={"Authorization": f"Bearer {await self.admin_token()}"})
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        found: dict[str, Any] = response.json()
        return found


async def audit_entries(database: Database, query: str, limit: int = 500) -> list[AuditEntry]:
    """The audit, most recent first, optionally those mentioning ``query`` (pages, CSV, API)."""
    statement = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if query.strip():
        pattern = f"%{query.strip()}%"
        statement = statement.where(or_(AuditEntry.actor.like(pattern), AuditEntry.action.like(pattern),
                                        AuditEntry.target.like(pattern), AuditEntry.after.like(pattern)))
    async with database.session() as session:
        return list((await session.execute(statement)).scalars())


async def _active_agent(session: AsyncSession, user_id: str) -> Agent:
    agent = (await session.execute(select(Agent).where(Agent.user_id == user_id,
                                                       Agent.active.is_(True)))).scalar_one_or_none()
    if agent is None:
        raise OrganisationError(t("portal.agent_unknown"))
    return agent


async def _service(session: AsyncSession, key: str) -> Service:
    service = (await session.execute(select(Service).where(Service.key == key,
                                                           Service.archived.is_(False)))).scalar_one_or_none()
    if service is None:
        raise OrganisationError(t("portal.service_unknown"))
    return service


async def rooms_of(session: AsyncSession, service: Service) -> list[str]:
    """The service's space, then its rooms."""
    rooms = (await session.execute(select(ServiceRoom.room_id).where(ServiceRoom.service_id == service.id))).scalars()
    return [room_id for room_id in [service.space_id, *rooms] if room_id]


def _bound(function: Callable[..., Awaitable[str]], *arguments: Any) -> Callable[[], Awaitable[str]]:
    """``function(*arguments)`` for later (a lambda in a loop would take the last values)."""
    return lambda: function(*arguments)


def _short(exc: Exception) -> str:
    if isinstance(exc, AdminApiError):
        return f"Synapse {exc.status} {exc.errcode}".strip()
    if isinstance(exc, (WebDavError, CalDavError)):
        return f"WebDAV/CalDAV {exc.status or t('portal.unreachable')}"
    return type(exc).__name__


async def _mailbox_state(admin: SynapseAdmin, room_id: str) -> dict[str, Any]:
    try:
        return await admin.state(room_id, MAILBOX_EVENT)
    except AdminApiError as exc:
        if exc.status != 404:
            raise
        return {}


async def _mailboxes(admin: SynapseAdmin, room_id: str) -> list[str]:
    addresses = (await _mailbox_state(admin, room_id)).get("adresses")
    return [a for a in addresses if isinstance(a, str)] if isinstance(addresses, list) else []


async def set_power(admin: SynapseAdmin, room_id: str, user_id: str, level: int) -> None:
    levels = await admin.state(room_id, "m.room.power_levels")
    users = dict(levels.get("users", {}))
    if users.get(user_id, 0) == level:
        return
    if level:
        users[user_id] = level
    else:
        users.pop(user_id, None)
    await admin.send_state(room_id, "m.room.power_levels", "", {**levels, "users": users})


async def bind_room(admin: SynapseAdmin, room_id: str, bot: str, event_type: str, content: dict[str, Any]) -> None:
    """The bot in the room, with the power to keep its binding, and the room bound by its state."""
    await set_power(admin, room_id, bot, BOT_POWER)
    await admin.invite(room_id, bot)
    await admin.send_state(room_id, event_type, "", content)
