"""The bot runtime: one process hosting every service bot, each its own Matrix account.

Each bot is created through the Admin API as a bot account with rate limits
lifted, logs in once (device and token kept in the bots' database), reads and
writes end-to-end encrypted rooms through mautrix's OlmMachine, and cross-signs
its own device at first start (recovery key kept 0600) so that clients which
only encrypt to verified devices still reach it.

Nothing lost, nothing done twice, even under ``kill -9``:

- events are handled one at a time, in timeline order; an event is marked
  handled once its handler is done, and the sync position is stored once every
  event of the sync is (``bots/runtime/sync.py``): a crash at any moment replays what
  was not finished, and skips what was;
- every message a bot sends about an event carries a transaction id derived
  from that event (``key`` says which of its messages it is), so a replayed
  reply is de-duplicated by the homeserver and seen once;
- a handler whose earlier attempt may have begun (``is_replay``) finds what
  that attempt did instead of doing it again (a document already filed…);
- an outage (database, homeserver) stops handling without answering: the same
  sync is read again when it is back; a server a handler needs being away
  (``RetryLater``) keeps the event for later and tells the sender once;
- a message whose key has not arrived is kept, its key asked of the sender's
  device, handled when the key comes, and its sender told if it never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast
from zoneinfo import ZoneInfo

import aiohttp
import httpx
from mautrix.client import Client, InternalEventType
from mautrix.client.encryption_manager import DecryptionDispatcher
from mautrix.client.state_store.asyncpg import PgStateStore
from mautrix.crypto import OlmMachine, PgCryptoStateStore, PgCryptoStore
from mautrix.errors import (
    DecryptionError,
    MatrixConnectionError,
    MatrixRequestError,
    MForbidden,
    MUnknownToken,
    SessionNotFound,
)
from mautrix.types import (
    DeviceID,
    EncryptedEvent,
    EncryptedMegolmEventContent,
    EventID,
    EventType,
    Format,
    Membership,
    MemberStateEventContent,
    MessageEvent,
    MessageType,
    PowerLevelStateEventContent,
    ReactionEvent,
    RoomID,
    StateEvent,
    TextMessageEventContent,
    ToDeviceEvent,
    UserID,
)
from mautrix.util.async_db import Database, UpgradeTable

from maillage.bots.runtime.appservice import DEVICE_ONLY_FILTER, DEVICE_POLL_SECONDS, PushedEvents
from maillage.bots.runtime.binding import Binding, RoomBindings
from maillage.bots.runtime.commands import CommandError, CommandSet, command_text, help_message, reply_content
from maillage.bots.runtime.crypto import AtomicOlmMachine, RevertibleCryptoStore
from maillage.bots.runtime.direct import DirectRooms
from maillage.bots.runtime.media import Attachment, CorruptAttachment, EncryptingStream, HomeserverMedia
from maillage.bots.runtime.metrics import Metrics
from maillage.bots.runtime.store import (
    BotStore,
    Credentials,
    HandledSyncStore,
    PendingEvent,
    confine_connections,
    lost_connection,
    upgrade_table,
)
from maillage.bots.runtime.sync import BOT_FILTER, GaplessClient
from maillage.config import Config
from maillage.i18n import t
from maillage.secretstore import Secrets, check_private, write_private
from maillage.synapse_admin import SynapseAdmin

log = logging.getLogger("maillage.bots")

HELP_WORDS = ("aide", "help")
SEND_RETRIES = 5
NAME_TTL = 300.0  # seconds a room's name is kept
KEY_WAIT = 5.0  # seconds a message waits in line for a key that is a moment behind it
PENDING_POLL = 2.0  # seconds between two looks at the events kept for later
MAX_ATTEMPTS = 10  # an event that fails this often with the servers up is not an outage: answered


class RetryLater(Exception):
    """Raised by a handler when a server it needs is away: the event is kept and handled again
    later, with back-off; ``notice`` tells the sender once (already translated)."""

    def __init__(self, notice: str) -> None:
        super().__init__(notice)
        self.notice = notice


class _MissingKey:
    """The decryption key of a message has not arrived (yet)."""


MISSING_KEY = _MissingKey()


@dataclass(frozen=True)
class BotContext:
    config: Config
    secrets: Secrets
    db: Database
    metrics: Metrics


Readable = MessageEvent | ReactionEvent  # what a bot handles, once decrypted


def now_ms() -> int:
    return int(time.time() * 1000)


def transaction_id(bot_id: str, about: str, key: str) -> str:
    """The same for every attempt at sending the same message about the same event."""
    return "maillage." + hashlib.sha256(f"{bot_id}|{about}|{key}".encode()).hexdigest()[:40]


@dataclass
class Bot:
    """A service bot: one account, its commands, its reactions to room events."""

    localpart: ClassVar[str]
    displayname: ClassVar[str]
    title: ClassVar[str]
    commands: ClassVar[list[CommandSet]] = []
    # The room state that binds a room to the bot's resource (a folder, a calendar), if any.
    binding: ClassVar[Binding | None] = None
    # The bot's own tables (and those of shared parts it uses), numbered and forward-only,
    # each in its own version table.
    tables: ClassVar[tuple[UpgradeTable, ...]] = ()
    # The name of its direct room with an agent (a message key).
    direct_room_name: ClassVar[str] = "bot.direct_room"

    context: BotContext
    # True while the sync being handled is an initial one (first start, or a lost
    # sync position): its invitations are accepted, its old messages are not commands.
    in_initial_sync: bool = field(init=False, default=True)
    events_pushed: bool = field(init=False, default=False)  # by Synapse, as an appservice
    # Set while the homeserver does not answer the bot's syncs (reported by /sante).
    homeserver_unreachable: bool = field(init=False, default=False)
    client: Client = field(init=False)
    store: BotStore = field(init=False)
    bindings: RoomBindings = field(init=False)
    media: HomeserverMedia = field(init=False)
    direct: DirectRooms = field(init=False)
    _order: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _attempts: dict[str, int] = field(init=False, default_factory=dict)
    _keys_arrived: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _names: dict[str, tuple[str, float]] = field(init=False, default_factory=dict)

    @property
    def user_id(self) -> str:
        return f"@{self.localpart}:{self.context.config.collectivite.nom_serveur}"

    # --- what subclasses add -------------------------------------------------------

    async def setup(self) -> None:
        """Once the bot's client is ready: open what it needs (DAV clients…)."""

    async def on_message(self, event: MessageEvent) -> None:
        """Non-command messages (files for the documents bot); nothing by default."""

    async def on_reaction(self, event: ReactionEvent) -> None:
        """A reaction (✅ on a notice…), handled once and in order as messages are; nothing by default."""

    async def close(self) -> None:
        """When the runtime stops: close what ``setup`` opened."""

    def explain(self, error: Exception) -> str | None:
        """What to tell the agent when a command met a known failure (a server away…)."""
        return None

    # --- what handlers use -----------------------------------------------------------

    async def room_name(self, room_id: str) -> str:
        """The room's name, asked again after ``NAME_TTL`` seconds (listings across many rooms)."""
        known = self._names.get(room_id)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        try:
            content = await self.client.get_state_event(RoomID(room_id), EventType.ROOM_NAME)
        except MatrixRequestError:
            content = None
        name = str(getattr(content, "name", "") or "")
        self._names[room_id] = (name, time.monotonic() + NAME_TTL)
        return name

    def round_seconds(self) -> float:
        """Seconds between two rounds of ``rounds``."""
        return 30.0

    async def rounds(self, tick: Callable[[datetime], Awaitable[None]], what: str) -> None:
        """``tick(now)`` every ``round_seconds``, for ever; a failure (a server away) is logged
        when it begins and when it ends, not at every round, and the same work is due at the
        next round."""
        zone = ZoneInfo(self.context.config.collectivite.fuseau_horaire)
        failing: str | None = None
        while True:
            await asyncio.sleep(self.round_seconds())
            try:
                await tick(datetime.now(zone).replace(microsecond=0))
            except Exception as error:
                if failing != type(error).__name__:
                    failing = type(error).__name__
                    log.warning("%s not done for now: %s; tried again every round", what, failing)
            else:
                if failing is not None:
                    log.info("%s done again after %s", what, failing)
                failing = None

    def is_replay(self, event: MessageEvent | ReactionEvent) -> bool:
        """Whether an earlier attempt at this event may have begun (a crash, an outage, a retry):
        the handler then looks for what it did before doing it."""
        return self._attempts.get(event.event_id, 1) > 1

    async def reply(self, event: MessageEvent, body: str, formatted: str | None = None, *,
                    thread_root: str | None = None, key: str = "reponse") -> EventID:
        """Answer ``event``, in its thread when it came in one (or in a new one on ``thread_root``).

        ``key`` names which of the bot's messages about this event it is: the answer
        (``reponse``) is sent once whatever happens, however many attempts it takes."""
        root = event.content.get_thread_parent() or thread_root
        content = reply_content(body, formatted, to_event=event.event_id, thread_root=root)
        return await self.send_about(event.room_id, event.event_id, content, key=key)

    async def is_room_admin(self, room_id: str, user_id: str, event_type: EventType | None = None) -> bool:
        """May send ``event_type`` state in the room (the bot's binding by default): a creator
        (room versions 12+) or enough power."""
        state = await self.client.get_state(RoomID(room_id))
        create = next((e for e in state if e.type == EventType.ROOM_CREATE), None)
        creators = {create.sender, *(create.content.get("additional_creators") or [])} if create else set()
        if user_id in creators:
            return True
        levels = next((e.content for e in state if e.type == EventType.ROOM_POWER_LEVELS), None)
        if not isinstance(levels, PowerLevelStateEventContent):
            return False
        wanted = event_type or (self.binding.event_type if self.binding else EventType.ROOM_POWER_LEVELS)
        return bool(levels.get_user_level(UserID(user_id)) >= levels.get_event_level(wanted))

    async def answer(self, event: Readable, body: str, *, key: str = "reponse") -> EventID:
        """Answer a message, or a reaction (in reply to the message it reacts to)."""
        if isinstance(event, MessageEvent):
            return await self.reply(event, body, key=key)
        target = str(event.content.relates_to.event_id)
        return await self.send_about(event.room_id, event.event_id,
                                     reply_content(body, None, to_event=target, thread_root=None), key=key)

    async def send_file(self, event: MessageEvent, chunks: AsyncIterator[bytes], *, size: int, filename: str,
                        mimetype: str, msgtype: str = "m.file", info: dict[str, Any] | None = None,
                        key: str = "reponse") -> EventID:
        """Answer ``event`` with a file (``m.image`` with its ``info`` for a picture), encrypted when
        the room is; streamed, never whole in memory. ``key`` as for ``reply``."""
        media = await self.upload_for(event.room_id, chunks, size=size, filename=filename, mimetype=mimetype)
        return await self.post_uploaded(event.room_id, event.event_id, media, size=size, filename=filename,
                                        mimetype=mimetype, msgtype=msgtype, info=info, key=key,
                                        relation=self.relation_to(event))

    @staticmethod
    def relation_to(event: MessageEvent) -> dict[str, Any]:
        """An answer's relation to ``event``: a reply, in its thread when it came in one."""
        relation: dict[str, Any] = {"m.in_reply_to": {"event_id": event.event_id}}
        root = event.content.get_thread_parent()
        if root:
            relation |= {"rel_type": "m.thread", "event_id": root, "is_falling_back": True}
        return relation

    async def upload_for(self, room_id: str, chunks: AsyncIterator[bytes], *, size: int, filename: str,
                         mimetype: str) -> dict[str, Any]:
        """Upload a file for the room (encrypted when the room is): the message content's part
        naming it, for ``post_uploaded`` (a caller may upload while it sends something else)."""
        assert self.client.state_store is not None  # the runtime always gives one (E2EE needs it)
        if await self.client.state_store.is_encrypted(RoomID(room_id)):
            stream = EncryptingStream()
            mxc = await self.media.upload(stream.wrap(chunks), size=size, filename=filename,
                                          mimetype="application/octet-stream")
            return {"file": stream.file_info(mxc)}
        return {"url": await self.media.upload(chunks, size=size, filename=filename, mimetype=mimetype)}

    async def post_uploaded(self, room_id: str, about: str, media: dict[str, Any], *, size: int, filename: str,
                            mimetype: str, msgtype: str = "m.file", info: dict[str, Any] | None = None,
                            key: str, relation: dict[str, Any] | None = None) -> EventID:
        content: dict[str, Any] = {"msgtype": msgtype, "body": filename, "filename": filename,
                                   "info": {"mimetype": mimetype, "size": size, **(info or {})}, **media}
        if relation:
            content["m.relates_to"] = relation
        return await self.send_about(room_id, about, content, key=key)

    async def attachment_bytes(self, event: MessageEvent, limit: int) -> bytes | None:
        """A small attachment's bytes (decrypted, checked); None when larger than ``limit``."""
        content = event.content
        file = content.get("file")
        attachment = Attachment(url=str(file["url"] if file else content.get("url")),
                                encrypted=file.serialize() if hasattr(file, "serialize") else file)
        data = bytearray()
        async with attachment.download(self.media) as (length, chunks):
            if length is not None and length > limit:
                return None
            async for chunk in chunks:
                data += chunk
                if len(data) > limit:
                    return None
        if not attachment.intact:
            raise CorruptAttachment(attachment.url)
        return bytes(data)

    async def send_about(self, room_id: str, about: str, content: dict[str, Any], *, key: str,
                         event_type: EventType = EventType.ROOM_MESSAGE) -> EventID:
        """Send a message about event ``about``, once: a resend carries the same transaction id
        (and the homeserver answers it with the event id it gave the first time)."""
        return await self.client.send_message_event(RoomID(room_id), event_type, cast(Any, content),
                                             txn_id=transaction_id(self.user_id, about, key))

    # --- event handling --------------------------------------------------------------

    async def handle_event(self, event: MessageEvent | ReactionEvent | EncryptedEvent) -> None:
        """Every room message, encrypted or not, one at a time in the order of the timeline.

        Decryption happens here, inside the ordered section: decrypting events in
        parallel (mautrix's default dispatcher) would let a later command overtake an
        earlier one whose key arrives a moment later.
        """
        if event.sender == self.user_id or self.in_initial_sync:
            return
        backlog = self.context.metrics.backlog.labels(self.localpart)
        backlog.inc()
        async with self._order:  # asyncio.Lock is FIFO: tasks enter in the order syncs created them
            backlog.dec()
            try:
                await self._handle_once(event)
            except Exception as error:  # an outage: not marked handled, the sync is read again
                log.warning("%s: %s not handled for now (%s); it will be read again", self.localpart,
                            event.event_id, type(error).__name__)
                cast(GaplessClient, self.client).handling_failed = True
            finally:
                self._attempts.pop(event.event_id, None)

    async def _handle_once(self, event: MessageEvent | ReactionEvent | EncryptedEvent) -> None:
        if await self.store.was_handled(event.event_id):
            return
        attempt = await self.store.begin_attempt(event.event_id)
        self._attempts[event.event_id] = attempt
        message: Readable | _MissingKey | None = None if isinstance(event, EncryptedEvent) else event
        if isinstance(event, EncryptedEvent):
            message = await self._decrypted(event, wait=KEY_WAIT)
        if isinstance(message, _MissingKey):
            await self._keep(event, "cles", now_ms() + int(PENDING_POLL * 1000))
            await self._ask_for_key(cast(EncryptedEvent, event))
        elif message is not None and await self._run(message, attempt) == "plus_tard":
            await self._keep(event, "reessai", now_ms() + _retry_delay_ms("reessai", 0))
        await self.store.mark_handled(event.event_id, now_ms())

    async def _run(self, event: Readable, attempt: int) -> str:
        """Handle a message: ``fait`` (answered, whatever the outcome) or ``plus_tard`` (a server
        it needs is away; the sender was told). Raises on an outage, which answers nothing."""
        started = time.perf_counter()
        try:
            await self._dispatch(event)
            return "fait"
        except RetryLater as later:
            await self.answer(event, later.notice, key="attente")
            return "plus_tard"
        except Exception as error:
            if attempt < MAX_ATTEMPTS and await self._is_outage(error):
                raise
            self.context.metrics.errors.labels(self.localpart).inc()
            explained = self.explain(error)
            if explained is None:
                log.exception("%s failed on %s", self.localpart, event.event_id)
            else:
                log.warning("%s could not handle %s: %s", self.localpart, event.event_id, error)
            await self.answer(event, explained or t("bot.internal_error"))
            return "fait"
        finally:
            self.context.metrics.latency.labels(self.localpart).observe(time.perf_counter() - started)

    async def _is_outage(self, error: Exception) -> bool:
        """The homeserver or the database away: nothing to tell, the event is tried again."""
        if isinstance(error, MatrixConnectionError | aiohttp.ClientConnectionError | TimeoutError):
            return True
        if isinstance(error, MatrixRequestError) and error.http_status in (502, 503, 504):
            return True
        return lost_connection(error) or not await self.store.alive()

    async def _decrypted(self, event: EncryptedEvent, wait: float) -> Readable | _MissingKey | None:
        """The message, MISSING_KEY while its key is not here, None if it cannot be read at all."""
        crypto = self.client.crypto
        assert crypto is not None
        try:
            decrypted = await crypto.decrypt_megolm_event(event)
        except SessionNotFound:
            # The key often comes in the same sync as the message: handled alongside, wait a little.
            if not wait or not await crypto.wait_for_session(event.room_id, event.content.session_id, timeout=wait):
                return MISSING_KEY
            try:
                decrypted = await crypto.decrypt_megolm_event(event)
            except DecryptionError as exc:
                log.warning("%s: cannot decrypt %s: %s", self.localpart, event.event_id, exc)
                return None
        except DecryptionError as exc:
            log.warning("%s: cannot decrypt %s: %s", self.localpart, event.event_id, exc)
            return None
        return decrypted if isinstance(decrypted, MessageEvent | ReactionEvent) else None

    async def _keep(self, event: Readable | EncryptedEvent, reason: str, next_try: int) -> None:
        source = json.dumps(event.serialize())
        await self.store.keep_pending(event.event_id, event.room_id, source, reason, next_try, now_ms())
        log.info("%s: %s kept for later (%s)", self.localpart, event.event_id, reason)

    async def _ask_for_key(self, event: EncryptedEvent) -> None:
        """Ask the sender's device (every device, when the event does not say) for the key."""
        content = event.content
        assert isinstance(content, EncryptedMegolmEventContent) and self.client.crypto is not None
        device = content.device_id or DeviceID("*")
        try:
            log.info("%s: key of %s asked of its sender's device %s", self.localpart, event.event_id, device)
            await self.client.crypto.request_room_key(event.room_id, content.sender_key, content.session_id,
                                                      {event.sender: [device]}, timeout=0)
        except Exception as exc:  # a request that does not go out changes nothing: the wait goes on
            log.info("%s: key request for %s not sent: %s", self.localpart, event.event_id, type(exc).__name__)

    async def keys_arrived(self, to_device: ToDeviceEvent) -> None:
        """After the crypto machine has stored what a to-device event brought: look again."""
        self._keys_arrived.set()

    async def run_pending(self) -> None:
        """Handle the events kept for later, as their keys arrive or their servers come back."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._keys_arrived.wait(), PENDING_POLL)
            keys = self._keys_arrived.is_set()
            self._keys_arrived.clear()
            try:
                for pending in await self.store.due_pending(now_ms(), "cles" if keys else None):
                    async with self._order:
                        await self._retry(pending)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an outage: the events stay kept, looked at again shortly
                log.warning("%s: events kept for later not looked at (%s)", self.localpart, type(error).__name__)

    async def _retry(self, pending: PendingEvent) -> None:
        raw = json.loads(pending.source)
        kinds: dict[str, type[Readable | EncryptedEvent]] = {"m.room.encrypted": EncryptedEvent,
                                                             "m.reaction": ReactionEvent}
        event = kinds.get(raw.get("type"), MessageEvent).deserialize(raw)
        message: Readable | _MissingKey | None = None if isinstance(event, EncryptedEvent) else event
        if isinstance(event, EncryptedEvent):
            message = await self._decrypted(event, wait=0)
        if isinstance(message, _MissingKey):
            if now_ms() - pending.created_at > self.context.config.bots.attente_cles_secondes * 1000:
                await self._tell_unreadable(event)
                await self.store.drop_pending(pending.event_id)
            else:
                await self.store.postpone(pending.event_id, "cles", now_ms() + _retry_delay_ms("cles", pending.tries))
            return
        if message is None:
            await self.store.drop_pending(pending.event_id)
            return
        self._attempts[message.event_id] = MAX_ATTEMPTS if pending.tries >= MAX_ATTEMPTS else 2
        try:
            outcome = await self._run(message, self._attempts[message.event_id])
        except Exception as error:
            log.warning("%s: %s still waits (%s)", self.localpart, pending.event_id, type(error).__name__)
            outcome = "plus_tard"
        finally:
            self._attempts.pop(message.event_id, None)
        if outcome == "fait":
            await self.store.drop_pending(pending.event_id)
        else:
            await self.store.postpone(pending.event_id, "reessai",
                                      now_ms() + _retry_delay_ms("reessai", pending.tries + 1))

    async def _tell_unreadable(self, event: Readable | EncryptedEvent) -> None:
        zone = ZoneInfo(self.context.config.collectivite.fuseau_horaire)
        when = datetime.fromtimestamp(event.timestamp / 1000, zone).strftime("%d/%m/%Y %H:%M")
        content = reply_content(t("bot.unreadable", when=when), None, to_event=event.event_id, thread_root=None)
        await self.send_about(event.room_id, event.event_id, content, key="illisible")
        log.warning("%s: %s never became readable; its sender was told", self.localpart, event.event_id)

    async def on_gap_truncated(self, room_id: RoomID, oldest_ms: int, read: int) -> None:
        """More was sent in a room while the bot was away than it reads back: say so there."""
        zone = ZoneInfo(self.context.config.collectivite.fuseau_horaire)
        since = datetime.fromtimestamp(oldest_ms / 1000, zone).strftime("%d/%m/%Y %H:%M")
        content = {"msgtype": "m.notice", "body": t("bot.gap_truncated", count=read, since=since)}
        await self.send_about(room_id, f"{room_id}|{oldest_ms}", content, key="rattrapage")

    async def _dispatch(self, event: Readable) -> None:
        if isinstance(event, ReactionEvent):
            try:
                await self.on_reaction(event)
            except CommandError as error:
                await self.answer(event, str(error))
            return
        content = event.content
        body = ""
        if isinstance(content, TextMessageEventContent) and content.msgtype in (MessageType.TEXT, MessageType.NOTICE):
            body = command_text(content.body, content.formatted_body if content.format == Format.HTML else None)
        word = body.strip().split(maxsplit=1)[0].lower() if body.strip() else ""
        if word in (f"!{w}" for w in HELP_WORDS):
            self.context.metrics.commands.labels(self.localpart, "aide").inc()
            plain, rich = help_message(self.title, self.commands)
            await self.reply(event, plain, rich)
            return
        command_set = next((c for c in self.commands if c.matches(body)), None)
        if command_set is None:
            await self.on_message(event)
            return
        try:
            words = body.split()
            if len(words) >= 2 and words[1].lower() in HELP_WORDS:
                await self.reply(event, command_set.help_for(words[2] if len(words) > 2 else None))
                return
            sub, arguments = command_set.parse(body)
            if sub.admin and not await self.is_room_admin(event.room_id, event.sender):
                raise CommandError(t("bot.admin_only", command=sub.usage(command_set.root)))
            self.context.metrics.commands.labels(self.localpart, (sub.names or command_set.names)[0]).inc()
            await sub.handler(self, event, **arguments)
        except CommandError as error:
            await self.reply(event, str(error))


def _retry_delay_ms(reason: str, tries: int) -> int:
    """A missing key is looked for again every few seconds (and as soon as keys arrive); a server
    away, after 10 s, 20 s… then every minute."""
    if reason == "cles":
        return int(min(5 * 2 ** tries, 60) * 1000)
    return int(min(10 * 2 ** tries, 60) * 1000)


BotT = TypeVar("BotT", bound=Bot)


class BotRuntime:
    """Starts every bot and keeps them syncing until stopped."""

    def __init__(self, config: Config, stack_secrets: Secrets, admin_token: str,
                 bot_classes: list[type[Bot]], metrics: Metrics, database: str | None = None,
                 pushed: bool = False) -> None:
        self.config = config
        self.database = database or database_url(config)  # the email bridge has its own
        self.secrets = stack_secrets
        self.admin_token = admin_token
        self.bot_classes = bot_classes
        self.metrics = metrics
        self.bots: list[Bot] = []
        self.db: Database | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Synapse pushes the rooms' events ([bots] reception = "appservice"); else each bot syncs them.
        self.pushed = PushedEvents(self) if pushed else None

    async def start(self) -> None:
        self.db = await open_database(self.database, self.bot_classes)
        context = BotContext(self.config, self.secrets, self.db, self.metrics)
        for bot_class in self.bot_classes:
            bot = bot_class(context)
            await self._start_bot(bot)
            self.bots.append(bot)
        if self.pushed is not None:
            self._tasks.append(await self.pushed.start())

    def bot_of(self, bot_class: type[BotT]) -> BotT | None:
        """The running bot of that class (None while it starts)."""
        return next((bot for bot in self.bots if isinstance(bot, bot_class)), None)

    async def health(self) -> dict[str, object]:
        """What /sante says: ready once every bot runs and the homeserver answers (asked now:
        a bot waiting out an outage inside a request would not have noticed it yet)."""
        answers = await homeserver_answers(self.config.bots_homeserver_url)
        unreachable = not answers or any(bot.homeserver_unreachable for bot in self.bots)
        return {"pret": len(self.bots) == len(self.bot_classes) and not unreachable,
                "serveur_matrix": "injoignable" if unreachable else "joignable"}

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for bot in self.bots:
            bot.client.stop()
            await bot.close()
            await bot.media.close()
            await bot.client.api.session.close()
        if self.db is not None:
            await self.db.stop()

    async def _start_bot(self, bot: Bot) -> None:
        assert self.db is not None
        bot.store = BotStore(self.db, bot.user_id)
        credentials, new_device = await self._valid_credentials(bot)
        state_store = PgCryptoStateStore(self.db)
        client = GaplessClient(mxid=UserID(bot.user_id), device_id=DeviceID(credentials.device_id),
                               base_url=self.config.bots_homeserver_url, token=credentials.access_token,
                               state_store=state_store, sync_store=HandledSyncStore(bot.store))
        client.max_gap = self.config.bots.rattrapage_max
        client.on_gap_truncated = bot.on_gap_truncated
        # One crypto account per device: a new login never reuses another device's keys.
        crypto_store = RevertibleCryptoStore(account_id=f"{bot.user_id}|{credentials.device_id}",
                                             pickle_key=self._pickle_key(), db=self.db)
        machine = AtomicOlmMachine(client, crypto_store, state_store)
        await crypto_store.open()
        client.crypto = machine
        await machine.load()
        await machine.share_keys()
        await self._ensure_cross_signing(bot, machine, new_device)
        bot.client = client
        bot.media = HomeserverMedia(self.config.synapse_url, credentials.access_token)
        bot.direct = DirectRooms(bot, t(bot.direct_room_name))
        if bot.binding is not None:
            bot.bindings = RoomBindings(bot, bot.binding)
            client.add_event_handler(bot.binding.event_type, bot.bindings.on_state, wait_sync=True)
            if bot.binding.spaces:
                client.add_event_handler(EventType.SPACE_CHILD, bot.bindings.on_space_child)
        await bot.setup()
        # Requests other than syncs (replies, state) wait out a homeserver restart: 4 s, 8 s…
        # about two minutes in all, with the same transaction id, so nothing is sent twice.
        client.api.default_retry_count = SEND_RETRIES
        client.add_event_handler(InternalEventType.SYNC_SUCCESSFUL, lambda e: _note_sync_kind(bot, e),
                                 wait_sync=True)
        client.add_event_handler(InternalEventType.SYNC_ERRORED, lambda e: _note_sync_error(bot, e))
        client.add_event_handler(EventType.ROOM_MEMBER, lambda e: self._on_member(bot, e), wait_sync=True)
        client.remove_dispatcher(DecryptionDispatcher)  # decrypted in order by the bot itself
        client.add_event_handler(EventType.ROOM_ENCRYPTED, bot.handle_event, wait_sync=True)
        client.add_event_handler(EventType.ROOM_MESSAGE, bot.handle_event, wait_sync=True)
        client.add_event_handler(EventType.REACTION, bot.handle_event, wait_sync=True)
        # Room keys are stored before the next sync is asked for: the homeserver forgets a
        # to-device message once a later sync is requested, so a crash must not come between.
        client.remove_event_handler(EventType.TO_DEVICE_ENCRYPTED, machine.handle_to_device_event)
        client.add_event_handler(EventType.TO_DEVICE_ENCRYPTED, lambda e: _store_keys(bot, machine, e),
                                 wait_sync=True)
        if self.pushed is not None:  # the rooms come as pushed transactions: the sync is the device's alone
            bot.in_initial_sync = False
            bot.events_pushed = True
            client.poll_seconds = DEVICE_POLL_SECONDS
            client.start(DEVICE_ONLY_FILTER)
        else:
            client.start(BOT_FILTER)
        self._tasks.append(asyncio.create_task(bot.run_pending()))

    async def _valid_credentials(self, bot: Bot) -> tuple[Credentials, bool]:
        """Stored credentials if the homeserver still accepts them, else a new login (True)."""
        stored = await bot.store.credentials()
        if stored is not None:
            probe = Client(mxid=UserID(bot.user_id), base_url=self.config.bots_homeserver_url,
                           token=stored.access_token)
            try:
                await probe.whoami()
                return stored, False
            except MUnknownToken:  # revoked by an admin
                pass
            finally:
                await probe.api.session.close()
        return await self._first_login(bot), True

    def _pickle_key(self) -> str:
        return self.secrets.bots_pickle_key or self.secrets.macaroon_secret_key

    async def _first_login(self, bot: Bot) -> Credentials:
        """Provision the account and log in; the password is used once and not kept."""
        password = secrets.token_urlsafe(24) + "Aa1"
        async with SynapseAdmin(self.config.synapse_url, self.admin_token) as admin:
            await admin.put_user(bot.user_id, password=password, displayname=bot.displayname, user_type="bot")
            await admin.override_ratelimit(bot.user_id)
        login = Client(mxid=UserID(bot.user_id), base_url=self.config.bots_homeserver_url)
        response = await login.login(identifier=UserID(bot.user_id), password=password,
                                     device_name=f"Maillage — {bot.displayname}")
        await login.api.session.close()
        credentials = Credentials(bot.user_id, str(response.device_id), str(response.access_token))
        await bot.store.save_credentials(credentials)
        return credentials

    async def _ensure_cross_signing(self, bot: Bot, machine: OlmMachine, new_device: bool) -> None:
        """Create the bot's cross-signing keys once; a later new device signs itself with them."""
        path = recovery_key_path(self.config, bot.localpart)
        if path.exists():
            check_private(path)
            if new_device:  # a new login (database lost, token revoked): sign it with the same keys
                await machine.verify_with_recovery_key(path.read_text().strip())
            return
        recovery_key = await machine.generate_recovery_key()
        write_private(path, recovery_key + "\n")
        log.info("%s: cross-signing keys created, recovery key saved in %s", bot.localpart, path)

    async def _on_member(self, bot: Bot, event: StateEvent) -> None:
        if event.state_key != bot.user_id or not isinstance(event.content, MemberStateEventContent) \
                or event.content.membership != Membership.INVITE:
            return
        if not self._may_invite(event.sender):
            log.info("%s: invitation from %s declined (not local nor partner)", bot.localpart, event.sender)
            with contextlib.suppress(MForbidden):
                await bot.client.leave_room(event.room_id, reason=t("bot.invite_refused"))
            return
        await bot.client.join_room(RoomID(event.room_id))

    def _may_invite(self, inviter: str) -> bool:
        server = inviter.split(":", 1)[1]
        return server == self.config.collectivite.nom_serveur or server in self.config.federation.partenaires


async def _store_keys(bot: Bot, machine: OlmMachine, event: ToDeviceEvent) -> None:
    try:
        await machine.handle_to_device_event(event)
    except DecryptionError as error:
        # Most often a to-device message read again after a crash, whose Olm session has
        # already moved on; a key it carried and that was lost is asked for again when a
        # message needs it (Bot._ask_for_key).
        log.info("%s: to-device message from %s not readable: %s", bot.localpart, event.sender, error)
        return
    except Exception as error:
        # Nothing of it was stored (AtomicOlmMachine): when the database was away, even for a
        # moment, this sync's to-device messages are read again and the key is not lost.
        if lost_connection(error) or not await bot.store.alive():
            cast(GaplessClient, bot.client).handling_failed = True
        raise
    await bot.keys_arrived(event)


async def _note_sync_kind(bot: Bot, event: dict[str, Any]) -> None:
    if not bot.events_pushed:  # pushed events are all new: none is the history of a first sync
        bot.in_initial_sync = bool(event["data"].get("net.maunium.mautrix", {}).get("is_initial"))
    if bot.homeserver_unreachable:
        log.warning("%s: the homeserver answers again", bot.localpart)
    bot.homeserver_unreachable = False


async def _note_sync_error(bot: Bot, event: dict[str, Any]) -> None:
    if not bot.homeserver_unreachable:
        log.warning("%s: the homeserver does not answer (%s); trying again in %s s", bot.localpart,
                    type(event["error"]).__name__, event["sleep_for"])
    bot.homeserver_unreachable = True


async def homeserver_answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(base_url=url, timeout=3) as http:
            return (await http.get("/_matrix/client/versions")).status_code == 200
    except httpx.HTTPError:
        return False


async def open_database(url: str, bot_classes: Sequence[type[Bot]]) -> Database:
    """The bots' (or the bridge's) database, every table at its latest version: the runtime's,
    mautrix's state and crypto stores, each bot's own."""
    db = Database.create(url, upgrade_table=upgrade_table)
    confine_connections(db)
    await db.start()
    await PgStateStore.upgrade_table.upgrade(db)
    await PgCryptoStore.upgrade_table.upgrade(db)
    for table in dict.fromkeys(table for bot_class in bot_classes for table in bot_class.tables):
        await table.upgrade(db)
    return db


def database_url(config: Config) -> str:
    if config.bots.base_de_donnees:
        return config.bots.base_de_donnees
    path = config.data_dir / "bots" / "bots.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:{path}"


def recovery_key_path(config: Config, localpart: str) -> Path:
    return config.data_dir / "secrets" / "bots" / f"{localpart}.cle-de-recuperation"

