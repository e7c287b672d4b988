"""@agenda benchmarks (issue 9), each selectable alone (``./maillage bench -k …``):

- ``agenda_week_5000``: ``!agenda semaine`` on a calendar of 5,000 events (100 of them weekly
  series), reply time ÷ the encrypted ping-pong floor, series alternated;
- ``agenda_announcements_50_rooms``: 50 rooms, each bound to its own calendar: time from an
  external client's PUT to the room's announcement (median, p95), and the CalDAV requests the
  bot makes per calendar per interval while nothing changes.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.benchmarks.report import judge, record, summary
from tests.benchmarks.test_floor import ping_pong_series
from tests.bots.test_agenda import agenda_id, answer, room_with_agenda, unique_id
from tests.conftest import ServerStack
from tests.harness.matrix import Agent, AgentFactory, Received, create_encrypted_room

pytestmark = [pytest.mark.benchmark, pytest.mark.usefixtures("in_french")]

PARIS = ZoneInfo("Europe/Paris")
EVENTS, SERIES_EVENTS = 5000, 100
ROUNDS, SERIES = 10, 5
WEEK_GOAL = 1.5
ROOMS, CHANGES = 50, 20


def _vevent(uid: str, summary: str, start: datetime, minutes: int, rule: str = "") -> str:
    end = start + timedelta(minutes=minutes)
    return (f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261125T080000Z\r\n"
            f"DTSTART;TZID=Europe/Paris:{start:%Y%m%dT%H%M%S}\r\nDTEND;TZID=Europe/Paris:{end:%Y%m%dT%H%M%S}\r\n"
            f"{rule}SUMMARY:{summary}\r\nEND:VEVENT\r\n")


def big_calendar(now: datetime) -> str:
    """5,000 events over a year around today: single ones, and weekly series begun months ago."""
    chance = random.Random(9)
    events = []
    for index in range(EVENTS - SERIES_EVENTS):
        day = now.date() + timedelta(days=chance.randint(-180, 180))
        start = datetime(day.year, day.month, day.day, chance.choice([9, 10, 11, 14, 15, 16]), 0, tzinfo=PARIS)
        events.append(_vevent(f"u{index}@banc", f"Rendez-vous {index}", start, chance.choice([30, 60, 90])))
    for index in range(SERIES_EVENTS):
        day = now.date() - timedelta(days=chance.randint(30, 200))
        start = datetime(day.year, day.month, day.day, chance.choice([8, 13, 17]), 30, tzinfo=PARIS)
        events.append(_vevent(f"s{index}@banc", f"Réunion hebdomadaire {index}", start, 60,
                              rule="RRULE:FREQ=WEEKLY\r\n"))
    return "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//banc//FR\r\n" + "".join(events) + "END:VCALENDAR\r\n"


async def fill_calendar(stack: ServerStack, caldav: str, calendar_id: str, text: str) -> float:
    """The whole calendar in one PUT on the collection (Radicale makes one item per UID)."""
    started = time.perf_counter()
    async with httpx.AsyncClient(auth=("maillage", stack.secrets.dav_password), timeout=600) as http:
        response = await http.put(f"{caldav.rstrip('/')}/maillage/{calendar_id}/", content=text.encode(),
                                  headers={"Content-Type": "text/calendar; charset=utf-8"})
        assert response.status_code in (201, 204), response.status_code
    return time.perf_counter() - started


async def week_round_trips(agent: Agent, room: str, stack: ServerStack, rounds: int) -> list[float]:
    timings = []
    for _ in range(rounds):
        since = len(agent.received)
        started = time.perf_counter()
        await agent.send_text(room, "!agenda semaine")
        reply = await agent.wait_for_text(room, lambda m: m.sender == agenda_id(stack) and m.body.startswith(
            ("Agenda de la semaine", "Rien à l’agenda")), since=since, timeout=120)
        timings.append(reply.arrived - started)
    return timings


async def test_agenda_week_5000_events_over_the_floor(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await room_with_agenda(agents, synapse, "Banc agenda")
    calendar_id = unique_id("banc")
    await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
    since = len(owner.received)
    fill_seconds = await fill_calendar(synapse, caldav, calendar_id, big_calendar(datetime.now(PARIS)))
    # The import is told once the bot has read the calendar whole into its index: out of the timings.
    filled = time.perf_counter()
    told = await owner.wait_for_text(room, _saying("depuis une autre application"), since=since, timeout=900)
    indexed_seconds = told.arrived - filled
    ping, pong = await agents("ping"), await agents("pong")
    floor_room = await create_encrypted_room(ping, pong, name="Plancher")
    first = await week_round_trips(owner, room, synapse, 1)  # the server's first read of 5,000 items
    await ping_pong_series(ping, pong, floor_room, 5)
    weeks, floors, order = [], [], []
    for series in range(SERIES):
        if series % 2:
            floors.append(statistics.median(await ping_pong_series(ping, pong, floor_room, ROUNDS)) * 1000)
        weeks.append(statistics.median(await week_round_trips(owner, room, synapse, ROUNDS)) * 1000)
        if not series % 2:
            floors.append(statistics.median(await ping_pong_series(ping, pong, floor_room, ROUNDS)) * 1000)
        order.append("floor, bot" if series % 2 else "bot, floor")
    week_median, floor_median = statistics.median(weeks), statistics.median(floors)
    listed = (await week_round_trips(owner, room, synapse, 1), owner.received[-1].body.count("\n"))[1]
    ratio = week_median / floor_median
    record("agenda_week_5000", {
        "what": "!agenda semaine reply (ms) on a calendar of 5,000 events (100 weekly series), over the encrypted"
                " ping-pong floor (ms), series alternated",
        "events": EVENTS, "series_events": SERIES_EVENTS, "lines_listed": listed, "fill_seconds": fill_seconds,
        "indexed_seconds_after_fill": indexed_seconds,
        "first_reply_ms": first[0] * 1000, "rounds_per_series": ROUNDS, "series": SERIES, "order": order,
        "week_median_ms": week_median, "floor_median_ms": floor_median, "ratio": ratio,
        "week_series_ms": weeks, "floor_series_ms": floors,
    }, judge("!agenda semaine (5,000 events) ÷ floor", ratio, WEEK_GOAL))


def _saying(text: str) -> Callable[[Received], bool]:
    return lambda message: text in message.body


def _dav_requests(bots: str) -> float:
    text = httpx.get(f"{bots}/metrics").text
    return sum(float(value) for value in re.findall(
        r'^maillage_bot_dav_requests_total\{bot="agenda",method="[A-Z]+"\} ([0-9.e+]+)$', text, re.M))


async def test_agenda_announcements_50_rooms(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner = await agents("annonces")
    rooms: dict[str, str] = {}
    for index in range(ROOMS):
        _, room = await room_with_agenda(agents, synapse, f"Service {index}", owner=owner)
        calendar_id = unique_id(f"service{index}")
        assert "créé" in await answer(owner, room, synapse, f"!agenda créer {calendar_id}")
        rooms[calendar_id] = room
    interval = synapse.config.agenda.intervalle_secondes
    await asyncio.sleep(2 * interval)  # every calendar looked at once: what is there now is known

    idle_seconds = 60.0
    before = await asyncio.to_thread(_dav_requests, bots)
    await asyncio.sleep(idle_seconds)
    idle_requests = await asyncio.to_thread(_dav_requests, bots) - before
    per_calendar_per_interval = idle_requests / ROOMS / (idle_seconds / interval)

    latencies = []
    chance = random.Random(50)
    async with httpx.AsyncClient(auth=("maillage", synapse.secrets.dav_password), timeout=60) as http:
        for change in range(CHANGES):
            calendar_id = chance.choice(sorted(rooms))
            since = len(owner.received)
            uid = f"{uuid.uuid4()}@exterieur"
            start = datetime(2027, 6, 1 + change, 10, 0, tzinfo=PARIS)
            body = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//banc//FR\r\n"
                    + _vevent(uid, f"Changement {change}", start, 60) + "END:VCALENDAR\r\n")
            response = await http.put(f"{caldav.rstrip('/')}/maillage/{calendar_id}/{uid}.ics", content=body.encode(),
                                      headers={"Content-Type": "text/calendar; charset=utf-8"})
            put_done = time.perf_counter()
            assert response.status_code == 201
            told = await owner.wait_for_text(rooms[calendar_id], _saying(f"Changement {change} "),
                                             since=since, timeout=4 * interval + 30)
            latencies.append(told.arrived - put_done)
            await asyncio.sleep(chance.uniform(0, interval))  # changes land anywhere in the interval
    figures: dict[str, Any] = {
        "what": "time from an external client's PUT to the room's announcement (s), 50 rooms each bound to its own"
                " calendar; CalDAV requests made by @agenda per calendar per look interval while nothing changes",
        "rooms": ROOMS, "changes": CHANGES, "interval_s": interval, "announcement_s": summary(latencies),
        "announcement_each_s": latencies, "idle_seconds": idle_seconds, "idle_requests": idle_requests,
        "requests_per_calendar_per_interval": per_calendar_per_interval,
    }
    record("agenda_announcements_50_rooms", figures,
           judge("CalDAV requests per calendar per interval, idle", per_calendar_per_interval, 1.0, unit=""))
