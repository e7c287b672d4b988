"""Finding a slot over three agents' calendars: free times only, never titles."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maillage.bots.agenda.dates import MONTH_NAMES
from maillage.bots.agenda.slots import WORKING_DAYS, WORKING_HOURS, free_slots
from tests.bots.test_agenda import answer, calendar_client, events_of, room_with_agenda, unique_id
from tests.conftest import ServerStack
from tests.harness.matrix import AgentFactory, wait_for_members

pytestmark = pytest.mark.usefixtures("in_french")

PARIS = ZoneInfo("Europe/Paris")


@settings(max_examples=300, deadline=None)
@given(start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2030, 12, 1)),
       busy=st.lists(st.tuples(st.integers(0, 14 * 24 * 4), st.integers(1, 40)), max_size=30),
       minutes=st.sampled_from([15, 30, 45, 60, 90, 120, 480]))
def test_slots_are_free_whole_and_within_working_hours(start: datetime, busy: list[tuple[int, int]],
                                                       minutes: int) -> None:
    begin = start.replace(tzinfo=PARIS)
    end = begin + timedelta(days=14)
    intervals = [(begin + timedelta(minutes=15 * a), begin + timedelta(minutes=15 * (a + b))) for a, b in busy]
    for slot_start, slot_end in free_slots(intervals, begin, end, timedelta(minutes=minutes), PARIS):
        assert slot_end - slot_start == timedelta(minutes=minutes)
        assert begin <= slot_start and slot_end <= end
        assert not any(b0 < slot_end and slot_start < b1 for b0, b1 in intervals)
        local_start, local_end = slot_start.astimezone(PARIS), slot_end.astimezone(PARIS)
        assert local_start.weekday() in WORKING_DAYS
        assert any(opening <= local_start.time() and local_end.time() <= closing
                   for opening, closing in WORKING_HOURS)


def add_event(stack: ServerStack, caldav: str, calendar_id: str, uid: str, summary: str, start: datetime,
              end: datetime) -> None:
    calendar_client(stack, caldav, calendar_id).save_event(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//FR\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20261125T080000Z\r\nDTSTART;TZID=Europe/Paris:{start:%Y%m%dT%H%M%S}\r\n"
        f"DTEND;TZID=Europe/Paris:{end:%Y%m%dT%H%M%S}\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


async def test_a_slot_for_three_agents_avoids_their_busy_times_and_reveals_no_title(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    alice, bob, claire = await agents("alice"), await agents("bob"), await agents("claire")
    today = datetime.now(PARIS).date()
    monday = today - timedelta(days=today.weekday()) + timedelta(days=7)

    def at(day_offset: int, hour: int) -> datetime:
        return datetime.combine(monday + timedelta(days=day_offset), time(hour), PARIS)

    # Alice's service calendar (a room Claire is not in): busy Monday morning.
    _, service_room = await room_with_agenda(agents, synapse, "Service d’Alice", owner=alice)
    service_calendar = unique_id("service-alice")
    await answer(alice, service_room, synapse, f"!agenda créer {service_calendar}")
    await asyncio.to_thread(add_event, synapse, caldav, service_calendar, "rh-1", "Entretien confidentiel",
                            at(0, 9), at(0, 12))
    # Bob's personal calendar: busy Monday 14:00–16:00.
    personal = await answer(bob, (await room_with_agenda(agents, synapse, "Bob", owner=bob))[1], synapse,
                            "!agenda perso")
    personal_id = personal.rsplit("/", 2)[-2]
    await asyncio.to_thread(add_event, synapse, caldav, personal_id, "perso-1", "Médecin", at(0, 14), at(0, 16))

    _, project = await room_with_agenda(agents, synapse, "Projet école", owner=claire)
    project_calendar = unique_id("projet")
    await answer(claire, project, synapse, f"!agenda créer {project_calendar}")
    for agent in (alice, bob):
        await claire.client.room_invite(project, agent.user_id)
        await agent.client.join(project)
    await wait_for_members(project, claire, alice, bob)

    outsider = await agents("dave")
    refused = await answer(claire, project, synapse, f"!agenda créneau 1h avec {outsider.user_id}")
    assert refused.startswith("Pour chercher un créneau avec quelqu’un, il doit être membre de ce salon")

    proposed = await answer(claire, project, synapse,
                            f"!agenda créneau 1h avec {alice.user_id} {bob.user_id} semaine prochaine")
    monday_name = f"lundi {monday.day}"
    assert proposed.splitlines()[1:4] == [
        f"1) {monday_name} {_month(monday)} {monday.year}, 16:00–17:00",
        f"2) {monday_name} {_month(monday)} {monday.year}, 17:00–18:00",
        f"3) mardi {(monday + timedelta(days=1)).day} {_month(monday + timedelta(days=1))} "
        f"{(monday + timedelta(days=1)).year}, 09:00–10:00"]
    assert "Entretien" not in proposed and "Médecin" not in proposed

    booked = await answer(claire, project, synapse, "!agenda réserve 1 Point projet école")
    assert booked.startswith("Ajouté : n°1 — Point projet école")
    vevent: Any = next(iter((await asyncio.to_thread(events_of, synapse, caldav, project_calendar))[0].walk("VEVENT")))
    attendees = sorted(str(a.params["CN"]) for a in vevent["attendee"])
    assert attendees == sorted([claire.user_id, alice.user_id, bob.user_id])
    assert vevent.decoded("dtstart") == at(0, 16)
    assert "Pas de créneau n°1" in await answer(claire, project, synapse, "!agenda réserve 1")  # used once


def _month(day: date) -> str:
    return MONTH_NAMES[day.month - 1]
