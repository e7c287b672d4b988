"""A project's state, told and drawn: for ``!projet état`` and the weekly summary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maillage.bots.projets.chart import Progress, progress_chart
from maillage.bots.projets.state import done_per_week, project_state
from maillage.bots.projets.tasks import Task, shown_title, spoken_due
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.projets.bot import ProjetsBot


@dataclass(frozen=True)
class Report:
    text: str  # one line per objective, after the heading
    picture: bytes  # PNG
    width: int
    height: int
    tasks: list[Task]

    @property
    def info(self) -> dict[str, Any]:
        return {"w": self.width, "h": self.height}

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.picture


async def state_report(bot: ProjetsBot, room_id: str, list_id: str, heading: str = "projet.state") -> Report | None:
    """Progress per objective (done/total, late, next deadline) and its chart; None for an empty project."""
    tasks = await bot.index.tasks(list_id)
    if tasks is None:  # not read whole yet: read it now
        await bot.follow(list_id)
        tasks = await bot.index.tasks(list_id) or []
    now = bot.now()
    lines, bars = [], []
    for state in project_state(tasks, now):
        objective = state.objective
        title = shown_title(objective) if objective else t("projet.no_objective")
        line = t("projet.state_line", title=title, done=state.done, total=state.total)
        if objective is not None:
            line = f"n°{await bot.numbers.of(room_id, objective.uid, objective.href)} — " + line
            if objective.due is not None:
                line += " · " + t("projet.due", when=spoken_due(objective))
        if state.late:
            line += " · " + t("projet.state_late", count=len(state.late))
        if state.next_due is not None:
            line += " · " + t("projet.state_next", when=spoken_due(state.next_due))
        lines.append(("⚠ " if state.late else "– ") + line)
        bars.append(Progress(title, state.done, len(state.late), state.open))
    if not lines:
        return None
    name = await bot.room_name(room_id) or list_id
    picture, width, height = progress_chart(name, bars, done_per_week(tasks, now))
    return Report(t(heading, name=name) + "\n" + "\n".join(lines), picture, width, height, tasks)
