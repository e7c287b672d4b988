"""The read APIs the portal calls, on the bots' health port, with the stack's admin account
(anybody else gets a 403):

- ``GET /api/travail?agent=<Matrix ID>``: what waits for one agent — their open tasks in
  every bound list and the validation circuit steps waiting for them — listed for
  reassignment when the agent leaves;
- ``GET /api/tableau``: open and late circuits per room, every project's progress per
  objective — the dashboards.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from maillage.bots.documents.bot import DocumentsBot
from maillage.bots.projets.api import project_summary
from maillage.bots.projets.bot import ProjetsBot
from maillage.bots.runtime.callers import CallerRefused, Callers, refused
from maillage.i18n import t


class PortalApi:
    def __init__(self, callers: Callers, admin_user_id: str, projects: Callable[[], ProjetsBot | None],
                 documents: Callable[[], DocumentsBot | None]) -> None:
        self.callers, self.admin_user_id = callers, admin_user_id
        self.projects, self.documents = projects, documents

    async def _refusal(self, request: web.Request) -> web.Response | None:
        try:
            caller = await self.callers.of(request)
        except CallerRefused as refusal:
            return refusal.answer()
        return None if caller == self.admin_user_id else refused(403, t("bots.api_admin_only"))

    async def dashboard(self, request: web.Request) -> web.Response:
        if (refusal := await self._refusal(request)) is not None:
            return refusal
        projects, documents = self.projects(), self.documents()
        if projects is None or documents is None:
            return refused(503, t("projet.api_not_ready"))
        now = projects.now()
        found = [summary for room_id, list_id in await projects.bound_rooms()
                 if (summary := await project_summary(projects, room_id, list_id, now)) is not None]
        circuits = await documents.circuits.store.open_by_room(documents.circuits.today().isoformat())
        return web.json_response({"projets": found, "circuits": {room: {"en_cours": open_count, "en_retard": late}
                                                                 for room, (open_count, late) in circuits.items()}})

    async def work(self, request: web.Request) -> web.Response:
        if (refusal := await self._refusal(request)) is not None:
            return refusal
        agent = request.query.get("agent", "")
        if not agent.startswith("@") or ":" not in agent:
            return refused(400, t("bots.api_agent_expected"))
        projects, documents = self.projects(), self.documents()
        if projects is None or documents is None:
            return refused(503, t("projet.api_not_ready"))
        return web.json_response({"agent": agent, "taches": await self._tasks(projects, agent),
                                  "circuits": await self._steps(documents, agent)})

    async def _tasks(self, bot: ProjetsBot, agent: str) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        for room_id, list_id in await bot.bound_rooms():
            open_tasks = [task for task in await bot.index.tasks(list_id) or [] if task.is_open
                          and task.assignee == agent]
            numbers = await bot.numbers.of_many(room_id, [(task.uid, task.href) for task in open_tasks])
            name = await bot.room_name(room_id) or list_id
            found += [{"salon": room_id, "nom_salon": name, "numero": number, "titre": task.summary,
                       "echeance": task.due.date().isoformat() if task.due else None}
                      for task, number in zip(open_tasks, numbers, strict=True)]
        return found

    async def _steps(self, bot: DocumentsBot, agent: str) -> list[dict[str, object]]:
        return [{"salon": circuit.room_id, "nom_salon": await bot.room_name(circuit.room_id) or circuit.room_id,
                 "numero": circuit.id, "document": circuit.name, "etape": circuit.current.kind,
                 "auteur": circuit.initiator, "echeance": circuit.deadline}
                for circuit in await bot.circuits.store.waiting_for(agent)]
