"""``[bots] reception = "appservice"``: Synapse pushes the bots their rooms' events.

A stack of its own (Synapse loads the bots' appservice registration at start). The bots
answer in encrypted rooms with no sync of their rooms; a transaction not from Synapse is
refused; killed with SIGKILL at random moments while agents send commands, the bots answer
each command exactly once (a transaction is stored before it is acknowledged, Synapse sends
again what was not, and a ping at start makes it do so at once); a command pushed while the
bots' database refuses it is answered as soon as the database takes it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.bots.test_crash import answers_per_token, kill_at_random
from tests.bots.test_runtime import _bot_answer, _room_with_bot, documents_id
from tests.conftest import ServerStack, ServiceProcess, agents_of_stack, standalone_stack
from tests.harness.matrix import Agent, AgentFactory, MatrixTimeout

log = logging.getLogger(__name__)

COMMANDS_PER_ROOM = 60
KILLS = 8
TOKEN = re.compile(r"« (p\d-\d+) »")


@pytest.fixture
def pushed_stack(tmp_path: Path) -> Iterator[tuple[ServerStack, ServiceProcess, ServiceProcess]]:
    with standalone_stack(tmp_path / "pile", bots={"reception": "appservice"}) as (stack, homeserver, bots):
        bots.start()
        yield stack, homeserver, bots


@pytest.fixture
async def pushed_agents(pushed_stack: tuple[ServerStack, ServiceProcess, ServiceProcess],
                        tmp_path: Path) -> AsyncIterator[AgentFactory]:
    async with agents_of_stack(pushed_stack[0], tmp_path / "nio") as factory:
        yield factory


def test_the_registration_names_every_bot_and_no_one_else() -> None:
    from maillage.bots.main import BOTS
    from maillage.homeserver.render import BOT_LOCALPARTS

    assert sorted(BOT_LOCALPARTS) == sorted(bot.localpart for bot in BOTS)


def pushed_transactions(bots_url: str) -> float:
    exposition = httpx.get(f"{bots_url}/metrics", timeout=10).text
    found = re.search(r"^maillage_bot_pushed_transactions_total (\S+)$", exposition, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_the_bots_answer_what_synapse_pushes_them_and_refuse_anyone_else(
    pushed_stack: tuple[ServerStack, ServiceProcess, ServiceProcess], pushed_agents: AgentFactory
) -> None:
    stack, _, bots = pushed_stack
    registration = stack.config.data_dir / "synapse" / "robots-registration.yaml"
    assert stat.S_IMODE(registration.stat().st_mode) == 0o600  # it holds both tokens
    assert yaml.safe_load(registration.read_text())["url"] == f"http://127.0.0.1:{stack.config.bots.port_sante}"

    before = pushed_transactions(bots.url)
    claire, room = await _room_with_bot(pushed_agents, stack, "Poussé par Synapse")
    assert "!doc lier <dossier>" in await _bot_answer(claire, room, stack, "!aide")  # an encrypted room
    assert pushed_transactions(bots.url) > before  # the command came pushed, not synced

    # Someone other than Synapse pushing a transaction (no token, a wrong one) is refused.
    fake = {"events": [{"type": "m.room.message", "room_id": room, "sender": claire.user_id,
                        "event_id": "$faux", "origin_server_ts": 0, "content": {"msgtype": "m.text", "body": "!aide"}}]}
    async with httpx.AsyncClient(base_url=bots.url) as http:
        for headers in ({}, {"Authorization": "Bearer pas-le-bon-jeton"}):
            refused = await http.put("/_matrix/app/v1/transactions/faux-1", json=fake, headers=headers)
            assert refused.status_code == 403, refused.text
            assert (await http.post("/_matrix/app/v1/ping", json={}, headers=headers)).status_code == 403
            assert (await http.get(f"/_matrix/app/v1/users/{claire.user_id}", headers=headers)).status_code == 403
        garbled = await http.put("/_matrix/app/v1/transactions/faux-2", content=b"{pas du json",
                                 headers={"Authorization": f"Bearer {stack.secrets.bots_hs_token}"})
        assert garbled.status_code == 400
    await asyncio.sleep(3)
    answers = [m for m in claire.received if m.room_id == room and m.sender == documents_id(stack)]
    assert len(answers) == 1, [m.body for m in answers]  # nothing answered the forged « !aide »


async def send_commands(agent: Agent, room: str, room_index: int) -> None:
    for number in range(COMMANDS_PER_ROOM):
        await agent.send_text(room, f"!doc p{room_index}-{number:03d}")  # an unknown subcommand, quoted back


async def test_sigkill_at_random_moments_with_pushed_events_loses_no_command_and_answers_none_twice(
    pushed_stack: tuple[ServerStack, ServiceProcess, ServiceProcess], pushed_agents: AgentFactory
) -> None:
    stack, _, bots = pushed_stack
    seed = int(os.environ.get("MAILLAGE_KILL_SEED", time.time()))
    rng = random.Random(seed)
    log.warning("kill test seed: %s (MAILLAGE_KILL_SEED=%s reproduces the same moments)", seed, seed)
    bot = documents_id(stack)
    rooms = [await _room_with_bot(pushed_agents, stack, f"Poussé {index}") for index in range(2)]
    for agent, room in rooms:
        await _bot_answer(agent, room, stack, "!aide")  # keys shared before the storm

    sending = asyncio.ensure_future(asyncio.gather(*(send_commands(agent, room, index)
                                                     for index, (agent, room) in enumerate(rooms))))
    assert await kill_at_random(bots, sending, rng, min_kills=KILLS) > KILLS

    deadline = time.monotonic() + 300
    for index, (agent, room) in enumerate(rooms):
        expected = {f"p{index}-{number:03d}" for number in range(COMMANDS_PER_ROOM)}
        while missing := expected - set(answers_per_token(agent, room, bot, TOKEN)):
            if time.monotonic() > deadline:
                raise MatrixTimeout(f"seed {seed}: room {index}: {len(missing)} commands unanswered, "
                                    f"e.g. {sorted(missing)[:5]}")
            await asyncio.sleep(1)
    await asyncio.sleep(8)  # a late duplicate would show up now
    for index, (agent, room) in enumerate(rooms):
        twice = {token: count for token, count in answers_per_token(agent, room, bot, TOKEN).items() if count != 1}
        assert not twice, f"seed {seed}: room {index}: answered more than once: {twice}"


REFUSED_SECONDS = 35  # Synapse's retries after a refused transaction: 2, 4, 8, 16 s, then 32 s later


async def test_a_command_refused_by_the_bots_database_is_answered_once_it_takes_it_again(
    pushed_stack: tuple[ServerStack, ServiceProcess, ServiceProcess], pushed_agents: AgentFactory
) -> None:
    stack, _, _ = pushed_stack
    claire, room = await _room_with_bot(pushed_agents, stack, "Base indisponible")
    await _bot_answer(claire, room, stack, "!aide")  # keys shared before
    database = stack.config.data_dir / "bots" / "bots.db"
    with sqlite3.connect(database) as connection:  # the inbox refuses every write, as a full disk would
        connection.execute("CREATE TRIGGER refuser BEFORE INSERT ON maillage_appservice_inbox"
                           " BEGIN SELECT RAISE(ABORT, 'disque plein'); END")
    await claire.send_text(room, "!doc pendant-la-panne")
    await asyncio.sleep(REFUSED_SECONDS)
    bot = documents_id(stack)
    assert not [m for m in claire.received if m.room_id == room and m.sender == bot and "pendant-la-panne" in m.body]
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TRIGGER refuser")
    # Synapse would send it again 32 s after its last try; the bots ask it to at once.
    answer = await claire.wait_for_text(room, lambda m: m.sender == bot and "pendant-la-panne" in m.body, timeout=25)
    assert "« pendant-la-panne »" in answer.body  # the unknown subcommand, quoted back: it was read
