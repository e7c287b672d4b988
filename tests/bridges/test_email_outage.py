"""Matrix away while mail arrives, and Synapse restarted between the moment a message reached
the room and the moment the bridge wrote that down: every email is accepted, shown, and
shown once.

A stack of its own (Synapse and the bridge), so that stopping its Synapse disturbs no
other test.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from maillage.deploy.provisioning import ensure_admin_token
from maillage.deploy.services import email_service
from tests.bridges.test_email_inbound import DOMAIN, JEAN, mail, room_with_mailbox, smtp_send
from tests.conftest import ServerStack, ServiceProcess, standalone_stack
from tests.harness.matrix import Agent, AgentFactory

pytestmark = pytest.mark.usefixtures("in_french")
Stack = tuple[ServerStack, ServiceProcess, ServiceProcess]


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    with standalone_stack(tmp_path / "pile") as (stack, homeserver, _):
        bridge = ServiceProcess(stack.config, email_service)
        bridge.start()
        try:
            yield stack, homeserver, bridge
        finally:
            bridge.stop()


@pytest.fixture
async def own_agents(own_stack: Stack, tmp_path: Path) -> AsyncIterator[AgentFactory]:
    stack = own_stack[0]
    factory = AgentFactory(stack.homeserver, stack.server_name, await ensure_admin_token(stack.config, stack.secrets),
                           tmp_path / "nio")
    yield factory
    await factory.close()


def database(stack: ServerStack) -> sqlite3.Connection:
    return sqlite3.connect(stack.config.data_dir / "courriel" / "courriel.db", timeout=10)


def stored(stack: ServerStack) -> tuple[str, str, str]:
    """The one message the bridge holds: its id, state and raw content (base64)."""
    with database(stack) as db:
        rows = db.execute("SELECT id, etat, brut FROM courriel_entrant").fetchall()
    assert len(rows) == 1, rows
    return str(rows[0][0]), str(rows[0][1]), str(rows[0][2])


async def events_from(agent: Agent, room: str, sender: str) -> list[str]:
    """The room's messages from ``sender`` as the server has them (decryptable or not)."""
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(f"{agent.client.homeserver}/_matrix/client/v3/rooms/{room}/messages",
                                params={"dir": "b", "limit": "200"},
                                headers={"Authorization": f"Bearer {agent.client.access_token}"})
    answer.raise_for_status()
    return [e["event_id"] for e in answer.json()["chunk"]
            if e["sender"] == sender and e["type"] in ("m.room.message", "m.room.encrypted")]


async def test_mail_received_while_matrix_is_away_is_shown_once_even_if_synapse_restarts_before_it_is_recorded(
        own_stack: Stack, own_agents: AgentFactory) -> None:
    stack, homeserver, bridge = own_stack
    owner, room = await room_with_mailbox(own_agents, stack, "Accueil", "accueil")
    to = f"accueil@{DOMAIN}"

    homeserver.kill()
    # The homeserver is away: the mail is still accepted (250), kept in the bridge's database.
    await asyncio.to_thread(smtp_send, stack, mail("Pendant la panne", "Reçu pendant la panne.", to=to),
                            "jean.dupont@exemple.fr", [to])
    received_id, state, raw = stored(stack)
    assert state == "a_livrer"
    homeserver.start()
    shown = await owner.wait_for_text(room, lambda m: m.sender == JEAN, timeout=120)
    assert "Reçu pendant la panne." in shown.body
    assert await events_from(owner, room, JEAN) == [shown.event_id]

    # The bridge dies after Synapse took the message and before it wrote that down (its record
    # undone below, as the transaction that makes it never committed), and Synapse restarts
    # too, its memory of recent transactions gone with it.
    bridge.kill()
    with database(stack) as db:
        db.execute("UPDATE courriel_entrant SET etat='a_livrer', brut=?, essais=0, prochain_ms=0 WHERE id=?",
                   (raw, received_id))
        db.execute("DELETE FROM courriel_message WHERE room_id=?", (room,))
    homeserver.kill()
    homeserver.start()
    bridge.start()
    deadline = time.monotonic() + 90
    while stored(stack)[1] != "livre" and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert stored(stack)[1] == "livre"  # delivered again, as far as the bridge knows…
    assert await events_from(owner, room, JEAN) == [shown.event_id]  # …and Synapse gave back the first event
