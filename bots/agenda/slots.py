"""Finding a meeting slot: the first common free times within working hours.

Only busy intervals go in (free/busy, never titles), only free slots come out.
Times are wall-clock times in the collectivité's zone: a slot at 9:00 stays at
9:00 on both sides of a change of time, and a slot is never placed across the
hour that does not exist.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from maillage.bots.runtime.commands import CommandError
from maillage.i18n import t

WORKING_HOURS: tuple[tuple[time, time], ...] = ((time(9), time(12)), (time(14), time(18)))
WORKING_DAYS = frozenset(range(5))  # Monday to Friday
STEP = timedelta(minutes=30)
MAX_SLOT = timedelta(hours=8)
_DURATION = re.compile(r"^(?:(\d{1,2})h(\d{2})?|(\d{1,3})min)$")

Interval = tuple[datetime, datetime]


def read_duration(text: str) -> timedelta:
    """« 1h », « 1h30 », « 45min »."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise CommandError(t("agenda.slot_duration", text=text[:20]))
    duration = timedelta(hours=int(match[1] or 0), minutes=int(match[2] or match[3] or 0))
    if not timedelta(minutes=15) <= duration <= MAX_SLOT:
        raise CommandError(t("agenda.slot_duration", text=text[:20]))
    return duration


def read_period(words: list[str], now: datetime) -> tuple[datetime, datetime]:
    """« semaine prochaine », « cette semaine », « demain », « aujourd'hui »; by default the
    next seven days from now."""
    text = " ".join(words).lower().replace("’", "'")
    today = now.date()
    monday = today - timedelta(days=today.weekday())
    zone = now.tzinfo
    next_week = (_midnight(monday + timedelta(days=7), zone), _midnight(monday + timedelta(days=14), zone))
    this_week = (now, _midnight(monday + timedelta(days=7), zone))
    tomorrow = (_midnight(today + timedelta(days=1), zone), _midnight(today + timedelta(days=2), zone))
    today_left = (now, _midnight(today + timedelta(days=1), zone))
    periods = {
        "": (now, now + timedelta(days=7)),
        "semaine prochaine": next_week, "next week": next_week,
        "cette semaine": this_week, "this week": this_week,
        "demain": tomorrow, "tomorrow": tomorrow,
        "aujourd'hui": today_left, "today": today_left,
    }
    if text not in periods:
        raise CommandError(t("agenda.slot_period", text=text[:40]))
    return periods[text]


def free_slots(busy: list[Interval], start: datetime, end: datetime, duration: timedelta, zone: ZoneInfo,
               limit: int = 3) -> list[Interval]:
    """The first ``limit`` slots of ``duration`` in [start, end), within working hours, on the
    half hour, overlapping no busy interval."""
    busy = sorted(busy)
    found: list[Interval] = []
    day = start.astimezone(zone).date()
    while day <= end.astimezone(zone).date() and len(found) < limit:
        if day.weekday() in WORKING_DAYS:
            for opening, closing in WORKING_HOURS:
                found += _in_window(busy, _at(day, opening, zone), _at(day, closing, zone), start, end, duration,
                                    limit - len(found))
                if len(found) >= limit:
                    break
        day += timedelta(days=1)
    return found


def _in_window(busy: list[Interval], opening: datetime, closing: datetime, start: datetime, end: datetime,
               duration: timedelta, wanted: int) -> list[Interval]:
    slots: list[Interval] = []
    candidate = opening
    while candidate + duration <= closing and len(slots) < wanted:
        finish = candidate + duration
        if candidate >= start and finish <= end and not any(b0 < finish and candidate < b1 for b0, b1 in busy):
            slots.append((candidate, finish))
            candidate = finish
        else:
            candidate += STEP
    return slots


def _at(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """Working hours are whole hours far from the change of time (2:00–3:00): they always exist."""
    return datetime.combine(day, clock, zone)


def _midnight(day: date, zone: object) -> datetime:
    assert isinstance(zone, ZoneInfo)
    return datetime.combine(day, time(0), zone)
