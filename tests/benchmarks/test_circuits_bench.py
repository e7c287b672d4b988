"""Validation circuits (issue 11): 200 circuits of 3 steps run by scripted agents, ``-k circuits_200``.

Goal: the time from an actor's action (« !circuit vise n ») to the next actor's notice, median
and p95, at most 1.5 × the same figures for the floor — plain clients doing the same work:
three pingers, each working through its 200 pings one after the other, and one plain client
answering each ping the moment it sees it (the bot's place). The three actors work as people
do, in parallel and each through their own queue: the first visas circuit after circuit, the
second gives their opinion on each circuit once its notice has come, the third signs (which
archives, seals and posts the receipt). Floor, circuits, floor: alternated. The bots' CPU
seconds and memory during the circuits' run are written beside.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

import httpx
import psutil
import pytest
from nio import MatrixRoom, RoomMessageText

from tests.benchmarks.report import RssSeries, judge, record, summary
from tests.bots.test_circuits import circuit_room, number_of
from tests.bots.test_runtime import documents_id
from tests.conftest import BotProcess, ServerStack
from tests.harness.matrix import Agent, AgentFactory, Received, create_encrypted_room
from tests.harness.office import pdf_with_text

pytestmark = [pytest.mark.benchmark, pytest.mark.usefixtures("in_french")]

CIRCUITS, GOAL = 200, 1.5
STEPS = ("visa", "avis", "signature")


async def acted(agent: Agent, room: str, command: str) -> float:
    """Send ``command``, wait for the bot's reply to it; when it was sent."""
    since = len(agent.received)
    started = time.perf_counter()
    sent = await agent.send_text(room, command)
    await agent.wait_for_text(room, _reply_to(sent), since=since, timeout=300)
    return started


def _reply_to(event_id: str) -> Callable[[Received], bool]:
    return lambda message: message.reply_to == event_id


def _notice(bot: str, number: int, step: int) -> Callable[[Received], bool]:
    prefix = f"📝 Circuit n°{number} "
    return lambda m: m.sender == bot and m.body.startswith(prefix) and f"étape {step}/3" in m.body


async def actor_queue(actor: Agent, room: str, bot: str, numbers: list[int], step: int, word: str,
                      sent_at: dict[tuple[int, int], float]) -> None:
    """One actor working through their circuits: each as soon as its notice has come."""
    for number in numbers:
        if step > 1:
            await actor.wait_for_text(room, _notice(bot, number, step), timeout=600)
        sent_at[(number, step)] = await acted(actor, room, f"!circuit {word} {number}")


async def circuits_run(room: str, bot: str, actors: list[Agent], numbers: list[int]) -> list[float]:
    """Action → next actor's notice (s), for steps 1→2 and 2→3 of every circuit."""
    sent_at: dict[tuple[int, int], float] = {}
    words = ("vise", "vise", "signe")
    await asyncio.gather(*(actor_queue(actor, room, bot, numbers, step, word, sent_at)
                           for step, (actor, word) in enumerate(zip(actors, words, strict=True), 1)))
    delays = []
    for number in numbers:
        for step in (1, 2):
            notice = await actors[step].wait_for_text(room, _notice(bot, number, step + 1), timeout=5)
            delays.append(notice.arrived - sent_at[(number, step)])
    return delays


async def floor_run(pingers: list[Agent], ponger: Agent, room: str, rounds: int) -> list[float]:
    """Three plain clients pinging through their queues, one plain client answering each ping."""

    async def answer(room_: MatrixRoom, event: RoomMessageText) -> None:
        if room_.room_id == room and event.body.startswith("ping "):
            await ponger.send_text(room, "pong " + event.body[5:])

    ponger.client.add_event_callback(answer, RoomMessageText)

    async def queue(index: int, pinger: Agent) -> list[float]:
        timings = []
        for round_ in range(rounds):
            since, started = len(pinger.received), time.perf_counter()
            await pinger.send_text(room, f"ping {index}-{round_}")
            pong = await pinger.wait_for_text(room, f"pong {index}-{round_}", since=since, timeout=120)
            timings.append(pong.arrived - started)
        return timings

    try:
        runs = await asyncio.gather(*(queue(index, pinger) for index, pinger in enumerate(pingers)))
    finally:
        ponger.client.event_callbacks = [c for c in ponger.client.event_callbacks if c.func is not answer]
    return [t for run in runs for t in run]


async def launched(owner: Agent, room: str, synapse: ServerStack, webdav: str, actors: list[Agent]) -> list[int]:
    """200 documents written in the room's folder (as a file manager would) and a circuit on each."""
    async with httpx.AsyncClient(auth=("maillage", synapse.secrets.dav_password), timeout=60) as dav:
        for index in range(CIRCUITS):
            response = await dav.put(f"{webdav.rstrip('/')}/banc/circuits/acte-{index}.pdf",
                                     content=pdf_with_text(f"Acte {index}"))
            assert response.status_code in (201, 204)
    steps = ", ".join(f"{kind}: {actor.user_id}" for kind, actor in zip(STEPS, actors, strict=True))
    numbers = []
    for index in range(CIRCUITS):
        since = len(owner.received)
        sent = await owner.send_text(room, f"!circuit lance acte-{index}.pdf {steps}")
        numbers.append(number_of((await owner.wait_for_text(room, _reply_to(sent), since=since, timeout=60)).body))
    return numbers


def handling(bots: str) -> tuple[float, float]:
    """@documents' time handling events, in its ordered line (s), and how many: its /metrics."""
    found = {}
    for line in httpx.get(bots.rstrip("/") + "/metrics").text.splitlines():
        for name in ("sum", "count"):
            if line.startswith(f'maillage_bot_handling_seconds_{name}{{bot="documents"}}'):
                found[name] = float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


async def warm_up(owner: Agent, room: str, synapse: ServerStack, webdav: str, actors: list[Agent]) -> None:
    """One circuit first, each actor accepting the bot's direct room when it comes (as agents do):
    the 200 then find every direct room open."""
    async with httpx.AsyncClient(auth=("maillage", synapse.secrets.dav_password), timeout=60) as dav:
        await dav.put(f"{webdav.rstrip('/')}/banc/circuits/echauffement.pdf", content=pdf_with_text("Essai"))
    steps = ", ".join(f"{kind}: {actor.user_id}" for kind, actor in zip(STEPS, actors, strict=True))
    since = len(owner.received)
    sent = await owner.send_text(room, f"!circuit lance echauffement.pdf {steps}")
    number = number_of((await owner.wait_for_text(room, _reply_to(sent), since=since, timeout=60)).body)
    for actor, word in zip(actors, ("vise", "vise", "signe"), strict=True):
        await actor.join_invitation()
        await acted(actor, room, f"!circuit {word} {number}")
    await asyncio.sleep(2 * synapse.config.circuits.intervalle_secondes)  # direct messages caught up


async def test_circuits_200_of_3_steps_action_to_next_notice_over_the_floor(
    synapse: ServerStack, webdav: str, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    owner, room, people = await circuit_room(agents, synapse, "banc/circuits", "visa", "avis", "signature")
    actors = list(people.values())
    bot = documents_id(synapse)
    await warm_up(owner, room, synapse, webdav, actors)
    numbers = await launched(owner, room, synapse, webdav, actors)
    pingers = [await agents(f"ping{index}") for index in range(3)]
    ponger = await agents("pong")
    floor_room = await create_encrypted_room(ponger, *pingers, name="Plancher")
    await floor_run(pingers, ponger, floor_room, 5)

    assert bot_process.process is not None
    bots_process = psutil.Process(bot_process.process.pid)
    floors = await floor_run(pingers, ponger, floor_room, CIRCUITS)
    cpu_before, started = sum(bots_process.cpu_times()[:2]), time.perf_counter()
    handled_before = handling(bots)
    with RssSeries(bot_process.process.pid) as rss:
        delays = await circuits_run(room, bot, actors, numbers)
    wall, cpu = time.perf_counter() - started, sum(bots_process.cpu_times()[:2]) - cpu_before
    handled_after = handling(bots)
    handled = handled_after[1] - handled_before[1]
    floors += await floor_run(pingers, ponger, floor_room, CIRCUITS)
    validated = [m for m in owner.received if m.room_id == room and m.sender == bot and m.body.startswith("✅ Circuit")]

    bot_figures, floor_figures = summary([d * 1000 for d in delays]), summary([f * 1000 for f in floors])
    median_ratio = bot_figures["median"] / floor_figures["median"]
    p95_ratio = bot_figures["p95"] / floor_figures["p95"]
    record("circuits_200", {
        "what": "action → next actor's notice (ms), 200 circuits of 3 steps, three actors each through their"
                " queue; floor: three plain pingers through their queues, one plain client answering (ms);"
                " order: floor, circuits, floor",
        "circuits": CIRCUITS, "validated": len(validated), "circuits_ms": bot_figures, "floor_ms": floor_figures,
        "median_ratio": median_ratio, "p95_ratio": p95_ratio, "circuits_wall_s": wall,
        "bots_cpu_s": cpu, "bots_cpu_share_of_one_core": cpu / wall, "bots_rss": rss.figures(),
        "acts_per_second": 3 * CIRCUITS / wall, "events_handled": handled,
        "mean_handling_ms": 1000 * (handled_after[0] - handled_before[0]) / max(handled, 1),
    }, judge("action → next notice, median ÷ floor", median_ratio, GOAL),
        judge("action → next notice, p95 ÷ floor", p95_ratio, GOAL))
    assert len(delays) == 2 * CIRCUITS and statistics.median(delays) > 0
