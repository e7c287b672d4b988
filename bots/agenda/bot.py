"""@agenda: a room's shared calendar, kept on the CalDAV server, used from the room.

The room's calendar is room state (``fr.maillage.agenda``, content
``{"calendrier": "urbanisme"}``), the id of a calendar under the bots' calendar
home. Events are standard iCalendar (VEVENT with TZID, VTIMEZONE included), so
Thunderbird, DAVx5 or Nextcloud show the same calendar. Each event gets a short
number in the room, never reused, whoever made the event.

Exactly once: an event made by a command has a UID derived from the command's
event id and is PUT with ``If-None-Match: *``, so a replay after a crash finds
it rather than making it twice.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import recurring_ical_events
from icalendar import Calendar as ICalendar
from icalendar import Event as IEvent
from mautrix.types import EventType, MessageEvent, MessageType, RoomID
from mautrix.util.async_db import Connection, UpgradeTable

from maillage.bots.agenda.events import (
    as_local,
    master_of,
    one_line,
    spoken_day,
)
from maillage.bots.agenda.ics import MAX_ICS_BYTES, read_file
from maillage.bots.agenda.index import Occurrence, OccurrenceIndex
from maillage.bots.agenda.index import create_tables as index_tables
from maillage.bots.agenda.reminders import Reminders
from maillage.bots.agenda.reminders import create_tables as reminder_tables
from maillage.bots.caldav.bot import CalendarBot
from maillage.bots.caldav.client import CALENDAR_ID, CalDavError, Item
from maillage.bots.caldav.watch import Change
from maillage.bots.caldav.watch import tables as watch_tables
from maillage.bots.documents.naming import slugify
from maillage.bots.runtime.binding import Binding
from maillage.bots.runtime.commands import CommandError, CommandSet
from maillage.i18n import t

log = logging.getLogger("maillage.bots.agenda")

BINDING_EVENT = EventType.find("fr.maillage.agenda", t_class=EventType.Class.STATE)
PRODID = "-//Maillage//Agenda//FR"
MAX_LISTED = 60

agenda_commands = CommandSet(("agenda", "calendar"), "l’agenda partagé du salon, dans son calendrier CalDAV")

agenda_tables = UpgradeTable(version_table_name="maillage_agenda_version")


async def _numbers(conn: Connection) -> None:
    # A number is given once per room and never reused, so « n°12 » always means one event.
    await conn.execute(
        """CREATE TABLE agenda_number (
            room_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            uid TEXT NOT NULL,
            href TEXT NOT NULL,
            PRIMARY KEY (room_id, number),
            UNIQUE (room_id, uid)
        )"""
    )


agenda_tables.register(_numbers, description="Short numbers of events in rooms")
agenda_tables.register(reminder_tables, description="Reminder settings of rooms, reminders sent")


async def _imports(conn: Connection) -> None:
    # The last .ics file previewed in a room, waiting for « !agenda importe » (checked already).
    await conn.execute("CREATE TABLE agenda_import (room_id TEXT PRIMARY KEY, filename TEXT NOT NULL,"
                       " data TEXT NOT NULL)")


agenda_tables.register(_imports, description="Calendar files waiting to be imported")


async def _slots(conn: Connection) -> None:
    # Free slots last proposed in a room (« !agenda réserve 2 » books the second one).
    await conn.execute(
        """CREATE TABLE agenda_slot (
            room_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            starts_at TEXT NOT NULL,
            ends_at TEXT NOT NULL,
            participants TEXT NOT NULL,
            PRIMARY KEY (room_id, number)
        )"""
    )
    # An agent's own calendar, made by the bot for them: only they link it.
    await conn.execute("CREATE TABLE agenda_personal (user_id TEXT PRIMARY KEY, calendar_id TEXT NOT NULL)")


agenda_tables.register(_slots, description="Proposed slots, personal calendars")
agenda_tables.register(index_tables, description="Occurrences of the bound calendars, for listings")


async def _import_done(conn: Connection) -> None:
    # The command that imported the file: its replay after a crash imports again (each event
    # once), another « !agenda importe » finds nothing waiting.
    await conn.execute("ALTER TABLE agenda_import ADD COLUMN imported_by TEXT")


agenda_tables.register(_import_done, description="Which command imported a waiting calendar file")


def normalise_calendar(raw: str) -> str:
    """A calendar id (one path segment: lower-case letters, digits, ``-``, ``_``)."""
    calendar_id = slugify(raw.strip()).replace(".", "-")
    if "/" in raw or not CALENDAR_ID.match(calendar_id):
        raise CommandError(t("agenda.calendar_invalid", value=raw[:60]))
    return calendar_id


def uid_for(event_id: str) -> str:
    """The UID of the event a command makes: the same on every attempt at that command."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:32] + "@maillage"


class AgendaBot(CalendarBot):
    localpart = "agenda"
    displayname = "Agenda"
    title = "Robot Agenda — aide"
    commands: ClassVar[list[CommandSet]] = [agenda_commands]
    binding = Binding(BINDING_EVENT, "calendrier", normalise_calendar, messages="agenda",
                      invalid="agenda.calendar_invalid")
    tables = (agenda_tables, watch_tables)
    number_table = "agenda_number"

    index: OccurrenceIndex

    def make_copy(self) -> OccurrenceIndex:
        self.index = OccurrenceIndex(self.context.db, self.zone)
        return self.index

    def background(self) -> list[Any]:
        self.reminders = Reminders(self)
        return [self.reminders.run()]

    # --- changes made elsewhere ------------------------------------------------------

    async def shown(self, room_id: str, change: Change) -> str | None:
        master = master_of(change.data)
        if master is None:
            return None
        return self.describe(await self.numbers.of(room_id, str(master.get("uid", change.href)), change.href), master)

    async def on_message(self, event: MessageEvent) -> None:
        """An .ics file posted in a bound room: checked, previewed, imported on request."""
        content = event.content
        name = str(content.get("filename") or content.body or "")
        info = getattr(content, "info", None)
        mimetype = str(getattr(info, "mimetype", "") or "")
        if content.msgtype != MessageType.FILE or not (name.lower().endswith(".ics") or mimetype == "text/calendar"):
            return
        if await self.bindings.target(event.room_id) is None:
            return
        try:
            data = await self.attachment_bytes(event, MAX_ICS_BYTES)
            if data is None:
                raise CommandError(t("agenda.ics_too_large", limit=MAX_ICS_BYTES // 1000))
            events = read_file(data)
        except CommandError as error:
            await self.reply(event, str(error))
            return
        await self.context.db.execute(
            "INSERT INTO agenda_import (room_id, filename, data) VALUES ($1, $2, $3)"
            " ON CONFLICT (room_id) DO UPDATE SET filename=$2, data=$3, imported_by=NULL", event.room_id, name[:100],
            data.decode("utf-8-sig"))
        lines = [self.describe_imported(vevent) for vevent in events[:10]]
        if len(events) > 10:
            lines.append(t("agenda.more", count=len(events) - 10))
        await self.reply(event, t("agenda.ics_preview", name=one_line(name)[:100], count=len(events))
                         + "\n" + "\n".join(lines) + "\n" + t("agenda.ics_confirm"))

    async def busy_times(self, participants: list[str], start: datetime, end: datetime
                         ) -> list[tuple[datetime, datetime]]:
        """When any of ``participants`` is busy: events of the calendars of the rooms they are
        in, and of their personal calendars. Each room's members and each calendar are asked
        for once, however many participants share them. Times only: titles never leave here."""
        wanted = set(participants)
        calendars: set[str] = set()
        for row in await self.context.db.fetch("SELECT room_id, target FROM maillage_room_binding WHERE bot=$1",
                                               self.localpart):
            if wanted & set(await self.client.get_joined_members(RoomID(str(row["room_id"])))):
                calendars.add(str(row["target"]))
        for user_id in participants:
            personal = await self.context.db.fetchval("SELECT calendar_id FROM agenda_personal WHERE user_id=$1",
                                                      user_id)
            if personal:
                calendars.add(str(personal))
        busy = []
        for calendar_id in sorted(calendars):  # asked of the server: a meeting set a moment ago counts
            busy += [(o.start, o.last_moment) for o in await self.occurrences_on_server(calendar_id, start, end)
                     if o.busy]
        return busy

    def describe_imported(self, vevent: IEvent) -> str:
        start = vevent.decoded("dtstart")
        when = spoken_day(start.date() if isinstance(start, datetime) else start)
        if isinstance(start, datetime):
            when += f", {as_local(start, self.zone):%H:%M}"
        return f"– {one_line(vevent.get('summary', '—'))} · {when}"

    @staticmethod
    def spoken(day: date) -> str:
        return spoken_day(day)

    # --- numbers ---------------------------------------------------------------------

    async def numbered(self, event: MessageEvent, number: int) -> tuple[IEvent, str, str, str]:
        """The event numbered ``number`` in this room (its VEVENT, calendar, href, ETag), or a French
        error."""
        calendar_id, item = await self.item_numbered(event.room_id, number, "agenda.no_such_number")
        master = master_of(item.data)
        if master is None:
            raise CommandError(t("agenda.no_such_number", number=number))
        return master, calendar_id, item.href, item.etag

    # --- writing ---------------------------------------------------------------------

    async def put_event(self, calendar_id: str, href: str, vevent: IEvent, etag: str | None) -> None:
        """Write the event (``etag`` None: a new one, never overwriting); a creation met by 412
        was written by an earlier attempt at the same command."""
        calendar = ICalendar()
        calendar.add("prodid", PRODID)
        calendar.add("version", "2.0")
        calendar.add_component(vevent)
        calendar.add_missing_timezones()
        try:
            await self.write(calendar_id, href, calendar.to_ical().decode(), etag)
        except CalDavError as error:
            if error.status != 412 or etag is not None:
                raise
            await self.noted(calendar_id, Item(href, "", ""))

    # --- reading ---------------------------------------------------------------------

    async def occurrences(self, room_id: str, start: datetime, end: datetime) -> list[tuple[int, Occurrence]]:
        """Every occurrence in [start, end) of the room's calendar, numbered, in time order: from
        the index when it can answer, else from the server."""
        calendar_id = await self.bindings.required(room_id)
        found = await self.index.between(calendar_id, room_id, start, end)
        if found is None:
            found = [(None, occurrence) for occurrence in await self.occurrences_on_server(calendar_id, start, end)]
        numbered = []
        for number, occurrence in found:
            if number is None:
                number = await self.numbers.of(room_id, occurrence.uid, occurrence.href)
            numbered.append((number, occurrence))
        numbered.sort(key=lambda entry: (entry[1].start, entry[0]))
        return numbered

    async def occurrences_on_server(self, calendar_id: str, start: datetime, end: datetime) -> list[Occurrence]:
        found = []
        for item in await self.caldav.between(calendar_id, start, end):
            try:
                expanded = recurring_ical_events.of(ICalendar.from_ical(item.data)).between(start, end)
            except Exception:  # one unreadable item must not hide the others
                log.info("item %s of %s not readable", item.href[-60:], calendar_id)
                continue
            found += [Occurrence.of(o, item.href, self.zone) for o in expanded if o.name == "VEVENT"]
        return found

    def describe(self, number: int, event: IEvent | Occurrence, *, long: bool = False) -> str:
        shown = event if isinstance(event, Occurrence) else Occurrence.of(event, "", self.zone)
        start, end = shown.start, shown.end
        when = spoken_day(start.date())
        if not shown.all_day:
            when += f", {start:%H:%M}" + (f"–{end:%H:%M}" if end and end.date() == start.date() else "")
        elif end is not None and (end.date() - start.date()).days > 1:
            when += t("agenda.until_day", day=spoken_day(end.date() - timedelta(days=1)))
        else:
            when += t("agenda.all_day")
        line = f"n°{number} — {one_line(shown.summary)} · {when}"
        if shown.location:
            line += f" · {one_line(shown.location)}"
        if shown.recurring:
            line += t("agenda.repeats")
        if shown.video:
            line += t("agenda.video", url=shown.video)
        if long and shown.description:
            line += "\n" + shown.description[:500]
        return line
