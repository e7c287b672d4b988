"""A project's progress per objective, computed from the index: for ``!projet état`` and for
the read API the portal's dashboards use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from maillage.bots.projets.tasks import Task


@dataclass(frozen=True)
class ObjectiveState:
    objective: Task | None  # None: the tasks that serve no objective
    done: int
    total: int  # cancelled tasks left out
    late: list[Task]
    next_due: Task | None

    @property
    def open(self) -> int:
        return self.total - self.done


def objective_of(task: Task, by_uid: dict[str, Task]) -> str:
    """The UID of the objective a task serves (through its parent tasks), or ""; a loop of
    parents written by another app ends the walk."""
    seen: set[str] = set()
    current = by_uid.get(task.parent)
    while current is not None and current.uid not in seen:
        if current.objective:
            return current.uid
        seen.add(current.uid)
        current = by_uid.get(current.parent)
    return ""


def project_state(tasks: list[Task], now: datetime) -> list[ObjectiveState]:
    """One entry per objective (by deadline), then the tasks without one if there are any."""
    by_uid = {task.uid: task for task in tasks}
    objectives = sorted((task for task in tasks if task.objective),
                        key=lambda task: (task.due is None, task.due or now, task.summary))
    groups: dict[str, list[Task]] = {objective.uid: [] for objective in objectives}
    groups[""] = []
    for task in tasks:
        if not task.objective and task.status != "CANCELLED":
            groups[objective_of(task, by_uid)].append(task)
    states = []
    for objective in [*objectives, None]:
        members = groups[objective.uid if objective else ""]
        if objective is None and not members:
            continue
        coming = sorted((task for task in members if task.is_open and task.due is not None),
                        key=lambda task: task.due or now)
        states.append(ObjectiveState(objective, sum(task.status == "COMPLETED" for task in members), len(members),
                                     [task for task in members if task.late(now)], coming[0] if coming else None))
    return states


def done_per_week(tasks: list[Task], now: datetime, weeks: int = 8) -> list[tuple[date, int]]:
    """Tasks done in each of the last ``weeks`` weeks (Monday to Sunday), the current one last."""
    this_monday = now.date() - timedelta(days=now.weekday())
    mondays = [this_monday - timedelta(weeks=back) for back in range(weeks - 1, -1, -1)]
    counts = dict.fromkeys(mondays, 0)
    for task in tasks:
        if task.status == "COMPLETED" and not task.objective and task.completed is not None:
            monday = task.completed.date() - timedelta(days=task.completed.weekday())
            if monday in counts:
                counts[monday] += 1
    return list(counts.items())
