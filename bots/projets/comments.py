"""Comments on a task: a thread per task in the room, kept with the task itself.

The bot's answer about a task (``!tâche ajoute``, ``!tâche détails``, ``!tâche commente``)
opens the task's thread: what agents write in it (or as a reply to that answer) is added
to the VTODO as a standard ``COMMENT`` with its author, date and Matrix event id as
parameters, so the discussion goes wherever the task goes (another CalDAV app, an
export), and the bot acknowledges it with a ✅ reaction rather than a message each time.

Exactly once: the event id in the ``COMMENT`` is looked for before writing, and the
write is an ``If-Match`` on the ETag read; a concurrent change is read again and the
comment added to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from icalendar import Todo
from mautrix.types import EventType, MessageEvent, MessageType
from mautrix.util.async_db import Connection

from maillage.bots.caldav.client import CalDavError
from maillage.bots.projets.tasks import as_calendar, task_of, touch
from maillage.bots.runtime.commands import CommandError
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.projets.bot import ProjetsBot

AUTHOR, EVENT, WHEN = "X-MAILLAGE-AUTEUR", "X-MAILLAGE-EVENEMENT", "X-MAILLAGE-DATE"
MAX_LENGTH = 2000
WRITE_ATTEMPTS = 4


async def create_tables(conn: Connection) -> None:
    # The messages that open a task's thread: the command and the bot's answer.
    await conn.execute("""CREATE TABLE projet_thread (
        room_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        PRIMARY KEY (room_id, event_id)
    )""")


@dataclass(frozen=True)
class Comment:
    author: str
    when: datetime | None
    text: str
    event_id: str


def comments_of(todo: Todo, zone: ZoneInfo) -> list[Comment]:
    """The task's comments in the order written (those another app wrote have no author)."""
    raw = todo.get("comment")
    found = []
    for value in raw if isinstance(raw, list) else [raw] if raw else []:
        params = getattr(value, "params", {})
        try:
            when = datetime.fromisoformat(str(params.get(WHEN, ""))).astimezone(zone)
        except ValueError:
            when = None
        found.append(Comment(str(params.get(AUTHOR, "")), when, str(value), str(params.get(EVENT, ""))))
    return found


async def remember_thread(bot: ProjetsBot, room_id: str, number: int, *event_ids: str) -> None:
    for event_id in event_ids:
        await bot.context.db.execute(
            "INSERT INTO projet_thread (room_id, event_id, number) VALUES ($1, $2, $3)"
            " ON CONFLICT (room_id, event_id) DO NOTHING", room_id, event_id, number)


async def thread_task(bot: ProjetsBot, event: MessageEvent) -> int | None:
    """The number of the task whose thread (or answer) ``event`` is in, if any."""
    for related in (event.content.get_thread_parent(), event.content.get_reply_to()):
        if related:
            number = await bot.context.db.fetchval(
                "SELECT number FROM projet_thread WHERE room_id=$1 AND event_id=$2", event.room_id, related)
            if number is not None:
                return int(number)
    return None


async def on_thread_message(bot: ProjetsBot, event: MessageEvent) -> None:
    """A message in a task's thread: a comment on the task, acknowledged by a ✅."""
    if event.content.msgtype not in (MessageType.TEXT, MessageType.EMOTE):
        return
    number = await thread_task(bot, event)
    if number is None or await bot.bindings.target(event.room_id) is None:
        return
    text = _without_fallback(event.content.body)
    if not text:
        return
    try:
        await add_comment(bot, event, number, text)
    except CommandError as error:  # the task is gone, or the text too long: said in the thread
        await bot.reply(event, str(error))
        return
    await bot.send_about(event.room_id, event.event_id, {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": event.event_id, "key": "✅"}}, key="commentaire",
        event_type=EventType.REACTION)


async def add_comment(bot: ProjetsBot, event: MessageEvent, number: int, text: str) -> None:
    if len(text) > MAX_LENGTH:
        raise CommandError(t("projet.comment_too_long", limit=MAX_LENGTH))
    for _ in range(WRITE_ATTEMPTS):
        list_id, item = await bot.item_numbered(event.room_id, number, "projet.no_such_number")
        todo = task_of(item.data)
        if todo is None:
            raise CommandError(t("projet.no_such_number", number=number))
        if any(comment.event_id == event.event_id for comment in comments_of(todo, bot.zone)):
            return  # written by an earlier attempt at this message
        todo.add("comment", text, parameters={
            AUTHOR: event.sender, EVENT: event.event_id,
            WHEN: datetime.fromtimestamp(event.timestamp / 1000, UTC).isoformat(timespec="seconds")})
        touch(todo, bot.now())
        try:
            await bot.write(list_id, item.href, as_calendar(todo), item.etag or None)
            return
        except CalDavError as error:
            if error.status != 412:
                raise bot.deferred(error) from None
    raise CommandError(t("projet.changed_meanwhile", number=number))


def spoken_comments(todo: Todo, zone: ZoneInfo, shown: int = 10) -> list[str]:
    comments = comments_of(todo, zone)
    if not comments:
        return []
    lines = [t("projet.comments", count=len(comments))]
    if len(comments) > shown:
        lines.append(t("projet.comments_earlier", count=len(comments) - shown))
    for comment in comments[-shown:]:
        when = f"{comment.when:%d/%m %H:%M} " if comment.when else ""
        author = comment.author or t("projet.comment_elsewhere")
        lines.append(f"– {when}{author} : {' '.join(comment.text.split())[:300]}")
    return lines


def _without_fallback(body: str) -> str:
    """A reply's text without the quoted message clients put before it."""
    lines = body.splitlines()
    while lines and lines[0].startswith(">"):
        lines.pop(0)
    return "\n".join(lines).strip()
