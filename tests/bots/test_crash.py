"""Nothing lost, nothing done twice: the bots process killed with SIGKILL at random moments.

Agents keep sending commands and documents while the bots are killed (no clean-up
of any kind: mid-sync, mid-decryption, mid-upload, mid-reply, mid-start) and
started again, over and over. Afterwards every command has exactly one answer,
every document is stored exactly once under its own name (no ``_v2`` from a
replay), and nothing is left half-written on the WebDAV server.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import re
import sqlite3
import time
from typing import Any

from tests.bots.test_documents import bound_room, post_file
from tests.bots.test_runtime import documents_id
from tests.conftest import ServerStack, ServiceProcess
from tests.harness.matrix import Agent, AgentFactory, MatrixTimeout

log = logging.getLogger(__name__)

ROOMS = 4
COMMANDS_PER_ROOM = 250  # 1,000 in all
FILES_PER_ROOM = 13  # 52 in all
MIN_KILLS = 20
TOKEN = re.compile(r"« (k\d+-\d+) »")
LOG_TIMESTAMP = len("2026-12-07 07:49:38,060 ")  # what each line of the bots' log starts with


def command_token(room_index: int, number: int) -> str:
    return f"k{room_index}-{number:04d}"


async def send_all(agent: Agent, room: str, room_index: int, rng: random.Random,
                   sent: dict[str, str]) -> list[str]:
    """The room's commands, with its documents among them at random places; the files' event ids.
    ``sent`` receives each command's event id by its token."""
    file_at = set(rng.sample(range(COMMANDS_PER_ROOM), FILES_PER_ROOM))
    files = []
    for number in range(COMMANDS_PER_ROOM):
        # An unknown subcommand: the answer quotes it, so each answer names its command.
        token = command_token(room_index, number)
        sent[token] = await agent.send_text(room, f"!doc {token}")
        if number in file_at:
            data = f"document {room_index}-{number}\n".encode() + os.urandom(rng.randrange(1_000, 200_000))
            files.append(await post_file(agent, room, data, f"Piece {room_index} {number}.pdf"))
    return files


async def kill_at_random(bots: ServiceProcess, sending: asyncio.Future[Any], rng: random.Random,
                         min_kills: int = MIN_KILLS) -> int:
    """Kill the bots at random moments — while they start, catch up or work — until the agents are
    done and at least ``min_kills`` kills happened; leave them running."""
    kills = 0
    while kills < min_kills or not sending.done():
        await asyncio.sleep(rng.uniform(0.3, 4.0))
        await asyncio.to_thread(bots.kill)
        kills += 1
        bots.launch()  # from this thread: see ServiceProcess.launch
    await asyncio.sleep(rng.uniform(0.5, 2.0))
    await asyncio.to_thread(bots.kill)
    bots.launch()
    await asyncio.to_thread(bots.wait_ready)  # this time waits until healthy
    return kills + 1


def answers_per_token(agent: Agent, room: str, bot: str, token: re.Pattern[str] = TOKEN) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for message in agent.received:
        if message.room_id == room and message.sender == bot:
            counts.update(token.findall(message.body))
    return counts


def unanswered_diagnosis(synapse: ServerStack, agent: Agent, room: str, bot: str, missing: set[str],
                         sent: dict[str, str]) -> str:
    """Where the first unanswered commands stopped, in the one line CI's summary shows: the bot's
    record of each, its log lines about it, and the bot's messages the agent could not read."""
    unread = [event for event in agent.undecryptable if event.room_id == room and event.sender == bot]
    parts = [f"{len(unread)} messages of the bot unreadable by the agent (sessions "
             f"{sorted({event.session_id[:8] for event in unread})}), "
             f"{agent.client.fetched_after_gaps} events fetched after sync gaps"]
    lines = (synapse.config.data_dir / "logs" / "bots.log").read_text(errors="replace").splitlines()
    with sqlite3.connect(synapse.config.data_dir / "bots" / "bots.db") as database:
        for token in sorted(missing)[:3]:
            event_id = sent[token]
            handled = database.execute("SELECT count(*) FROM maillage_handled_event WHERE event_id=?",
                                       (event_id,)).fetchone()[0]
            kept = database.execute("SELECT user_id, reason FROM maillage_pending_event WHERE event_id=?",
                                    (event_id,)).fetchall()
            about = [line[LOG_TIMESTAMP:200] for line in lines if event_id in line]
            parts.append(f"{token} {event_id}: handled by {handled} bots, kept {kept}, "
                         f"{len(about)} log lines, last: {about[-1:]}")
    return "; ".join(parts)


def filed_replies(agent: Agent, room: str, bot: str) -> list[str]:
    return [m.body for m in agent.received if m.room_id == room and m.sender == bot and "Rangé dans" in m.body]


async def test_sigkill_at_random_moments_loses_nothing_and_does_nothing_twice(
    synapse: ServerStack, webdav: str, bot_process: ServiceProcess, bots: str, agents: AgentFactory
) -> None:
    seed = int(os.environ.get("MAILLAGE_KILL_SEED", time.time()))
    rng = random.Random(seed)
    log.warning("kill test seed: %s (MAILLAGE_KILL_SEED=%s reproduces the same moments)", seed, seed)
    bot = documents_id(synapse)
    log_start = (synapse.config.data_dir / "logs" / "bots.log").stat().st_size
    rooms: list[tuple[Agent, str]] = [await bound_room(agents, synapse, f"crash/salle-{index}")
                                      for index in range(ROOMS)]

    sent: dict[str, str] = {}
    sending = asyncio.ensure_future(asyncio.gather(*(send_all(agent, room, index, random.Random(rng.random()), sent)
                                                     for index, (agent, room) in enumerate(rooms))))
    kills = await kill_at_random(bot_process, sending, rng)
    file_events: list[list[str]] = sending.result()
    assert kills >= MIN_KILLS + 1

    expected = {index: {command_token(index, n) for n in range(COMMANDS_PER_ROOM)} for index in range(ROOMS)}
    deadline = time.monotonic() + 600
    for index, (agent, room) in enumerate(rooms):
        while True:
            await agent.retry_undecryptable()  # as a client does when a late room key arrives
            answered = answers_per_token(agent, room, bot)
            missing = expected[index] - set(answered)
            files_done = len(filed_replies(agent, room, bot)) >= len(file_events[index])
            if not missing and files_done:
                break
            if time.monotonic() > deadline:
                raise MatrixTimeout(f"seed {seed}: room {index}: {len(missing)} commands unanswered, "
                                    f"{len(filed_replies(agent, room, bot))}/{len(file_events[index])} documents "
                                    f"confirmed; {unanswered_diagnosis(synapse, agent, room, bot, missing, sent)}")
            await asyncio.sleep(1)
    await asyncio.sleep(10)  # a late duplicate would show up now

    root = synapse.config.data_dir / "webdav" / "fichiers" / "crash"
    for index, (agent, room) in enumerate(rooms):
        answered = answers_per_token(agent, room, bot)
        twice = {token: count for token, count in answered.items() if count != 1}
        assert not twice, f"seed {seed}: answered more than once: {twice}"
        replies = filed_replies(agent, room, bot)
        assert len(replies) == len(file_events[index]), f"seed {seed}: {replies}"
        stored = sorted(path.name for path in (root / f"salle-{index}").iterdir())
        assert len(stored) == FILES_PER_ROOM, f"seed {seed}: {stored}"
        assert not [name for name in stored if "_v" in name], f"seed {seed}: a replay filed a version: {stored}"
    leftovers = [path for path in root.rglob("*") if path.name.endswith(".partiel")]
    assert not leftovers, f"seed {seed}: half-written uploads left: {leftovers}"
    with (synapse.config.data_dir / "logs" / "bots.log").open("rb") as bots_log:
        bots_log.seek(log_start)
        written = bots_log.read().decode(errors="replace")
    assert "failed on" not in written, f"seed {seed}: a command met an internal error (see the bots' log)"
