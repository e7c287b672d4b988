"""Once a day, one direct message per agent: their tasks due tomorrow and their late ones,
every project together — never one message per task.

The direct room is the bot's with that agent (``DirectRooms``, the runtime's). The message
waits until the agent has joined it. It is sent once, even across restarts:
its transaction id comes from (agent, day), and the day is recorded after sending.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mautrix.types import (
    RoomID,
)
from mautrix.util.async_db import Connection

from maillage.bots.agenda.events import one_line
from maillage.bots.projets.tasks import Task
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.projets.bot import ProjetsBot

log = logging.getLogger("maillage.bots.projets")



async def create_tables(conn: Connection) -> None:
    await conn.execute("CREATE TABLE projet_direct (user_id TEXT PRIMARY KEY, room_id TEXT NOT NULL)")  # v4-v9
    await conn.execute("CREATE TABLE projet_reminded (user_id TEXT NOT NULL, day TEXT NOT NULL,"
                       " PRIMARY KEY (user_id, day))")


Due = tuple[Task, str, int]  # the task, its project's name, its number in the project's room


class AssigneeReminders:
    def __init__(self, bot: ProjetsBot) -> None:
        self.bot = bot

    async def tick(self, now: datetime) -> None:
        settings = self.bot.context.config.projets
        if not settings.rappels or now.strftime("%H:%M") < settings.rappels_heure:
            return
        day = now.date().isoformat()
        for user_id, due in (await self.due(now)).items():
            try:  # one agent's failure (their server away) does not hold back the others
                await self.remind(user_id, due, day, now)
            except Exception as error:
                log.info("reminder for %s not sent for now: %s", user_id, type(error).__name__)

    async def remind(self, user_id: str, due: list[Due], day: str, now: datetime) -> None:
        if await self.bot.context.db.fetchval("SELECT 1 FROM projet_reminded WHERE user_id=$1 AND day=$2",
                                              user_id, day):
            return
        room_id = await self.bot.direct.joined(user_id)
        if room_id is None:
            return  # invited, not joined yet: tried again at the next tick
        await self.bot.send_about(room_id, f"rappels|{user_id}|{day}",
                                  {"msgtype": "m.text", "body": self.message(due, now)}, key="rappel")
        await self.bot.context.db.execute(
            "INSERT INTO projet_reminded (user_id, day) VALUES ($1, $2) ON CONFLICT DO NOTHING", user_id, day)

    async def due(self, now: datetime) -> dict[str, list[Due]]:
        """Per agent, their open tasks due tomorrow or late, in the projects whose room they are in."""
        tomorrow = now.date() + timedelta(days=1)
        found: dict[str, list[Due]] = defaultdict(list)
        for room_id, list_id in await self.bot.bound_rooms():
            tasks = await self.bot.index.tasks(list_id)
            if not tasks:
                continue
            members = set(await self.bot.client.get_joined_members(RoomID(room_id)))
            name = ""
            for task in tasks:
                if task.objective or not task.is_open or task.assignee not in members or task.due is None:
                    continue
                if task.late(now) or task.due.date() == tomorrow:
                    name = name or await self.bot.room_name(room_id) or list_id
                    found[task.assignee].append((task, name, await self.bot.numbers.of(room_id, task.uid,
                                                                                         task.href)))
        return found

    def message(self, due: list[Due], now: datetime) -> str:
        late = sorted((entry for entry in due if entry[0].late(now)), key=lambda entry: entry[0].due or now)
        tomorrow = [entry for entry in due if not entry[0].late(now)]
        lines = [t("projet.reminder_title")]
        for key, entries in (("projet.reminder_tomorrow", tomorrow), ("projet.reminder_late", late)):
            if entries:
                lines.append(t(key, count=len(entries)))
                lines += [f"– [{one_line(name)[:80]}] " + self.bot.describe(number, task)
                          for task, name, number in entries]
        return "\n".join(lines)
