"""Upgrades: a data directory made by the previous release of every Maillage schema — the bots'
and the bridge's tables one version back, the portal one Alembic revision back — with a row in
every table, brought forward by this release's migrations (what ``maillage up`` runs at start):
every row is still there, every table at its latest version."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from mautrix.util.async_db import Database, UpgradeTable

from maillage.bots.main import BOTS
from maillage.bots.runtime.bot import open_database
from maillage.bots.runtime.store import upgrade_table
from maillage.bridges.email.bot import CourrielBot
from maillage.portal.db import _alembic, latest_revision, migrate

# Tables a migration replaced, and the query that finds their rows where they went.
MOVED = {"projet_direct": "SELECT user_id, room_id FROM maillage_direct_room WHERE bot = 'projets'"}
# Where they went: such a table keeps its own rows and may gain the moved ones.
RECEIVES_MOVED = {"maillage_direct_room"}


def one_release_back(table: UpgradeTable) -> UpgradeTable:
    previous = copy.copy(table)
    previous.upgrades = table.upgrades[:-1] if len(table.upgrades) > 1 else list(table.upgrades)
    return previous


def fill_every_table(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """One row in each table (values of each column's type, unique per table); what was written."""
    written: dict[str, list[tuple[object, ...]]] = {}
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            " AND name NOT LIKE '%version'")]
        for number, table in enumerate(tables):
            columns = db.execute(f'PRAGMA table_info("{table}")').fetchall()
            values = tuple(_value(str(column[2]).upper(), number) for column in columns)
            names = ", ".join(f'"{column[1]}"' for column in columns)
            db.execute(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" for _ in columns)})', values)
            written[table] = db.execute(f'SELECT {names} FROM "{table}"').fetchall()
    return written


def _value(kind: str, number: int) -> object:
    if "INT" in kind or "BOOL" in kind:
        return number + 1
    if "BLOB" in kind or "BYTEA" in kind:
        return f"donnee-{number}".encode()
    return f"valeur-{number}"


async def test_the_bots_and_the_bridge_databases_of_the_previous_release_are_brought_forward_intact(
        tmp_path: Path) -> None:
    for name, classes in (("bots", BOTS), ("courriel", [CourrielBot])):
        path = tmp_path / f"{name}.db"
        tables = [upgrade_table, *dict.fromkeys(t for c in classes for t in c.tables)]
        old = Database.create(f"sqlite:{path}", upgrade_table=one_release_back(upgrade_table))
        await old.start()
        for upgrades in tables[1:]:
            await one_release_back(upgrades).upgrade(old)
        await old.stop()
        before = fill_every_table(path)
        assert len(before) >= 5, before.keys()

        db = await open_database(f"sqlite:{path}", classes)  # what the process does at start
        await db.stop()
        with sqlite3.connect(path) as lite:
            for table, rows in before.items():
                if table in MOVED:
                    assert set(lite.execute(MOVED[table]).fetchall()) >= set(rows), (name, table)
                    continue
                names = ", ".join(f'"{column[1]}"' for column in lite.execute(f'PRAGMA table_info("{table}")'))
                assert names, f"{name}: the table {table} of the previous release is gone"
                now = lite.execute(f'SELECT {names} FROM "{table}"').fetchall()
                if table in RECEIVES_MOVED:
                    assert set(rows) <= set(now), (name, table, rows, now)
                    continue
                assert len(now) == len(rows), (name, table, rows, now)
                for old_row, new_row in zip(rows, now, strict=True):  # columns added at the end only
                    assert new_row[:len(old_row)] == old_row, (name, table, old_row, new_row)
            for upgrades in tables:
                version = lite.execute(f"SELECT version FROM {upgrades.version_table_name}").fetchone()[0]
                assert version == len(upgrades.upgrades), (name, upgrades.version_table_name, version)


def test_the_portal_database_of_the_previous_revision_is_brought_forward_intact(tmp_path: Path) -> None:
    path = tmp_path / "portail.db"
    head = latest_revision()
    previous = ScriptDirectory.from_config(_alembic()).get_revision(head).down_revision
    assert isinstance(previous, str)
    command.upgrade(_alembic(f"sqlite:///{path}"), previous)
    before = fill_every_table(path)
    assert len(before) >= 8, before.keys()
    migrate(f"sqlite:///{path}")  # what the portal does at start
    with sqlite3.connect(path) as lite:
        assert lite.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head
        for table, rows in before.items():
            names = ", ".join(f'"{column[1]}"' for column in lite.execute(f'PRAGMA table_info("{table}")'))
            now = lite.execute(f'SELECT {names} FROM "{table}"').fetchall()
            assert len(now) == len(rows), (table, rows, now)
            for old_row, new_row in zip(rows, now, strict=True):
                assert new_row[:len(old_row)] == old_row, (table, old_row, new_row)
