"""Agents in the tests are matrix-nio clients: an implementation independent of the
bots' mautrix, so every end-to-end test crosses two Matrix codebases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinError,
    LocalProtocolError,
    LoginError,
    MatrixRoom,
    MegolmEvent,
    RoomCreateError,
    RoomEncryptedFile,
    RoomEncryptedImage,
    RoomMessageFile,
    RoomMessageImage,
    RoomMessageNotice,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendError,
    SyncResponse,
)

from maillage.synapse_admin import SynapseAdmin

log = logging.getLogger(__name__)


class MatrixTimeout(AssertionError):
    """An awaited event did not arrive: the test fails loudly, saying what it did see."""


@dataclass
class Received:
    room_id: str
    sender: str
    body: str
    encrypted: bool
    event_id: str
    server_timestamp: int
    arrived: float  # time.perf_counter() when this client saw it
    reply_to: str | None = None  # the event it answers (m.in_reply_to), if any
    thread_root: str | None = None  # the thread it belongs to (m.thread), if any
    formatted: str = ""  # its HTML body, if any


def reply_target(content: dict[str, Any]) -> str | None:
    """The event a message answers (``m.in_reply_to``), if any."""
    return ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")


def _thread_of(content: dict[str, Any]) -> str | None:
    relation = content.get("m.relates_to") or {}
    return str(relation["event_id"]) if relation.get("rel_type") == "m.thread" else None


class GaplessClient(AsyncClient):  # type: ignore[misc]  # nio is untyped
    """nio's client, whose syncs never skip a message. A sync gives a room's last 10 events and
    says ``limited`` when more came since the previous one (a busy room, a slow machine): as
    Element does, the events in between are fetched back to that sync, and put in front of the
    sync's own before nio handles it, so every message is seen, in order."""

    fetched_after_gaps = 0  # events a sync left out, fetched

    async def receive_response(self, response: Any) -> None:
        if isinstance(response, SyncResponse) and self.next_batch:
            for room_id, joined in response.rooms.join.items():
                if joined.timeline.limited and joined.timeline.prev_batch:
                    joined.timeline.events[:0] = await self._gap(room_id, joined.timeline.prev_batch,
                                                                 self.next_batch, joined.timeline.events)
        await super().receive_response(response)

    async def _gap(self, room_id: str, token: str | None, since: str, after: list[Any]) -> list[Any]:
        missing: list[Any] = []
        while token:
            page = await self.room_messages(room_id, start=token, end=since, limit=100)
            if not isinstance(page, RoomMessagesResponse):  # the sync is fetched again (Agent._sync)
                raise LocalProtocolError(f"{self.user_id}: a gap in {room_id} not fetched: {page}")
            if not page.chunk:
                break
            missing.extend(page.chunk)  # newest first
            token = page.end
        seen = {event.event_id for event in after}
        earlier = [event for event in reversed(missing) if event.event_id not in seen]
        self.fetched_after_gaps += len(earlier)
        log.info("%s: %d events fetched after a gap in %s", self.user_id, len(earlier), room_id)
        return earlier


@dataclass
class Agent:
    client: GaplessClient
    password: str
    received: list[Received] = field(default_factory=list)
    _new_message: asyncio.Event = field(default_factory=asyncio.Event)
    _sync_task: asyncio.Task[Any] | None = None
    undecryptable: list[MegolmEvent] = field(default_factory=list)
    files: list[Any] = field(default_factory=list)  # m.file events (nio RoomEncryptedFile / RoomMessageFile)

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    def start_syncing(self) -> None:
        self.client.add_event_callback(self._on_text, (RoomMessageText, RoomMessageNotice))
        self.client.add_event_callback(self._on_undecryptable, MegolmEvent)
        self.client.add_event_callback(self._on_file, (RoomEncryptedFile, RoomMessageFile, RoomEncryptedImage,
                                                       RoomMessageImage))
        self._sync_task = asyncio.create_task(self._sync())

    async def pause_syncing(self) -> None:
        """Stop syncing for a while, as a client left in the background (resume_syncing)."""
        if self._sync_task:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task

    def resume_syncing(self) -> None:
        self._sync_task = asyncio.create_task(self._sync())

    async def _sync(self) -> None:
        while True:
            try:
                await self.client.sync_forever(timeout=30_000, full_state=True)
            except LocalProtocolError:  # its keys query raced with send_text's, or a gap was not
                await asyncio.sleep(0.5)  # fetched: nio gives up, we sync again from the same point

    async def _on_text(self, room: MatrixRoom, event: RoomMessageText | RoomMessageNotice) -> None:
        self.received.append(Received(
            room_id=room.room_id, sender=event.sender, body=event.body,
            encrypted=bool(event.decrypted), event_id=event.event_id,
            server_timestamp=event.server_timestamp, arrived=time.perf_counter(),
            reply_to=reply_target(event.source.get("content", {})),
            thread_root=_thread_of(event.source.get("content", {})),
            formatted=str(getattr(event, "formatted_body", "") or ""),
        ))
        self._new_message.set()

    async def _on_file(self, room: MatrixRoom, event: Any) -> None:
        self.files.append((room.room_id, event))
        self._new_message.set()

    async def download_file(self, event: Any) -> bytes:
        """The plaintext of an m.file or m.image event, decrypted when it was encrypted."""
        from nio.crypto.attachments import decrypt_attachment

        response = await self.client.download(event.url)
        data = bytes(response.body)
        if isinstance(event, RoomEncryptedFile | RoomEncryptedImage):
            return bytes(decrypt_attachment(data, event.key["k"], event.hashes["sha256"], event.iv))
        return data

    async def wait_for_file(self, room_id: str, sender: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for room, event in self.files:
                if room == room_id and event.sender == sender:
                    return event
            self._new_message.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_message.wait(), 1.0)
        raise MatrixTimeout(f"no file from {sender} in {room_id} within {timeout} s")

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        self.undecryptable.append(event)

    async def synced(self, timeout: float = 30) -> None:
        """Wait for the next completed sync (after start_syncing)."""
        await asyncio.wait_for(self.client.synced.wait(), timeout)

    async def wait_for_text(
        self, room_id: str, predicate: Callable[[Received], bool] | str, *, timeout: float = 30,
        since: int = 0,
    ) -> Received:
        """The first message in ``room_id`` (from index ``since``) matching ``predicate``."""
        match = predicate if callable(predicate) else (lambda m, body=predicate: m.body == body)
        deadline = time.monotonic() + timeout
        checked = since
        while True:
            for message in self.received[checked:]:
                if message.room_id == room_id and match(message):
                    return message
            checked = len(self.received)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [m.body for m in self.received if m.room_id == room_id][-5:]
                raise MatrixTimeout(
                    f"{self.user_id} did not receive the expected message in {room_id} within "
                    f"{timeout} s; last seen there: {seen}; undecryptable: {len(self.undecryptable)}"
                )
            self._new_message.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_message.wait(), min(remaining, 1.0))
            await self.retry_undecryptable()

    async def retry_undecryptable(self) -> None:
        """As clients do when a late room key arrives: decrypt what could not be read."""
        for event in list(self.undecryptable):
            try:
                decrypted = self.client.decrypt_event(event)
            except Exception:  # nio raises EncryptionError and others while the key is missing
                continue
            self.undecryptable.remove(event)
            room = self.client.rooms.get(event.room_id)
            if room is not None and isinstance(decrypted, RoomMessageText | RoomMessageNotice):
                await self._on_text(room, decrypted)

    async def send_text(self, room_id: str, body: str, *, in_thread: str | None = None) -> str:
        """Send a message, in the thread of event ``in_thread`` if given (as Element does)."""
        # Know every member's devices first, or a new member gets no key to read this message.
        if self.client.should_query_keys:
            with contextlib.suppress(LocalProtocolError):  # the sync loop asked at the same moment
                await self.client.keys_query()
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if in_thread:
            content["m.relates_to"] = {"rel_type": "m.thread", "event_id": in_thread, "is_falling_back": True,
                                       "m.in_reply_to": {"event_id": in_thread}}
        response = await self.client.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)
        if isinstance(response, RoomSendError):
            raise AssertionError(f"{self.user_id} could not send to {room_id}: {response.message}")
        return str(response.event_id)

    async def join_invitation(self, timeout: float = 90) -> str:
        """The room this agent was invited to (a bot's direct room), joined as an agent accepts it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for room_id in list(self.client.invited_rooms):
                await self.client.join(room_id)
                return str(room_id)
            await asyncio.sleep(0.5)
        raise MatrixTimeout(f"{self.user_id} was never invited to a room within {timeout} s")

    async def wait_for_members_including(self, room_id: str, user_id: str, timeout: float = 30) -> None:
        """Until this agent sees ``user_id`` joined in ``room_id`` (a bot accepting an invite)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            room = self.client.rooms.get(room_id)
            if room is not None and user_id in room.users:
                return
            await asyncio.sleep(0.1)
        raise MatrixTimeout(f"{user_id} did not join {room_id} within {timeout} s")

    async def close(self) -> None:
        if self._sync_task:
            self.client.stop_sync_forever()
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
        await self.client.close()


async def login_agent(homeserver: str, user_id: str, password: str, store: Path, *,
                      local_address: str | None = None) -> Agent:
    """Log in with a password and an E2EE store; starts syncing. ``local_address``: the
    loopback address its requests leave from (Synapse limits logins per address)."""
    store.mkdir(parents=True, exist_ok=True)
    client = GaplessClient(
        homeserver, user_id, store_path=str(store),
        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
    )
    if local_address:
        client.client_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=client.config.request_timeout),
            connector=aiohttp.TCPConnector(local_addr=(local_address, 0)))
    response = await client.login(password, device_name="tests maillage")
    if isinstance(response, LoginError):
        await client.close()
        raise AssertionError(f"login of {user_id} refused: {response.message}")
    agent = Agent(client=client, password=password)
    agent.start_syncing()
    await agent.synced()
    return agent


async def restore_agent(homeserver: str, previous: Agent, store: Path) -> Agent:
    """The same device again (same token, same E2EE store), as a client reopened later."""
    old = previous.client
    client = GaplessClient(
        homeserver, old.user_id, device_id=old.device_id, store_path=str(store),
        config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
    )
    client.restore_login(old.user_id, old.device_id, old.access_token)
    agent = Agent(client=client, password=previous.password)
    agent.start_syncing()
    await agent.synced()
    return agent


class AgentFactory:
    """Creates accounts through the Admin API and returns logged-in nio agents."""

    def __init__(self, homeserver: str, server_name: str, admin_token: str, stores: Path) -> None:
        self.homeserver = homeserver
        self.server_name = server_name
        self.admin_token = admin_token
        self.stores = stores
        self.agents: list[Agent] = []

    async def __call__(self, name: str = "agent", *, displayname: str | None = None) -> Agent:
        localpart = f"{name}-{secrets.token_hex(3)}"
        user_id = f"@{localpart}:{self.server_name}"
        password = f"Mot-de-passe-{secrets.token_hex(6)}-A1"
        async with SynapseAdmin(self.homeserver, self.admin_token) as admin:
            await admin.put_user(user_id, password=password, displayname=displayname or name)
            await admin.override_ratelimit(user_id)
        agent = await login_agent(self.homeserver, user_id, password, self.stores / localpart)
        self.agents.append(agent)
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            await agent.close()


async def create_encrypted_room(owner: Agent, *members: Agent, name: str = "Salon de test",
                                access: str | None = None) -> str:
    """A private room (encrypted by the homeserver's default) that every member has joined;
    ``access`` sets Maillage's access kind (interne, partenaires, public) at creation."""
    initial_state = [access_state(access)] if access else []
    response = await owner.client.room_create(
        name=name, invite=[m.user_id for m in members], preset=_private_chat(), initial_state=initial_state,
    )
    if isinstance(response, RoomCreateError):
        raise AssertionError(f"room creation refused: {response.message}")
    room_id = str(response.room_id)
    for member in members:
        joined = await member.client.join(room_id)
        if isinstance(joined, JoinError):
            raise AssertionError(f"{member.user_id} could not join: {joined.message}")
    await wait_for_members(room_id, owner, *members)
    return room_id


def access_state(kind: str) -> dict[str, Any]:
    return {"type": "fr.maillage.acces", "state_key": "", "content": {"acces": kind}}


def _private_chat() -> Any:
    from nio.api import RoomPreset

    return RoomPreset.private_chat


async def wait_for_members(room_id: str, *agents: Agent, timeout: float = 30) -> None:
    """Until every agent sees every other one joined (needed to encrypt for them)."""
    expected = {agent.user_id for agent in agents}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(
            room_id in a.client.rooms and expected <= set(a.client.rooms[room_id].users)
            for a in agents
        ):
            return
        await asyncio.sleep(0.1)
    raise MatrixTimeout(f"members {sorted(expected)} not all seen in {room_id} within {timeout} s")


async def bot_reply(agent: Agent, room: str, bot_id: str, command: str, timeout: float = 60) -> str:
    """The bot's answer to this very command (a reply to it), not to another member's command
    that this agent's client happens to see meanwhile."""
    since = len(agent.received)
    sent = await agent.send_text(room, command)
    return (await agent.wait_for_text(room, lambda m: m.sender == bot_id and m.reply_to == sent,
                                      since=since, timeout=timeout)).body
