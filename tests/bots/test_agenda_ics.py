"""Calendar files posted in a room: hostile ones are refused in French before anything is
written, good ones are previewed, imported once, and exported back."""

from __future__ import annotations

import asyncio
import io
import random

import pytest
from icalendar import Calendar

from maillage.bots.agenda.ics import read_file
from maillage.bots.runtime.commands import CommandError
from tests.bots.test_agenda import agenda_id, answer, events_of, room_with_agenda, unique_id
from tests.conftest import BotProcess, ServerStack
from tests.harness.matrix import Agent, AgentFactory
from tests.messages import assert_french

pytestmark = pytest.mark.usefixtures("in_french")


def ics(*events: str, zones: str = "") -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//FR\r\n" + zones + "".join(events)
            + "END:VCALENDAR\r\n").encode()


def vevent(uid: str, summary: str, start: str = "DTSTART;TZID=Europe/Paris:20270310T100000",
           end: str = "DTEND;TZID=Europe/Paris:20270310T110000") -> str:
    return (f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261125T080000Z\r\n{start}\r\n{end}\r\n"
            f"SUMMARY:{summary}\r\nEND:VEVENT\r\n")


HOSTILE = {
    "too large": (ics(vevent("a", "x" * 70) * 20_000), "dépasse 1000 Ko"),
    "deeply nested": (ics("BEGIN:VEVENT\r\n" * 5000 + "END:VEVENT\r\n" * 5000), "imbriqués trop profondément"),
    "thousands of events": (ics(*(vevent(f"e{i}", f"Réunion {i}") for i in range(2000))),
                            "contient 2000 événements"),
    "unknown time zone": (ics(vevent("z", "Atelier", start="DTSTART;TZID=Mars/Olympus:20270310T100000",
                                     end="DTEND;TZID=Mars/Olympus:20270310T110000")),
                          "fuseau horaire « Mars/Olympus »"),
    "no start": (ics("BEGIN:VEVENT\r\nUID:n\r\nSUMMARY:Sans date\r\nEND:VEVENT\r\n"), "pas de date de début"),
    "ends before it starts": (ics(vevent("b", "À l’envers", end="DTEND;TZID=Europe/Paris:20270310T090000")),
                              "finit avant de commencer"),
    "not text": (b"\xff\xfe\x00\x00garbage\x80\x81", "pas un fichier d’agenda lisible"),
    "not iCalendar": (b"<html><body>bonjour</body></html>", "pas un fichier d’agenda lisible"),
    "no event": (ics(), "aucun événement"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_calendar_file_is_refused_with_a_french_message(case: str) -> None:
    data, says = HOSTILE[case]
    with pytest.raises(CommandError) as caught:
        read_file(data)
    assert says in str(caught.value)
    assert_french(str(caught.value), "agenda.")


def test_line_breaks_smuggled_in_a_title_stay_in_the_title() -> None:
    # An escaped line break and a folded line: one SUMMARY, no ATTENDEE slipped in.
    events = read_file(ics(vevent("i", "Réunion\\nATTENDEE:mailto:pirate@example.org\r\n  suite")))
    assert len(events) == 1 and events[0].get("attendee") is None
    assert "ATTENDEE:mailto:pirate" in str(events[0]["summary"])


async def post_ics(agent: Agent, room: str, data: bytes, filename: str) -> None:
    response, keys = await agent.client.upload(io.BytesIO(data), content_type="text/calendar", filename=filename,
                                               encrypt=True, filesize=len(data))
    content = {"msgtype": "m.file", "body": filename, "filename": filename,
               "info": {"mimetype": "text/calendar", "size": len(data)}, "file": {"url": response.content_uri, **keys}}
    await agent.client.room_send(room, "m.room.message", content, ignore_unverified_devices=True)


async def test_a_posted_file_is_previewed_imported_once_on_request_and_exported_back(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Import")
    calendar_id = unique_id("import")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")

    since = len(owner.received)
    await post_ics(owner, room, HOSTILE["unknown time zone"][0], "piege.ics")
    refused = await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse), since=since, timeout=60)
    assert "fuseau horaire « Mars/Olympus » (événement « Atelier ») est inconnu" in refused.body
    assert "Aucun fichier d’agenda en attente" in await answer(owner, room, synapse, "!agenda importe")

    data = ics(vevent("salon-1@mairie", "Salon des associations\\nATTENDEE:x"),
               vevent("salon-2@mairie", "Forum emploi", start="DTSTART;VALUE=DATE:20270402",
                      end="DTEND;VALUE=DATE:20270403"))
    since = len(owner.received)
    await post_ics(owner, room, data, "evenements.ics")
    preview = await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse), since=since, timeout=60)
    assert preview.body.splitlines() == [
        "Fichier d’agenda « evenements.ics » : 2 événement(s).",
        "– Salon des associations ATTENDEE:x · mercredi 10 mars 2027, 10:00",
        "– Forum emploi · vendredi 2 avril 2027",
        "Pour les ajouter à l’agenda de ce salon : !agenda importe"]
    assert await asyncio.to_thread(events_of, synapse, caldav, calendar_id) == []  # nothing before confirming

    imported = await answer(owner, room, synapse, "!agenda importe")
    assert imported == "Importé depuis « evenements.ics » : 2 événement(s) ajouté(s), 0 déjà présent(s)."
    uids = sorted(str(next(iter(c.walk("VEVENT")))["uid"])
                  for c in await asyncio.to_thread(events_of, synapse, caldav, calendar_id))
    assert uids == ["salon-1@mairie", "salon-2@mairie"]
    await post_ics(owner, room, data, "evenements.ics")  # the same file again: nothing twice
    await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse) and "evenements.ics" in m.body,
                              since=len(owner.received), timeout=60)
    assert "2 déjà présent(s)" in await answer(owner, room, synapse, "!agenda importe")

    assert "Période non comprise" in await answer(owner, room, synapse, "!agenda export hier")
    await owner.send_text(room, "!agenda export tout")
    sent = await owner.wait_for_file(room, agenda_id(synapse))
    exported = Calendar.from_ical(await owner.download_file(sent))
    assert sorted(str(e["summary"]).split("\n")[0] for e in exported.walk("VEVENT")) == [
        "Forum emploi", "Salon des associations"]


async def test_an_import_killed_at_random_moments_writes_each_event_once_and_is_answered_once(
    synapse: ServerStack, caldav: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Import sous tension")
    calendar_id = unique_id("import-tension")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    count = 150
    data = ics(*(vevent(f"seance-{n}@mairie", f"Séance {n}", start=f"DTSTART;TZID=Europe/Paris:2027{n % 12 + 1:02d}"
                        f"{n % 28 + 1:02d}T{8 + n % 10:02d}0000",
                        end=f"DTEND;TZID=Europe/Paris:2027{n % 12 + 1:02d}{n % 28 + 1:02d}T{8 + n % 10:02d}3000")
                 for n in range(count)))
    since = len(owner.received)
    await post_ics(owner, room, data, "seances.ics")
    await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse) and "seances.ics" in m.body,
                              since=since, timeout=60)

    await owner.send_text(room, "!agenda importe")
    chance = random.Random()
    for _ in range(3):  # kill -9 while the events are being written, then start again
        await bot_process.kill_and_restart(after=chance.uniform(0.5, 3.0))
    told = await owner.wait_for_text(room, lambda m: m.sender == agenda_id(synapse) and m.body.startswith("Importé"),
                                     since=since, timeout=240)
    assert told.body == f"Importé depuis « seances.ics » : {count} événement(s) ajouté(s), 0 déjà présent(s)."
    stored = [str(next(iter(c.walk("VEVENT")))["uid"])
              for c in await asyncio.to_thread(events_of, synapse, caldav, calendar_id)]
    assert sorted(stored) == sorted(f"seance-{n}@mairie" for n in range(count))  # each once
    await asyncio.sleep(8)  # a second answer would have come by now
    assert sum(m.body.startswith("Importé") for m in owner.received if m.room_id == room) == 1
    again = await answer(owner, room, synapse, "!agenda importe")  # the file was imported: nothing waits
    assert again.startswith("Aucun fichier d’agenda en attente")

