"""The bots' database: SQLite by default, PostgreSQL in production, same code.

Tables of the runtime itself (accounts, handled events, sync position) live in a
numbered, forward-only upgrade table; mautrix's crypto and state stores keep
their own tables in the same database.
"""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.client import SyncStore
from mautrix.types import SyncToken
from mautrix.util.async_db import Connection, Database, UpgradeTable

upgrade_table = UpgradeTable(version_table_name="maillage_bots_version")


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

    async def next_batch(self) -> str | None:
        value = await self.db.fetchval(
            "SELECT next_batch FROM maillage_bot_account WHERE user_id=$1", self.user_id)
        return str(value) if value else None

    async def save_next_batch(self, token: str) -> None:
        await self.db.execute(
            "UPDATE maillage_bot_account SET next_batch=$2 WHERE user_id=$1", self.user_id, token)


class HandledSyncStore(SyncStore):
    """Resume from the last sync whose events were all handled, not the last received.

    mautrix stores a sync's token before handling its events; a crash in between
    would lose them. This store persists a token one sync later, once the
    handlers of the previous sync (registered with ``wait_sync``) have finished.
    Events seen twice after a restart are skipped by event id.
    """

    def __init__(self, store: BotStore) -> None:
        self.store = store
        self._received: str | None = None

    async def put_next_batch(self, next_batch: SyncToken) -> None:
        if self._received is not None:
            await self.store.save_next_batch(self._received)
        self._received = next_batch

    async def get_next_batch(self) -> SyncToken:
        return SyncToken(await self.store.next_batch() or "")
