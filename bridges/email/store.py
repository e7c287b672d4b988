"""The bridge's tables, in its own database (SQLite by default, PostgreSQL in production).

- ``courriel_adresse``: each mailbox address and the one room it belongs to (a copy of the
  rooms' ``fr.maillage.courriel`` state, which is the truth);
- ``courriel_entrant``: every message accepted by SMTP, stored whole *before* the 250
  answer, then delivered to its room (``a_livrer`` → ``livre``), in order of arrival;
- ``courriel_message``: every mail message seen in a room (its Message-ID, its event, the
  thread it belongs to and its correspondent), to thread replies and to answer them.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from mautrix.util.async_db import Connection, Database, UpgradeTable

from maillage.bots.runtime.store import transaction

tables = UpgradeTable(version_table_name="maillage_courriel_version")


async def _initial(conn: Connection) -> None:
    await conn.execute("CREATE TABLE courriel_adresse (adresse TEXT PRIMARY KEY, room_id TEXT NOT NULL)")
    await conn.execute(
        """CREATE TABLE courriel_entrant (
            id TEXT PRIMARY KEY,
            recu_ms BIGINT NOT NULL,
            expediteur TEXT NOT NULL,
            adresse TEXT NOT NULL,
            brut TEXT NOT NULL,
            etat TEXT NOT NULL,
            essais INTEGER NOT NULL DEFAULT 0,
            prochain_ms BIGINT NOT NULL DEFAULT 0,
            spf TEXT NOT NULL DEFAULT '',
            dkim TEXT NOT NULL DEFAULT ''
        )"""
    )
    await conn.execute("CREATE INDEX courriel_entrant_etat ON courriel_entrant (etat, recu_ms)")
    await conn.execute("CREATE INDEX courriel_entrant_expediteur ON courriel_entrant (expediteur, recu_ms)")
    await conn.execute(
        """CREATE TABLE courriel_message (
            room_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            racine TEXT NOT NULL,
            sujet TEXT NOT NULL,
            titre TEXT NOT NULL,
            correspondant TEXT NOT NULL,
            adresse TEXT NOT NULL,
            recu_ms BIGINT NOT NULL,
            PRIMARY KEY (room_id, message_id)
        )"""
    )
    await conn.execute("CREATE INDEX courriel_message_racine ON courriel_message (room_id, racine)")
    await conn.execute("CREATE INDEX courriel_message_evenement ON courriel_message (event_id)")
    await conn.execute(
        """CREATE TABLE courriel_sortant (
            event_id TEXT PRIMARY KEY,
            room_id TEXT NOT NULL,
            racine TEXT NOT NULL,
            message_id TEXT NOT NULL,
            contenu TEXT NOT NULL,
            etat TEXT NOT NULL,
            essais INTEGER NOT NULL DEFAULT 0,
            prochain_ms BIGINT NOT NULL DEFAULT 0,
            cree_ms BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX courriel_sortant_etat ON courriel_sortant (etat, cree_ms)")


tables.register(_initial, description="Mailboxes, messages received, messages seen in rooms")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Received:
    id: str
    received_ms: int
    sender: str
    address: str
    raw: bytes
    attempts: int
    spf: str = ""
    dkim: str = ""


@dataclass(frozen=True)
class Seen:
    """A mail message in a room: its event, its thread's root event, its subject, correspondent."""

    room_id: str
    message_id: str
    event_id: str
    root: str
    subject: str  # folded (lower case, without « Re: »): what threads compare
    title: str  # as written: what a reply's subject repeats
    correspondent: str
    address: str


@dataclass(frozen=True)
class Outgoing:
    event_id: str
    room_id: str
    root: str
    message_id: str
    content: dict[str, Any]
    attempts: int
    created_ms: int = 0


class MailStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- mailboxes -------------------------------------------------------------------------

    async def room_of(self, address: str) -> str | None:
        room = await self.db.fetchval("SELECT room_id FROM courriel_adresse WHERE adresse=$1", address)
        return str(room) if room else None

    async def addresses_of(self, room_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT adresse FROM courriel_adresse WHERE room_id=$1 ORDER BY adresse", room_id)
        return [str(row["adresse"]) for row in rows]

    async def set_addresses(self, room_id: str, addresses: list[str]) -> list[str]:
        """The room's addresses as its state now says; those another room holds already are not
        taken (the first claim stands), and returned."""
        held_elsewhere = []
        async with transaction(self.db) as conn:
            await conn.execute("DELETE FROM courriel_adresse WHERE room_id=$1", room_id)
            for address in addresses:
                holder = await conn.fetchval("SELECT room_id FROM courriel_adresse WHERE adresse=$1", address)
                if holder is None:
                    await conn.execute("INSERT INTO courriel_adresse (adresse, room_id) VALUES ($1, $2)",
                                       address, room_id)
                else:
                    held_elsewhere.append(address)
        return held_elsewhere

    # --- messages received -----------------------------------------------------------------

    async def accept(self, sender: str, addresses: list[str], raw: bytes, spf: str = "", dkim: str = "") -> list[str]:
        """Stored for each recipient address, in one transaction: after this the 250 may go."""
        encoded = base64.b64encode(raw).decode()
        ids = []
        async with transaction(self.db) as conn:
            for address in addresses:
                message_id = f"{now_ms():013d}-{secrets.token_hex(6)}"
                await conn.execute(
                    "INSERT INTO courriel_entrant (id, recu_ms, expediteur, adresse, brut, etat, spf, dkim)"
                    " VALUES ($1, $2, $3, $4, $5, 'a_livrer', $6, $7)", message_id, now_ms(), sender, address,
                    encoded, spf, dkim)
                ids.append(message_id)
        return ids

    async def accepted_since(self, sender: str, since_ms: int) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM courriel_entrant WHERE expediteur=$1 AND recu_ms >= $2", sender, since_ms) or 0)

    async def to_deliver(self, limit: int = 20) -> list[Received]:
        rows = await self.db.fetch(
            "SELECT id, recu_ms, expediteur, adresse, brut, essais, spf, dkim FROM courriel_entrant"
            " WHERE etat='a_livrer' AND prochain_ms <= $1 ORDER BY recu_ms, id LIMIT $2", now_ms(), limit)
        return [Received(str(r["id"]), int(r["recu_ms"]), str(r["expediteur"]), str(r["adresse"]),
                         base64.b64decode(str(r["brut"])), int(r["essais"]), str(r["spf"]), str(r["dkim"]))
                for r in rows]

    async def delivered(self, received_id: str, seen: Seen | None) -> None:
        """Marked delivered with what it became in the room, at once (a crash redelivers it whole)."""
        async with transaction(self.db) as conn:
            if seen is not None:
                await _remember(conn, seen)
            await conn.execute("UPDATE courriel_entrant SET etat='livre', brut='' WHERE id=$1", received_id)

    async def later(self, received_id: str, attempts: int, delay_ms: int) -> None:
        await self.db.execute("UPDATE courriel_entrant SET essais=$2, prochain_ms=$3 WHERE id=$1",
                              received_id, attempts, now_ms() + delay_ms)

    # --- messages going out ------------------------------------------------------------------

    async def queue(self, outgoing: Outgoing, seen: Seen) -> bool:
        """Queued once per event (a replayed event finds it there), with its Message-ID in the
        thread at once, so the correspondent's answer finds its way back; False if known."""
        async with transaction(self.db) as conn:
            if await conn.fetchval("SELECT 1 FROM courriel_sortant WHERE event_id=$1", outgoing.event_id):
                return False
            await conn.execute(
                "INSERT INTO courriel_sortant (event_id, room_id, racine, message_id, contenu, etat, cree_ms)"
                " VALUES ($1, $2, $3, $4, $5, 'a_envoyer', $6)", outgoing.event_id, outgoing.room_id,
                outgoing.root, outgoing.message_id, json.dumps(outgoing.content), now_ms())
            await _remember(conn, seen)
        return True

    async def to_send(self, limit: int = 20) -> list[Outgoing]:
        rows = await self.db.fetch(
            "SELECT event_id, room_id, racine, message_id, contenu, essais, cree_ms FROM courriel_sortant"
            " WHERE etat='a_envoyer' AND prochain_ms <= $1 ORDER BY cree_ms LIMIT $2", now_ms(), limit)
        return [Outgoing(str(r["event_id"]), str(r["room_id"]), str(r["racine"]), str(r["message_id"]),
                         json.loads(str(r["contenu"])), int(r["essais"]), int(r["cree_ms"])) for r in rows]

    async def sent(self, event_id: str, state: str = "envoye") -> None:
        await self.db.execute("UPDATE courriel_sortant SET etat=$2, contenu='{}' WHERE event_id=$1", event_id, state)

    async def send_later(self, event_id: str, attempts: int, delay_ms: int) -> None:
        await self.db.execute("UPDATE courriel_sortant SET essais=$2, prochain_ms=$3 WHERE event_id=$1",
                              event_id, attempts, now_ms() + delay_ms)

    # --- threads ---------------------------------------------------------------------------

    async def remember(self, seen: Seen) -> None:
        async with transaction(self.db) as conn:
            await _remember(conn, seen)

    async def thread(self, room_id: str, root: str) -> list[Seen]:
        """The mail messages of a thread, oldest first."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM courriel_message WHERE room_id=$1 AND racine=$2 ORDER BY recu_ms", room_id, root)
        return [_seen(row) for row in rows]

    async def seen(self, room_id: str, message_ids: list[str]) -> Seen | None:
        """The most recent of these messages known in the room (a reply's In-Reply-To, References)."""
        for message_id in reversed(message_ids):
            row = await self.db.fetchrow(
                f"SELECT {_COLUMNS} FROM courriel_message WHERE room_id=$1 AND message_id=$2", room_id, message_id)
            if row is not None:
                return _seen(row)
        return None

    async def by_subject(self, room_id: str, subject: str, correspondent: str, since_ms: int) -> Seen | None:
        """The latest thread with this subject and correspondent (a client that drops References)."""
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM courriel_message WHERE room_id=$1 AND sujet=$2 AND correspondant=$3"
            " AND recu_ms >= $4 ORDER BY recu_ms DESC LIMIT 1", room_id, subject, correspondent, since_ms)
        return _seen(row) if row is not None else None


_COLUMNS = "room_id, message_id, event_id, racine, sujet, titre, correspondant, adresse"


def _seen(row: Any) -> Seen:
    return Seen(str(row["room_id"]), str(row["message_id"]), str(row["event_id"]), str(row["racine"]),
                str(row["sujet"]), str(row["titre"]), str(row["correspondant"]), str(row["adresse"]))


async def _remember(conn: Connection, seen: Seen) -> None:
    await conn.execute(
        "INSERT INTO courriel_message (room_id, message_id, event_id, racine, sujet, titre, correspondant, adresse,"
        " recu_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (room_id, message_id) DO NOTHING",
        seen.room_id, seen.message_id, seen.event_id, seen.root, seen.subject, seen.title, seen.correspondent,
        seen.address, now_ms())
