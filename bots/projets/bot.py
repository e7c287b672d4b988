"""@projets: a room's project as a CalDAV task list (VTODO), used from the room and from
any task app (Thunderbird, Tasks.org with DAVx5, Nextcloud Tasks).

The room's task list is room state (``fr.maillage.projet``, content ``{"liste":
"renovation-ecole"}``), a collection of the bots' calendar home holding VTODOs. Each
task gets a short number in the room, never reused. The client, the change watcher,
numbers and writes are ``CalendarBot``'s, shared with @agenda.

Exactly once: a task made by a command has a UID derived from the command's event id
and is PUT with ``If-None-Match: *``; a change is written with ``If-Match`` on the ETag
read, so a replay after a crash, or another agent's change meanwhile, never makes a
task twice nor loses an update.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from mautrix.types import EventType, MessageEvent
from mautrix.util.async_db import Connection, UpgradeTable

from maillage.bots.agenda.bot import normalise_calendar
from maillage.bots.caldav.bot import CalendarBot
from maillage.bots.caldav.watch import Change
from maillage.bots.caldav.watch import tables as watch_tables
from maillage.bots.projets.comments import create_tables as thread_tables
from maillage.bots.projets.comments import on_thread_message
from maillage.bots.projets.index import TaskIndex, completed_column, objectives_column
from maillage.bots.projets.index import create_tables as index_tables
from maillage.bots.projets.reminders import AssigneeReminders
from maillage.bots.projets.reminders import create_tables as reminder_tables
from maillage.bots.projets.report import UploadedCharts
from maillage.bots.projets.summary import WeeklySummaries
from maillage.bots.projets.summary import create_tables as summary_tables
from maillage.bots.projets.tasks import Task, shown_title, spoken_due, task_of
from maillage.bots.runtime.binding import Binding
from maillage.bots.runtime.commands import CommandError, CommandSet
from maillage.i18n import t

BINDING_EVENT = EventType.find("fr.maillage.projet", t_class=EventType.Class.STATE)
MAX_LISTED = 50

project_commands = CommandSet(("projet", "project"), "le projet du salon, sa liste de tâches CalDAV")
task_commands = CommandSet(("tâche", "tache", "task"), "les tâches du projet du salon")
my_tasks_command = CommandSet(("mes-tâches", "mes-taches", "my-tasks"),
                              "ce qui vous attend dans tous vos projets, depuis n’importe quel salon")

projets_tables = UpgradeTable(version_table_name="maillage_projets_version")


async def _numbers(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE projet_number (
            room_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            uid TEXT NOT NULL,
            href TEXT NOT NULL,
            PRIMARY KEY (room_id, number),
            UNIQUE (room_id, uid)
        )"""
    )


projets_tables.register(_numbers, description="Short numbers of tasks in rooms")
projets_tables.register(index_tables, description="Tasks of the bound lists")
projets_tables.register(objectives_column, description="Objectives among the tasks")
projets_tables.register(reminder_tables, description="Direct rooms with agents, reminders sent")
projets_tables.register(thread_tables, description="The messages opening each task's thread")
projets_tables.register(completed_column, description="When tasks were done, for the chart over time")
projets_tables.register(summary_tables, description="The weekly summary each room chose, and those sent")


async def _shared_direct_rooms(conn: Connection) -> None:
    # The direct rooms moved to the runtime's table, shared by every bot.
    await conn.execute("INSERT INTO maillage_direct_room (bot, user_id, room_id) SELECT 'projets', user_id, room_id"
                       " FROM projet_direct")
    await conn.execute("DROP TABLE projet_direct")


projets_tables.register(_shared_direct_rooms, description="Direct rooms kept in the runtime's table")


def normalise_list(raw: str) -> str:
    """A task list id: one path segment, as a calendar's."""
    try:
        return normalise_calendar(raw)
    except CommandError:
        raise CommandError(t("projet.list_invalid", value=raw[:60])) from None


def uid_for(event_id: str) -> str:
    """The UID of the task a command makes: the same on every attempt at that command."""
    return hashlib.sha256(("tache|" + event_id).encode()).hexdigest()[:32] + "@maillage"


STATUS_WORDS = {"NEEDS-ACTION": "projet.status_todo", "IN-PROCESS": "projet.status_doing",
                "COMPLETED": "projet.status_done", "CANCELLED": "projet.status_cancelled"}
PRIORITY_WORDS = {1: "projet.priority_high", 9: "projet.priority_low"}


class ProjetsBot(CalendarBot):
    localpart = "projets"
    displayname = "Projets"
    title = "Robot Projets — aide"
    commands: ClassVar[list[CommandSet]] = [project_commands, task_commands, my_tasks_command]
    binding = Binding(BINDING_EVENT, "liste", normalise_list, messages="projet",
                      invalid="projet.list_invalid", spaces=True)
    tables = (projets_tables, watch_tables)
    number_table = "projet_number"
    direct_room_name = "projet.reminder_room"
    component = "VTODO"

    index: TaskIndex

    charts: UploadedCharts

    def make_copy(self) -> TaskIndex:
        self.charts = UploadedCharts()
        self.index = TaskIndex(self.context.db, self.zone)
        return self.index

    def background(self) -> list[Any]:
        self.reminders = AssigneeReminders(self)
        self.summaries = WeeklySummaries(self)
        return [self.rounds(self.reminders.tick, "task reminders"),
                self.rounds(self.summaries.tick, "weekly summaries")]

    async def on_message(self, event: MessageEvent) -> None:
        await on_thread_message(self, event)

    async def shown(self, room_id: str, change: Change) -> str | None:
        todo = task_of(change.data)
        if todo is None:
            return None
        task = Task.of(todo, change.href, self.zone)
        return self.describe(await self.numbers.of(room_id, task.uid, change.href), task)

    def describe(self, number: int, task: Task, *, long: bool = False) -> str:
        """« n°3 — Relancer l’architecte · @alice:… · pour vendredi 27 novembre 2026 · en cours »."""
        parts = [f"n°{number} — {shown_title(task)}"]
        if task.assignee:
            parts.append(task.assignee)
        if task.due is not None:
            parts.append(t("projet.due", when=spoken_due(task)))
        if task.priority in PRIORITY_WORDS:
            parts.append(t(PRIORITY_WORDS[task.priority]))
        parts.append(t(STATUS_WORDS.get(task.status, "projet.status_todo")))
        line = " · ".join(parts)
        if long and task.description:
            line += "\n" + task.description[:500]
        return line
