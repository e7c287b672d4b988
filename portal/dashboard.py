"""The admins' dashboards: agents and activity per service, validation circuits waiting,
projects' progress per objective.

What comes from elsewhere (Synapse's room statistics, the bots' read API) is gathered in
the background every ``REFRESH_SECONDS`` into a snapshot the page reads: a dashboard
under load never multiplies requests to the homeserver or the bots, and shows when its
figures were read. What the portal owns (agents per service and role) is counted from
its database at each request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import func, select

from maillage.config import Config, url_host
from maillage.i18n import current_language, t
from maillage.portal.db import ROLES, Agent, AuditEntry, Database, Service, ServiceRoom
from maillage.portal.pages import templates

log = logging.getLogger("maillage.portal.dashboard")
REFRESH_SECONDS = 60.0
FRESH_SECONDS = 1.0  # how long the dashboard's figures are shown without looking for a change
ACTIVITY_DAYS = 7
MESSAGES_READ = 500  # per room and refresh: beyond, the chart says « 500 et plus »
MESSAGE_TYPES = ["m.room.message", "m.room.encrypted"]


@dataclass
class Snapshot:
    """What the homeserver and the bots said at ``read_at`` (ms; 0: never yet)."""

    read_at: int = 0
    members: dict[str, int] = field(default_factory=dict)  # room → joined members
    messages: dict[str, int] = field(default_factory=dict)  # room → messages of the last days
    circuits: dict[str, dict[str, int]] = field(default_factory=dict)  # room → {en_cours, en_retard}
    projects: list[dict[str, Any]] = field(default_factory=list)
    synapse_ok: bool = False
    bots_ok: bool = False


@dataclass(frozen=True)
class ServiceFigures:
    key: str
    name: str
    agents: int
    members: int | None
    messages: int | None
    circuits_open: int
    circuits_late: int


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    shown: str  # the value as written beside the bar
    width: float  # in the chart's units (``BAR_SPACE`` for the largest value)


BAR_SPACE = 340.0


def bars(rows: list[tuple[str, int]], *, cap: int | None = None) -> list[Bar]:
    """A horizontal bar chart's bars, the largest filling ``BAR_SPACE`` (``cap``: « 500 et plus »)."""
    top = max((value for _, value in rows), default=0)
    return [Bar(label, value, f"{value}+" if cap is not None and value >= cap else str(value),
                BAR_SPACE * value / top if top else 0.0) for label, value in rows]


class Dashboard:
    def __init__(self, config: Config, database: Database, admin_token: Callable[[], Awaitable[str]]) -> None:
        self.config, self.database, self.admin_token = config, database, admin_token
        self.snapshot = Snapshot()
        self._refreshing = asyncio.Lock()
        self._rendered: tuple[tuple[int, int, str], str] | None = None
        self._looked_at = 0.0  # monotonic time the audit's last id was last read

    async def run(self) -> None:
        """Refreshes the snapshot for as long as the portal runs."""
        while True:
            try:
                await self.refresh()
            except Exception as error:
                log.warning("dashboard not refreshed: %s", type(error).__name__)
            await asyncio.sleep(REFRESH_SECONDS)

    async def refresh(self) -> None:
        async with self._refreshing:
            async with self.database.session() as session:
                rooms = [room for room in (await session.execute(
                    select(ServiceRoom.room_id).join(Service, Service.id == ServiceRoom.service_id)
                    .where(Service.archived.is_(False)))).scalars() if room]
            token = await self.admin_token()
            snapshot = Snapshot(read_at=int(time.time() * 1000))
            await asyncio.gather(self._read_synapse(snapshot, rooms, token), self._read_bots(snapshot, token))
            self.snapshot = snapshot

    async def _read_synapse(self, snapshot: Snapshot, rooms: list[str], token: str) -> None:
        since = snapshot.read_at - ACTIVITY_DAYS * 86_400_000
        limit = asyncio.Semaphore(4)
        async with httpx.AsyncClient(base_url=self.config.synapse_url, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            async def one(room_id: str) -> None:
                async with limit:
                    details = await http.get(f"/_synapse/admin/v1/rooms/{quote(room_id)}")
                    details.raise_for_status()
                    snapshot.members[room_id] = int(details.json().get("joined_members", 0))
                    snapshot.messages[room_id] = await _recent_messages(http, room_id, since)

            try:
                await asyncio.gather(*(one(room_id) for room_id in rooms))
                snapshot.synapse_ok = True
            except httpx.HTTPError as error:
                log.warning("dashboard: Synapse not read (%s)", type(error).__name__)

    async def _read_bots(self, snapshot: Snapshot, token: str) -> None:
        url = f"http://{url_host(self.config.reseau.adresse_ecoute)}:{self.config.bots.port_sante}/api/tableau"
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                answer = await http.get(url, headers={"Authorization": f"Bearer {token}"})
            answer.raise_for_status()
            data = answer.json()
            snapshot.circuits, snapshot.projects = dict(data["circuits"]), list(data["projets"])
            snapshot.bots_ok = True
        except (httpx.HTTPError, KeyError, ValueError) as error:
            log.warning("dashboard: bots not read (%s)", type(error).__name__)

    async def services(self) -> list[ServiceFigures]:
        """Per service: active agents (the portal's truth, now) and the snapshot's figures of its rooms."""
        async with self.database.session() as session:
            services = (await session.execute(select(Service).where(Service.archived.is_(False))
                                              .order_by(Service.name))).scalars().all()
            agents = dict((await session.execute(select(Agent.service_id, func.count()).where(
                Agent.active.is_(True)).group_by(Agent.service_id))).tuples().all())
            rooms: dict[int, list[str]] = {}
            for service_id, room_id in (await session.execute(select(ServiceRoom.service_id, ServiceRoom.room_id))):
                if room_id:
                    rooms.setdefault(service_id, []).append(room_id)
        snapshot = self.snapshot
        figures = []
        for service in services:
            own = rooms.get(service.id, [])
            figures.append(ServiceFigures(
                service.key, service.name, agents.get(service.id, 0),
                max((snapshot.members.get(r, 0) for r in own), default=0) if snapshot.synapse_ok else None,
                sum(snapshot.messages.get(r, 0) for r in own) if snapshot.synapse_ok else None,
                sum(snapshot.circuits.get(r, {}).get("en_cours", 0) for r in own),
                sum(snapshot.circuits.get(r, {}).get("en_retard", 0) for r in own)))
        return figures

    async def figures_html(self) -> str:
        """The dashboard's figures and charts, rendered again only when the organisation changed
        (every change to it is audited: the audit's last id says, looked at once a second at
        most) or the snapshot was read again: under load, the page around them is the cost."""
        cached = self._rendered
        now = time.monotonic()
        if cached is not None and now - self._looked_at < FRESH_SECONDS and \
                cached[0][1:] == (self.snapshot.read_at, current_language()):
            return cached[1]
        async with self.database.session() as session:
            last_change = await session.scalar(select(func.max(AuditEntry.id))) or 0
        self._looked_at = now
        key = (int(last_change), self.snapshot.read_at, current_language())
        if cached is not None and cached[0] == key:
            return cached[1]
        html = templates.get_template("_tableau.html").render(await self.context())
        self._rendered = (key, html)
        return html

    async def context(self) -> dict[str, Any]:
        services = await self.services()
        snapshot = self.snapshot
        roles = await self.roles()
        return {
            "services": services, "agents_total": sum(s.agents for s in services),
            "circuits_open": sum(s.circuits_open for s in services),
            "circuits_late": sum(s.circuits_late for s in services),
            "agents_chart": bars([(s.name, s.agents) for s in services]),
            "activity_chart": bars([(s.name, s.messages or 0) for s in services], cap=MESSAGES_READ)
            if snapshot.synapse_ok else [],
            "activity_days": ACTIVITY_DAYS,
            "circuits_chart": bars([(s.name, s.circuits_open) for s in services if s.circuits_open]),
            "roles_chart": bars([(t("portal.role_" + role), roles.get(role, 0)) for role in ROLES]),
            "projects": snapshot.projects, "bots_ok": snapshot.bots_ok, "read_at": snapshot.read_at}

    async def roles(self) -> dict[str, int]:
        async with self.database.session() as session:
            return dict((await session.execute(select(Agent.role, func.count()).where(Agent.active.is_(True))
                                               .group_by(Agent.role))).tuples().all())


async def _recent_messages(http: httpx.AsyncClient, room_id: str, since: int) -> int:
    """Messages sent in the room since ``since`` (ms), read newest first, ``MESSAGES_READ`` at most."""
    answer = await http.get(f"/_synapse/admin/v1/rooms/{quote(room_id)}/messages", params={
        "dir": "b", "limit": MESSAGES_READ, "filter": json.dumps({"types": MESSAGE_TYPES})})
    answer.raise_for_status()
    return sum(1 for event in answer.json().get("chunk", []) if int(event.get("origin_server_ts", 0)) >= since)
