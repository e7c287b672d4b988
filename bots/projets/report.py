"""A project's state, told and drawn: for ``!projet état`` and the weekly summary."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from maillage.bots.projets.chart import Progress, progress_chart
from maillage.bots.projets.state import done_per_week, project_state
from maillage.bots.projets.tasks import Task, shown_title, spoken_due
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.projets.bot import ProjetsBot

KEPT_CHARTS = 200


@dataclass(frozen=True)
class Uploaded:
    media: dict[str, Any]  # the message content's ``url`` or ``file`` (encrypted) part
    size: int
    width: int
    height: int


class UploadedCharts:
    """The last charts uploaded, per room and drawing: an ``état`` asked again while the numbers
    have not changed sends the same file again (in that room only: an encrypted file's key
    goes only where it was sent) instead of drawing and uploading it anew."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, str], Uploaded] = OrderedDict()

    def get(self, room_id: str, drawing: str) -> Uploaded | None:
        found = self._kept.get((room_id, drawing))
        if found is not None:
            self._kept.move_to_end((room_id, drawing))
        return found

    def keep(self, room_id: str, drawing: str, uploaded: Uploaded) -> None:
        self._kept[(room_id, drawing)] = uploaded
        while len(self._kept) > KEPT_CHARTS:
            self._kept.popitem(last=False)


@dataclass(frozen=True)
class Report:
    name: str  # the project's (its room's)
    text: str  # the heading, then one line per objective
    bars: list[Progress]
    weeks: list[tuple[date, int]]
    tasks: list[Task]


async def post_report(bot: ProjetsBot, room_id: str, about: str, report: Report, text: Awaitable[Any], *,
                      relation: dict[str, Any] | None) -> None:
    """The text (``text``, being sent) and the chart, drawn and uploaded while the text goes."""
    drawing = repr((report.name, report.bars, report.weeks))

    async def uploaded() -> Uploaded:
        known = bot.charts.get(room_id, drawing)
        if known is not None:
            return known
        picture, width, height = await asyncio.to_thread(progress_chart, report.name, report.bars, report.weeks)

        async def chunks() -> AsyncIterator[bytes]:
            yield picture

        media = await bot.upload_for(room_id, chunks(), size=len(picture), filename=t("projet.chart_file"),
                                     mimetype="image/png")
        bot.charts.keep(room_id, drawing, Uploaded(media, len(picture), width, height))
        return Uploaded(media, len(picture), width, height)

    async def posted() -> None:
        chart = await uploaded()
        await bot.post_uploaded(room_id, about, chart.media, size=chart.size, filename=t("projet.chart_file"),
                                mimetype="image/png", msgtype="m.image",
                                info={"w": chart.width, "h": chart.height}, key="graphique", relation=relation)

    # Both answer the command: the chart goes as soon as it is uploaded, not after the table
    # (a chart already uploaded for these figures may then arrive a moment before its table).
    await asyncio.gather(text, posted())


async def state_report(bot: ProjetsBot, room_id: str, list_id: str, heading: str = "projet.state") -> Report | None:
    """Progress per objective (done/total, late, next deadline) and its chart; None for an empty project."""
    tasks = await bot.index.tasks(list_id)
    if tasks is None:  # not read whole yet: read it now
        await bot.follow(list_id)
        tasks = await bot.index.tasks(list_id) or []
    now = bot.now()
    lines, bars = [], []
    states = project_state(tasks, now)
    objectives = [state.objective for state in states if state.objective is not None]
    numbers = dict(zip([objective.uid for objective in objectives], await bot.numbers.of_many(
        room_id, [(objective.uid, objective.href) for objective in objectives]), strict=True))
    for state in states:
        objective = state.objective
        title = shown_title(objective) if objective else t("projet.no_objective")
        line = t("projet.state_line", title=title, done=state.done, total=state.total)
        if objective is not None:
            line = f"n°{numbers[objective.uid]} — " + line
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
    return Report(name, t(heading, name=name) + "\n" + "\n".join(lines), bars, done_per_week(tasks, now), tasks)
