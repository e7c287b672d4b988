"""Reminders before events and the daily agenda, each sent once, even across restarts.

A room's reminders are rules (« 15min », « 1h », « veille17h »: 15 minutes before,
an hour before, the day before at 17:00); by default 15 minutes before and the
day before at 17:00. Every ``TICK`` seconds the due ones are sent: a reminder
whose time passed while the bots were stopped is still sent if its event has not
begun. Sending is keyed: the message's transaction id comes from (room, event,
occurrence, rule) and the key is recorded after sending, so a crash in between
sends the same message again, which the homeserver de-duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from mautrix.types import EventType, RoomID
from mautrix.util.async_db import Connection

from maillage.bots.runtime.commands import CommandError
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.agenda.bot import AgendaBot
    from maillage.bots.agenda.index import Occurrence

log = logging.getLogger("maillage.bots.agenda")

WIDGET_EVENT = EventType.find("im.vector.modular.widgets", t_class=EventType.Class.STATE)
WIDGET_BEFORE = timedelta(minutes=5)
TICK = 20.0
AHEAD = timedelta(hours=50)  # far enough for the day-before reminders of tomorrow's events
DEFAULT_RULES = "15min veille17h"
_RULE = re.compile(r"^(?:(\d{1,4})(min|mn|m|h|j)|veille(?:(\d{1,2})h(\d{2})?)?)$")


async def create_tables(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE agenda_room (
            room_id TEXT PRIMARY KEY,
            reminders TEXT NOT NULL,
            summary_at TEXT NOT NULL
        )"""
    )
    # What was sent: a reminder (room, event, occurrence, rule) or a day's agenda (room, date).
    await conn.execute("CREATE TABLE agenda_sent (room_id TEXT NOT NULL, what TEXT NOT NULL,"
                       " PRIMARY KEY (room_id, what))")


@dataclass(frozen=True)
class Rule:
    """« 15min », « 2h », « 1j » before; « veille17h »: the day before at that time."""

    text: str
    before: timedelta | None = None
    day_before_at: time | None = None

    def due(self, start: datetime) -> datetime:
        if self.before is not None:
            return start - self.before
        assert self.day_before_at is not None
        return datetime.combine(start.date() - timedelta(days=1), self.day_before_at, start.tzinfo)


def read_rules(text: str) -> list[Rule]:
    """« 15min 1h veille17h » → rules; « aucun » → none; anything else: a French message."""
    words = text.lower().replace(",", " ").split()
    if words in (["aucun"], ["aucune"], ["none"]):
        return []
    rules = []
    for word in words:
        match = _RULE.match(word.replace("veille-", "veille").replace("é", "e"))
        if match is None:
            raise CommandError(t("agenda.reminder_unreadable", text=word[:30]))
        if match[1]:
            amount, unit = int(match[1]), match[2]
            before = {"h": timedelta(hours=amount), "j": timedelta(days=amount)}.get(unit, timedelta(minutes=amount))
            if not timedelta(0) < before <= timedelta(days=14):
                raise CommandError(t("agenda.reminder_unreadable", text=word[:30]))
            rules.append(Rule(word, before=before))
        else:
            hour, minute = int(match[3] or 17), int(match[4] or 0)
            if hour > 23 or minute > 59:
                raise CommandError(t("agenda.reminder_unreadable", text=word[:30]))
            rules.append(Rule(word, day_before_at=time(hour, minute)))
    if not rules or len(rules) > 5:
        raise CommandError(t("agenda.reminder_unreadable", text=text[:30]))
    return rules


def read_summary_time(text: str) -> str:
    """« 8h », « 7h30 », « aucun » → "08:00", "07:30", ""."""
    word = text.strip().lower()
    if word in ("aucun", "aucune", "none", "non"):
        return ""
    match = re.match(r"^(\d{1,2})(?:h(\d{2})?|:(\d{2}))$", word)
    if match is None or int(match[1]) > 23 or int(match[2] or match[3] or 0) > 59:
        raise CommandError(t("agenda.summary_unreadable", text=text[:30]))
    return f"{int(match[1]):02d}:{int(match[2] or match[3] or 0):02d}"


class Reminders:
    def __init__(self, bot: AgendaBot) -> None:
        self.bot = bot

    async def settings(self, room_id: str) -> tuple[str, str]:
        row = await self.bot.context.db.fetchrow("SELECT reminders, summary_at FROM agenda_room WHERE room_id=$1",
                                                 room_id)
        return (str(row["reminders"]), str(row["summary_at"])) if row else (DEFAULT_RULES, "")

    async def set(self, room_id: str, *, reminders: str | None = None, summary_at: str | None = None) -> None:
        current_reminders, current_summary = await self.settings(room_id)
        await self.bot.context.db.execute(
            "INSERT INTO agenda_room (room_id, reminders, summary_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (room_id) DO UPDATE SET reminders=$2, summary_at=$3", room_id,
            current_reminders if reminders is None else reminders,
            current_summary if summary_at is None else summary_at)

    async def run(self) -> None:
        tick = min(TICK, self.bot.context.config.agenda.intervalle_secondes)
        while True:
            await asyncio.sleep(tick)
            try:
                await self.tick(self.bot.now())
            except Exception as error:  # a server away: the same reminders are due at the next tick
                log.info("reminders not sent for now: %s", type(error).__name__)

    async def tick(self, now: datetime) -> None:
        """Every bound room: its upcoming occurrences (from the index: one query a room)."""
        rows = await self.bot.context.db.fetch(
            "SELECT b.room_id, r.reminders, r.summary_at FROM maillage_room_binding b"
            " LEFT JOIN agenda_room r ON r.room_id=b.room_id WHERE b.bot=$1", self.bot.localpart)
        for row in rows:
            room_id = str(row["room_id"])
            rules_text = DEFAULT_RULES if row["reminders"] is None else str(row["reminders"])
            summary_at = str(row["summary_at"] or "")
            rules = read_rules(rules_text) if rules_text else []
            for number, occurrence in await self.bot.occurrences(room_id, now - timedelta(hours=1), now + AHEAD):
                if rules:
                    await self._remind(room_id, number, occurrence, rules, now)
                await self._video_widget(room_id, occurrence, now)
            if summary_at and now.strftime("%H:%M") >= summary_at:
                await self._daily(room_id, now)

    async def _remind(self, room_id: str, number: int, occurrence: Occurrence, rules: list[Rule],
                      now: datetime) -> None:
        start = occurrence.start
        if start <= now:
            return
        for rule in rules:
            if rule.due(start) > now:
                continue
            what = f"rappel|{occurrence.uid}|{start.isoformat()}|{rule.text}"
            if await self._sent(room_id, what):
                continue
            days_ahead = (start.date() - now.date()).days
            key = {0: "agenda.reminder_today", 1: "agenda.reminder_tomorrow"}.get(days_ahead, "agenda.reminder_later")
            when = t(key, time=start.strftime("%H:%M"))
            body = t("agenda.reminder", when=when, event=self.bot.describe(number, occurrence))
            await self._send(room_id, what, body)

    async def _video_widget(self, room_id: str, occurrence: Occurrence, now: datetime) -> None:
        """From 5 minutes before a meeting with a video link to its end, the room shows it as a
        widget (``im.vector.modular.widgets``): one click to join in clients that show widgets."""
        address = occurrence.video
        if not address:
            return
        start = occurrence.start
        end = occurrence.end or start + timedelta(hours=1)
        occurrence_key = f"{occurrence.uid}|{start.isoformat()}"
        widget_id = "maillage-" + hashlib.sha256(occurrence_key.encode()).hexdigest()[:16]
        content: dict[str, Any]
        if start - WIDGET_BEFORE <= now < end:
            what, content = f"widget|{widget_id}", {
                "type": "m.custom", "url": address, "name": (occurrence.summary or "Visio")[:100],
                "id": widget_id, "creatorUserId": self.bot.user_id, "data": {"title": address}}
        elif end <= now:
            what, content = f"widget-fin|{widget_id}", {}
            if not await self._sent(room_id, f"widget|{widget_id}"):
                return  # never shown: nothing to take down
        else:
            return
        if await self._sent(room_id, what):
            return
        await self.bot.client.send_state_event(RoomID(room_id), WIDGET_EVENT, content, state_key=widget_id)
        await self.bot.context.db.execute(
            "INSERT INTO agenda_sent (room_id, what) VALUES ($1, $2) ON CONFLICT (room_id, what) DO NOTHING",
            room_id, what)

    async def _daily(self, room_id: str, now: datetime) -> None:
        what = f"resume|{now.date().isoformat()}"
        if await self._sent(room_id, what):
            return
        day = datetime.combine(now.date(), time(0), now.tzinfo)
        occurrences = await self.bot.occurrences(room_id, day, day + timedelta(days=1))
        lines = [self.bot.describe(number, occurrence) for number, occurrence in occurrences]
        body = t("agenda.summary_today", day=self.bot.spoken(now.date())) + "\n" + (
            "\n".join(lines) if lines else t("agenda.summary_empty"))
        await self._send(room_id, what, body)

    async def _sent(self, room_id: str, what: str) -> bool:
        return bool(await self.bot.context.db.fetchval("SELECT 1 FROM agenda_sent WHERE room_id=$1 AND what=$2",
                                                       room_id, what))

    async def _send(self, room_id: str, what: str, body: str) -> None:
        """Sent, then recorded: a crash in between resends the same transaction, seen once."""
        await self.bot.send_about(room_id, what, {"msgtype": "m.notice", "body": body}, key="rappel")
        await self.bot.context.db.execute(
            "INSERT INTO agenda_sent (room_id, what) VALUES ($1, $2) ON CONFLICT (room_id, what) DO NOTHING",
            room_id, what)
