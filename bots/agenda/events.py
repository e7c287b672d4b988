"""iCalendar helpers of @agenda: events made from commands, shown in rooms, their video link."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from icalendar import Calendar as ICalendar
from icalendar import Event as IEvent

from maillage.bots.agenda.dates import MONTH_NAMES, WEEKDAYS, When

VIDEO_WORDS = ("visio", "visioconférence", "visioconference", "video", "vidéo")


def without_video_word(text: str) -> tuple[str, bool]:
    """« … salle B visio » → the text without « visio », and whether it was there."""
    words = text.split()
    kept = [w for w in words if w.lower().strip(",;") not in VIDEO_WORDS]
    return " ".join(kept), len(kept) != len(words)


def add_video(vevent: IEvent, pattern: str, uid: str) -> str:
    """The event's video meeting (RFC 7986 CONFERENCE, and URL for older apps): a room name made
    from the UID and a hash, so nobody guesses it from the title."""
    existing = video_of(vevent)
    if existing:
        return existing
    name = "Maillage-" + hashlib.sha256(("visio|" + uid).encode()).hexdigest()[:20]
    address = pattern.format(salle=name)
    vevent.add("conference", address, parameters={"VALUE": "URI", "FEATURE": "VIDEO", "LABEL": "Visio"})
    vevent.add("url", address)
    return address


def video_of(vevent: IEvent) -> str:
    conference = vevent.get("conference")
    if isinstance(conference, list):
        conference = conference[0] if conference else None
    return str(conference) if conference else ""


def blocks_time(occurrence: IEvent) -> bool:
    """Busy unless marked free or cancelled; a whole-day event (a holiday, a fair) only when
    marked busy, as calendar apps do."""
    if str(occurrence.get("transp", "")).upper() == "TRANSPARENT" or str(occurrence.get("status", "")).upper() \
            == "CANCELLED":
        return False
    if not isinstance(occurrence.decoded("dtstart"), datetime):
        return str(occurrence.get("transp", "")).upper() == "OPAQUE"
    return True


def one_line(value: object) -> str:
    """A title or a place as one line: a file's line breaks cannot shape the bot's messages."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())[:200]


def spoken_day(day: date) -> str:
    """« jeudi 27 novembre 2026 »."""
    return f"{WEEKDAYS[day.weekday()]} {day.day} {MONTH_NAMES[day.month - 1]} {day.year}"


def as_local(value: date | datetime, zone: ZoneInfo) -> datetime:
    """In ``zone``, through UTC: a time the clocks skip (02:30 on the night they go forward)
    becomes the time they show (03:30), as calendar apps show it."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(UTC).astimezone(zone)
    return datetime(value.year, value.month, value.day, tzinfo=zone)


def master_of(data: str) -> IEvent | None:
    """The item's main VEVENT (not an overridden occurrence)."""
    try:
        calendar = ICalendar.from_ical(data)
    except ValueError:
        return None
    events = [c for c in calendar.walk("VEVENT") if isinstance(c, IEvent) and not c.get("recurrence-id")]
    return events[0] if events else None


def new_vevent(uid: str, title: str, when: When, place: str, author: str, zone: ZoneInfo) -> IEvent:
    vevent = IEvent()
    vevent.add("uid", uid)
    vevent.add("summary", title)
    vevent.add("dtstamp", datetime.now(ZoneInfo("UTC")))
    set_when(vevent, when)
    if place:
        vevent.add("location", place)
    vevent.add("x-maillage-auteur", author)
    return vevent


def set_when(vevent: IEvent, when: When) -> None:
    for name in ("dtstart", "dtend", "rrule"):
        vevent.pop(name, None)
    if when.all_day:
        vevent.add("dtstart", when.start.date())
        vevent.add("dtend", when.end.date())
    else:
        vevent.add("dtstart", when.start)
        vevent.add("dtend", when.end)
    if when.recurrence is not None:
        vevent.add("rrule", when.recurrence.rrule(ZoneInfo(str(when.start.tzinfo))))
