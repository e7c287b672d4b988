"""The bot runtime: one process hosting every service bot, each its own Matrix account.

Each bot is created through the Admin API as a bot account with rate limits
lifted, logs in once (device and token kept in the bots' database), reads and
writes end-to-end encrypted rooms through mautrix's OlmMachine, and cross-signs
its own device at first start (recovery key kept 0600) so that clients which
only encrypt to verified devices still reach it.

Commands are handled one at a time, in order, exactly once: the sync position
is stored only once a sync's events are handled, and handled event ids are
recorded, so a restart neither loses nor repeats a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import httpx
from mautrix.client import Client, InternalEventType
from mautrix.client.encryption_manager import DecryptionDispatcher
from mautrix.client.state_store.asyncpg import PgStateStore
from mautrix.crypto import OlmMachine, PgCryptoStateStore, PgCryptoStore
from mautrix.errors import DecryptionError, MForbidden, MUnknownToken, SessionNotFound
from mautrix.types import (
    DeviceID,
    EncryptedEvent,
    EventType,
    Membership,
    MemberStateEventContent,
    MessageEvent,
    MessageType,
    RoomID,
    StateEvent,
    UserID,
)
from mautrix.util.async_db import Database

from maillage.bots.commands import CommandError, CommandSet, help_message, reply_content
from maillage.bots.metrics import Metrics
from maillage.bots.store import BotStore, Credentials, HandledSyncStore, upgrade_table
from maillage.bots.sync import BOT_FILTER, GaplessClient
from maillage.config import Config
from maillage.i18n import t
from maillage.secretstore import Secrets, check_private, write_private
from maillage.synapse_admin import SynapseAdmin

log = logging.getLogger("maillage.bots")

HELP_WORDS = ("aide", "help")
SEND_RETRIES = 5


@dataclass(frozen=True)
class BotContext:
    config: Config
    secrets: Secrets
    db: Database
    metrics: Metrics


@dataclass
class Bot:
    """A service bot: one account, its commands, its reactions to room events."""

    localpart: ClassVar[str]
    displayname: ClassVar[str]
    title: ClassVar[str]
    commands: ClassVar[list[CommandSet]] = []

    context: BotContext
    # True while the sync being handled is an initial one (first start, or a lost
    # sync position): its invitations are accepted, its old messages are not commands.
    in_initial_sync: bool = field(init=False, default=True)
    # Set while the homeserver does not answer the bot's syncs (reported by /sante).
    homeserver_unreachable: bool = field(init=False, default=False)
    client: Client = field(init=False)
    store: BotStore = field(init=False)
    _order: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    @property
    def user_id(self) -> str:
        return f"@{self.localpart}:{self.context.config.collectivite.nom_serveur}"

    # --- what subclasses add -------------------------------------------------------

    async def setup(self) -> None:
        """Once the bot's client is ready: open what it needs (DAV clients…)."""

    async def on_message(self, event: MessageEvent) -> None:
        """Non-command messages (files for the documents bot); nothing by default."""

    async def close(self) -> None:
        """When the runtime stops: close what ``setup`` opened."""

    def explain(self, error: Exception) -> str | None:
        """What to tell the agent when a command met a known failure (a server away…)."""
        return None

    # --- command handling -----------------------------------------------------------

    async def handle_event(self, event: MessageEvent | EncryptedEvent) -> None:
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
            if await self.store.was_handled(event.event_id):
                return
            message = await self._decrypted(event) if isinstance(event, EncryptedEvent) else event
            if message is None:
                await self.store.mark_handled(event.event_id, int(time.time() * 1000))
                return
            await self._handle(message)

    async def _decrypted(self, event: EncryptedEvent) -> MessageEvent | None:
        crypto = self.client.crypto
        assert crypto is not None
        try:
            decrypted = await crypto.decrypt_megolm_event(event)
        except SessionNotFound:  # the key is often a moment behind the message
            await crypto.wait_for_session(event.room_id, event.content.session_id, timeout=10)
            try:
                decrypted = await crypto.decrypt_megolm_event(event)
            except DecryptionError as exc:
                log.warning("%s: cannot decrypt %s: %s", self.localpart, event.event_id, exc)
                return None
        except DecryptionError as exc:
            log.warning("%s: cannot decrypt %s: %s", self.localpart, event.event_id, exc)
            return None
        return decrypted if isinstance(decrypted, MessageEvent) else None

    async def _handle(self, event: MessageEvent) -> None:
        started = time.perf_counter()
        try:
            await self._dispatch(event)
        except Exception as error:
            self.context.metrics.errors.labels(self.localpart).inc()
            explained = self.explain(error)
            if explained is None:
                log.exception("%s failed on %s", self.localpart, event.event_id)
            else:
                log.warning("%s could not handle %s: %s", self.localpart, event.event_id, error)
            await self.reply(event, explained or t("bot.internal_error"))
        finally:
            await self.store.mark_handled(event.event_id, int(time.time() * 1000))
            self.context.metrics.latency.labels(self.localpart).observe(time.perf_counter() - started)

    async def _dispatch(self, event: MessageEvent) -> None:
        body = event.content.body if event.content.msgtype in (MessageType.TEXT, MessageType.NOTICE) else ""
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
            self.context.metrics.commands.labels(self.localpart, sub.names[0]).inc()
            await sub.handler(self, event, **arguments)
        except CommandError as error:
            await self.reply(event, str(error))

    async def reply(self, event: MessageEvent, body: str, formatted: str | None = None, *,
                    thread_root: str | None = None) -> None:
        """Answer ``event``, in its thread when it came in one (or in a new one on ``thread_root``)."""
        root = event.content.get_thread_parent() or thread_root
        content = reply_content(body, formatted, to_event=event.event_id, thread_root=root)
        await self.client.send_message_event(event.room_id, EventType.ROOM_MESSAGE, cast(Any, content))


class BotRuntime:
    """Starts every bot and keeps them syncing until stopped."""

    def __init__(self, config: Config, stack_secrets: Secrets, admin_token: str,
                 bot_classes: list[type[Bot]], metrics: Metrics) -> None:
        self.config = config
        self.secrets = stack_secrets
        self.admin_token = admin_token
        self.bot_classes = bot_classes
        self.metrics = metrics
        self.bots: list[Bot] = []
        self.db: Database | None = None

    async def start(self) -> None:
        self.db = Database.create(database_url(self.config), upgrade_table=upgrade_table)
        await self.db.start()
        await PgStateStore.upgrade_table.upgrade(self.db)
        await PgCryptoStore.upgrade_table.upgrade(self.db)
        context = BotContext(self.config, self.secrets, self.db, self.metrics)
        for bot_class in self.bot_classes:
            bot = bot_class(context)
            await self._start_bot(bot)
            self.bots.append(bot)

    async def health(self) -> dict[str, object]:
        """What /sante says: ready once every bot runs and the homeserver answers (asked now:
        a bot waiting out an outage inside a request would not have noticed it yet)."""
        answers = await homeserver_answers(self.config.synapse_url)
        unreachable = not answers or any(bot.homeserver_unreachable for bot in self.bots)
        return {"pret": len(self.bots) == len(self.bot_classes) and not unreachable,
                "serveur_matrix": "injoignable" if unreachable else "joignable"}

    async def stop(self) -> None:
        for bot in self.bots:
            bot.client.stop()
            await bot.close()
            await bot.client.api.session.close()
        if self.db is not None:
            await self.db.stop()

    async def _start_bot(self, bot: Bot) -> None:
        assert self.db is not None
        bot.store = BotStore(self.db, bot.user_id)
        credentials, new_device = await self._valid_credentials(bot)
        state_store = PgCryptoStateStore(self.db)
        client = GaplessClient(mxid=UserID(bot.user_id), device_id=DeviceID(credentials.device_id),
                        base_url=self.config.synapse_url, token=credentials.access_token,
                        state_store=state_store, sync_store=HandledSyncStore(bot.store))
        # One crypto account per device: a new login never reuses another device's keys.
        crypto_store = PgCryptoStore(account_id=f"{bot.user_id}|{credentials.device_id}",
                                     pickle_key=self._pickle_key(), db=self.db)
        machine = OlmMachine(client, crypto_store, state_store)
        await crypto_store.open()
        client.crypto = machine
        await machine.load()
        await machine.share_keys()
        await self._ensure_cross_signing(bot, machine, new_device)
        bot.client = client
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
        client.start(BOT_FILTER)

    async def _valid_credentials(self, bot: Bot) -> tuple[Credentials, bool]:
        """Stored credentials if the homeserver still accepts them, else a new login (True)."""
        stored = await bot.store.credentials()
        if stored is not None:
            probe = Client(mxid=UserID(bot.user_id), base_url=self.config.synapse_url, token=stored.access_token)
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
        login = Client(mxid=UserID(bot.user_id), base_url=self.config.synapse_url)
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


async def _note_sync_kind(bot: Bot, event: dict[str, Any]) -> None:
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


def database_url(config: Config) -> str:
    if config.bots.base_de_donnees:
        return config.bots.base_de_donnees
    path = config.data_dir / "bots" / "bots.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:{path}"


def recovery_key_path(config: Config, localpart: str) -> Path:
    return config.data_dir / "secrets" / "bots" / f"{localpart}.cle-de-recuperation"

