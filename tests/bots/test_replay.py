"""A crash in the worst place: after the server did what a command asked, before the bot heard
back or answered. A proxy in front of WebDAV swallows the answer to the MOVE, the bots are
killed with SIGKILL, then started again: the replayed command finds what it did and answers
once, instead of filing the document again as ``_v2`` or saying the document is gone."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from maillage.deploy.provisioning import ensure_admin_token
from maillage.deploy.services import webdav_service
from tests.bots.test_documents import bound_room, post_file
from tests.bots.test_runtime import documents_id
from tests.conftest import ServerStack, ServiceProcess, standalone_stack
from tests.harness.matrix import Agent, AgentFactory, Received
from tests.harness.proxy import HoldingProxy
from tests.harness.servers import free_port, running

Stack = tuple[ServerStack, ServiceProcess, HoldingProxy]


@pytest.fixture(scope="module")
def held_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    webdav_port = free_port()
    proxy = HoldingProxy(webdav_port)
    try:
        with standalone_stack(tmp_path_factory.mktemp("reprise"), reseau={"port_webdav": webdav_port},
                              webdav={"url": proxy.url + "/"}) as (stack, _, bots), \
                running(stack.config.data_dir, webdav_service(stack.config, stack.secrets)):
            bots.start()
            yield stack, bots, proxy
    finally:
        proxy.close()


@pytest.fixture
async def own_agents(held_stack: Stack, tmp_path: Path) -> AsyncIterator[AgentFactory]:
    stack = held_stack[0]
    factory = AgentFactory(stack.homeserver, stack.server_name, await ensure_admin_token(stack.config, stack.secrets),
                           tmp_path / "nio")
    yield factory
    await factory.close()


async def crash_after_the_move(bots: ServiceProcess, proxy: HoldingProxy) -> None:
    """Once WebDAV has done the MOVE whose answer the proxy holds: SIGKILL, then start again."""
    proxy.hold(b"MOVE ")
    try:
        assert await asyncio.to_thread(proxy.held.wait, 60), "the bot never moved anything"
        bots.kill()
    finally:
        proxy.release()
    bots.start()


def from_bot(stack: ServerStack, text: str) -> object:
    def match(message: Received) -> bool:
        return message.sender == documents_id(stack) and text in message.body
    return match


def bot_replies(agent: Agent, room: str, stack: ServerStack, since: int) -> list[str]:
    return [m.body for m in agent.received[since:] if m.room_id == room and m.sender == documents_id(stack)]


async def test_a_document_moved_before_the_crash_is_found_not_filed_again(
    held_stack: Stack, own_agents: AgentFactory
) -> None:
    stack, bots, proxy = held_stack
    owner, room = await bound_room(own_agents, stack, "reprise/depots")
    since = len(owner.received)
    crash = asyncio.create_task(crash_after_the_move(bots, proxy))
    await post_file(owner, room, b"%PDF-1.7 " + os.urandom(50_000), "Deliberation.pdf")
    await crash
    await owner.wait_for_text(room, from_bot(stack, "Rangé dans"), since=since, timeout=90)  # type: ignore[arg-type]
    await asyncio.sleep(5)
    folder = stack.config.data_dir / "webdav" / "fichiers" / "reprise" / "depots"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        [next(p.name for p in folder.iterdir() if p.name.endswith("_reprise_deliberation.pdf"))]
    assert not [p for p in folder.iterdir() if p.name.endswith(".partiel")]
    assert len([b for b in bot_replies(owner, room, stack, since) if "Rangé dans" in b]) == 1


async def test_a_rename_and_a_deletion_done_before_the_crash_are_answered_once(
    held_stack: Stack, own_agents: AgentFactory
) -> None:
    stack, bots, proxy = held_stack
    owner, room = await bound_room(own_agents, stack, "reprise/actes")
    since = len(owner.received)
    await post_file(owner, room, b"%PDF-1.7 arrete", "Arrete voirie.pdf")
    filed = await owner.wait_for_text(room, from_bot(stack, "Rangé dans"), since=since)  # type: ignore[arg-type]
    name = filed.body.split("« ", 1)[1].split(" »", 1)[0].rsplit("/", 1)[1]

    since = len(owner.received)
    crash = asyncio.create_task(crash_after_the_move(bots, proxy))
    await owner.send_text(room, f"!doc renomme {name} arrete-voirie-signe")
    await crash
    await owner.wait_for_text(room, from_bot(stack, "s’appelle désormais"), since=since, timeout=90)  # type: ignore[arg-type]

    crash = asyncio.create_task(crash_after_the_move(bots, proxy))
    await owner.send_text(room, "!doc supprime arrete-voirie-signe.pdf")
    await crash
    await owner.wait_for_text(room, from_bot(stack, "est dans la corbeille"), since=since, timeout=90)  # type: ignore[arg-type]
    await asyncio.sleep(5)
    replies = bot_replies(owner, room, stack, since)
    assert len(replies) == 2, replies  # one answer each, and no "no such document"
    folder = stack.config.data_dir / "webdav" / "fichiers" / "reprise" / "actes"
    assert [p.name for p in (folder / ".corbeille").iterdir()] == ["arrete-voirie-signe.pdf"]
    assert not [p for p in folder.iterdir() if not p.name.startswith(".")]
