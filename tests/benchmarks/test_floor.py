"""The latency floor every bot benchmark is a ratio to, and the stack's start and memory.

Run with ``./maillage bench`` (not part of ``./maillage test``). Figures go to
build/benchmarks/ and, by hand, to docs/benchmarks.md. One benchmark alone:
``-k latency_floor`` or ``-k cold_start``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import psutil
import pytest
from nio import MatrixRoom, RoomMessageText

from tests.benchmarks.report import judge, record, summary
from tests.deploy.test_launcher import init_stack, maillage
from tests.harness.matrix import Agent, AgentFactory, create_encrypted_room

pytestmark = pytest.mark.benchmark

ROUNDS = 200
WARMUP = 10
SERIES = 3
RESTART_GOAL_S, IDLE_RSS_GOAL_MB = 30.0, 600.0


async def ping_pong_series(ping: Agent, pong: Agent, room_id: str, rounds: int) -> list[float]:
    """Round-trip times (s): ``pong`` answers from its sync callback the moment it sees a ping."""

    async def answer(room: MatrixRoom, event: RoomMessageText) -> None:
        if room.room_id == room_id and event.sender == ping.user_id and event.body.startswith("ping "):
            await pong.send_text(room_id, "pong " + event.body[5:])

    pong.client.add_event_callback(answer, RoomMessageText)
    timings = []
    try:
        for index in range(rounds):
            since = len(ping.received)
            started = time.perf_counter()
            await ping.send_text(room_id, f"ping {index}")
            reply = await ping.wait_for_text(room_id, f"pong {index}", since=since, timeout=30)
            timings.append(reply.arrived - started)
    finally:
        pong.client.event_callbacks = [c for c in pong.client.event_callbacks if c.func is not answer]
    return timings


async def one_way_series(sender: Agent, receiver: Agent, room_id: str, rounds: int) -> list[float]:
    """One-hop times (s): from the start of a plain client's send to the moment the other
    client's sync hands it the decrypted message — what a bridge's message into a room is
    measured against (a ping-pong is two such hops)."""
    timings = []
    for index in range(rounds):
        since = len(receiver.received)
        started = time.perf_counter()
        body = f"aller {index} {time.monotonic_ns()}"
        await sender.send_text(room_id, body)
        seen = await receiver.wait_for_text(room_id, body, since=since, timeout=30)
        timings.append(seen.arrived - started)
    return timings


async def test_latency_floor_ping_pong_in_an_encrypted_room(agents: AgentFactory) -> None:
    alice = await agents("ping")
    bruno = await agents("pong")
    room = await create_encrypted_room(alice, bruno, name="Plancher de latence")
    await ping_pong_series(alice, bruno, room, WARMUP)

    runs = [await ping_pong_series(alice, bruno, room, ROUNDS) for _ in range(SERIES)]
    per_run = [summary([t * 1000 for t in run]) for run in runs]
    every_round = summary([t * 1000 for run in runs for t in run])
    record("floor", {
        "what": "encrypted ping-pong round trip between two matrix-nio clients, same homeserver (ms)",
        "rounds_per_run": ROUNDS, "runs": SERIES,
        "median_of_run_medians_ms": statistics.median(r["median"] for r in per_run),
        "median_of_run_p95_ms": statistics.median(r["p95"] for r in per_run),
        "all_rounds_ms": every_round, "per_run_ms": per_run,
        "goal": "none: this is the floor the bot benchmarks are divided by",
    })
    assert all(len(run) == ROUNDS for run in runs)


def _stack_rss_mb(supervisor_pid: int) -> float:
    supervisor = psutil.Process(supervisor_pid)
    processes = [supervisor, *supervisor.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes) / 2**20


def _timed_up(data_dir: Path) -> float:
    started = time.perf_counter()
    result = maillage(data_dir, "up", "--detach")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stdout
    return elapsed


def test_cold_start_and_idle_memory(tmp_path: Path) -> None:
    first_starts, restarts, idle_rss = [], [], []
    for run in range(SERIES):
        data_dir = tmp_path / f"pile-{run}"
        init_stack(data_dir)
        try:
            first_starts.append(_timed_up(data_dir))  # includes seeding the demo collectivité
            maillage(data_dir, "down")
            restarts.append(_timed_up(data_dir))
            time.sleep(15)  # let start-up work settle before measuring idle memory
            pid = int(json.loads(maillage(data_dir, "status", "--json").stdout)["pid"])
            idle_rss.append(_stack_rss_mb(pid))
        finally:
            maillage(data_dir, "down")
    record("stack", {
        "what": "maillage up --detach until every health check passes (s); RSS of the idle stack (MB)",
        "first_start_s": summary(first_starts), "restart_s": summary(restarts),
        "idle_rss_mb": summary(idle_rss),
    }, judge("restart on existing data (s)", statistics.median(restarts), RESTART_GOAL_S, " s"),
        judge("idle RSS of the stack (MB)", statistics.median(idle_rss), IDLE_RSS_GOAL_MB, " MB"))
    assert len(restarts) == SERIES

