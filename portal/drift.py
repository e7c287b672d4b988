"""Drift: the portal's truth compared with Synapse and the DAV servers, and repaired on request.

Someone changed a membership or a power level by hand in a client, removed a bot's binding,
deleted a folder or a calendar, reopened a departed agent's account, edited the DAV access
file: each is a ``Gap`` with its French description and, where the portal can, its repair
(the same operations as provisioning, so a repair is what the portal would have done).
What the portal cannot decide alone (a closed account of an active agent) is listed only.
Run by ``maillage portail vérifier [--réparer]`` and from the « Vérification » page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

import httpx
from sqlalchemy import select

from maillage.bots.caldav.client import CalDav, CalDavError
from maillage.bots.documents.webdav import WebDavError
from maillage.config import Config
from maillage.deploy.dav_access import agents_document, published_agents
from maillage.i18n import t
from maillage.portal.db import AccessRequest, Agent, Database, Service, ServiceRoom, audit, database_urls, migrate
from maillage.portal.organisation import (
    POWER_OF_ROLE,
    TEAM_ROOM,
    Organisation,
    bind_room,
    rooms_of,
    set_power,
)
from maillage.secretstore import Secrets
from maillage.synapse_admin import AdminApiError, SynapseAdmin

Repair = Callable[[SynapseAdmin], Awaitable[None]]
UNREACHABLE = (AdminApiError, WebDavError, CalDavError, OSError, httpx.HTTPError)  # a server away


@dataclass(frozen=True)
class Gap:
    kind: str  # drift.<kind> in the catalogue
    values: dict[str, str]
    repair: Repair | None = field(default=None, compare=False)

    def describe(self) -> str:
        return t(f"drift.{self.kind}", **self.values)


@dataclass(frozen=True)
class Repaired:
    gap: Gap
    error: str = ""  # empty: repaired


class DriftCheck:
    def __init__(self, organisation: Organisation) -> None:
        self.organisation = organisation
        self.database = organisation.database
        self.config = organisation.config

    async def find(self) -> list[Gap]:
        gaps: list[Gap] = []
        async with self.database.session() as session:  # read once, not once per service
            active = list((await session.execute(select(Agent).where(Agent.active.is_(True)))).scalars())
        async with self.organisation.synapse() as admin:
            for service in await self._services():
                gaps += await self._rooms(admin, service, active)
                gaps += await self._storage(service)
            gaps += await self._accounts(admin)
        gaps += await self._dav_access()
        return gaps

    async def repair(self, actor: str, gaps: list[Gap]) -> list[Repaired]:
        done: list[Repaired] = []
        async with self.organisation.synapse() as admin:
            for gap in gaps:
                if gap.repair is None:
                    done.append(Repaired(gap, t("drift.by_hand")))
                    continue
                try:
                    await gap.repair(admin)
                    done.append(Repaired(gap))
                except UNREACHABLE as exc:
                    done.append(Repaired(gap, type(exc).__name__))
        async with self.database.session() as session:
            audit(session, actor, "derive.reparation", t("drift.audit_target", count=len(gaps)),
                  before={"ecarts": [g.describe() for g in gaps]},
                  after={"repares": [r.gap.describe() for r in done if not r.error]})
            await session.commit()
        return done

    # --- what is checked ------------------------------------------------------------------

    async def _services(self) -> list[Service]:
        async with self.database.session() as session:
            return list((await session.execute(select(Service).where(
                Service.archived.is_(False), Service.provisioned.is_(True)).order_by(Service.key))).scalars())

    async def _rooms(self, admin: SynapseAdmin, service: Service, agents: list[Agent]) -> list[Gap]:
        async with self.database.session() as session:
            rooms = await rooms_of(session, service)
            named = list((await session.execute(select(ServiceRoom).where(ServiceRoom.service_id == service.id)
                                                )).scalars())
            granted = set((await session.execute(select(Agent.user_id).join(
                AccessRequest, AccessRequest.agent_id == Agent.id).where(
                AccessRequest.service_id == service.id, AccessRequest.resource == "salon",
                AccessRequest.state == "accordee"))).scalars())
        team = next((room.room_id for room in named if room.kind == TEAM_ROOM), None)
        labels = {room.room_id: room.name for room in named}
        labels[service.space_id] = t("drift.space", service=service.name)
        own = {agent.user_id: agent for agent in agents if agent.service_id == service.id}
        others = {agent.user_id for agent in agents if agent.service_id != service.id} - granted
        gaps: list[Gap] = []
        for room_id in rooms:
            members = await admin.joined_members(room_id)
            users = (await admin.state(room_id, "m.room.power_levels")).get("users", {})
            where = {"service": service.name, "room": labels.get(room_id) or room_id}
            for user_id, agent in own.items():
                if user_id not in members:
                    gaps.append(Gap("missing_member", {**where, "agent": user_id}, _joined(room_id, user_id)))
                expected = POWER_OF_ROLE[agent.role]
                if int(users.get(user_id, 0)) != expected:
                    gaps.append(Gap("wrong_power", {**where, "agent": user_id, "expected": str(expected),
                                                    "found": str(users.get(user_id, 0))},
                                    _powered(room_id, user_id, expected)))
            for user_id in sorted(members & others):
                gaps.append(Gap("extra_member", {**where, "agent": user_id}, _kicked(room_id, user_id)))
        if team:
            gaps += await self._bindings(admin, service, team)
        return gaps

    async def _bindings(self, admin: SynapseAdmin, service: Service, team: str) -> list[Gap]:
        gaps = []
        for bot, event_type, content in self.organisation.bindings_of(service):
            try:
                found = await admin.state(team, event_type)
            except AdminApiError as exc:
                if exc.status != 404:
                    raise
                found = {}
            if found != content:
                bot_id = self.organisation.user_id(bot)
                gaps.append(Gap("binding", {"service": service.name, "bot": bot_id},
                                _rebound(team, bot_id, event_type, content)))
        return gaps

    async def _storage(self, service: Service) -> list[Gap]:
        gaps = []
        dav = self.organisation.webdav()
        try:
            if await dav.entry(service.key + "/") is None:
                gaps.append(Gap("folder", {"service": service.name, "folder": service.key},
                                _after(lambda: self.organisation.make_folder(service))))
        finally:
            await dav.close()
        caldav = CalDav.for_stack(self.config, self.organisation.secrets.dav_password)
        try:
            for list_id, name, component in ((service.key, service.name, "VEVENT"),
                                             (f"{service.key}-taches", t("portal.task_list", service=service.name),
                                              "VTODO")):
                if await caldav.calendar(list_id) is None:
                    gaps.append(Gap("calendar", {"service": service.name, "calendar": list_id},
                                    _after(_made_list(self.organisation, list_id, name, component))))
        finally:
            await caldav.close()
        return gaps

    async def _accounts(self, admin: SynapseAdmin) -> list[Gap]:
        async with self.database.session() as session:
            agents = list((await session.execute(select(Agent).order_by(Agent.user_id))).scalars())
        gaps = []
        for agent in agents:
            account = await admin.user(agent.user_id)
            closed = account is None or bool(account.get("deactivated"))
            if agent.active and closed:
                gaps.append(Gap("account_closed", {"agent": agent.user_id}))  # a new password: the admin's call
            elif not agent.active and not closed:
                gaps.append(Gap("account_open", {"agent": agent.user_id}, _deactivated(agent.user_id)))
        return gaps

    async def _dav_access(self) -> list[Gap]:
        expected = agents_document(await self.organisation.dav.accounts())
        if await asyncio.to_thread(published_agents, self.config.data_dir) == expected:
            return []
        return [Gap("dav_access", {}, _after(self.organisation.dav.publish))]


def _joined(room_id: str, user_id: str) -> Repair:
    return lambda admin: admin.force_join(room_id, user_id)


def _powered(room_id: str, user_id: str, level: int) -> Repair:
    return lambda admin: set_power(admin, room_id, user_id, level)


def _kicked(room_id: str, user_id: str) -> Repair:
    return lambda admin: admin.kick(room_id, user_id, t("drift.kick_reason"))


def _rebound(room_id: str, bot_id: str, event_type: str, content: dict[str, str]) -> Repair:
    return lambda admin: bind_room(admin, room_id, bot_id, event_type, content)


def _deactivated(user_id: str) -> Repair:
    return lambda admin: admin.deactivate(user_id)


def _made_list(organisation: Organisation, list_id: str, name: str, component: str) -> Callable[[], Awaitable[str]]:
    return lambda: organisation.make_list(list_id, name, component)


def _after(work: Callable[[], Awaitable[object]]) -> Repair:
    async def repair(admin: SynapseAdmin) -> None:
        await work()
    return repair


async def check_command(config: Config, stack_secrets: Secrets, *, repair: bool, out: TextIO) -> int:
    """``maillage portail vérifier [--réparer]``: 0 when nothing (or nothing any more) differs."""
    from maillage.deploy.provisioning import ensure_admin_token
    from maillage.portal.app import dev_directory

    async_url, sync_url = database_urls(config)
    sqlite_file = config.data_dir / "portail" / "portail.db"
    if not config.portail.base_de_donnees and not sqlite_file.exists():
        print(t("drift.portal_missing", path=sqlite_file), file=out)
        return 2
    await asyncio.to_thread(migrate, sync_url)
    database = Database(async_url)
    organisation = Organisation(config, stack_secrets, database, lambda: ensure_admin_token(config, stack_secrets),
                                dev_directory(config))
    check = DriftCheck(organisation)
    try:
        gaps = await check.find()
        if not gaps:
            print(t("drift.none"), file=out)
            return 0
        print(t("drift.found", count=len(gaps)), file=out)
        for gap in gaps:
            print(f"  - {gap.describe()}", file=out)
        if not repair:
            print(t("drift.cli_hint"), file=out)
            return 1
        done = await check.repair(t("drift.command_actor"), gaps)
        for result in done:
            line = t("drift.not_repaired", error=result.error, gap=result.gap.describe()) if result.error else \
                t("drift.repaired", gap=result.gap.describe())
            print(f"  - {line}", file=out)
        return 1 if any(result.error for result in done) else 0
    except UNREACHABLE as exc:
        print(t("drift.unreachable", detail=type(exc).__name__), file=out)
        return 1
    finally:
        await organisation.close()
        await database.close()
