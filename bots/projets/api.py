"""The read API of @projets, ``GET /api/projets`` on the bots' health port, for the portal's
dashboards: per project and per objective, progress and overdue counts, read from the bot's
index (not a single CalDAV request).

The caller shows an agent's Matrix access token (``Authorization: Bearer …``, checked by
``Callers``). They see the projects whose room they are a member of, and nothing of the
others.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from mautrix.types import Membership, RoomID, UserID

from maillage.bots.projets.bot import ProjetsBot
from maillage.bots.projets.state import project_state
from maillage.bots.runtime.callers import CallerRefused, Callers, refused
from maillage.i18n import t


class ProjectsApi:
    def __init__(self, callers: Callers, bot: Callable[[], ProjetsBot | None]) -> None:
        self.callers, self.bot = callers, bot

    async def projects(self, request: web.Request) -> web.Response:
        try:
            user_id = await self.callers.of(request)
        except CallerRefused as refusal:
            return refusal.answer()
        bot = self.bot()
        if bot is None:
            return refused(503, t("projet.api_not_ready"))
        now, found = bot.now(), []
        assert bot.client.state_store is not None
        for room_id, list_id in await bot.bound_rooms():
            membership = await bot.client.state_store.get_membership(RoomID(room_id), UserID(user_id))
            if membership != Membership.JOIN:
                continue
            summary = await project_summary(bot, room_id, list_id, now)
            if summary is not None:  # else not read yet: it appears once the watcher has read it
                found.append(summary)
        return web.json_response({"agent": user_id, "projets": found})


async def project_summary(bot: ProjetsBot, room_id: str, list_id: str, now: datetime) -> dict[str, Any] | None:
    """One project's progress, overall and per objective; None until its list has been read."""
    tasks = await bot.index.tasks(list_id)
    if tasks is None:
        return None
    states = project_state(tasks, now)
    return {"salon": room_id, "nom": await bot.room_name(room_id) or list_id, "liste": list_id,
            "taches": sum(state.total for state in states), "faites": sum(state.done for state in states),
            "en_retard": sum(len(state.late) for state in states),
            "objectifs": [_objective(state) for state in states if state.objective is not None]}


def _objective(state: Any) -> dict[str, Any]:
    objective = state.objective
    return {"titre": objective.summary, "echeance": objective.due.isoformat() if objective.due else None,
            "faites": state.done, "total": state.total, "en_retard": len(state.late),
            "prochaine_echeance": state.next_due.due.isoformat() if state.next_due and state.next_due.due else None}
