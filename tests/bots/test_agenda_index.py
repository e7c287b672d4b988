"""@agenda's occurrence index answers as the calendar itself does.

Random calendars (weekly, daily and monthly series, with an end or without, excluded
dates, moved occurrences, whole days, floating and UTC times, events on the days clocks
change) are indexed on a real database, SQLite and PostgreSQL, and every period asked
is compared with what ``recurring-ical-events`` computes from the same files, read
here with ``icalendar`` only (not with the bot's code).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import recurring_ical_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from icalendar import Calendar
from mautrix.util.async_db import Database

from maillage.bots.agenda.bot import AgendaBot
from maillage.bots.agenda.index import MAX_PER_ITEM, OccurrenceIndex
from maillage.bots.caldav.client import Item
from maillage.bots.runtime.store import upgrade_table
from tests.bots.test_postgres import postgres_url  # noqa: F401  (a fixture)

PARIS = ZoneInfo("Europe/Paris")
CLOCK_CHANGES = [date(2026, 3, 29), date(2026, 10, 25), date(2027, 3, 28), date(2027, 10, 31)]
Seen = set[tuple[str, str, str]]  # (uid, local start, title)


@st.composite
def vevent_texts(draw: Any, uid: str) -> str:
    """One item: a VEVENT, maybe a series with an excluded date and a moved occurrence."""
    day = draw(st.one_of(st.sampled_from(CLOCK_CHANGES),
                         st.dates(date(2026, 1, 1), date(2027, 12, 31))))
    kind = draw(st.sampled_from(["paris", "utc", "floating", "day"]))
    hour, minute = draw(st.integers(0, 23)), draw(st.sampled_from([0, 30]))
    moment = datetime.combine(day, time(hour, minute))
    if kind == "day":
        start = f"DTSTART;VALUE=DATE:{day:%Y%m%d}"
        length = draw(st.sampled_from([None, 1, 3]))
        end = f"DTEND;VALUE=DATE:{day + timedelta(days=length):%Y%m%d}" if length else ""
    else:
        stamp = f"{moment:%Y%m%dT%H%M%S}" + ("Z" if kind == "utc" else "")
        prefix = "DTSTART;TZID=Europe/Paris:" if kind == "paris" else "DTSTART:"
        start = prefix + stamp
        minutes = draw(st.sampled_from([None, 0, 30, 90, 24 * 60 + 30]))
        end = "" if minutes is None else f"DURATION:PT{minutes}M"
    rule = draw(st.sampled_from(["", "FREQ=WEEKLY", "FREQ=DAILY;INTERVAL=3", "FREQ=MONTHLY"]))
    if rule:
        rule += draw(st.sampled_from(["", ";COUNT=5", ";COUNT=40", f";UNTIL={day + timedelta(days=200):%Y%m%d}"]))
    lines = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20261125T080000Z", start, end, f"SUMMARY:Titre {uid}"]
    extra: list[str] = []
    if rule:
        lines.append(f"RRULE:{rule}")
        second = start.split(":", 1)[1]
        second_day = (day + timedelta(days=7 if "WEEKLY" in rule else 3 if "DAILY" in rule else 31))
        if "MONTHLY" in rule:
            second_day = date(day.year + (day.month == 12), day.month % 12 + 1, day.day) if day.day <= 28 else None
        if second_day is not None and draw(st.booleans()):
            excluded = second.replace(f"{day:%Y%m%d}", f"{second_day:%Y%m%d}")
            lines.append(start.replace("DTSTART", "EXDATE").split(":")[0] + ":" + excluded)
        elif second_day is not None and draw(st.booleans()):
            recurrence = second.replace(f"{day:%Y%m%d}", f"{second_day:%Y%m%d}")
            moved = (second_day + timedelta(days=1)).strftime("%Y%m%d")
            field = start.split(":")[0]
            extra = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20261125T080000Z",
                     f"{field.replace('DTSTART', 'RECURRENCE-ID')}:{recurrence}",
                     f"{field}:{recurrence.replace(second_day.strftime('%Y%m%d'), moved)}", "SUMMARY:Déplacé",
                     "END:VEVENT"]
    lines.append("END:VEVENT")
    body = "\r\n".join(line for line in lines + extra if line)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//FR\r\n{body}\r\nEND:VCALENDAR\r\n"


def _local(value: date | datetime) -> datetime:
    """In Paris; a time the clocks skip is shown as the time they show (through UTC)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=PARIS)).astimezone(UTC).astimezone(PARIS)
    return datetime(value.year, value.month, value.day, tzinfo=PARIS)


def expected(items: list[Item], start: datetime, end: datetime) -> Seen:
    """What the calendar holds in [start, end): an occurrence is in when it overlaps the period
    (one without duration: when it begins in it)."""
    seen = set()
    for item in items:
        for occurrence in recurring_ical_events.of(Calendar.from_ical(item.data)).between(
                start - timedelta(days=3), end + timedelta(days=3)):
            begins = occurrence.decoded("dtstart")
            if occurrence.get("dtend"):
                ends = _local(occurrence.decoded("dtend"))
            elif occurrence.get("duration"):
                ends = _local(begins + occurrence.decoded("duration"))
            else:
                ends = _local(begins) + (timedelta(days=1) if not isinstance(begins, datetime) else timedelta(0))
            if _local(begins) < end and (ends > start or _local(begins) >= start):
                seen.add((str(occurrence["uid"]), _local(begins).isoformat(), str(occurrence["summary"])))
    return seen


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:{Path(tempfile.mkdtemp(prefix='agenda-index-')) / 'bots.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


class Indexed:
    """An index on a real database, driven from synchronous hypothesis examples."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.db = Database.create(url, upgrade_table=upgrade_table)
        self.loop.run_until_complete(self._start())
        self.index = OccurrenceIndex(self.db, PARIS)

    async def _start(self) -> None:
        await self.db.start()
        for table in AgendaBot.tables:
            await table.upgrade(self.db)

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    def seen(self, calendar_id: str, start: datetime, end: datetime) -> Seen | None:
        found = self.run(self.index.between(calendar_id, "", start, end))
        return None if found is None else {(o.uid, o.start.isoformat(), o.summary) for _, o in found}

    def close(self) -> None:
        self.run(self.db.stop())
        self.loop.close()


@pytest.fixture
def indexed(database_url: str) -> Iterator[Indexed]:
    index = Indexed(database_url)
    yield index
    index.close()


_CALENDARS = iter(range(10**9))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.integers(0, 10**6).flatmap(lambda n: vevent_texts(f"e{n}@test")), min_size=1, max_size=6,
                      unique_by=lambda text: text.split("UID:")[1].split("\r\n")[0]),
       first_day=st.one_of(st.sampled_from(CLOCK_CHANGES), st.dates(date(2026, 1, 1), date(2027, 12, 31))),
       days=st.integers(1, 35), hours=st.sampled_from([0, 0, 9]),
       changed=st.integers(0, 5), removed=st.booleans())
def test_the_index_lists_what_the_calendar_holds_for_any_period(
    indexed: Indexed, texts: list[str], first_day: date, days: int, hours: int, changed: int, removed: bool
) -> None:
    calendar_id = f"c{next(_CALENDARS)}"
    items = [Item(f"/maillage/{calendar_id}/{n}.ics", f'"{n}"', text) for n, text in enumerate(texts)]
    start = datetime.combine(first_day, time(hours), PARIS)
    end = start + timedelta(days=days)
    indexed.run(indexed.index.refill(calendar_id, items))
    assert indexed.seen(calendar_id, start, end) == expected(items, start, end)

    # One item changed (another title), one removed: the index follows.
    target = items[changed % len(items)]
    retitled = Item(target.href, '"neuf"', target.data.replace("SUMMARY:Titre", "SUMMARY:Nouveau titre"))
    items = [retitled if item.href == target.href else item for item in items]
    gone = [item for item in items if item.href != target.href][-1:] if removed else []
    items = [item for item in items if item not in gone]
    indexed.run(indexed.index.update(calendar_id, [retitled], [item.href for item in gone]))
    assert indexed.seen(calendar_id, start, end) == expected(items, start, end)


def test_a_series_too_dense_for_the_window_shortens_it_and_later_periods_go_to_the_server(
    indexed: Indexed,
) -> None:
    text = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//FR\r\nBEGIN:VEVENT\r\nUID:chaque-heure@test\r\n"
            "DTSTAMP:20261125T080000Z\r\nDTSTART;TZID=Europe/Paris:20260101T000000\r\nRRULE:FREQ=HOURLY\r\n"
            "SUMMARY:Relevé\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    items = [Item("/maillage/dense/1.ics", '"1"', text)]
    indexed.run(indexed.index.refill("dense", items))
    today = datetime.now(PARIS).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=366)
    kept_until = max(first, datetime(2026, 1, 1, tzinfo=PARIS)) + timedelta(hours=MAX_PER_ITEM - 1)
    inside = (kept_until - timedelta(days=2), kept_until - timedelta(days=1))
    assert indexed.seen("dense", *inside) == expected(items, *inside)
    assert indexed.seen("dense", kept_until, kept_until + timedelta(days=1)) is None
    assert indexed.run(indexed.index.complete("dense")) is False  # read whole again at the next look


def test_a_calendar_not_read_yet_or_a_period_beyond_the_window_is_asked_of_the_server(indexed: Indexed) -> None:
    now = datetime.now(PARIS)
    assert indexed.seen("jamais-lu", now, now + timedelta(days=7)) is None
    indexed.run(indexed.index.refill("lu", []))
    assert indexed.seen("lu", now, now + timedelta(days=7)) == set()
    assert indexed.run(indexed.index.complete("lu")) is True
    assert indexed.seen("lu", now + timedelta(days=800), now + timedelta(days=807)) is None
    assert indexed.seen("lu", now - timedelta(days=400), now - timedelta(days=393)) is None
