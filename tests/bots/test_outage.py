"""The homeserver goes away and comes back: the bots say so on /sante, then carry on.

A stack of its own (Synapse and the bots), so that stopping its Synapse disturbs
no other test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.bots.test_runtime import _bot_answer, _room_with_bot, documents_id
from tests.conftest import ServerStack, ServiceProcess, agents_of_stack, standalone_stack
from tests.harness.matrix import AgentFactory


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[ServerStack, ServiceProcess, ServiceProcess]]:
    with standalone_stack(tmp_path / "pile") as (stack, homeserver, bots):
        bots.start()
        yield stack, homeserver, bots


@pytest.fixture
async def own_agents(own_stack: tuple[ServerStack, ServiceProcess, ServiceProcess],
                     tmp_path: Path) -> AsyncIterator[AgentFactory]:
    async with agents_of_stack(own_stack[0], tmp_path / "nio") as factory:
        yield factory


async def _health_until(url: str, expected: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            report = (await http.get(f"{url}/sante")).json()
            if report["serveur_matrix"] == expected or time.monotonic() > deadline:
                return dict(report)
            await asyncio.sleep(0.5)


async def test_a_homeserver_killed_is_reported_and_the_bots_answer_once_it_is_back(
    own_stack: tuple[ServerStack, ServiceProcess, ServiceProcess], own_agents: AgentFactory
) -> None:
    stack, homeserver, bots = own_stack
    claire, room = await _room_with_bot(own_agents, stack, "Avant la panne")
    assert "!doc lier" in await _bot_answer(claire, room, stack, "!aide")

    homeserver.kill()  # SIGKILL: no clean shutdown of its database or connections
    try:
        during = await _health_until(bots.url, "injoignable")
        assert during == {"pret": False, "serveur_matrix": "injoignable"}
        assert bots.process is not None and bots.process.process.poll() is None  # still running
    finally:
        homeserver.start()

    assert await _health_until(bots.url, "joignable", timeout=120) == {"pret": True, "serveur_matrix": "joignable"}
    since = len(claire.received)
    await claire.send_text(room, "!doc dossier")
    answer = await claire.wait_for_text(room, lambda m: m.sender == documents_id(stack), since=since, timeout=60)
    assert "n’est lié à aucun dossier" in answer.body
