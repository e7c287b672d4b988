"""iCalendar files in and out of a room: ``!agenda export`` and .ics files posted in the room.

A posted file is read with limits before anything is shown: its size, how deeply
its components nest, how many events it holds, time zones that exist. It is
then previewed and imported only on ``!agenda importe``, all of it or nothing:
every event is checked first, and each is written with ``If-None-Match: *``
under its own UID, so an import cut short is finished by its replay without
writing anything twice.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from zoneinfo import ZoneInfo, available_timezones

from icalendar import Calendar as ICalendar
from icalendar import Event as IEvent
from icalendar import Timezone as ITimezone

from maillage.bots.caldav.client import Item
from maillage.bots.runtime.commands import CommandError
from maillage.i18n import t

PARIS = ZoneInfo("Europe/Paris")
MAX_ICS_BYTES = 1_000_000
MAX_EVENTS = 500
MAX_DEPTH = 6  # VCALENDAR > VEVENT > VALARM is 3; VTIMEZONE > STANDARD is 3
PRODID = "-//Maillage//Agenda//FR"


def export(items: list[Item]) -> bytes:
    """One calendar file of the items: their events and the time zones they use, once each."""
    calendar = ICalendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    zones: set[str] = set()
    for item in items:
        try:
            source = ICalendar.from_ical(item.data)
        except ValueError:
            continue
        for component in source.subcomponents:
            if isinstance(component, ITimezone):
                if str(component.get("tzid")) in zones:
                    continue
                zones.add(str(component.get("tzid")))
            calendar.add_component(component)
    return bytes(calendar.to_ical())


def read_file(data: bytes) -> list[IEvent]:
    """The events of a posted .ics file, or a French message saying what is wrong with it."""
    if len(data) > MAX_ICS_BYTES:
        raise CommandError(t("agenda.ics_too_large", limit=MAX_ICS_BYTES // 1000))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CommandError(t("agenda.ics_unreadable")) from None
    _check_nesting(text)
    try:
        calendar = ICalendar.from_ical(text)
    except (ValueError, IndexError, KeyError):
        raise CommandError(t("agenda.ics_unreadable")) from None
    if not isinstance(calendar, ICalendar):
        raise CommandError(t("agenda.ics_unreadable"))
    events = [c for c in calendar.subcomponents if isinstance(c, IEvent)]
    if not events:
        raise CommandError(t("agenda.ics_empty"))
    if len(events) > MAX_EVENTS:
        raise CommandError(t("agenda.ics_too_many", count=len(events), limit=MAX_EVENTS))
    known_zones = {str(c.get("tzid")) for c in calendar.subcomponents if isinstance(c, ITimezone)}
    for event in events:
        _check_event(event, known_zones)
    return events


def with_its_zones(event: IEvent) -> ICalendar:
    """A calendar holding one imported event and the VTIMEZONE its times need."""
    calendar = ICalendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add_component(event)
    calendar.add_missing_timezones()
    return calendar


def uid_of(event: IEvent) -> str:
    """Its UID; one made from its content when the file gives none (the same on every replay)."""
    uid = str(event.get("uid") or "")
    return uid if uid and len(uid) <= 200 else hashlib.sha256(event.to_ical()).hexdigest()[:32] + "@import"


def _check_nesting(text: str) -> None:
    depth = 0
    for line in text.splitlines():
        word = line.strip().upper()
        if word.startswith("BEGIN:"):
            depth += 1
            if depth > MAX_DEPTH:
                raise CommandError(t("agenda.ics_too_deep"))
        elif word.startswith("END:"):
            depth -= 1


def _check_event(event: IEvent, known_zones: set[str]) -> None:
    title = str(event.get("summary") or "")[:60]
    if event.get("dtstart") is None:
        raise CommandError(t("agenda.ics_no_start", title=title or "—"))
    for name in ("dtstart", "dtend"):
        prop = event.get(name)
        if prop is None:
            continue
        zone = prop.params.get("TZID")
        if zone and zone not in known_zones and zone not in available_timezones():
            raise CommandError(t("agenda.ics_unknown_zone", zone=str(zone)[:60], title=title or "—"))
        try:
            value = event.decoded(name)
        except (ValueError, TypeError):
            raise CommandError(t("agenda.ics_unreadable")) from None
        if zone and isinstance(value, datetime) and value.tzinfo is None:
            raise CommandError(t("agenda.ics_unknown_zone", zone=str(zone)[:60], title=title or "—"))
    if event.get("dtend") is not None and _comparable(event.decoded("dtend")) < _comparable(event.decoded("dtstart")):
        raise CommandError(t("agenda.ics_end_before_start", title=title or "—"))


def _comparable(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=PARIS)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=PARIS)
    raise CommandError(t("agenda.ics_unreadable"))
