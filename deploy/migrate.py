"""``maillage migre-postgresql``: a commune that outgrows the embedded default moves its stack
from SQLite to PostgreSQL, then runs the scaled profile.

Synapse's own database goes through Synapse's ``synapse_port_db`` (resumable: run again
after an interruption, it carries on). Maillage's own databases — the bots', the bridge's,
the portal's — are made on PostgreSQL by their own migrations (every table at its latest
version), then filled with the SQLite rows, table by table in foreign-key order, converting
what SQLite stores loosely (booleans as 0/1, dates as text); sequences follow. Each copy is one
transaction: interrupted, it is simply made again. The SQLite files are left untouched.

At the end ``[deploiement] profil`` becomes « reparti » in maillage.toml (its comments kept).
"""

from __future__ import annotations

import asyncio
import datetime
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from maillage.config import Config, with_profile
from maillage.deploy.backup import postgresql_databases
from maillage.deploy.scaled import ensure_databases, postgres_connection, scaled_servers_problem
from maillage.homeserver.render import render_synapse
from maillage.homeserver.workers import database_name
from maillage.i18n import t
from maillage.secretstore import Secrets


class MigrationError(Exception):
    """The migration cannot go on: what and what to do (French)."""


def sqlite_sources(config: Config) -> dict[str, Path]:
    return {"synapse": config.data_dir / "synapse" / "homeserver.db", "bots": config.data_dir / "bots" / "bots.db",
            "courriel": config.data_dir / "courriel" / "courriel.db",
            "portail": config.data_dir / "portail" / "portail.db"}


def migrate_to_postgresql(config: Config, secrets: Secrets, report: Callable[[str], None]) -> Config:
    """Every SQLite database of the stack copied into PostgreSQL; the scaled config."""
    scaled = with_profile(config, "reparti")
    problem = scaled_servers_problem(scaled, secrets)
    if problem:
        raise MigrationError(problem)
    sources = sqlite_sources(config)
    if not sources["synapse"].exists():
        raise MigrationError(t("migrate.nothing", path=sources["synapse"]))
    ensure_databases(scaled, secrets)
    targets = {database.part: database.url for database in postgresql_databases(scaled)}
    report(t("migrate.synapse"))
    _finish_background_updates(config, secrets)
    _port_synapse(scaled, secrets, sources["synapse"])
    _align_sequences(scaled, secrets)
    for part in ("bots", "courriel", "portail"):
        if sources[part].exists():
            report(t("migrate.part", part=part))
            copied = asyncio.run(_copy_part(part, sources[part], targets[part]))
            report(t("migrate.copied", part=part, rows=copied))
    return scaled


def _finish_background_updates(config: Config, secrets: Secrets) -> None:
    """Synapse's background updates of the SQLite database run to their end (synapse_port_db
    refuses a database with updates pending: a stack stopped soon after an upgrade has some)."""
    rendered = render_synapse(with_profile(config, "simple"), secrets)
    _synapse_script("update_synapse_database", ["--database-config", str(rendered.config_file),
                                                "--run-background-updates"])


def _synapse_script(name: str, arguments: list[str]) -> None:
    script = Path(sys.executable).with_name(name)
    done = subprocess.run([str(script), *arguments], capture_output=True, text=True, timeout=24 * 3600)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["?"]
        raise MigrationError(t("migrate.synapse_failed", detail=lines[-1][:300]))


def _port_synapse(scaled: Config, secrets: Secrets, source: Path) -> None:
    rendered = render_synapse(scaled, secrets)  # the scaled homeserver.yaml: its database section
    _synapse_script("synapse_port_db", ["--sqlite-database", str(source), "--postgres-config",
                                        str(rendered.config_file)])


# Synapse's streams and the PostgreSQL sequences that number them (synapse/storage/…).
STREAM_SEQUENCES = {
    "events": "events_stream_seq", "to_device": "device_inbox_sequence", "account_data": "account_data_sequence",
    "receipts": "receipts_sequence", "presence_stream": "presence_stream_sequence",
    "device_lists_stream": "device_lists_sequence", "push_rules_stream": "push_rules_stream_sequence",
    "pushers": "pushers_sequence", "thread_subscriptions": "thread_subscriptions_sequence",
    "un_partial_stated_event_stream": "un_partial_stated_event_stream_sequence",
    "un_partial_stated_room_stream": "un_partial_stated_room_stream_sequence",
    "profile_updates": "profile_updates_sequence", "sticky_events": "sticky_events_sequence",
}


def _align_sequences(scaled: Config, secrets: Secrets) -> None:
    """Each sequence at least at its stream's recorded position, its last value marked as
    given out.

    - On SQLite a stream position may pass the highest id in the stream's own table
      (to-device messages sent to other servers count too), and Synapse on PostgreSQL
      refuses to start when a sequence lags behind it.
    - synapse_port_db leaves a sequence « not yet called » at the next free id, but a writer
      starting on PostgreSQL takes the sequence's ``last_value`` as its current position
      (``MultiWriterIdGenerator._load_current_ids``): the next id handed out would equal the
      position already announced, so the first event written after the move would never reach
      any sync (seen: the first command after a migration went unanswered, for ever). Marked
      as given out, that id becomes a gap, which streams allow."""
    connection = postgres_connection(scaled, secrets, database_name(scaled, "synapse"))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for stream, sequence in STREAM_SEQUENCES.items():
                cursor.execute("SELECT to_regclass(%s)", (sequence,))
                row = cursor.fetchone()
                if row is None or row[0] is None:
                    continue
                cursor.execute("SELECT MAX(stream_id) FROM stream_positions WHERE stream_name = %s", (stream,))
                position = (cursor.fetchone() or [None])[0] or 0
                cursor.execute(f"SELECT setval(%s, GREATEST(%s, (SELECT last_value FROM {sequence})), true)",
                               (sequence, position))
    finally:
        connection.close()


async def _make_schema(part: str, url: str) -> None:
    """The part's tables at their latest version, by its own migrations."""
    if part == "portail":
        from maillage.portal.db import migrate

        await asyncio.to_thread(migrate, url.replace("postgresql://", "postgresql+psycopg2://", 1))
        return
    from maillage.bots.runtime.bot import open_database

    if part == "bots":
        from maillage.bots.main import BOTS as classes
    else:
        from maillage.bridges.email.bot import CourrielBot
        classes = [CourrielBot]
    db = await open_database(url, classes)
    await db.stop()


async def _copy_part(part: str, source: Path, url: str) -> int:
    await _make_schema(part, url)
    return await copy_rows(source, url)


async def copy_rows(source: Path, url: str) -> int:
    """Every row of the SQLite file into the PostgreSQL database of the same schema; rows copied."""
    connection = await asyncpg.connect(url)
    try:
        tables = await _tables_in_order(connection)
        columns = await _column_types(connection)
        copied = 0
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as lite:
            present = {row[0] for row in lite.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            await _same_versions(connection, lite, [t for t in tables if t in present and t.endswith("version")])
            async with connection.transaction():
                for table in reversed(tables):
                    await connection.execute(f'DELETE FROM "{table}"')
                for table in tables:
                    if table not in present:
                        continue
                    source_columns = [row[1] for row in lite.execute(f'PRAGMA table_info("{table}")')]
                    shared = [c for c in source_columns if c in columns[table]]
                    rows = lite.execute(f'SELECT {", ".join(_q(c) for c in shared)} FROM "{table}"').fetchall()
                    converters = [_converter(columns[table][c]) for c in shared]
                    records = [tuple(convert(value) for convert, value in zip(converters, row, strict=True))
                               for row in rows]
                    if records:
                        await connection.copy_records_to_table(table, records=records, columns=shared)
                    copied += len(records)
                await _follow_sequences(connection)
        return copied
    finally:
        await connection.close()


async def _same_versions(connection: asyncpg.Connection, lite: sqlite3.Connection, tables: list[str]) -> None:
    """The SQLite file at the schema versions this release makes (else the copy would claim
    versions its tables do not have): the stack must have run once with this release."""
    for table in tables:
        here = sorted(tuple(str(v) for v in row) for row in lite.execute(f'SELECT * FROM "{table}"'))
        rows = await connection.fetch(f'SELECT * FROM "{table}"')
        there = sorted(tuple(str(v) for v in row.values()) for row in rows)
        if here != there:
            raise MigrationError(t("migrate.versions_differ", table=table))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _tables_in_order(connection: asyncpg.Connection) -> list[str]:
    """The public tables, each after those its foreign keys point to."""
    tables = [r["table_name"] for r in await connection.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema='public' AND table_type='BASE TABLE'"
        " ORDER BY table_name")]
    needs: dict[str, set[str]] = {table: set() for table in tables}
    for row in await connection.fetch(
            "SELECT tc.table_name AS child, ccu.table_name AS parent FROM information_schema.table_constraints tc"
            " JOIN information_schema.constraint_column_usage ccu ON tc.constraint_name = ccu.constraint_name"
            " WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = 'public'"):
        if row["child"] != row["parent"] and row["child"] in needs:
            needs[row["child"]].add(row["parent"])
    ordered: list[str] = []
    while needs:
        ready = sorted(table for table, parents in needs.items() if not parents - set(ordered))
        if not ready:  # a cycle: the rest in name order (their constraints checked at commit)
            ready = sorted(needs)
        for table in ready:
            ordered.append(table)
            del needs[table]
    return ordered


async def _column_types(connection: asyncpg.Connection) -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = {}
    for row in await connection.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema='public'"):
        types.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
    return types


def _converter(data_type: str) -> Callable[[Any], Any]:
    """What SQLite keeps loosely, as PostgreSQL's column wants it."""
    if data_type == "boolean":
        return lambda v: None if v is None else bool(v)
    if data_type.startswith("timestamp"):
        aware = "with time zone" in data_type
        return lambda v: _timestamp(v, aware)
    if data_type == "date":
        return lambda v: datetime.date.fromisoformat(v) if isinstance(v, str) else v
    if data_type == "bytea":
        return lambda v: v.encode() if isinstance(v, str) else v
    if data_type in ("integer", "bigint", "smallint"):
        return lambda v: int(v) if isinstance(v, str) and re.fullmatch(r"-?\d+", v) else v
    if data_type in ("text", "character varying"):
        return lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else (
            str(v) if v is not None and not isinstance(v, str) else v)
    return lambda v: v


def _timestamp(value: Any, aware: bool) -> Any:
    if not isinstance(value, str):
        return value
    parsed = datetime.datetime.fromisoformat(value)
    if aware and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    if not aware and parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.UTC).replace(tzinfo=None)
    return parsed


async def _follow_sequences(connection: asyncpg.Connection) -> None:
    """Serial columns continue after the copied rows."""
    for row in await connection.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema='public'"
            " AND column_default LIKE 'nextval(%'"):
        table, column = row["table_name"], row["column_name"]
        await connection.execute(
            f"SELECT setval(pg_get_serial_sequence('{_q(table)}', '{column}'),"
            f" COALESCE((SELECT MAX({_q(column)}) FROM {_q(table)}), 0) + 1, false)")


def set_scaled_profile(path: Path) -> None:
    """``[deploiement] profil = "reparti"`` in the file, its comments and layout kept."""
    text = path.read_text("utf-8")
    section = re.search(r"^\[deploiement\]\s*$", text, flags=re.M)
    if section is None:
        text = text.rstrip("\n") + '\n\n[deploiement]\nprofil = "reparti"\n'
    else:
        start = section.end()
        following = re.search(r"^\[", text[start:], flags=re.M)
        end = start + following.start() if following else len(text)
        body = text[start:end]
        if re.search(r"^profil\s*=", body, flags=re.M):
            body = re.sub(r'^profil\s*=.*$', 'profil = "reparti"', body, count=1, flags=re.M)
        else:
            body = '\nprofil = "reparti"' + body
        text = text[:start] + body + text[end:]
    path.write_text(text, "utf-8")
