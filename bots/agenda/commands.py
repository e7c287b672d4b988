"""@agenda's commands, declared on ``agenda_commands`` (registered when the package is imported)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import recurring_ical_events
from icalendar import Calendar as ICalendar
from icalendar import Event as IEvent
from mautrix.types import MessageEvent, RoomID

from maillage.bots.agenda.bot import MAX_LISTED, AgendaBot, agenda_commands, normalise_calendar, uid_for
from maillage.bots.agenda.dates import MONTH_NAMES, DateError, When, read_event, read_when
from maillage.bots.agenda.events import (
    add_video,
    as_local,
    master_of,
    new_vevent,
    one_line,
    set_when,
    spoken_day,
    without_video_word,
)
from maillage.bots.agenda.ics import export, read_file, uid_of, with_its_zones
from maillage.bots.agenda.reminders import read_rules, read_summary_time
from maillage.bots.agenda.slots import free_slots, read_duration, read_period
from maillage.bots.caldav.client import CalDavError
from maillage.bots.runtime.commands import Argument, CommandError
from maillage.i18n import t


def _number(text: str) -> int:
    cleaned = text.removeprefix("n°").removeprefix("#")
    if not cleaned.isdigit() or not 0 < int(cleaned) < 10**9:
        raise CommandError(t("agenda.number_invalid", value=text[:20]))
    return int(cleaned)


IMPORTED_BY = "X-MAILLAGE-IMPORT"
NUMBER = Argument("numéro", "le numéro de l’événement (n°3)", parse=_number)


@agenda_commands.subcommand("lier", "bind", help="lier ce salon à un calendrier existant",
                            example="!agenda lier urbanisme",
                            arguments=(Argument("calendrier", "identifiant du calendrier", rest=True),))
async def bind(bot: AgendaBot, event: MessageEvent, calendrier: str) -> None:
    calendar_id = await bot.bind_existing(event, calendrier)
    await bot.reply(event, t("agenda.bound", calendar=calendar_id))


@agenda_commands.subcommand("créer", "creer", "create", help="créer un calendrier et y lier ce salon",
                            example="!agenda créer Conseil municipal",
                            arguments=(Argument("nom", "nom du calendrier", rest=True),))
async def create(bot: AgendaBot, event: MessageEvent, nom: str) -> None:
    calendar_id = await bot.create_and_bind(event, nom)
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
        raise bot.deferred(error) from None
    number = await bot.numbers.of(event.room_id, uid, href)
    await bot.reply(event, t("agenda.added", event=bot.describe(number, vevent)))


async def _rewrite(bot: AgendaBot, number: int, calendar_id: str, href: str, vevent: IEvent, etag: str) -> None:
    """Write back an event read a moment ago: if someone changed it meanwhile (412), nothing is
    written and the agent is told; a server away keeps the command for later."""
    try:
        await bot.put_event(calendar_id, href, vevent, etag or None)
    except CalDavError as error:
        if error.status == 412:
            raise CommandError(t("agenda.changed_meanwhile", number=number)) from None
        raise bot.deferred(error) from None


async def _list(bot: AgendaBot, event: MessageEvent, start: datetime, end: datetime, label: str) -> None:
    occurrences = await bot.occurrences(event.room_id, start, end)
    stale = bot.stale_note(await bot.bindings.required(event.room_id))
    if not occurrences:
        await bot.reply(event, stale + t("agenda.nothing", period=label))
        return
    lines = [bot.describe(number, occurrence) for number, occurrence in occurrences[:MAX_LISTED]]
    if len(occurrences) > MAX_LISTED:
        lines.append(t("agenda.more", count=len(occurrences) - MAX_LISTED))
    await bot.reply(event, stale + t("agenda.listing", period=label) + "\n" + "\n".join(lines))


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
    await _rewrite(bot, number, calendar_id, href, vevent, etag)
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
        await bot.delete_item(calendar_id, href, etag)
        await bot.reply(event, t("agenda.cancelled", event=described))
        return
    if not quoi.strip():
        raise CommandError(t("agenda.cancel_which", number=number))
    day = read_when(quoi, bot.now()).start.date()
    start = vevent.decoded("dtstart")
    if isinstance(start, datetime):
        excluded: date | datetime = as_local(start, bot.zone).replace(year=day.year, month=day.month, day=day.day)
    else:
        excluded = day
    if not recurring_ical_events.of(_wrapped(vevent)).at(day):
        raise CommandError(t("agenda.no_occurrence", number=number, day=spoken_day(day)))
    vevent.add("exdate", excluded)
    await _rewrite(bot, number, calendar_id, href, vevent, etag)
    await bot.reply(event, t("agenda.occurrence_cancelled", number=number, day=spoken_day(day)))


def _wrapped(vevent: IEvent) -> ICalendar:
    calendar = ICalendar()
    calendar.add_component(vevent)
    return calendar


@agenda_commands.subcommand("importe", "importer", "import",
                            help="ajouter à l’agenda les événements du dernier fichier .ics posté ici",
                            example="!agenda importe")
async def import_file(bot: AgendaBot, event: MessageEvent) -> None:
    """Each event of the file written once, with its own UID and ``If-None-Match``; after a
    crash the same command runs again and counts what its earlier attempt wrote as added (each
    event it writes carries the command's id), not as « already there »."""
    calendar_id = await bot.bindings.required(event.room_id)
    row = await bot.context.db.fetchrow("SELECT filename, data, imported_by FROM agenda_import WHERE room_id=$1",
                                        event.room_id)
    if row is None or row["imported_by"] not in (None, event.event_id):
        raise CommandError(t("agenda.ics_nothing_to_import"))
    events = read_file(str(row["data"]).encode())  # checked again: nothing is written unless all of it is fine
    added = already = 0
    for vevent in events:
        href = bot.caldav.href_of(calendar_id, uid_of(vevent))
        vevent[IMPORTED_BY] = event.event_id
        text = with_its_zones(vevent).to_ical().decode()
        try:
            await bot.write(calendar_id, href, text, None)
        except CalDavError as error:
            if error.status != 412:
                raise bot.deferred(error) from None
            there = await bot.caldav.get(href)
            written = master_of(there.data) if there is not None else None
            if there is None or written is None or str(written.get(IMPORTED_BY, "")) != event.event_id:
                already += 1  # in the calendar before this command
                continue
            await bot.noted(calendar_id, there)  # written by an earlier attempt at this very command
        added += 1
    await bot.context.db.execute("UPDATE agenda_import SET imported_by=$2 WHERE room_id=$1", event.room_id,
                                 event.event_id)
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
    busy = await bot.busy_times(participants, start, end)
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
        raise bot.deferred(error) from None
    await bot.context.db.execute("DELETE FROM agenda_slot WHERE room_id=$1", event.room_id)
    number = await bot.numbers.of(event.room_id, uid, href)
    await bot.reply(event, t("agenda.added", event=bot.describe(number, vevent)))


@agenda_commands.subcommand("perso", "personal", help="votre agenda personnel, pris en compte pour vos créneaux",
                            example="!agenda perso")
async def personal(bot: AgendaBot, event: MessageEvent) -> None:
    calendar_id = normalise_calendar("perso-" + event.sender.removeprefix("@").split(":", 1)[0])[:64]
    if await bot.caldav.calendar(calendar_id) is None:
        try:
            await bot.caldav.make_calendar(calendar_id, t("agenda.personal_name", who=event.sender))
        except CalDavError as error:
            if error.status not in (405, 409):  # made meanwhile (an earlier attempt): it is there
                raise
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
    await _rewrite(bot, number, calendar_id, href, vevent, etag)
    await bot.reply(event, t("agenda.video_added", event=bot.describe(number, vevent)))
