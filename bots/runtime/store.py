"""The bots' database: SQLite by default, PostgreSQL in production, same code.

Tables of the runtime itself (accounts, handled events, sync position) live in a
numbered, forward-only upgrade table; mautrix's crypto and state stores keep
their own tables in the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
from mautrix.client import SyncStore
from mautrix.types import SyncToken
from mautrix.util.async_db import Connection, Database, UpgradeTable
from mautrix.util.async_db.database import conn_var

from maillage.bots.runtime.direct import create_table as direct_table

upgrade_table = UpgradeTable(version_table_name="maillage_bots_version")


# The task that took the connection mautrix's ``conn_var`` holds (see confine_connections).
_connection_owner: ContextVar[asyncio.Task[Any] | None] = ContextVar("maillage_connection_owner", default=None)


def confine_connections(db: Database) -> None:
    """A connection taken for a transaction serves its own task only.

    mautrix keeps the connection of a transaction in a context variable, so that the
    queries made inside use it; but a task started inside (mautrix starts some, so do
    handlers) inherits the variable, and would send its queries on the same connection,
    at the same time: asyncpg then fails with an « internal client error », on which mautrix
    ends the process (seen in CI, the bots silent). Here a task that inherited another
    task's connection takes one of its own.
    """
    take = db.acquire_direct

    @contextlib.asynccontextmanager
    async def acquire() -> AsyncIterator[Connection]:
        current = asyncio.current_task()
        held = conn_var.get(None)
        if held is not None and _connection_owner.get() is current:
            yield held
            return
        async with take() as conn:
            connection, owner = conn_var.set(conn), _connection_owner.set(current)
            try:
                yield conn
            finally:
                conn_var.reset(connection)
                _connection_owner.reset(owner)

    db.acquire = acquire  # type: ignore[method-assign,assignment]


@contextlib.asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[Connection]:
    """One connection in one transaction: all of it is written, or none."""
    conn: Connection
    async with db.acquire() as conn, conn.transaction():
        yield conn


def lost_connection(error: BaseException) -> bool:
    """The database went away under a query (a restart, the network), whatever answers now.

    Checking that the database answers is not enough: a fast restart is over before the
    check, and the write that failed would then be taken for the query's own fault.
    """
    if isinstance(error, sqlite3.OperationalError):
        return any(word in str(error) for word in ("locked", "disk I/O", "unable to open"))
    return isinstance(error, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError
                      | asyncpg.exceptions.OperatorInterventionError)


async def _initial(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE maillage_bot_account (
            user_id TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            access_token TEXT NOT NULL,
            next_batch TEXT
        )"""
    )
    await conn.execute(
        """CREATE TABLE maillage_handled_event (
            user_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            handled_at BIGINT NOT NULL,
            PRIMARY KEY (user_id, event_id)
        )"""
    )


upgrade_table.register(_initial, description="Bot accounts, handled events, sync position")


async def _documents(conn: Connection) -> None:
    # A cache: the same facts are WebDAV properties of each file, so it can be rebuilt.
    await conn.execute(
        """CREATE TABLE maillage_document (
            event_id TEXT PRIMARY KEY,
            room_id TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            uploader TEXT NOT NULL,
            size BIGINT NOT NULL,
            stored_at BIGINT NOT NULL
        )"""
    )


upgrade_table.register(_documents, description="Documents filed by @documents")


async def _bindings(conn: Connection) -> None:
    # A cache of the rooms' fr.maillage.documents state, to refuse a folder bound twice.
    await conn.execute("CREATE TABLE maillage_binding (room_id TEXT PRIMARY KEY, folder TEXT NOT NULL)")


upgrade_table.register(_bindings, description="Folder bindings of rooms")


async def _texts(conn: Connection) -> None:
    # The text of documents, by content hash (a WebDAV property of each file): renaming,
    # moving to the trash or restoring a document keeps its text without re-reading it.
    # ``folded``: the text lower-cased without accents (same length), what searches compare.
    await conn.execute(
        "CREATE TABLE maillage_document_text (sha256 TEXT PRIMARY KEY, text TEXT NOT NULL, folded TEXT NOT NULL)")


upgrade_table.register(_texts, description="Text of documents, for search")


async def _attempts_and_pending(conn: Connection) -> None:
    # How many times handling of an event began: above one, the handler runs again after a
    # crash and finds what its earlier attempt did instead of doing it twice.
    await conn.execute(
        """CREATE TABLE maillage_event_attempt (
            user_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            PRIMARY KEY (user_id, event_id)
        )"""
    )
    # Events kept for later: a key that has not arrived yet ("cles"), a server a handler needs
    # that is away ("reessai"). ``source`` is the event as received (still encrypted, if it
    # was): no plaintext of a message rests here.
    await conn.execute(
        """CREATE TABLE maillage_pending_event (
            user_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            room_id TEXT NOT NULL,
            source TEXT NOT NULL,
            reason TEXT NOT NULL,
            tries INTEGER NOT NULL,
            next_try BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (user_id, event_id)
        )"""
    )


upgrade_table.register(_attempts_and_pending, description="Handling attempts, events kept for later")


async def _room_bindings(conn: Connection) -> None:
    # A cache of the rooms' binding state, for every bot (folders, calendars…), to refuse one
    # resource bound to two rooms; the first one was @documents' alone.
    await conn.execute(
        """CREATE TABLE maillage_room_binding (
            bot TEXT NOT NULL,
            room_id TEXT NOT NULL,
            target TEXT NOT NULL,
            PRIMARY KEY (bot, room_id)
        )"""
    )
    await conn.execute("INSERT INTO maillage_room_binding (bot, room_id, target)"
                       " SELECT 'documents', room_id, folder FROM maillage_binding")
    await conn.execute("DROP TABLE maillage_binding")


upgrade_table.register(_room_bindings, description="Room bindings of every bot")
upgrade_table.register(direct_table, description="Each bot's direct rooms with agents")


async def _appservice_inbox(conn: Connection) -> None:
    # Transactions pushed by Synapse, kept until every bot has handled them. ``ordre``
    # gives the order they came in; ``body`` is the transaction as received.
    await conn.execute(
        """CREATE TABLE maillage_appservice_inbox (
            txn_id TEXT PRIMARY KEY,
            ordre BIGINT NOT NULL,
            body TEXT NOT NULL,
            recu_ms BIGINT NOT NULL
        )"""
    )


upgrade_table.register(_appservice_inbox, description="Transactions pushed by Synapse, until handled")


@dataclass(frozen=True)
class PendingEvent:
    event_id: str
    room_id: str
    source: str  # JSON of the event as received
    reason: str  # "cles" (waiting for its key) or "reessai" (a server was away)
    tries: int
    created_at: int  # ms


@dataclass(frozen=True)
class Credentials:
    user_id: str
    device_id: str
    access_token: str

    def __repr__(self) -> str:  # the token never reaches a log
        return f"Credentials({self.user_id}, {self.device_id}, …)"


class BotStore:
    def __init__(self, db: Database, user_id: str) -> None:
        self.db = db
        self.user_id = user_id

    async def credentials(self) -> Credentials | None:
        row = await self.db.fetchrow(
            "SELECT device_id, access_token FROM maillage_bot_account WHERE user_id=$1", self.user_id)
        return Credentials(self.user_id, row["device_id"], row["access_token"]) if row else None

    async def save_credentials(self, credentials: Credentials) -> None:
        await self.db.execute(
            "INSERT INTO maillage_bot_account (user_id, device_id, access_token) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET device_id=$2, access_token=$3, next_batch=NULL",
            credentials.user_id, credentials.device_id, credentials.access_token)

    async def was_handled(self, event_id: str) -> bool:
        row = await self.db.fetchval(
            "SELECT 1 FROM maillage_handled_event WHERE user_id=$1 AND event_id=$2", self.user_id, event_id)
        return row is not None

    async def mark_handled(self, event_id: str, timestamp_ms: int) -> None:
        await self.db.execute(
            "INSERT INTO maillage_handled_event (user_id, event_id, handled_at) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING", self.user_id, event_id, timestamp_ms)

    async def begin_attempt(self, event_id: str) -> int:
        """Note that handling of ``event_id`` begins; how many times it has begun, this one included."""
        await self.db.execute(
            "INSERT INTO maillage_event_attempt (user_id, event_id, attempts) VALUES ($1, $2, 1)"
            " ON CONFLICT (user_id, event_id) DO UPDATE SET attempts=maillage_event_attempt.attempts+1",
            self.user_id, event_id)
        return int(await self.db.fetchval(
            "SELECT attempts FROM maillage_event_attempt WHERE user_id=$1 AND event_id=$2",
            self.user_id, event_id))

    async def keep_pending(self, event_id: str, room_id: str, source: str, reason: str, next_try: int,
                           now: int) -> None:
        await self.db.execute(
            "INSERT INTO maillage_pending_event (user_id, event_id, room_id, source, reason, tries, next_try,"
            " created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7) ON CONFLICT (user_id, event_id) DO NOTHING",
            self.user_id, event_id, room_id, source, reason, next_try, now)

    async def is_pending(self, event_id: str) -> bool:
        return await self.db.fetchval(
            "SELECT 1 FROM maillage_pending_event WHERE user_id=$1 AND event_id=$2", self.user_id, event_id
        ) is not None

    async def due_pending(self, now: int, reason: str | None = None) -> list[PendingEvent]:
        """Events whose next try has come (every one kept for ``reason``, when given), oldest first."""
        rows = await self.db.fetch(
            "SELECT event_id, room_id, source, reason, tries, created_at FROM maillage_pending_event"
            " WHERE user_id=$1 AND (next_try<=$2 OR reason=$3) ORDER BY created_at",
            self.user_id, now, reason or "")
        return [PendingEvent(r["event_id"], r["room_id"], r["source"], r["reason"], int(r["tries"]),
                             int(r["created_at"])) for r in rows]

    async def postpone(self, event_id: str, reason: str, next_try: int) -> None:
        await self.db.execute(
            "UPDATE maillage_pending_event SET tries=tries+1, next_try=$3, reason=$4"
            " WHERE user_id=$1 AND event_id=$2", self.user_id, event_id, next_try, reason)

    async def drop_pending(self, event_id: str) -> None:
        await self.db.execute(
            "DELETE FROM maillage_pending_event WHERE user_id=$1 AND event_id=$2", self.user_id, event_id)

    async def alive(self) -> bool:
        """Whether the database answers (an error with it is an outage, not the command's fault)."""
        try:
            await self.db.fetchval("SELECT 1")
        except Exception:
            return False
        return True

    async def next_batch(self) -> str | None:
        value = await self.db.fetchval(
            "SELECT next_batch FROM maillage_bot_account WHERE user_id=$1", self.user_id)
        return str(value) if value else None

    async def save_next_batch(self, token: str) -> None:
        await self.db.execute(
            "UPDATE maillage_bot_account SET next_batch=$2 WHERE user_id=$1", self.user_id, token)


class HandledSyncStore(SyncStore):
    """The sync position, stored only once every event of the sync was handled.

    ``GaplessClient`` calls ``put_next_batch`` after a sync's handlers have finished (not
    before, as mautrix's own loop does): a crash at any moment resumes from a sync whose
    events are then seen again, and skipped by event id when they were already handled.
    """

    def __init__(self, store: BotStore) -> None:
        self.store = store

    async def put_next_batch(self, next_batch: SyncToken) -> None:
        await self.store.save_next_batch(next_batch)

    async def get_next_batch(self) -> SyncToken:
        return SyncToken(await self.store.next_batch() or "")
