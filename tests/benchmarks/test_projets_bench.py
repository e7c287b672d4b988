"""@projets benchmarks (issue 10), each selectable alone (``./maillage bench -k …``):

- ``projets_state_2000``: ``!projet état`` on a project of 2,000 tasks and 20 objectives (a third
  done over the last ten weeks), until both its table and its chart have arrived, ÷ the
  encrypted ping-pong floor of two plain clients; series alternated;
- ``projets_api_100``: the read API (``GET /api/projets``) for an agent in 100 projects, median
  and p95, ÷ the bots' own ``/sante`` asked in turn on the same process.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.benchmarks.report import judge, record, summary
from tests.benchmarks.test_floor import ping_pong_series
from tests.bots.test_projets import project_room, projets_id, said
from tests.conftest import ServerStack
from tests.harness.matrix import Agent, AgentFactory, create_encrypted_room

pytestmark = [pytest.mark.benchmark, pytest.mark.usefixtures("in_french")]

PARIS = ZoneInfo("Europe/Paris")
TASKS, OBJECTIVES = 2000, 20
ROUNDS, SERIES = 10, 5
STATE_GOAL = 1.5
PROJECTS, API_ROUNDS = 100, 200


def _todo(uid: str, summary: str, due: datetime, *, extra: str = "") -> str:
    return (f"BEGIN:VTODO\r\nUID:{uid}\r\nDTSTAMP:20261125T080000Z\r\nSUMMARY:{summary}\r\n"
            f"DUE;VALUE=DATE:{due:%Y%m%d}\r\n{extra}END:VTODO\r\n")


def big_project(now: datetime, tasks: int = TASKS, objectives: int = OBJECTIVES) -> str:
    """``objectives`` objectives and ``tasks`` tasks under them, a third done, some late."""
    chance = random.Random(10)
    items = [_todo(f"o{index}@banc", f"Objectif {index}", now + timedelta(days=30 * (index + 1)),
                   extra="STATUS:NEEDS-ACTION\r\nX-MAILLAGE-OBJECTIF:TRUE\r\nCATEGORIES:Objectif\r\n")
             for index in range(objectives)]
    for index in range(tasks):
        done = chance.random() < 1 / 3
        when = (now - timedelta(days=chance.randint(0, 70))).astimezone(UTC)  # the chart's weeks
        status = f"COMPLETED\r\nCOMPLETED:{when:%Y%m%dT%H%M%SZ}" if done else "NEEDS-ACTION"
        items.append(_todo(f"t{index}@banc", f"Tâche {index}", now + timedelta(days=chance.randint(-60, 300)),
                           extra=f"STATUS:{status}\r\nRELATED-TO;RELTYPE=PARENT:o{index % objectives}@banc\r\n"))
    return "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//banc//FR\r\n" + "".join(items) + "END:VCALENDAR\r\n"


async def fill_list(stack: ServerStack, caldav: str, list_id: str, text: str) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(auth=("maillage", stack.secrets.dav_password), timeout=600) as http:
        response = await http.put(f"{caldav.rstrip('/')}/maillage/{list_id}/", content=text.encode(),
                                  headers={"Content-Type": "text/calendar; charset=utf-8"})
        assert response.status_code in (201, 204), response.status_code
    return time.perf_counter() - started


async def state_round_trips(agent: Agent, room: str, stack: ServerStack, rounds: int) -> list[float]:
    """Until both answers, the table and the chart, have arrived (in either order)."""
    timings = []
    for _ in range(rounds):
        pictures, texts = _charts(agent, room, stack), len(agent.received)
        started = time.perf_counter()
        await agent.send_text(room, "!projet état")
        while _charts(agent, room, stack) == pictures or not any(
                m.room_id == room and m.body.startswith("État") for m in agent.received[texts:]):
            await asyncio.sleep(0.002)
            assert time.perf_counter() - started < 120, "no table and chart within 120 s"
        timings.append(time.perf_counter() - started)
    return timings


def _charts(agent: Agent, room: str, stack: ServerStack) -> int:
    return sum(1 for room_id, event in agent.files if room_id == room and event.sender == projets_id(stack))


async def test_projets_state_2000_tasks_over_the_floor(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await project_room(agents, synapse, "Banc projets")
    list_id = f"banc-{int(time.time())}"
    await said(owner, room, synapse, f"!projet créer {list_id}")
    since = len(owner.received)
    fill_seconds = await fill_list(synapse, caldav, list_id, big_project(datetime.now(PARIS)))
    filled = time.perf_counter()
    told = await owner.wait_for_text(room, lambda m: "autre application" in m.body, since=since, timeout=900)
    indexed_seconds = told.arrived - filled
    ping, pong = await agents("ping"), await agents("pong")
    floor_room = await create_encrypted_room(ping, pong, name="Plancher")
    first = await state_round_trips(owner, room, synapse, 1)
    table = next(m.body for m in reversed(owner.received) if m.room_id == room and m.body.startswith("État"))
    await ping_pong_series(ping, pong, floor_room, 5)
    states, floors, order = [], [], []
    for series in range(SERIES):
        if series % 2:
            floors.append(statistics.median(await ping_pong_series(ping, pong, floor_room, ROUNDS)) * 1000)
        states.append(statistics.median(await state_round_trips(owner, room, synapse, ROUNDS)) * 1000)
        if not series % 2:
            floors.append(statistics.median(await ping_pong_series(ping, pong, floor_room, ROUNDS)) * 1000)
        order.append("floor, bot" if series % 2 else "bot, floor")
    state_median, floor_median = statistics.median(states), statistics.median(floors)
    ratio = state_median / floor_median
    record("projets_state_2000", {
        "what": "!projet état until its table and chart have arrived (ms), 2,000 tasks and 20 objectives, over"
                " the encrypted ping-pong floor (ms), series alternated",
        "tasks": TASKS, "objectives": OBJECTIVES, "table_lines": table.count("\n"), "fill_seconds": fill_seconds,
        "indexed_seconds_after_fill": indexed_seconds, "first_reply_ms": first[0] * 1000,
        "rounds_per_series": ROUNDS, "series": SERIES, "order": order, "state_median_ms": state_median,
        "floor_median_ms": floor_median, "ratio": ratio, "state_series_ms": states, "floor_series_ms": floors,
    }, judge("!projet état (2,000 tasks, chart included) ÷ floor", ratio, STATE_GOAL))


async def test_projets_api_100_projects_over_sante(
    synapse: ServerStack, caldav: str, bots: str, agents: AgentFactory
) -> None:
    agent = await agents("direction")
    async with httpx.AsyncClient(auth=("maillage", synapse.secrets.dav_password), timeout=60) as dav:
        for index in range(PROJECTS):
            owner, room = await project_room(agents, synapse, f"Projet {index}", agent)
            list_id = f"p{index}-{int(time.time())}"
            await said(owner, room, synapse, f"!projet créer {list_id}")
            text = big_project(datetime.now(PARIS), tasks=20, objectives=2)
            response = await dav.put(f"{caldav.rstrip('/')}/maillage/{list_id}/", content=text.encode(),
                                     headers={"Content-Type": "text/calendar; charset=utf-8"})
            assert response.status_code in (201, 204)
    headers = {"Authorization": f"Bearer {agent.client.access_token}"}
    async with httpx.AsyncClient(timeout=60) as http:
        deadline = time.monotonic() + 600
        while len((await http.get(f"{bots}/api/projets", headers=headers)).json()["projets"]) < PROJECTS:
            assert time.monotonic() < deadline, "the 100 projects were not all read within 10 minutes"
            await asyncio.sleep(2)
        api, sante = [], []
        for index in range(API_ROUNDS):
            for name in (("api", "sante") if index % 2 else ("sante", "api")):
                started = time.perf_counter()
                if name == "api":
                    response = await http.get(f"{bots}/api/projets", headers=headers)
                    assert response.status_code == 200
                    api.append(time.perf_counter() - started)
                else:
                    await http.get(f"{bots}/sante")
                    sante.append(time.perf_counter() - started)
    ratio_median = statistics.median(api) / statistics.median(sante)
    ratio_p95 = summary(api)["p95"] / summary(sante)["p95"]
    record("projets_api_100", {
        "what": "GET /api/projets for an agent in 100 projects (20 tasks, 2 objectives each), over GET /sante of"
                " the same process, asked in turn (s)",
        "projects": PROJECTS, "rounds": API_ROUNDS, "api_s": summary(api), "sante_s": summary(sante),
        "ratio_median": ratio_median, "ratio_p95": ratio_p95,
    })  # the issue names no goal for this ratio: it is measured and written, not judged
