"""@agenda against a real Synapse and Radicale, checked with an independent CalDAV client
(the ``caldav`` library and ``icalendar``, not the bot's code)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import caldav.davclient
import httpx
import pytest
import recurring_ical_events
from icalendar import Calendar

from tests.conftest import BotProcess, ServerStack, ServiceProcess
from tests.harness.matrix import Agent, AgentFactory, Received, create_encrypted_room, wait_for_members

pytestmark = pytest.mark.usefixtures("in_french")

PARIS = ZoneInfo("Europe/Paris")


def agenda_id(stack: ServerStack) -> str:
    return f"@agenda:{stack.server_name}"


def calendar_client(stack: ServerStack, caldav_url: str, calendar_id: str) -> Any:
    client: Any = caldav.davclient.DAVClient(url=caldav_url, username="maillage", password=stack.secrets.dav_password)
    return client.calendar(url=f"{caldav_url.rstrip('/')}/maillage/{calendar_id}/")


def events_of(stack: ServerStack, caldav_url: str, calendar_id: str) -> list[Calendar]:
    """Every item of the calendar, parsed by icalendar, as any CalDAV client reads it."""
    return [Calendar.from_ical(item.data) for item in calendar_client(stack, caldav_url, calendar_id).events()]


def only_event(calendars: list[Calendar]) -> Any:
    assert len(calendars) == 1, calendars
    return next(iter(calendars[0].walk("VEVENT")))


async def answer(agent: Agent, room: str, stack: ServerStack, command: str) -> str:
    """@agenda's reply to ``command`` (not a reminder or an announcement that comes meanwhile)."""
    since = len(agent.received)
    sent = await agent.send_text(room, command)
    return (await agent.wait_for_text(room, lambda m: m.sender == agenda_id(stack) and m.reply_to == sent,
                                      since=since, timeout=60)).body


async def room_with_agenda(agents: AgentFactory, stack: ServerStack, name: str, *,
                           owner: Agent | None = None) -> tuple[Agent, str]:
    """An encrypted room with @agenda in it, at the moderator level it needs for its binding."""
    owner = owner or await agents("responsable")
    room = await create_encrypted_room(owner, name=name)
    levels = await owner.client.room_get_state_event(room, "m.room.power_levels")
    users = {**levels.content["users"], agenda_id(stack): 50}
    await owner.client.room_put_state(room, "m.room.power_levels", {**levels.content, "users": users})
    await owner.client.room_invite(room, agenda_id(stack))
    await owner.wait_for_members_including(room, agenda_id(stack))
    return owner, room


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def test_create_a_calendar_add_an_event_and_read_it_in_another_client(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Conseil")
    name = unique_id("Conseil")
    created = await answer(owner, room, synapse, f"!agenda créer {name}")
    calendar_id = name.lower()
    assert f"(identifiant : {calendar_id}) et lié à ce salon" in created
    state = await owner.client.room_get_state_event(room, "fr.maillage.agenda")
    assert state.content == {"calendrier": calendar_id}

    added = await answer(owner, room, synapse,
                         "!agenda ajoute Conseil municipal le 2/12/2027 18h30 pendant 2h salle du conseil")
    assert added == ("Ajouté : n°1 — Conseil municipal · jeudi 2 décembre 2027, 18:30–20:30 · salle du conseil")

    vevent = only_event(await asyncio.to_thread(events_of, synapse, caldav, calendar_id))
    assert str(vevent["summary"]) == "Conseil municipal" and str(vevent["location"]) == "salle du conseil"
    start, end = vevent.decoded("dtstart"), vevent.decoded("dtend")
    assert (start, end) == (datetime(2027, 12, 2, 18, 30, tzinfo=PARIS), datetime(2027, 12, 2, 20, 30, tzinfo=PARIS))
    assert vevent["dtstart"].params["TZID"] == "Europe/Paris"
    assert str(vevent["x-maillage-auteur"]) == owner.user_id

    details = await answer(owner, room, synapse, "!agenda détails 1")
    assert details.startswith("n°1 — Conseil municipal · jeudi 2 décembre 2027")


async def test_an_event_made_in_another_client_is_listed_numbered_and_can_be_moved(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Voirie")
    calendar_id = unique_id("voirie")
    assert "créé" in await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    tomorrow = datetime.now(PARIS).date() + timedelta(days=1)
    start = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 10, 0, tzinfo=PARIS)
    ics = (f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//Thunderbird-like//FR\r\nBEGIN:VEVENT\r\n"
           f"UID:{uuid.uuid4()}@thunderbird\r\nDTSTAMP:20261125T080000Z\r\n"
           f"DTSTART;TZID=Europe/Paris:{start:%Y%m%dT%H%M%S}\r\nDTEND;TZID=Europe/Paris:{start:%Y%m%dT}1130"
           "00\r\nSUMMARY:Chantier rue des Lilas\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    since = len(owner.received)
    saved = await asyncio.to_thread(lambda: calendar_client(synapse, caldav, calendar_id).save_event(ics))
    await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse) and "autre application" in m.body,
                              since=since, timeout=30)

    listing = await answer(owner, room, synapse, "!agenda demain")
    assert listing.startswith("Agenda demain :")
    assert "n°1 — Chantier rue des Lilas" in listing and "10:00–11:30" in listing

    # Changed in the other app: once announced, listings show the change.
    since = len(owner.received)
    saved.data = saved.data.replace("Chantier rue des Lilas", "Chantier rue des Roses")
    await asyncio.to_thread(saved.save)
    await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse) and "modifié" in m.body,
                              since=since, timeout=30)
    listing = await answer(owner, room, synapse, "!agenda demain")
    assert "n°1 — Chantier rue des Roses" in listing and "Lilas" not in listing

    moved = await answer(owner, room, synapse, "!agenda déplace 1 au 7/1/2028 14h")
    assert moved.startswith("Déplacé : n°1 — Chantier rue des Roses · vendredi 7 janvier 2028, 14:00–15:30")
    vevent = only_event(await asyncio.to_thread(events_of, synapse, caldav, calendar_id))
    assert vevent.decoded("dtstart") == datetime(2028, 1, 7, 14, 0, tzinfo=PARIS)
    assert int(vevent["sequence"]) == 1
    # The bot's own change is in listings at once.
    assert await answer(owner, room, synapse, "!agenda demain") == "Rien à l’agenda demain."


async def test_a_weekly_series_keeps_its_hour_across_the_change_to_summer_time_and_one_day_is_cancelled(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Direction")
    calendar_id = unique_id("direction")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    added = await answer(owner, room, synapse, "!agenda ajoute Comité de direction tous les lundis à 9h "
                                                "jusqu'au 12/4/2027 salle B")
    assert added.startswith("Ajouté : n°1 — Comité de direction") and added.endswith("se répète")

    calendar = (await asyncio.to_thread(events_of, synapse, caldav, calendar_id))[0]
    vevent: Any = next(iter(calendar.walk("VEVENT")))
    assert vevent["rrule"]["FREQ"] == ["WEEKLY"] and vevent["rrule"]["BYDAY"] == ["MO"]
    around_the_change = recurring_ical_events.of(calendar).between(date(2027, 3, 20), date(2027, 4, 6))
    starts = [occurrence.decoded("dtstart") for occurrence in around_the_change]
    assert [(s.day, s.hour, s.utcoffset()) for s in starts] == [
        (22, 9, timedelta(hours=1)), (29, 9, timedelta(hours=2)), (5, 9, timedelta(hours=2))]

    asked = await answer(owner, room, synapse, "!agenda annule 1")
    assert "se répète" in asked and "série" in asked  # which one: asked, nothing removed
    assert len(await asyncio.to_thread(events_of, synapse, caldav, calendar_id)) == 1
    cancelled = await answer(owner, room, synapse, "!agenda annule 1 le 29/3/2027")
    assert cancelled == "L’occurrence du lundi 29 mars 2027 de l’événement n°1 est annulée ; les autres restent."
    calendar = (await asyncio.to_thread(events_of, synapse, caldav, calendar_id))[0]
    days = [o.decoded("dtstart").day for o in recurring_ical_events.of(calendar).between(date(2027, 3, 20),
                                                                                          date(2027, 4, 6))]
    assert days == [22, 5]
    assert "Annulé" in await answer(owner, room, synapse, "!agenda annule 1 série")
    assert await asyncio.to_thread(events_of, synapse, caldav, calendar_id) == []


async def test_wrong_dates_unknown_numbers_and_calendars_are_answered_in_french_and_change_nothing(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Erreurs")
    calendar_id = unique_id("erreurs")
    not_bound = await answer(owner, room, synapse, "!agenda ajoute Réunion demain 9h")
    assert "n’est lié à aucun agenda" in not_bound
    missing = await answer(owner, room, synapse, "!agenda lier calendrier-inexistant")
    assert "« calendrier-inexistant » n’existe pas" in missing
    assert "Nom de calendrier refusé : « ../autre »" in await answer(owner, room, synapse, "!agenda lier ../autre")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")

    for command, says in [
        ("!agenda ajoute Atelier le 31 février 10h", "Le 31 février n’existe pas"),
        ("!agenda ajoute Réunion le 28/3/2027 2h30", "n’existe pas le 28/03/2027"),
        ("!agenda ajoute Rendez-vous le 3/3/2027 de 16h à 14h", "La fin (14:00) vient avant le début (16:00)"),
        ("!agenda ajoute le 3/3/2027 9h", "Quel titre ?"),
        ("!agenda détails 42", "Aucun événement n°42"),
        ("!agenda détails trois", "« trois » n’est pas un numéro"),
        ("!agenda déplace 42 à demain 9h", "Aucun événement n°42"),
    ]:
        assert says in await answer(owner, room, synapse, command), command
    assert await asyncio.to_thread(events_of, synapse, caldav, calendar_id) == []


async def test_only_admins_bind_and_a_room_reaches_only_its_own_calendar(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Urbanisme")
    calendar_id = unique_id("urbanisme")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    await answer(owner, room, synapse, "!agenda ajoute Commission urbanisme le 4/2/2027 14h")

    member = await agents("agent")
    await owner.client.room_invite(room, member.user_id)
    await member.client.join(room)
    await wait_for_members(room, owner, member)
    refused = await answer(member, room, synapse, "!agenda délier")
    assert refused == "Seul un administrateur du salon peut lier ou délier son agenda."
    no_reminders = await answer(member, room, synapse, "!agenda rappels aucun")
    assert no_reminders == "Seul un administrateur du salon peut utiliser « !agenda rappels <réglages> »."
    assert "Rappels : 15min veille17h." in await answer(member, room, synapse, "!agenda calendrier")
    state = await owner.client.room_get_state_event(room, "fr.maillage.agenda")
    assert state.content == {"calendrier": calendar_id}

    _, other_room = await room_with_agenda(agents, synapse, "Autre service", owner=owner)
    taken = await answer(owner, other_room, synapse, f"!agenda lier {calendar_id}")
    assert f"Le calendrier « {calendar_id} » est déjà lié à un autre salon" in taken
    # Set by hand in room state instead: not used, the room is told.
    since = len(owner.received)
    await owner.client.room_put_state(other_room, "fr.maillage.agenda", {"calendrier": calendar_id})
    told = await owner.wait_for_text(other_room, lambda m: m.sender == agenda_id(synapse), since=since, timeout=60)
    assert "n’est pas pris en compte" in told.body
    assert "n’est lié à aucun agenda" in await answer(owner, other_room, synapse, "!agenda détails 1")
    listing = await answer(owner, other_room, synapse, "!agenda mois")
    assert "Commission" not in listing and "n’est lié à aucun agenda" in listing


async def test_what_another_app_adds_changes_and_removes_is_announced_once_and_the_bot_s_own_writes_are_not(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Annonces")
    calendar_id = unique_id("annonces")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    await answer(owner, room, synapse, "!agenda ajoute Réunion publique le 5/5/2027 18h")
    calendar = calendar_client(synapse, caldav, calendar_id)
    await asyncio.sleep(6)  # a look at the calendar has passed (5 s in tests): it met the bot's own event

    since = len(owner.received)
    ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//DAVx5-like//FR\r\nBEGIN:VEVENT\r\n"
           "UID:exterieur-1@davx5\r\nDTSTAMP:20261125T080000Z\r\nDTSTART;TZID=Europe/Paris:20270506T090000\r\n"
           "DTEND;TZID=Europe/Paris:20270506T100000\r\nSUMMARY:Visite de chantier\r\nEND:VEVENT\r\n"
           "END:VCALENDAR\r\n")
    saved = await asyncio.to_thread(calendar.save_event, ics)
    added = await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse), since=since, timeout=30)
    assert added.body == ("Nouvel événement, ajouté depuis une autre application d’agenda : "
                          "n°2 — Visite de chantier · jeudi 6 mai 2027, 09:00–10:00")

    since = len(owner.received)
    saved.data = saved.data.replace("SUMMARY:Visite de chantier", "SUMMARY:Visite de chantier (reportée)").replace(
        "20270506T", "20270507T")
    await asyncio.to_thread(saved.save)
    changed = await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse), since=since, timeout=30)
    assert changed.body == ("Événement modifié depuis une autre application d’agenda : "
                            "n°2 — Visite de chantier (reportée) · vendredi 7 mai 2027, 09:00–10:00")

    since = len(owner.received)
    await asyncio.to_thread(saved.delete)
    removed = await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse), since=since, timeout=30)
    assert removed.body == ("Événement n°2 retiré du calendrier depuis une autre application d’agenda : "
                            "Visite de chantier (reportée)")

    # The bot's own changes are answered, never announced back; each change was told once.
    await answer(owner, room, synapse, "!agenda déplace 1 au 12/5/2027 18h")
    await asyncio.sleep(7)
    bodies = [m.body for m in owner.received if m.room_id == room and m.sender == agenda_id(synapse)]
    assert not [b for b in bodies if "autre application" in b and "Réunion publique" in b]
    assert sum("autre application" in b for b in bodies) == 3


def _from_agenda_starting(stack: ServerStack, beginning: str) -> Callable[[Received], bool]:
    return lambda message: message.sender == agenda_id(stack) and message.body.startswith(beginning)


def command_date(moment: datetime) -> str:
    """``le 26/11/2026 9h05``: an exact date as agents type it."""
    return f"le {moment.day}/{moment.month}/{moment.year} {moment.hour}h{moment.minute:02d}"


async def test_reminders_are_sent_once_even_when_the_bots_are_killed_and_the_daily_agenda_is_posted(
    synapse: ServerStack, caldav: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Rappels")
    calendar_id = unique_id("rappels")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    assert "Rappel non compris : « 15 »" in await answer(owner, room, synapse, "!agenda rappels 15 minutes")
    assert await answer(owner, room, synapse, "!agenda rappels 1j") == "Rappels de ce salon : 1j."
    # Five events a little less than a day away: their « 1j » reminders are all due now.
    soon = datetime.now(PARIS).replace(second=0, microsecond=0) + timedelta(hours=23)
    for index in range(5):
        since = len(owner.received)
        await owner.send_text(room, f"!agenda ajoute Comité {index} {command_date(soon + timedelta(minutes=index))}")
        # The reminder of an event added just before may come first: the answer is looked for.
        await owner.wait_for_text(room, _from_agenda_starting(synapse, f"Ajouté : n°{index + 1} — Comité {index}"),
                                  since=since, timeout=60)

    # The bots are killed at random moments while the reminders go out, and started again.
    for pause in (0.5, 2.5, 1.0):
        await bot_process.kill_and_restart(after=pause)
    await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse) and "Comité 4" in m.body
                              and m.body.startswith("Rappel"), timeout=60)
    await asyncio.sleep(12)  # two more rounds of reminders: nothing is sent again
    reminders = [m.body for m in owner.received if m.room_id == room and m.body.startswith("Rappel, ")]
    assert sorted(reminders) == sorted(set(reminders)) and len(reminders) == 5, reminders
    assert all(f"n°{i + 1} — Comité {i}" in "".join(reminders) for i in range(5))

    since = len(owner.received)
    earlier = (datetime.now(PARIS) - timedelta(minutes=1)).strftime("%Hh%M")
    assert "chaque jour à" in await answer(owner, room, synapse, f"!agenda résumé {earlier}")
    summary = await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse)
                                        and m.body.startswith("Agenda du "), since=since, timeout=30)
    assert summary.body.split("\n", 1)[0].startswith("Agenda du ")


async def test_an_event_added_while_the_calendar_server_is_down_is_kept_and_added_once_when_it_is_back(
    synapse: ServerStack, caldav: str, caldav_process: ServiceProcess, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Panne")
    calendar_id = unique_id("panne")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    caldav_process.stop()
    try:
        kept = await answer(owner, room, synapse, "!agenda ajoute Réunion de crise le 8/6/2027 8h")
        assert kept == ("Le serveur d’agendas ne répond pas : votre commande est gardée et sera faite dès son "
                        "retour. Inutile de la retaper.")
        await asyncio.sleep(7)  # the watcher's look (every 5 s in tests) found the server away
        down = await answer(owner, room, synapse, "!agenda semaine")
        assert down.startswith("⚠ Le serveur d’agendas ne répond pas : voici l’agenda tel qu’il était à ")
        assert down.splitlines()[1].startswith("Rien à l’agenda de la semaine du ")
    finally:
        caldav_process.start()
    since = len(owner.received)
    added = await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse) and m.body.startswith("Ajouté"),
                                      since=since, timeout=90)
    assert added.body == "Ajouté : n°1 — Réunion de crise · mardi 8 juin 2027, 08:00–09:00"
    events = await asyncio.to_thread(events_of, synapse, caldav, calendar_id)
    assert [str(next(iter(c.walk("VEVENT")))["summary"]) for c in events] == ["Réunion de crise"]
    await asyncio.sleep(3)
    assert sum(m.body.startswith("Ajouté") for m in owner.received if m.room_id == room) == 1


async def test_a_video_meeting_gets_a_link_in_every_calendar_app_and_a_widget_in_the_room_at_meeting_time(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Visio")
    calendar_id = unique_id("visio")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    soon = datetime.now(PARIS).replace(second=0, microsecond=0) + timedelta(minutes=3)
    added = await answer(owner, room, synapse, f"!agenda ajoute Point partenaires {command_date(soon)} visio")
    assert added.startswith("Ajouté : n°1 — Point partenaires") and " · visio : https://meet.jit.si/Maillage-" in added
    vevent = only_event(await asyncio.to_thread(events_of, synapse, caldav, calendar_id))
    address = str(vevent["conference"])
    assert address.startswith("https://meet.jit.si/Maillage-") and str(vevent["url"]) == address
    assert vevent["conference"].params["FEATURE"] == "VIDEO"
    assert "visio" not in str(vevent.get("location", "")) and str(vevent["summary"]) == "Point partenaires"

    deadline = asyncio.get_running_loop().time() + 40
    widgets: list[Any] = []
    while not widgets and asyncio.get_running_loop().time() < deadline:  # within 5 minutes of the start
        await asyncio.sleep(2)
        state = await owner.client.room_get_state(room)
        widgets = [e for e in state.events if e["type"] == "im.vector.modular.widgets" and e["content"]]
    assert len(widgets) == 1, "no widget in the room at meeting time"
    widget = widgets[0]["content"]
    assert (widget["type"], widget["url"], widget["name"]) == ("m.custom", address, "Point partenaires")
    assert widgets[0]["sender"] == agenda_id(synapse)

    assert "Aucun événement n°9" in await answer(owner, room, synapse, "!agenda visio 9")


async def test_an_import_of_many_events_in_another_app_is_told_in_one_message_not_one_each(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Import massif")
    calendar_id = unique_id("massif")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    await asyncio.sleep(6)  # the calendar has been looked at once
    since = len(owner.received)
    month = datetime.now(PARIS).strftime("%Y%m")

    def event(index: int) -> bytes:
        return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//FR\r\nBEGIN:VEVENT\r\n"
                f"UID:lot-{index}@thunderbird\r\nDTSTAMP:20261125T080000Z\r\n"
                f"DTSTART;TZID=Europe/Paris:{month}{index % 28 + 1:02d}T100000\r\n"
                f"DTEND;TZID=Europe/Paris:{month}{index % 28 + 1:02d}T110000\r\nSUMMARY:Permanence {index}\r\n"
                "END:VEVENT\r\nEND:VCALENDAR\r\n").encode()

    # An app's import, slow enough to span several of the watcher's looks (every 5 s here): four
    # waves of ten PUTs, 6 s apart. The room is told at most ten of them one by one, then counts.
    async with httpx.AsyncClient(auth=("maillage", synapse.secrets.dav_password), timeout=60,
                                 limits=httpx.Limits(max_connections=4)) as dav:
        for wave in range(4):
            indices = range(wave * 10, (wave + 1) * 10)
            responses = await asyncio.gather(*(dav.put(
                f"{caldav.rstrip('/')}/maillage/{calendar_id}/lot-{index}.ics", content=event(index),
                headers={"Content-Type": "text/calendar; charset=utf-8"}) for index in indices))
            assert {response.status_code for response in responses} == {201}
            await asyncio.sleep(6)
    told = await owner.wait_for_text(room, lambda m: "événement(s) ajouté(s)" in m.body, since=since, timeout=30)
    assert told.body.startswith("Le calendrier a été modifié depuis une autre application d’agenda : ")

    def announcements() -> list[Received]:
        return [m for m in owner.received[since:] if m.room_id == room and m.sender == agenda_id(synapse)
                and "depuis une autre application" in m.body]  # not the reminders of today's events

    def told_of() -> int:  # events told one by one, and counted
        return sum(int(m.body.split(" : ", 1)[1].split(" ")[0]) for m in announcements() if "ajouté(s)" in m.body
                   ) + sum(m.body.startswith("Nouvel événement") for m in announcements())

    for _ in range(60):  # the rest is counted and told once the calendar has been quiet for 15 s
        if told_of() >= 40:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(6)  # nothing more comes
    assert told_of() == 40
    bodies = [m.body for m in announcements()]
    # Not forty messages: ten one by one at most, then counts.
    assert len(bodies) <= 12, "\n".join(body[:90] for body in bodies)
    # Once told, every one of them is in the room's listings (read a few hundred a request).
    listing = await answer(owner, room, synapse, "!agenda mois")
    assert sorted(line.split(" — ", 1)[1].split(" · ", 1)[0] for line in listing.splitlines()[1:]) == sorted(
        f"Permanence {index}" for index in range(40))


async def test_events_added_while_the_bots_are_killed_are_each_added_and_answered_exactly_once(
    synapse: ServerStack, caldav: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Sous tension")
    calendar_id = unique_id("tension")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    commands = 30
    for index in range(commands):
        await owner.send_text(room, f"!agenda ajoute Permanence {index} le {index % 28 + 1}/10/2027 10h")
        if index in (4, 13, 22):  # kill -9 while commands are in flight, then start again
            await bot_process.kill_and_restart(after=0.3 * (index % 5))
    await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse) and "Permanence 29 " in m.body,
                              timeout=180)
    await asyncio.sleep(8)  # anything answered twice would have come by now
    answers = [m.body for m in owner.received if m.room_id == room and m.body.startswith("Ajouté : ")]
    titles = sorted(body.split(" — ", 1)[1].split(" · ", 1)[0] for body in answers)
    assert titles == sorted(f"Permanence {index}" for index in range(commands))  # each once
    numbers = [body.split("n°", 1)[1].split(" ", 1)[0] for body in answers]
    assert len(set(numbers)) == commands
    stored = [str(next(iter(c.walk("VEVENT")))["summary"])
              for c in await asyncio.to_thread(events_of, synapse, caldav, calendar_id)]
    assert sorted(stored) == sorted(f"Permanence {index}" for index in range(commands))


async def test_a_room_that_no_longer_lets_the_bot_speak_does_not_stop_the_other_calendars_being_watched(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    """A room made read-only (an archived service) refuses the bot's announcement of its
    calendar's change: the other calendars are still watched and announced, and so is the
    silenced one once the room lets the bot speak again."""
    owner, silenced = await room_with_agenda(agents, synapse, "Salon archivé")
    _, other = await room_with_agenda(agents, synapse, "Salon actif", owner=owner)
    silenced_calendar, other_calendar = unique_id("archive"), unique_id("actif")
    await answer(owner, silenced, synapse, f"!agenda créer {silenced_calendar}")
    await answer(owner, other, synapse, f"!agenda créer {other_calendar}")
    await asyncio.sleep(6)  # both calendars looked at once
    levels = (await owner.client.room_get_state_event(silenced, "m.room.power_levels")).content
    await owner.client.room_put_state(silenced, "m.room.power_levels", {**levels, "events_default": 100})

    def event(uid: str, summary: str) -> str:
        return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//Thunderbird-like//FR\r\nBEGIN:VEVENT\r\n"
                f"UID:{uid}\r\nDTSTAMP:20261125T080000Z\r\nDTSTART;TZID=Europe/Paris:20270610T090000\r\n"
                f"DTEND;TZID=Europe/Paris:20270610T100000\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")

    since = len(owner.received)
    await asyncio.to_thread(calendar_client(synapse, caldav, silenced_calendar).save_event,
                            event("muet-1@tb", "Inventaire des archives"))
    await asyncio.sleep(6)  # the silenced room's calendar has been looked at: the room refused
    await asyncio.to_thread(calendar_client(synapse, caldav, other_calendar).save_event,
                            event("actif-1@tb", "Permanence du samedi"))
    told = await owner.wait_for_text(other, lambda m: m.sender == agenda_id(synapse), since=since, timeout=30)
    assert "Permanence du samedi" in told.body and "autre application" in told.body

    await owner.client.room_put_state(silenced, "m.room.power_levels", levels)
    await asyncio.to_thread(calendar_client(synapse, caldav, silenced_calendar).save_event,
                            event("muet-2@tb", "Tri des registres"))
    told = await owner.wait_for_text(silenced, lambda m: m.sender == agenda_id(synapse) and "Tri des registres"
                                     in m.body, since=since, timeout=30)
    assert "autre application" in told.body
