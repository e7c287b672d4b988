"""Tasks as standard iCalendar VTODO (RFC 5545), as Thunderbird, Tasks.org/DAVx5 and
Nextcloud Tasks read and write them.

- status: ``STATUS`` NEEDS-ACTION (à faire), IN-PROCESS (en cours), COMPLETED (faite,
  with ``COMPLETED`` and ``PERCENT-COMPLETE:100``), CANCELLED (abandonnée);
- deadline: ``DUE`` (a date, or a time in the collectivité's zone);
- priority: ``PRIORITY`` 1 (haute), 5 (normale), 9 (basse), as those apps map it;
- assignee: an ``ATTENDEE`` with the agent's Matrix URI (``matrix:u/alice:mairie.fr``)
  and their id as ``CN``;
- subtask: ``RELATED-TO;RELTYPE=PARENT`` naming the parent's UID.

A task is changed where it lies: the VTODO read from the server, only the fields the
command changes set, written back with ``If-Match`` — whatever another app put in it
(categories, alarms, its own X- properties) stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from icalendar import Calendar as ICalendar
from icalendar import Todo

from maillage.bots.agenda.events import as_local, one_line, spoken_day

PRODID = "-//Maillage//Projets//FR"
OBJECTIVE = "X-MAILLAGE-OBJECTIF"  # an objective is a VTODO too, marked, and « Objectif » in CATEGORIES
OPEN = ("NEEDS-ACTION", "IN-PROCESS")
PRIORITIES = {"haute": 1, "high": 1, "urgente": 1, "normale": 5, "normal": 5, "moyenne": 5, "basse": 9, "low": 9}


def task_of(data: str) -> Todo | None:
    """The item's VTODO, or None (not a task, or not readable)."""
    try:
        calendar = ICalendar.from_ical(data)
    except ValueError:
        return None
    todos = [c for c in calendar.walk("VTODO") if isinstance(c, Todo)]
    return todos[0] if todos else None


def as_calendar(todo: Todo) -> str:
    calendar = ICalendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add_component(todo)
    calendar.add_missing_timezones()
    return str(calendar.to_ical().decode())


def matrix_uri(user_id: str) -> str:
    return "matrix:u/" + user_id.removeprefix("@")


def assignee_of(todo: Todo) -> str:
    """The agent the task is assigned to (its Matrix id), or ""."""
    attendees = todo.get("attendee")
    for attendee in attendees if isinstance(attendees, list) else [attendees] if attendees else []:
        address = str(attendee)
        if address.startswith("matrix:u/"):
            return "@" + address.removeprefix("matrix:u/")
    return ""


def set_assignee(todo: Todo, user_id: str) -> None:
    """The Matrix assignee replaced; other attendees (set in another app) kept."""
    attendees = todo.get("attendee")
    kept = [a for a in (attendees if isinstance(attendees, list) else [attendees] if attendees else [])
            if not str(a).startswith("matrix:u/")]
    todo.pop("attendee", None)
    for attendee in kept:
        todo.add("attendee", attendee)
    if user_id:
        todo.add("attendee", matrix_uri(user_id), parameters={"CN": user_id, "ROLE": "REQ-PARTICIPANT"})


def parent_of(todo: Todo) -> str:
    related = todo.get("related-to")
    for relation in related if isinstance(related, list) else [related] if related else []:
        if str(getattr(relation, "params", {}).get("RELTYPE", "PARENT")).upper() == "PARENT":
            return str(relation)
    return ""


def set_status(todo: Todo, status: str, now: datetime) -> None:
    todo["status"] = status
    for name in ("completed", "percent-complete"):
        todo.pop(name, None)
    if status == "COMPLETED":
        todo.add("completed", now.astimezone(UTC))
        todo.add("percent-complete", 100)
    touch(todo, now)


def set_due(todo: Todo, due: date | datetime | None, now: datetime) -> None:
    todo.pop("due", None)
    if due is not None:
        todo.add("due", due)
    touch(todo, now)


def touch(todo: Todo, now: datetime) -> None:
    """What every client uses to know a task changed."""
    for name in ("dtstamp", "last-modified"):
        todo.pop(name, None)
        todo.add(name, now.astimezone(UTC))
    todo["sequence"] = int(todo.get("sequence", 0)) + 1


@dataclass(frozen=True)
class Task:
    """A task as rooms see it (the index's row)."""

    uid: str
    href: str
    summary: str
    status: str
    due: datetime | None  # in the zone; a due date alone: its midnight
    due_is_date: bool
    priority: int
    assignee: str
    parent: str
    objective: bool = False
    description: str = ""
    completed: datetime | None = None  # when it was done, in the zone

    @classmethod
    def of(cls, todo: Todo, href: str, zone: ZoneInfo) -> Task:
        raw_due = todo.decoded("due") if todo.get("due") else None
        raw_completed = todo.decoded("completed") if todo.get("completed") else None
        try:
            priority = int(todo.get("priority", 0))
        except (TypeError, ValueError):
            priority = 0
        return cls(str(todo.get("uid", href)), href, str(todo.get("summary", "")),
                   str(todo.get("status", "NEEDS-ACTION")).upper(),
                   as_local(raw_due, zone) if raw_due is not None else None,
                   raw_due is not None and not isinstance(raw_due, datetime), priority, assignee_of(todo),
                   parent_of(todo), str(todo.get(OBJECTIVE, "")).upper() == "TRUE",
                   str(todo.get("description", "")),
                   as_local(raw_completed, zone) if isinstance(raw_completed, datetime) else None)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def late(self, now: datetime) -> bool:
        if not self.is_open or self.due is None:
            return False
        return self.due.date() < now.date() if self.due_is_date else self.due < now


def spoken_due(task: Task) -> str:
    assert task.due is not None
    day = spoken_day(task.due.date())
    return day if task.due_is_date else f"{day}, {task.due:%H:%M}"


def shown_title(task: Task) -> str:
    return one_line(task.summary)
