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

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import recurring_ical_events
from icalendar import Calendar as ICalendar
from icalendar import Event as IEvent
from mautrix.types import EventType, MessageEvent, MessageType, RoomID
from mautrix.util.async_db import Connection, UpgradeTable

from maillage.bots.agenda.dates import MONTH_NAMES, WEEKDAYS, DateError, When, read_event, read_when
from maillage.bots.agenda.ics import MAX_ICS_BYTES, export, read_file, uid_of, with_its_zones
from maillage.bots.agenda.reminders import Reminders, read_rules, read_summary_time
from maillage.bots.agenda.reminders import create_tables as reminder_tables
from maillage.bots.agenda.slots import free_slots, read_duration, read_period
from maillage.bots.caldav.client import CALENDAR_ID, CalDav, CalDavError
from maillage.bots.caldav.watch import Batch, CalendarWatcher, Change
from maillage.bots.caldav.watch import tables as watch_tables
from maillage.bots.documents.naming import slugify
from maillage.bots.runtime.binding import Binding
from maillage.bots.runtime.bot import Bot, RetryLater
from maillage.bots.runtime.commands import Argument, CommandError, CommandSet
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


def normalise_calendar(raw: str) -> str:
    """A calendar id (one path segment: lower-case letters, digits, ``-``, ``_``)."""
    calendar_id = slugify(raw.strip()).replace(".", "-")
    if "/" in raw or not CALENDAR_ID.match(calendar_id):
        raise CommandError(t("agenda.calendar_invalid", value=raw[:60]))
    return calendar_id


def uid_for(event_id: str) -> str:
    """The UID of the event a command makes: the same on every attempt at that command."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:32] + "@maillage"


class AgendaBot(Bot):
    localpart = "agenda"
    displayname = "Agenda"
    title = "Robot Agenda — aide"
    commands: ClassVar[list[CommandSet]] = [agenda_commands]
    binding = Binding(BINDING_EVENT, "calendrier", normalise_calendar, messages="agenda",
                      invalid="agenda.calendar_invalid")
    tables = (agenda_tables, watch_tables)

    async def setup(self) -> None:
        config = self.context.config
        requests = self.context.metrics.dav_requests
        self.caldav = CalDav.for_stack(config, self.context.secrets.dav_password,
                                       lambda method: requests.labels(self.localpart, method).inc())
        self.zone = ZoneInfo(config.collectivite.fuseau_horaire)
        self._numbering = asyncio.Lock()  # commands and the watcher both give numbers
        self.watcher = CalendarWatcher(self.caldav, self.context.db, self.localpart, self.bound_calendars,
                                       self.announce, self.announce_batch, config.agenda.intervalle_secondes)
        self.reminders = Reminders(self)
        self._tasks = [asyncio.create_task(self.watcher.run()), asyncio.create_task(self.reminders.run())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.caldav.close()

    # --- changes made elsewhere ------------------------------------------------------

    async def bound_calendars(self) -> list[str]:
        rows = await self.context.db.fetch("SELECT DISTINCT target FROM maillage_room_binding WHERE bot=$1",
                                           self.localpart)
        return [str(row["target"]) for row in rows]

    async def announce_batch(self, batch: Batch) -> None:
        """Many changes at once (an import in another app): counted in one message, not listed."""
        self.reminders.changed()
        rooms = await self.context.db.fetch("SELECT room_id FROM maillage_room_binding WHERE bot=$1 AND target=$2",
                                            self.localpart, batch.calendar_id)
        body = t("agenda.announce_batch", added=batch.added, changed=batch.changed, removed=batch.removed)
        for row in rooms:
            await self.send_about(str(row["room_id"]), f"{batch.calendar_id}|lot|{batch.key}",
                                  {"msgtype": "m.notice", "body": body}, key="annonce")

    async def announce(self, change: Change) -> None:
        """Tell the calendar's room what another app added, changed or removed."""
        self.reminders.changed()
        rooms = await self.context.db.fetch("SELECT room_id FROM maillage_room_binding WHERE bot=$1 AND target=$2",
                                            self.localpart, change.calendar_id)
        for row in rooms:
            room_id = str(row["room_id"])
            if change.kind == "suppression":
                number = await self.context.db.fetchval(
                    "SELECT number FROM agenda_number WHERE room_id=$1 AND href=$2", room_id, change.href)
                body = t("agenda.announce_removed", number=number or "?", title=change.summary or "—")
            else:
                master = _master(change.data)
                if master is None:
                    continue
                number = await self.number_of(room_id, str(master.get("uid", change.href)), change.href)
                key = "agenda.announce_added" if change.kind == "ajout" else "agenda.announce_changed"
                body = t(key, event=self.describe(number, master))
            await self.send_about(room_id, change.key, {"msgtype": "m.notice", "body": body}, key="annonce")

    def explain(self, error: Exception) -> str | None:
        if isinstance(error, CalDavError) and error.refused:
            return t("agenda.caldav_refused")
        if isinstance(error, CalDavError) and error.unavailable:
            return t("agenda.caldav_unavailable")
        return None

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
            " ON CONFLICT (room_id) DO UPDATE SET filename=$2, data=$3", event.room_id, name[:100],
            data.decode("utf-8-sig"))
        lines = [self.describe_imported(vevent) for vevent in events[:10]]
        if len(events) > 10:
            lines.append(t("agenda.more", count=len(events) - 10))
        await self.reply(event, t("agenda.ics_preview", name=one_line(name)[:100], count=len(events))
                         + "\n" + "\n".join(lines) + "\n" + t("agenda.ics_confirm"))

    async def busy_times(self, user_id: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """When ``user_id`` is busy: events of the calendars of the rooms they are in, and of
        their personal calendar. Times only: titles never leave this method."""
        calendars = set()
        for row in await self.context.db.fetch("SELECT room_id, target FROM maillage_room_binding WHERE bot=$1",
                                               self.localpart):
            if user_id in await self.client.get_joined_members(RoomID(str(row["room_id"]))):
                calendars.add(str(row["target"]))
        personal = await self.context.db.fetchval("SELECT calendar_id FROM agenda_personal WHERE user_id=$1", user_id)
        if personal:
            calendars.add(str(personal))
        busy = []
        for calendar_id in sorted(calendars):
            for item in await self.caldav.between(calendar_id, start, end):
                try:
                    occurrences = recurring_ical_events.of(ICalendar.from_ical(item.data)).between(start, end)
                except Exception:
                    continue
                for occurrence in occurrences:
                    if _blocks_time(occurrence):
                        busy.append((self.local(occurrence.decoded("dtstart")),
                                     self.local(occurrence.decoded("dtend") if occurrence.get("dtend")
                                                else occurrence.decoded("dtstart"))))
        return busy

    def describe_imported(self, vevent: IEvent) -> str:
        start = vevent.decoded("dtstart")
        when = spoken_day(start.date() if isinstance(start, datetime) else start)
        if isinstance(start, datetime):
            when += f", {_as_local(start, self.zone):%H:%M}"
        return f"– {one_line(vevent.get('summary', '—'))} · {when}"

    def now(self) -> datetime:
        return datetime.now(self.zone).replace(microsecond=0)

    def local(self, value: date | datetime) -> datetime:
        return _as_local(value, self.zone)

    @staticmethod
    def spoken(day: date) -> str:
        return spoken_day(day)

    @staticmethod
    def video_of(vevent: IEvent) -> str:
        return video_of(vevent)

    # --- numbers ---------------------------------------------------------------------

    async def number_of(self, room_id: str, uid: str, href: str) -> int:
        db = self.context.db
        async with self._numbering:
            number = await db.fetchval("SELECT number FROM agenda_number WHERE room_id=$1 AND uid=$2", room_id, uid)
            if number is not None:
                return int(number)
            return await self._new_number(room_id, uid, href)

    async def _new_number(self, room_id: str, uid: str, href: str) -> int:
        """The room's next number, in one statement (numbers are never reused)."""
        db = self.context.db
        await db.execute("INSERT INTO agenda_number (room_id, number, uid, href)"
                         " SELECT $1, COALESCE(MAX(number), 0) + 1, $2, $3 FROM agenda_number WHERE room_id=$1",
                         room_id, uid, href)
        return int(await db.fetchval("SELECT number FROM agenda_number WHERE room_id=$1 AND uid=$2", room_id, uid))

    async def numbered(self, event: MessageEvent, number: int) -> tuple[IEvent, str, str, str]:
        """The event numbered ``number`` in this room (its VEVENT, calendar, href, ETag), or a French
        error."""
        calendar_id = await self.bindings.required(event.room_id)
        row = await self.context.db.fetchrow("SELECT uid, href FROM agenda_number WHERE room_id=$1 AND number=$2",
                                             event.room_id, number)
        if row is None:
            raise CommandError(t("agenda.no_such_number", number=number))
        href = str(row["href"])
        if not href.startswith(self.caldav.href_of(calendar_id, "x").rsplit("/", 1)[0] + "/"):
            raise CommandError(t("agenda.no_such_number", number=number))  # from a calendar bound before
        item = await self.caldav.get(href)
        master = _master(item.data) if item else None
        if item is None or master is None:
            raise CommandError(t("agenda.no_such_number", number=number))
        return master, calendar_id, href, item.etag

    # --- writing ---------------------------------------------------------------------

    async def put_event(self, calendar_id: str, href: str, vevent: IEvent, etag: str | None) -> None:
        """Write the event (``etag`` None: a new one, never overwriting) and note the bot's own
        write, so that the watcher does not announce it back."""
        calendar = ICalendar()
        calendar.add("prodid", PRODID)
        calendar.add("version", "2.0")
        calendar.add_component(vevent)
        calendar.add_missing_timezones()
        try:
            new_etag = await self.caldav.put(href, calendar.to_ical().decode(), etag)
        except CalDavError as error:
            if error.status != 412 or etag is not None:
                raise
            new_etag = ""  # 412 on a creation: written by an earlier attempt at the same command
        await self.noted(calendar_id, href, new_etag, str(vevent.get("summary", "")))

    async def noted(self, calendar_id: str, href: str, etag: str, summary: str) -> None:
        self.reminders.changed()
        if not etag:  # not every server answers a PUT with the ETag
            item = await self.caldav.get(href)
            etag = item.etag if item else ""
        await self.watcher.wrote(calendar_id, href, etag, summary)

    # --- reading ---------------------------------------------------------------------

    async def occurrences(self, room_id: str, start: datetime, end: datetime) -> list[tuple[int, IEvent]]:
        """Every occurrence in [start, end) of the room's calendar, numbered, in time order."""
        calendar_id = await self.bindings.required(room_id)
        found: list[tuple[datetime, int, IEvent]] = []
        for item in await self.caldav.between(calendar_id, start, end):
            try:
                calendar = ICalendar.from_ical(item.data)
                expanded = recurring_ical_events.of(calendar).between(start, end)
            except Exception:  # one unreadable item must not hide the others
                log.info("item %s of %s not readable", item.href[-60:], calendar_id)
                continue
            for occurrence in expanded:
                if occurrence.name != "VEVENT":
                    continue
                number = await self.number_of(room_id, str(occurrence.get("uid", item.href)), item.href)
                found.append((_as_local(occurrence.decoded("dtstart"), self.zone), number, occurrence))
        found.sort(key=lambda entry: (entry[0], entry[1]))
        return [(number, occurrence) for _, number, occurrence in found]

    def describe(self, number: int, vevent: IEvent, *, long: bool = False) -> str:
        start = _as_local(vevent.decoded("dtstart"), self.zone)
        end = _as_local(vevent.decoded("dtend"), self.zone) if vevent.get("dtend") else None
        all_day = not isinstance(vevent.decoded("dtstart"), datetime)
        when = spoken_day(start.date())
        if not all_day:
            when += f", {start:%H:%M}" + (f"–{end:%H:%M}" if end and end.date() == start.date() else "")
        elif end is not None and (end.date() - start.date()).days > 1:
            when += t("agenda.until_day", day=spoken_day(end.date() - timedelta(days=1)))
        else:
            when += t("agenda.all_day")
        line = f"n°{number} — {one_line(vevent.get('summary', ''))} · {when}"
        if vevent.get("location"):
            line += f" · {one_line(vevent.get('location'))}"
        if vevent.get("rrule"):
            line += t("agenda.repeats")
        if video_of(vevent):
            line += t("agenda.video", url=video_of(vevent))
        if long and vevent.get("description"):
            line += "\n" + str(vevent.get("description"))[:500]
        return line


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


def _blocks_time(occurrence: IEvent) -> bool:
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


def _as_local(value: date | datetime, zone: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(zone) if value.tzinfo else value.replace(tzinfo=zone)
    return datetime(value.year, value.month, value.day, tzinfo=zone)


def _master(data: str) -> IEvent | None:
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


# --- commands ------------------------------------------------------------------------

def _number(text: str) -> int:
    cleaned = text.removeprefix("n°").removeprefix("#")
    if not cleaned.isdigit() or not 0 < int(cleaned) < 10**9:
        raise CommandError(t("agenda.number_invalid", value=text[:20]))
    return int(cleaned)


NUMBER = Argument("numéro", "le numéro de l’événement (n°3)", parse=_number)


@agenda_commands.subcommand("lier", "bind", help="lier ce salon à un calendrier existant",
                            example="!agenda lier urbanisme",
                            arguments=(Argument("calendrier", "identifiant du calendrier", rest=True),))
async def bind(bot: AgendaBot, event: MessageEvent, calendrier: str) -> None:
    async def exists(calendar_id: str) -> None:
        if await bot.caldav.calendar(calendar_id) is None:
            known = ", ".join(c.id for c in await bot.caldav.calendars()) or "—"
            raise CommandError(t("agenda.no_such_calendar", calendar=calendar_id, known=known))

    calendar_id = await bot.bindings.bind(event, calendrier, prepare=exists)
    await bot.reply(event, t("agenda.bound", calendar=calendar_id))


@agenda_commands.subcommand("créer", "creer", "create", help="créer un calendrier et y lier ce salon",
                            example="!agenda créer Conseil municipal",
                            arguments=(Argument("nom", "nom du calendrier", rest=True),))
async def create(bot: AgendaBot, event: MessageEvent, nom: str) -> None:
    async def make(calendar_id: str) -> None:
        try:
            await bot.caldav.make_calendar(calendar_id, nom.strip()[:100])
        except CalDavError as error:
            if error.status not in (405, 409):
                raise
            if not bot.is_replay(event):  # made by this very command before a crash: bind it
                raise CommandError(t("agenda.calendar_exists", calendar=calendar_id)) from None

    calendar_id = await bot.bindings.bind(event, nom, prepare=make)
    await bot.reply(event, t("agenda.created", calendar=calendar_id, name=nom.strip()[:100]))


@agenda_commands.subcommand("délier", "delier", "unbind", help="ne plus lier ce salon à son calendrier",
                            example="!agenda délier")
async def unbind(bot: AgendaBot, event: MessageEvent) -> None:
    await bot.bindings.unbind(event)
    await bot.reply(event, t("agenda.unbound"))


@agenda_commands.subcommand("calendrier", "calendar", help="le calendrier lié à ce salon et son adresse CalDAV",
                            example="!agenda calendrier")
async def show_calendar(bot: AgendaBot, event: MessageEvent) -> None:
    calendar_id = await bot.bindings.required(event.room_id)
    rules, summary_at = await bot.reminders.settings(event.room_id)
    await bot.reply(event, t("agenda.current", calendar=calendar_id, url=bot.caldav.calendar_url(calendar_id))
                    + "\n" + t("agenda.current_reminders", rules=rules or t("agenda.none"),
                               summary=summary_at or t("agenda.none")))


@agenda_commands.subcommand("rappels", "reminders", admin=True,
                            help="les rappels du salon avant chaque événement (« aucun » pour n’en avoir aucun)",
                            example="!agenda rappels 15min veille17h",
                            arguments=(Argument("réglages", "15min, 1h, 1j, veille17h… ou aucun", rest=True),))
async def set_reminders(bot: AgendaBot, event: MessageEvent, **arguments: str) -> None:
    rules = read_rules(arguments["réglages"])
    text = " ".join(rule.text for rule in rules)
    await bot.reminders.set(event.room_id, reminders=text)
    await bot.reply(event, t("agenda.reminders_set", rules=text) if rules else t("agenda.reminders_off"))


@agenda_commands.subcommand("résumé", "resume", "summary", admin=True,
                            help="l’agenda du jour posté chaque matin à l’heure dite (« aucun » pour l’arrêter)",
                            example="!agenda résumé 8h",
                            arguments=(Argument("heure", "8h, 7h30… ou aucun"),))
async def set_summary(bot: AgendaBot, event: MessageEvent, heure: str) -> None:
    await bot.bindings.required(event.room_id)
    at = read_summary_time(heure)
    await bot.reminders.set(event.room_id, summary_at=at)
    await bot.reply(event, t("agenda.summary_set", time=at) if at else t("agenda.summary_off"))


@agenda_commands.subcommand("ajoute", "ajouter", "add", help="ajouter un événement (titre, quand, durée, lieu)",
                            example="!agenda ajoute Conseil municipal jeudi 18h30 pendant 2h salle du conseil",
                            arguments=(Argument("événement", "titre, date, heure, durée, lieu", rest=True),))
async def add(bot: AgendaBot, event: MessageEvent, **arguments: str) -> None:
    calendar_id = await bot.bindings.required(event.room_id)
    wanted, video = without_video_word(arguments["événement"])
    text = read_event(wanted, bot.now())
    uid = uid_for(event.event_id)
    href = bot.caldav.href_of(calendar_id, uid)
    vevent = new_vevent(uid, text.title, text.when, text.place, event.sender, bot.zone)
    if video:
        add_video(vevent, bot.context.config.agenda.visio_modele, uid)
    try:
        await bot.put_event(calendar_id, href, vevent, None)
    except CalDavError as error:
        raise _deferred(error) from None
    number = await bot.number_of(event.room_id, uid, href)
    await bot.reply(event, t("agenda.added", event=bot.describe(number, vevent)))


def _deferred(error: CalDavError) -> Exception:
    """The server away: the command is kept and done when it is back (the agent is told)."""
    return RetryLater(t("agenda.caldav_deferred")) if error.unavailable else error


async def _list(bot: AgendaBot, event: MessageEvent, start: datetime, end: datetime, label: str) -> None:
    occurrences = await bot.occurrences(event.room_id, start, end)
    if not occurrences:
        await bot.reply(event, t("agenda.nothing", period=label))
        return
    lines = [bot.describe(number, occurrence) for number, occurrence in occurrences[:MAX_LISTED]]
    if len(occurrences) > MAX_LISTED:
        lines.append(t("agenda.more", count=len(occurrences) - MAX_LISTED))
    await bot.reply(event, t("agenda.listing", period=label) + "\n" + "\n".join(lines))


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


@agenda_commands.subcommand("aujourd'hui", "aujourdhui", "today", help="les événements d’aujourd’hui",
                            example="!agenda aujourd'hui")
async def today(bot: AgendaBot, event: MessageEvent) -> None:
    day = bot.now().date()
    await _list(bot, event, _day_start(day, bot.zone), _day_start(day + timedelta(days=1), bot.zone),
                t("agenda.period_today"))


@agenda_commands.subcommand("demain", "tomorrow", help="les événements de demain", example="!agenda demain")
async def tomorrow(bot: AgendaBot, event: MessageEvent) -> None:
    day = bot.now().date() + timedelta(days=1)
    await _list(bot, event, _day_start(day, bot.zone), _day_start(day + timedelta(days=1), bot.zone),
                t("agenda.period_tomorrow"))


@agenda_commands.subcommand("semaine", "week", help="les événements de cette semaine (du lundi au dimanche)",
                            example="!agenda semaine")
async def week(bot: AgendaBot, event: MessageEvent) -> None:
    monday = bot.now().date() - timedelta(days=bot.now().weekday())
    await _list(bot, event, _day_start(monday, bot.zone), _day_start(monday + timedelta(days=7), bot.zone),
                t("agenda.period_week", start=spoken_day(monday)))


@agenda_commands.subcommand("mois", "month", help="les événements de ce mois", example="!agenda mois")
async def month(bot: AgendaBot, event: MessageEvent) -> None:
    first = bot.now().date().replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    await _list(bot, event, _day_start(first, bot.zone), _day_start(following, bot.zone),
                t("agenda.period_month", month=f"{MONTH_NAMES[first.month - 1]} {first.year}"))


@agenda_commands.subcommand("détails", "details", help="tout sur un événement", example="!agenda détails 3",
                            arguments=(NUMBER,))
async def details(bot: AgendaBot, event: MessageEvent, **arguments: Any) -> None:
    number = arguments["numéro"]
    vevent, _, _, _ = await bot.numbered(event, number)
    await bot.reply(event, bot.describe(number, vevent, long=True))


@agenda_commands.subcommand("déplace", "deplace", "move", help="changer la date ou l’heure d’un événement",
                            example="!agenda déplace 3 à vendredi 10h",
                            arguments=(NUMBER, Argument("quand", "nouvelle date et heure", rest=True)))
async def move(bot: AgendaBot, event: MessageEvent, quand: str, **arguments: Any) -> None:
    number = arguments["numéro"]
    vevent, calendar_id, href, etag = await bot.numbered(event, number)
    start, end = vevent.decoded("dtstart"), vevent.decoded("dtend") if vevent.get("dtend") else None
    duration = (end - start) if end is not None else timedelta(hours=1)
    when = read_when(quand, bot.now(), duration=duration if isinstance(start, datetime) else timedelta(hours=1))
    if when.recurrence is not None:
        raise DateError(t("agenda.move_recurrence"))
    rule = vevent.get("rrule")
    set_when(vevent, when)
    if rule is not None:
        vevent.add("rrule", rule)
    vevent["sequence"] = int(vevent.get("sequence", 0)) + 1
    try:
        await bot.put_event(calendar_id, href, vevent, etag or None)
    except CalDavError as error:
        if error.status == 412:
            raise CommandError(t("agenda.changed_meanwhile", number=number)) from None
        raise _deferred(error) from None
    await bot.reply(event, t("agenda.moved", event=bot.describe(number, vevent)))


@agenda_commands.subcommand("annule", "annuler", "cancel",
                            help="annuler un événement (une série : « série », ou la date d’une occurrence)",
                            example="!agenda annule 3",
                            arguments=(NUMBER, Argument("quoi", "« série » ou la date d’une occurrence",
                                                        required=False, rest=True)))
async def cancel(bot: AgendaBot, event: MessageEvent, quoi: str = "", **arguments: Any) -> None:
    number = arguments["numéro"]
    vevent, calendar_id, href, etag = await bot.numbered(event, number)
    described = bot.describe(number, vevent)
    if vevent.get("rrule") is None or quoi.strip().lower() in ("série", "serie", "series"):
        await bot.caldav.delete(href, etag or None)
        await bot.watcher.forget(calendar_id, href)
        bot.reminders.changed()
        await bot.reply(event, t("agenda.cancelled", event=described))
        return
    if not quoi.strip():
        raise CommandError(t("agenda.cancel_which", number=number))
    day = read_when(quoi, bot.now()).start.date()
    start = vevent.decoded("dtstart")
    if isinstance(start, datetime):
        excluded: date | datetime = _as_local(start, bot.zone).replace(year=day.year, month=day.month, day=day.day)
    else:
        excluded = day
    if not recurring_ical_events.of(_wrapped(vevent)).at(day):
        raise CommandError(t("agenda.no_occurrence", number=number, day=spoken_day(day)))
    vevent.add("exdate", excluded)
    try:
        await bot.put_event(calendar_id, href, vevent, etag or None)
    except CalDavError as error:
        if error.status == 412:
            raise CommandError(t("agenda.changed_meanwhile", number=number)) from None
        raise _deferred(error) from None
    await bot.reply(event, t("agenda.occurrence_cancelled", number=number, day=spoken_day(day)))


def _wrapped(vevent: IEvent) -> ICalendar:
    calendar = ICalendar()
    calendar.add_component(vevent)
    return calendar


@agenda_commands.subcommand("importe", "importer", "import",
                            help="ajouter à l’agenda les événements du dernier fichier .ics posté ici",
                            example="!agenda importe")
async def import_file(bot: AgendaBot, event: MessageEvent) -> None:
    calendar_id = await bot.bindings.required(event.room_id)
    row = await bot.context.db.fetchrow("SELECT filename, data FROM agenda_import WHERE room_id=$1", event.room_id)
    if row is None:
        raise CommandError(t("agenda.ics_nothing_to_import"))
    events = read_file(str(row["data"]).encode())  # checked again: nothing is written unless all of it is fine
    added = already = 0
    for vevent in events:
        href = bot.caldav.href_of(calendar_id, uid_of(vevent))
        try:
            etag = await bot.caldav.put(href, with_its_zones(vevent).to_ical().decode(), None)
        except CalDavError as error:
            if error.status != 412:
                raise _deferred(error) from None
            already += 1  # there before, or written by an earlier attempt at this command
            continue
        await bot.noted(calendar_id, href, etag, str(vevent.get("summary", "")))
        added += 1
    await bot.context.db.execute("DELETE FROM agenda_import WHERE room_id=$1", event.room_id)
    await bot.reply(event, t("agenda.ics_imported", count=added, name=one_line(row["filename"]), already=already))


@agenda_commands.subcommand("export", "exporte", "exporter",
                            help="l’agenda du salon en fichier .ics (semaine, mois ou tout)",
                            example="!agenda export mois",
                            arguments=(Argument("période", "semaine, mois ou tout", required=False),))
async def export_file(bot: AgendaBot, event: MessageEvent, **arguments: str) -> None:
    calendar_id = await bot.bindings.required(event.room_id)
    period = (arguments.get("période") or "tout").lower()
    today = bot.now().date()
    if period in ("tout", "all"):
        items = await bot.caldav.everything(calendar_id)
    elif period in ("semaine", "week", "mois", "month"):
        days = 7 if period in ("semaine", "week") else 31
        start = _day_start(today, bot.zone)
        items = await bot.caldav.between(calendar_id, start, start + timedelta(days=days))
    else:
        raise CommandError(t("agenda.export_period", value=period[:20]))
    data = export(items)
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    await bot.send_file(event, chunks(), size=len(data), filename=f"agenda-{calendar_id}.ics",
                        mimetype="text/calendar")


@agenda_commands.subcommand("créneau", "creneau", "slot",
                            help="proposer les premiers créneaux libres communs (heures ouvrées), "
                                 "sans rien révéler des agendas",
                            example="!agenda créneau 1h avec @alice:mairie.fr @bob:mairie.fr semaine prochaine",
                            arguments=(Argument("durée", "1h, 1h30, 45min"),
                                       Argument("avec", "avec @agent… puis la période", required=False, rest=True)))
async def propose_slots(bot: AgendaBot, event: MessageEvent, **arguments: str) -> None:
    await bot.bindings.required(event.room_id)
    duration = read_duration(arguments["durée"])
    words = arguments.get("avec", "").split()
    mentioned = [w.rstrip(",;") for w in words if w.startswith("@") and ":" in w]
    period_words = [w for w in words if not w.startswith("@") and w.lower() not in ("avec", "with", "et", "and")]
    mentions = getattr(event.content, "get", lambda *_: None)("m.mentions") or {}
    listed = [str(u) for u in (mentions.get("user_ids", []) if isinstance(mentions, dict) else [])]
    participants = list(dict.fromkeys([event.sender, *mentioned, *listed]))
    if len(participants) > 10:
        raise CommandError(t("agenda.slot_too_many"))
    members = set(await bot.client.get_joined_members(RoomID(event.room_id)))
    strangers = [p for p in participants if p not in members]
    if strangers:
        raise CommandError(t("agenda.slot_not_member", who=", ".join(strangers)))
    start, end = read_period(period_words, bot.now())
    busy = [interval for who in participants for interval in await bot.busy_times(who, start, end)]
    slots = free_slots(busy, start, end, duration, bot.zone)
    if not slots:
        await bot.reply(event, t("agenda.slot_none"))
        return
    db = bot.context.db
    await db.execute("DELETE FROM agenda_slot WHERE room_id=$1", event.room_id)
    for number, (begin, finish) in enumerate(slots, 1):
        await db.execute("INSERT INTO agenda_slot (room_id, number, starts_at, ends_at, participants)"
                         " VALUES ($1, $2, $3, $4, $5)", event.room_id, number, begin.isoformat(),
                         finish.isoformat(), " ".join(participants))
    lines = [f"{number}) {spoken_day(begin.date())}, {begin:%H:%M}–{finish:%H:%M}"
             for number, (begin, finish) in enumerate(slots, 1)]
    await bot.reply(event, t("agenda.slot_found", count=len(participants)) + "\n" + "\n".join(lines)
                    + "\n" + t("agenda.slot_book"))


@agenda_commands.subcommand("réserve", "reserve", "book", help="réserver un des créneaux proposés",
                            example="!agenda réserve 2 Point projet école",
                            arguments=(NUMBER, Argument("titre", "titre de la réunion", required=False, rest=True)))
async def book_slot(bot: AgendaBot, event: MessageEvent, titre: str = "", **arguments: Any) -> None:
    calendar_id = await bot.bindings.required(event.room_id)
    row = await bot.context.db.fetchrow(
        "SELECT starts_at, ends_at, participants FROM agenda_slot WHERE room_id=$1 AND number=$2",
        event.room_id, arguments["numéro"])
    if row is None:
        raise CommandError(t("agenda.slot_unknown", number=arguments["numéro"]))
    when = When(datetime.fromisoformat(str(row["starts_at"])).astimezone(bot.zone),
                datetime.fromisoformat(str(row["ends_at"])).astimezone(bot.zone))
    uid = uid_for(event.event_id)
    href = bot.caldav.href_of(calendar_id, uid)
    vevent = new_vevent(uid, titre.strip()[:200] or t("agenda.slot_default_title"), when, "", event.sender, bot.zone)
    for participant in str(row["participants"]).split():
        vevent.add("attendee", f"matrix:u/{participant.removeprefix('@')}", parameters={"CN": participant})
    try:
        await bot.put_event(calendar_id, href, vevent, None)
    except CalDavError as error:
        raise _deferred(error) from None
    await bot.context.db.execute("DELETE FROM agenda_slot WHERE room_id=$1", event.room_id)
    number = await bot.number_of(event.room_id, uid, href)
    await bot.reply(event, t("agenda.added", event=bot.describe(number, vevent)))


@agenda_commands.subcommand("perso", "personal", help="votre agenda personnel, pris en compte pour vos créneaux",
                            example="!agenda perso")
async def personal(bot: AgendaBot, event: MessageEvent) -> None:
    calendar_id = normalise_calendar("perso-" + event.sender.removeprefix("@").split(":", 1)[0])[:64]
    if await bot.caldav.calendar(calendar_id) is None:
        await bot.caldav.make_calendar(calendar_id, t("agenda.personal_name", who=event.sender))
    await bot.context.db.execute(
        "INSERT INTO agenda_personal (user_id, calendar_id) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE SET calendar_id=$2", event.sender, calendar_id)
    await bot.reply(event, t("agenda.personal", url=bot.caldav.calendar_url(calendar_id)))


@agenda_commands.subcommand("visio", "video", help="ajouter une visioconférence à un événement",
                            example="!agenda visio 3", arguments=(NUMBER,))
async def video(bot: AgendaBot, event: MessageEvent, **arguments: Any) -> None:
    number = arguments["numéro"]
    vevent, calendar_id, href, etag = await bot.numbered(event, number)
    add_video(vevent, bot.context.config.agenda.visio_modele, str(vevent.get("uid", href)))
    try:
        await bot.put_event(calendar_id, href, vevent, etag or None)
    except CalDavError as error:
        if error.status == 412:
            raise CommandError(t("agenda.changed_meanwhile", number=number)) from None
        raise _deferred(error) from None
    await bot.reply(event, t("agenda.video_added", event=bot.describe(number, vevent)))
