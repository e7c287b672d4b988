"""The occurrences of bound calendars, kept in the bots' database: a listing is one query.

Asking the CalDAV server for a week means a time-range REPORT that the server answers by
reading every item of the calendar (0.4 s on Radicale at 5,000 events), then expanding
the series. The change watcher already follows every item, so it keeps this copy up to
date instead: each change it sees, and each write of the bot itself, replaces the
item's occurrences here. A calendar the watcher has not read yet, or a period outside
the window its series were expanded over, is asked of the server as before.

Series are expanded over a window (a year back, two years ahead), renewed from the
server when less than a year is left. A copy is only as fresh as the watcher's last
look (one interval); listings say so when the server has not answered for a while.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import recurring_ical_events
from icalendar import Calendar as ICalendar
from icalendar import Event as IEvent
from mautrix.util.async_db import Connection, Database

from maillage.bots.agenda.events import as_local, blocks_time, video_of
from maillage.bots.caldav.client import Item
from maillage.bots.runtime.store import transaction

log = logging.getLogger("maillage.bots.agenda")

WINDOW_BACK = timedelta(days=366)
WINDOW_AHEAD = timedelta(days=731)
RENEW_WHEN_LEFT = timedelta(days=365)
MAX_PER_ITEM = 2000  # a series every few minutes: kept to this many, the window ends before the rest


async def create_tables(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE agenda_occurrence (
            calendar_id TEXT NOT NULL,
            href TEXT NOT NULL,
            uid TEXT NOT NULL,
            starts_at TEXT NOT NULL,
            ends_at TEXT NOT NULL,
            start_local TEXT NOT NULL,
            end_local TEXT NOT NULL,
            all_day INTEGER NOT NULL,
            summary TEXT NOT NULL,
            location TEXT NOT NULL,
            recurring INTEGER NOT NULL,
            video TEXT NOT NULL,
            busy INTEGER NOT NULL
        )"""
    )
    # starts_at and ends_at are UTC, "YYYY-MM-DDTHH:MM:SSZ": they sort and compare as text.
    await conn.execute("CREATE INDEX agenda_occurrence_time ON agenda_occurrence (calendar_id, starts_at)")
    await conn.execute("CREATE INDEX agenda_occurrence_item ON agenda_occurrence (calendar_id, href)")
    await conn.execute(
        "CREATE TABLE agenda_indexed (calendar_id TEXT PRIMARY KEY, window_start TEXT NOT NULL,"
        " window_end TEXT NOT NULL)"
    )


@dataclass(frozen=True)
class Occurrence:
    """One occurrence as a room sees it (times in the collectivité's zone)."""

    uid: str
    href: str
    start: datetime
    end: datetime | None
    all_day: bool
    summary: str
    location: str
    recurring: bool
    video: str
    busy: bool
    description: str = ""

    @classmethod
    def of(cls, vevent: IEvent, href: str, zone: ZoneInfo) -> Occurrence:
        raw_start = vevent.decoded("dtstart")
        all_day = not isinstance(raw_start, datetime)
        end: date | datetime | None = vevent.decoded("dtend") if vevent.get("dtend") else None
        if end is None and vevent.get("duration"):
            end = raw_start + vevent.decoded("duration")
        return cls(str(vevent.get("uid", href)), href, as_local(raw_start, zone),
                   as_local(end, zone) if end is not None else None, all_day, str(vevent.get("summary", "")),
                   str(vevent.get("location", "")), bool(vevent.get("rrule") or vevent.get("rdate")),
                   video_of(vevent), blocks_time(vevent), str(vevent.get("description", "")))

    @property
    def last_moment(self) -> datetime:
        """Where the occurrence ends, for overlap: a whole day without end lasts the day."""
        if self.end is not None:
            return self.end
        return self.start + timedelta(days=1) if self.all_day else self.start


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(items: Iterable[Item], zone: ZoneInfo, window: tuple[datetime, datetime]
           ) -> tuple[list[Occurrence], datetime]:
    """Every occurrence of ``items`` in ``window``, and where the window really ends (sooner
    when a series had more than ``MAX_PER_ITEM`` occurrences in it). CPU work: run in a thread."""
    found: list[Occurrence] = []
    window_end = window[1]
    for item in items:
        try:
            calendar = ICalendar.from_ical(item.data)
            query = recurring_ical_events.of(calendar, components=["VEVENT"])
            kept = list(itertools.islice(itertools.takewhile(
                lambda o: as_local(o.decoded("dtstart"), zone) < window[1], query.after(window[0])),
                MAX_PER_ITEM + 1))
        except Exception:  # one unreadable item must not hide the others
            log.info("item %s not readable", item.href[-60:])
            continue
        if len(kept) > MAX_PER_ITEM:
            kept = kept[:MAX_PER_ITEM]
            window_end = min(window_end, as_local(kept[-1].decoded("dtstart"), zone))
        found += [Occurrence.of(vevent, item.href, zone) for vevent in kept]
    return found, window_end


class OccurrenceIndex:
    def __init__(self, db: Database, zone: ZoneInfo) -> None:
        self.db, self.zone = db, zone

    def _window(self) -> tuple[datetime, datetime]:
        today = datetime.now(self.zone).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - WINDOW_BACK, today + WINDOW_AHEAD

    async def complete(self, calendar_id: str) -> bool:
        """Whether the calendar was read whole, with more than a year of its window left."""
        window_end = await self.db.fetchval("SELECT window_end FROM agenda_indexed WHERE calendar_id=$1",
                                            calendar_id)
        return window_end is not None and str(window_end) > utc_text(datetime.now(self.zone) + RENEW_WHEN_LEFT)

    async def refill(self, calendar_id: str, items: list[Item]) -> None:
        """The calendar's whole content, read again: replaces what was kept of it."""
        occurrences, window_end = await asyncio.to_thread(expand, items, self.zone, self._window())
        async with transaction(self.db) as conn:
            await conn.execute("DELETE FROM agenda_occurrence WHERE calendar_id=$1", calendar_id)
            await self._insert(conn, calendar_id, occurrences)
            await conn.execute(
                "INSERT INTO agenda_indexed (calendar_id, window_start, window_end) VALUES ($1, $2, $3)"
                " ON CONFLICT (calendar_id) DO UPDATE SET window_start=$2, window_end=$3",
                calendar_id, utc_text(self._window()[0]), utc_text(window_end))

    async def update(self, calendar_id: str, items: list[Item], removed: list[str]) -> None:
        """Items changed or removed: their occurrences replaced (over the calendar's window)."""
        row = await self.db.fetchrow("SELECT window_start, window_end FROM agenda_indexed WHERE calendar_id=$1",
                                     calendar_id)
        if row is None:
            return  # not read whole yet: the watcher's next look reads everything
        window = (_from_utc(str(row["window_start"])), _from_utc(str(row["window_end"])))
        occurrences, window_end = await asyncio.to_thread(expand, items, self.zone, window)
        async with transaction(self.db) as conn:
            for href in [item.href for item in items] + removed:
                await conn.execute("DELETE FROM agenda_occurrence WHERE calendar_id=$1 AND href=$2",
                                   calendar_id, href)
            await self._insert(conn, calendar_id, occurrences)
            if window_end < window[1]:
                await conn.execute("UPDATE agenda_indexed SET window_end=$2 WHERE calendar_id=$1",
                                   calendar_id, utc_text(window_end))

    async def forget(self, calendar_id: str) -> None:
        """The calendar no longer followed (or read again from nothing)."""
        async with transaction(self.db) as conn:
            await conn.execute("DELETE FROM agenda_occurrence WHERE calendar_id=$1", calendar_id)
            await conn.execute("DELETE FROM agenda_indexed WHERE calendar_id=$1", calendar_id)

    @staticmethod
    async def _insert(conn: Connection, calendar_id: str, occurrences: list[Occurrence]) -> None:
        await conn.executemany(
            "INSERT INTO agenda_occurrence (calendar_id, href, uid, starts_at, ends_at, start_local, end_local,"
            " all_day, summary, location, recurring, video, busy)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            [(calendar_id, o.href, o.uid, utc_text(o.start), utc_text(o.last_moment), o.start.isoformat(),
              o.end.isoformat() if o.end else "", int(o.all_day), o.summary[:500], o.location[:500],
              int(o.recurring), o.video[:500], int(o.busy)) for o in occurrences])

    def _local(self, text: str) -> datetime:
        # In the zone, not at a fixed offset: « the day before at 17:00 » crosses DST changes.
        return datetime.fromisoformat(text).astimezone(self.zone)

    async def between(self, calendar_id: str, room_id: str, start: datetime, end: datetime
                      ) -> list[tuple[int | None, Occurrence]] | None:
        """The occurrences overlapping [start, end), with their number in ``room_id`` when they
        have one; None when this copy cannot answer (not read whole, or outside its window)."""
        window = await self.db.fetchrow("SELECT window_start, window_end FROM agenda_indexed WHERE calendar_id=$1",
                                        calendar_id)
        if window is None or utc_text(start) < str(window["window_start"]) or utc_text(end) > str(
                window["window_end"]):
            return None
        rows = await self.db.fetch(
            "SELECT o.href, o.uid, o.start_local, o.end_local, o.all_day, o.summary, o.location, o.recurring,"
            " o.video, o.busy, n.number FROM agenda_occurrence o"
            " LEFT JOIN agenda_number n ON n.room_id=$4 AND n.uid=o.uid"
            " WHERE o.calendar_id=$1 AND o.starts_at < $3 AND (o.ends_at > $2 OR o.starts_at >= $2)"
            " ORDER BY o.starts_at", calendar_id, utc_text(start), utc_text(end), room_id)
        return [(None if row["number"] is None else int(row["number"]), Occurrence(
            str(row["uid"]), str(row["href"]), self._local(str(row["start_local"])),
            self._local(str(row["end_local"])) if row["end_local"] else None, bool(row["all_day"]),
            str(row["summary"]), str(row["location"]), bool(row["recurring"]), str(row["video"]),
            bool(row["busy"]))) for row in rows]


def _from_utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
