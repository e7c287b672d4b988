"""The tasks of bound task lists, kept in the bots' database by the change watcher (as
@agenda keeps its occurrences): a listing, « my tasks » across projects and, later, the
portal's dashboards read one table instead of every task on the server."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from mautrix.util.async_db import Connection, Database

from maillage.bots.caldav.client import Item
from maillage.bots.projets.tasks import Task, task_of
from maillage.bots.runtime.store import transaction


async def create_tables(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE projet_task (
            list_id TEXT NOT NULL,
            href TEXT NOT NULL,
            uid TEXT NOT NULL,
            summary TEXT NOT NULL,
            status TEXT NOT NULL,
            due_local TEXT NOT NULL,
            due_is_date INTEGER NOT NULL,
            priority INTEGER NOT NULL,
            assignee TEXT NOT NULL,
            parent TEXT NOT NULL,
            PRIMARY KEY (list_id, href)
        )"""
    )
    await conn.execute("CREATE INDEX projet_task_assignee ON projet_task (assignee)")
    await conn.execute("CREATE TABLE projet_indexed (list_id TEXT PRIMARY KEY)")


async def objectives_column(conn: Connection) -> None:
    await conn.execute("ALTER TABLE projet_task ADD COLUMN objective INTEGER NOT NULL DEFAULT 0")


async def completed_column(conn: Connection) -> None:
    await conn.execute("ALTER TABLE projet_task ADD COLUMN completed_local TEXT NOT NULL DEFAULT ''")
    await conn.execute("DELETE FROM projet_indexed")  # every list read whole again, to fill it


class TaskIndex:
    """The table, and the tasks of each list as last read from it: only the watcher and the
    bot's own writes (both through ``refill`` and ``update``, in this process) change it."""

    def __init__(self, db: Database, zone: ZoneInfo) -> None:
        self.db, self.zone = db, zone
        self._read: dict[str, list[Task]] = {}
        self._changes = 0  # a read that a change overtook is not kept

    async def complete(self, list_id: str) -> bool:
        return bool(await self.db.fetchval("SELECT 1 FROM projet_indexed WHERE list_id=$1", list_id))

    async def refill(self, list_id: str, items: list[Item]) -> None:
        self._forget(list_id)
        async with transaction(self.db) as conn:
            await conn.execute("DELETE FROM projet_task WHERE list_id=$1", list_id)
            await self._insert(conn, list_id, items)
            await conn.execute("INSERT INTO projet_indexed (list_id) VALUES ($1) ON CONFLICT (list_id) DO NOTHING",
                               list_id)
        self._forget(list_id)  # again once committed: a read made meanwhile is not kept

    async def update(self, list_id: str, items: list[Item], removed: list[str]) -> None:
        self._forget(list_id)
        async with transaction(self.db) as conn:
            for href in [item.href for item in items] + removed:
                await conn.execute("DELETE FROM projet_task WHERE list_id=$1 AND href=$2", list_id, href)
            await self._insert(conn, list_id, items)
        self._forget(list_id)

    async def _insert(self, conn: Connection, list_id: str, items: list[Item]) -> None:
        rows = []
        for item in items:
            todo = task_of(item.data)
            if todo is None:
                continue
            task = Task.of(todo, item.href, self.zone)
            rows.append((list_id, item.href, task.uid, task.summary[:500], task.status,
                         task.due.isoformat() if task.due else "", int(task.due_is_date), task.priority,
                         task.assignee, task.parent, int(task.objective),
                         task.completed.isoformat() if task.completed else ""))
        await conn.executemany(
            "INSERT INTO projet_task (list_id, href, uid, summary, status, due_local, due_is_date, priority,"
            " assignee, parent, objective, completed_local)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)", rows)

    async def tasks(self, list_id: str) -> list[Task] | None:
        """Every task of the list (not to be changed: it is kept); None when the list has not been
        read whole yet."""
        if list_id in self._read:
            return self._read[list_id]
        if not await self.complete(list_id):
            return None
        changes = self._changes
        rows = await self.db.fetch(
            "SELECT href, uid, summary, status, due_local, due_is_date, priority, assignee, parent, objective,"
            " completed_local FROM projet_task WHERE list_id=$1", list_id)
        tasks = [Task(str(row["uid"]), str(row["href"]), str(row["summary"]), str(row["status"]),
                      self._local(row["due_local"]), bool(row["due_is_date"]), int(row["priority"]),
                      str(row["assignee"]), str(row["parent"]), bool(row["objective"]),
                      completed=self._local(row["completed_local"])) for row in rows]
        if changes == self._changes:
            self._read[list_id] = tasks
        return tasks

    def _forget(self, list_id: str) -> None:
        self._changes += 1
        self._read.pop(list_id, None)

    def _local(self, stored: object) -> datetime | None:
        return datetime.fromisoformat(str(stored)).astimezone(self.zone) if stored else None
