"""What used to be dropped silently: each path now ends in an answer, or in words to the room.

A stack of its own (Synapse and the bots), whose bots reach their homeserver
through a proxy the tests can cut, with short limits: 100 messages read back per
room after an interruption, 20 s of waiting for a missing key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nio import RoomKeyRequest

from maillage.deploy.provisioning import ensure_admin_token
from tests.bots.test_outage import _health_until
from tests.bots.test_runtime import _bot_answer, _room_with_bot, documents_id
from tests.conftest import ServerStack, ServiceProcess, standalone_stack
from tests.harness.matrix import Agent, AgentFactory, Received
from tests.harness.proxy import CuttableProxy
from tests.harness.servers import free_port

CATCH_UP = 100
KEY_WAIT_S = 20

Stack = tuple[ServerStack, ServiceProcess, ServiceProcess, CuttableProxy]


@pytest.fixture(scope="module")
def cut_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    synapse_port = free_port()
    proxy = CuttableProxy(synapse_port)
    try:
        with standalone_stack(tmp_path_factory.mktemp("coupure"), reseau={"port_synapse": synapse_port},
                              bots={"url_serveur_matrix": proxy.url, "rattrapage_max": CATCH_UP,
                                    "attente_cles_secondes": KEY_WAIT_S}) as (stack, homeserver, bots):
            bots.start()
            yield stack, homeserver, bots, proxy
    finally:
        proxy.close()


@pytest.fixture
async def own_agents(cut_stack: Stack, tmp_path: Path) -> AsyncIterator[AgentFactory]:
    stack = cut_stack[0]
    factory = AgentFactory(stack.homeserver, stack.server_name, await ensure_admin_token(stack.config, stack.secrets),
                           tmp_path / "nio")
    yield factory
    await factory.close()


def answering(stack: ServerStack, word: str) -> object:
    def match(message: Received) -> bool:
        return message.sender == documents_id(stack) and f"« {word} »" in message.body
    return match


async def test_commands_sent_while_the_bots_cannot_reach_the_homeserver_are_answered_within_seconds_of_its_return(
    cut_stack: Stack, own_agents: AgentFactory
) -> None:
    """mautrix doubles its pause between syncs up to 320 s; after 45 s away it would wait ~30 s more."""
    stack, _, bots, proxy = cut_stack
    claire, room = await _room_with_bot(own_agents, stack, "Coupure réseau")
    assert "!doc lier" in await _bot_answer(claire, room, stack, "!aide")
    proxy.cut()
    try:
        assert (await _health_until(bots.url, "injoignable"))["pret"] is False
        await asyncio.sleep(45)
        for index in range(3):
            await claire.send_text(room, f"!doc pendant-{index}")
    finally:
        proxy.restore()
    for index in range(3):
        await claire.wait_for_text(room, answering(stack, f"pendant-{index}"), timeout=20)  # type: ignore[arg-type]


async def test_a_gap_longer_than_the_bots_read_back_is_told_in_the_room(
    cut_stack: Stack, own_agents: AgentFactory
) -> None:
    stack, _, bots, _ = cut_stack
    claire, room = await _room_with_bot(own_agents, stack, "Longue interruption")
    await _bot_answer(claire, room, stack, "!aide")
    bots.stop()
    total = CATCH_UP + 60
    commands = {5: "!doc trop-ancienne", total - 5: "!doc recente"}
    for index in range(total):
        await claire.send_text(room, commands.get(index, f"message n° {index}"))
    bots.start()
    await claire.wait_for_text(room, answering(stack, "recente"), timeout=120)  # type: ignore[arg-type]
    told = await claire.wait_for_text(
        room, lambda m: m.sender == documents_id(stack) and "n’ont pas été traités" in m.body, timeout=60)
    assert f"les {CATCH_UP} derniers" in told.body or "derniers" in told.body
    await asyncio.sleep(5)
    assert not [m for m in claire.received if m.room_id == room and "« trop-ancienne »" in m.body]


async def test_a_command_whose_key_comes_late_is_handled_and_one_whose_key_never_comes_is_told(
    cut_stack: Stack, own_agents: AgentFactory
) -> None:
    stack = cut_stack[0]
    bot = documents_id(stack)
    claire, room = await _room_with_bot(own_agents, stack, "Clés en retard")
    await _bot_answer(claire, room, stack, "!aide")  # Olm session and devices known both ways
    requests = _key_requests_seen_by(claire)

    late_session = await _send_without_key(claire, room, bot, "!doc dossier")
    # Later commands are not held up by the one waiting for its key.
    assert "!doc lier" in await _bot_answer(claire, room, stack, "!aide")
    await _until(lambda: late_session in requests, "the bot's key request")
    since = len(claire.received)
    await _forward_key(claire, room, bot, late_session)
    answer = await claire.wait_for_text(
        room, lambda m: m.sender == bot and "n’est lié à aucun dossier" in m.body, since=since, timeout=60)
    assert answer.encrypted

    since = len(claire.received)
    await _send_without_key(claire, room, bot, "!doc dossier")
    told = await claire.wait_for_text(room, lambda m: m.sender == bot and "pas pu lire votre message" in m.body,
                                      since=since, timeout=KEY_WAIT_S + 60)
    assert "Renvoyez-le" in told.body
    await asyncio.sleep(3)
    assert not [m for m in claire.received[since:] if m.sender == bot and "aucun dossier" in m.body]


def _key_requests_seen_by(agent: Agent) -> list[str]:
    """Session ids of the key requests ``agent``'s device receives (nio answers only its own
    user's requests, and hides the others from callbacks: they are noted on the way in)."""
    olm = agent.client.olm
    assert olm is not None
    seen: list[str] = []
    handle = olm._handle_key_requests

    def noting(event: object) -> object:
        if isinstance(event, RoomKeyRequest):
            seen.append(event.session_id)
        return handle(event)

    olm._handle_key_requests = noting
    return seen


async def _send_without_key(agent: Agent, room: str, bot: str, body: str) -> str:
    """Send ``body`` with a new room key that the bot's device does not get (its device blocked for
    this one message, as when a client never learnt of it); the session id."""
    client = agent.client
    assert client.olm is not None
    client.olm.outbound_group_sessions.pop(room, None)
    devices = list(client.device_store.active_user_devices(bot))
    assert devices, "the agent does not know the bot's device"
    for device in devices:
        client.blacklist_device(device)
    try:
        await agent.send_text(room, body)
        session_id = str(client.olm.outbound_group_sessions[room].id)
    finally:
        for device in devices:
            client.unblacklist_device(device)
        client.olm.outbound_group_sessions.pop(room, None)  # the next message: a new key, shared with the bot
    return session_id


async def _forward_key(agent: Agent, room: str, bot: str, session_id: str) -> None:
    """Answer the bot's key request by forwarding the room key, as the sender's own client could."""
    client = agent.client
    olm = client.olm
    assert olm is not None
    sender_key = olm.account.identity_keys["curve25519"]
    group_session = olm.inbound_group_store.get(room, sender_key, session_id)
    assert group_session is not None
    (device,) = list(client.device_store.active_user_devices(bot))
    olm_session = olm.session_store.get(device.curve25519)
    assert olm_session is not None, "no Olm session with the bot's device"
    message = olm._encrypt_forwarding_key(room, group_session, olm_session, device)
    await client.to_device(message)


async def _until(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come within {timeout} s")
        await asyncio.sleep(0.5)
