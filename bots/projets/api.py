"""The read API of @projets, ``GET /api/projets`` on the bots' health port, for the portal's
dashboards: per project and per objective, progress and overdue counts, read from the bot's
index (not a single CalDAV request).

The caller shows an agent's Matrix access token (``Authorization: Bearer …``), checked with
the homeserver (``/account/whoami``, remembered a minute by its hash, never logged). They see
the projects whose room they are a member of, and nothing of the others.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx
from aiohttp import web
from mautrix.types import Membership, RoomID, UserID

from maillage.bots.projets.bot import ProjetsBot
from maillage.bots.projets.state import project_state
from maillage.i18n import t

TOKEN_TTL = 60.0


class ProjectsApi:
    def __init__(self, homeserver_url: str, bot: Callable[[], ProjetsBot | None]) -> None:
        self.homeserver_url, self.bot = homeserver_url.rstrip("/"), bot
        self._known: dict[str, tuple[str, float]] = {}  # token hash → (user, until)

    async def projects(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token:
            return _refused(401, t("projet.api_no_token"))
        user_id = await self._user(token)
        if user_id is None:
            return _refused(401, t("projet.api_bad_token"))
        bot = self.bot()
        if bot is None:
            return _refused(503, t("projet.api_not_ready"))
        now, found = bot.now(), []
        assert bot.client.state_store is not None
        for room_id, list_id in await bot.bound_rooms():
            membership = await bot.client.state_store.get_membership(RoomID(room_id), UserID(user_id))
            if membership != Membership.JOIN:
                continue
            tasks = await bot.index.tasks(list_id)
            if tasks is None:
                continue  # not read yet: it appears once the watcher has read it
            states = project_state(tasks, now)
            found.append({
                "salon": room_id, "nom": await bot.room_name(room_id) or list_id, "liste": list_id,
                "taches": sum(state.total for state in states), "faites": sum(state.done for state in states),
                "en_retard": sum(len(state.late) for state in states),
                "objectifs": [_objective(state) for state in states if state.objective is not None],
            })
        return web.json_response({"agent": user_id, "projets": found})

    async def _user(self, token: str) -> str | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        known = self._known.get(key)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(f"{self.homeserver_url}/_matrix/client/v3/account/whoami",
                                          headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            return None
        user_id = response.json().get("user_id") if response.status_code == 200 else None
        if not isinstance(user_id, str):
            return None
        self._known[key] = (user_id, time.monotonic() + TOKEN_TTL)
        return user_id


def _objective(state: Any) -> dict[str, Any]:
    objective = state.objective
    return {"titre": objective.summary, "echeance": objective.due.isoformat() if objective.due else None,
            "faites": state.done, "total": state.total, "en_retard": len(state.late),
            "prochaine_echeance": state.next_due.due.isoformat() if state.next_due and state.next_due.due else None}


def _refused(status: int, message: str) -> web.Response:
    return web.json_response({"erreur": message}, status=status)
