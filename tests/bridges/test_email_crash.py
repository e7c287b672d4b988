"""Nothing lost, nothing done twice: the bridge killed with SIGKILL at random moments while
an outside server keeps sending (and sends again what it got no 250 for, as MTAs do), and
while agents' replies go out through the relay."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import re
import smtplib
import time
import uuid
from typing import Any

import pytest

from tests.bridges.test_email_inbound import DOMAIN, JEAN, mail, room_with_mailbox, smtp_send
from tests.bridges.test_email_outbound import Relay, plain, relay  # noqa: F401 — the fixture
from tests.conftest import ServerStack, ServiceProcess
from tests.harness.matrix import AgentFactory

pytestmark = pytest.mark.usefixtures("in_french")
log = logging.getLogger(__name__)
MESSAGES = 30
MIN_KILLS = 3


def seeded() -> tuple[int, random.Random]:
    """The kill moments' random source, its seed in the log (MAILLAGE_KILL_SEED replays it)."""
    seed = int(os.environ.get("MAILLAGE_KILL_SEED", random.randrange(1_000_000)))
    log.warning("kill test seed: %s (MAILLAGE_KILL_SEED=%s reproduces the same moments)", seed, seed)
    return seed, random.Random(seed)


async def kill_until_done(bridge: ServiceProcess, work: asyncio.Future[Any], rng: random.Random) -> int:
    """SIGKILL the bridge at random moments until ``work`` is done (at least MIN_KILLS times),
    start it again each time; ready at the end. How many kills.

    Every other kill waits until the bridge serves again: on a loaded machine its start can
    outlast the longest random delay, and killing it only ever while it starts would stop
    the work for good (CI saw it: the sender gave up)."""
    kills = 0
    while kills < MIN_KILLS or not work.done():
        if kills % 2:
            await asyncio.to_thread(bridge.wait_ready)
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        await asyncio.to_thread(bridge.kill)
        kills += 1
        bridge.launch()  # from this thread: see ServiceProcess.launch
    await asyncio.to_thread(bridge.wait_ready)
    return kills


def send_until_accepted(synapse: ServerStack, index: int, to: str) -> int:
    """Like a sending MTA: a message without its 250 is sent again later; the attempts it took."""
    deadline = time.monotonic() + 300
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        try:
            smtp_send(synapse, mail(f"Demande numéro {index:03d}", f"Corps du message {index:03d}.", to=to),
                      "jean.dupont@exemple.fr", [to])
            return attempt
        except (OSError, smtplib.SMTPException):
            time.sleep(0.3)
    raise AssertionError(f"message {index} never accepted")


async def test_sigkill_of_the_bridge_at_random_moments_loses_no_email_and_shows_none_twice(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory) -> None:
    seed, rng = seeded()
    address = f"accueil-{uuid.uuid4().hex[:6]}"
    owner, room = await room_with_mailbox(agents, synapse, "Accueil", address)
    to = f"{address}@{DOMAIN}"

    async def send_all() -> list[int]:
        attempts = []
        for index in range(MESSAGES):
            attempts.append(await asyncio.to_thread(send_until_accepted, synapse, index, to))
            await asyncio.sleep(rng.uniform(0, 0.2))
        return attempts

    sending = asyncio.ensure_future(send_all())
    kills = await kill_until_done(bridge, sending, rng)
    attempts = await sending

    def shown() -> collections.Counter[str]:
        return collections.Counter(number for m in owner.received if m.room_id == room and m.sender == JEAN
                                   for number in re.findall(r"Corps du message (\d{3})", m.body))

    deadline = time.monotonic() + 180
    while len(shown()) < MESSAGES and time.monotonic() < deadline:
        await asyncio.sleep(1)
    await asyncio.sleep(5)  # a duplicate would come now
    counts = shown()
    assert sorted(counts) == [f"{i:03d}" for i in range(MESSAGES)], (seed, kills, counts)
    assert set(counts.values()) == {1}, (seed, kills, counts)
    log.warning("kills: %d, messages sent again by the outside server: %d", kills, sum(a - 1 for a in attempts))


REPLIES = 15


async def test_sigkill_while_replies_go_out_sends_each_one_under_a_single_message_id(
        synapse: ServerStack, bridge: ServiceProcess, agents: AgentFactory, relay: Relay) -> None:  # noqa: F811
    """Every reply an agent writes reaches the relay; a reply sent again because the bridge died
    between the relay's answer and its record carries the same Message-ID (mail clients show
    it once), and none is lost."""
    seed, rng = seeded()
    address = f"reponses-{uuid.uuid4().hex[:6]}"
    owner, room = await room_with_mailbox(agents, synapse, "Réponses", address)
    to = f"{address}@{DOMAIN}"
    await asyncio.to_thread(smtp_send, synapse, mail("Question", "Une question.", to=to), "jean.dupont@exemple.fr",
                            [to])
    question = await owner.wait_for_text(room, lambda m: m.sender == JEAN, timeout=60)

    async def answer_all() -> None:
        for index in range(REPLIES):
            await owner.send_text(room, f"Réponse numéro {index:02d}.", in_thread=question.event_id)
            await asyncio.sleep(rng.uniform(0, 0.6))

    answering = asyncio.ensure_future(answer_all())
    kills = await kill_until_done(bridge, answering, rng)
    await answering

    def ids_per_reply() -> dict[str, set[str]]:
        found: dict[str, set[str]] = collections.defaultdict(set)
        for *_, message in relay.received:
            for number in re.findall(r"Réponse numéro (\d{2})\.", plain(message)):
                found[number].add(str(message["Message-ID"]))
        return found

    deadline = time.monotonic() + 180
    while len(ids_per_reply()) < REPLIES and time.monotonic() < deadline:
        await asyncio.sleep(1)
    await asyncio.sleep(5)  # a reply sent again would come now
    found = ids_per_reply()
    assert sorted(found) == [f"{i:02d}" for i in range(REPLIES)], (seed, kills, sorted(found))
    assert all(len(ids) == 1 for ids in found.values()), (seed, kills, found)
    sent_again = sum(1 for *_, m in relay.received if "Réponse numéro" in plain(m)) - REPLIES
    log.warning("kills: %d, replies the relay received twice (same Message-ID): %d", kills, sent_again)
