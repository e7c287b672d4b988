"""The weekly summary a project room chooses (``!projet résumé lundi 9h``): on that day, from
that time, the project's state per objective, what was done in the week, and the chart.

Sent once a week even across crashes: the text and the picture carry transaction ids
made of (room, week), so a resend after a kill is the same event, and the week is
recorded after both are sent. A bot away for the whole chosen day skips that week (a
summary on Tuesday of « the week until Monday » would mislead).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mautrix.util.async_db import Connection

from maillage.bots.agenda.dates import WEEKDAYS, WEEKDAYS_EN, fold
from maillage.bots.projets.report import post_report, state_report
from maillage.bots.runtime.commands import CommandError
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.projets.bot import ProjetsBot

DAYS = {name: day for names in (WEEKDAYS, WEEKDAYS_EN) for day, name in enumerate(names)}
TIME = re.compile(r"^(?:à\s*|a\s*|at\s*)?(\d{1,2})(?:[h:](\d{2})?)?$")
DEFAULT_TIME = "09:00"


async def create_tables(conn: Connection) -> None:
    await conn.execute("CREATE TABLE projet_summary (room_id TEXT PRIMARY KEY, weekday INTEGER NOT NULL,"
                       " at TEXT NOT NULL)")
    await conn.execute("CREATE TABLE projet_summary_sent (room_id TEXT NOT NULL, week TEXT NOT NULL,"
                       " PRIMARY KEY (room_id, week))")


def read_schedule(text: str) -> tuple[int, str]:
    """« lundi », « vendredi 17h », « jeudi à 8h30 » → (weekday, "HH:MM")."""
    words = fold(" ".join(text.split())).split(" ", 1)
    day = DAYS.get(words[0])
    if day is None:
        raise CommandError(t("projet.summary_day_unreadable", text=text[:40]))
    if len(words) == 1:
        return day, DEFAULT_TIME
    found = TIME.match(words[1].replace(" ", ""))
    if found is None or int(found[1]) > 23 or int(found[2] or 0) > 59:
        raise CommandError(t("projet.summary_time_unreadable", text=words[1][:20]))
    return day, f"{int(found[1]):02d}:{found[2] or '00'}"


def spoken_schedule(weekday: int, at: str) -> str:
    """« le lundi à 9h », « le jeudi à 8h30 »."""
    hour, minute = at.split(":")
    return t("projet.summary_when", day=WEEKDAYS[weekday], time=f"{int(hour)}h" + ("" if minute == "00" else minute))


class WeeklySummaries:
    def __init__(self, bot: ProjetsBot) -> None:
        self.bot = bot

    async def choose(self, room_id: str, weekday: int, at: str) -> None:
        await self.bot.context.db.execute(
            "INSERT INTO projet_summary (room_id, weekday, at) VALUES ($1, $2, $3)"
            " ON CONFLICT (room_id) DO UPDATE SET weekday=$2, at=$3", room_id, weekday, at)

    async def stop(self, room_id: str) -> bool:
        known = await self.chosen(room_id)
        await self.bot.context.db.execute("DELETE FROM projet_summary WHERE room_id=$1", room_id)
        return known is not None

    async def chosen(self, room_id: str) -> tuple[int, str] | None:
        row = await self.bot.context.db.fetchrow("SELECT weekday, at FROM projet_summary WHERE room_id=$1", room_id)
        return None if row is None else (int(row["weekday"]), str(row["at"]))

    async def tick(self, now: datetime) -> None:
        db = self.bot.context.db
        year, week, _ = now.isocalendar()
        this_week = f"{year}-W{week:02d}"
        rows = await db.fetch("SELECT room_id, at FROM projet_summary WHERE weekday=$1 AND at<=$2",
                              now.weekday(), now.strftime("%H:%M"))
        for row in rows:
            room_id = str(row["room_id"])
            if await db.fetchval("SELECT 1 FROM projet_summary_sent WHERE room_id=$1 AND week=$2",
                                 room_id, this_week):
                continue
            list_id = await self.bot.bindings.target(room_id)
            if list_id is not None:
                await self.send(room_id, list_id, this_week, now)
            await db.execute("INSERT INTO projet_summary_sent (room_id, week) VALUES ($1, $2)"
                             " ON CONFLICT DO NOTHING", room_id, this_week)

    async def send(self, room_id: str, list_id: str, week: str, now: datetime) -> None:
        report = await state_report(self.bot, room_id, list_id, heading="projet.summary_title")
        if report is None:
            return  # nothing in the project yet: nothing to sum up
        monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0)
        done = sum(1 for task in report.tasks if task.completed is not None and task.completed >= monday
                   and task.status == "COMPLETED" and not task.objective)
        late = sum(1 for task in report.tasks if task.late(now) and not task.objective)
        text = report.text + "\n" + t("projet.summary_week", done=done, late=late)
        about = f"resume|{room_id}|{week}"
        await post_report(self.bot, room_id, about, report, self.bot.send_about(
            room_id, about, {"msgtype": "m.notice", "body": text}, key="resume"), relation=None)
