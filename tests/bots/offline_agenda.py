"""@agenda with its servers replaced by small in-memory fakes, for property tests.

The bot's own code runs unchanged from the message text to its answer (``Bot._dispatch``),
on a real SQLite database with its real tables; only the ports are fakes: the CalDAV
server (a dict of items), the room (its binding state, members, power) and the media
repository.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from mautrix.types import EventID, EventType, MessageEvent, MessageType, RoomID, TextMessageEventContent, UserID
from mautrix.util.async_db import Database

from maillage.bots.agenda.bot import AgendaBot
from maillage.bots.agenda.reminders import Reminders
from maillage.bots.caldav.bot import RoomNumbers
from maillage.bots.caldav.client import CalDav, CalDavError, Calendar, Changes, Item
from maillage.bots.caldav.watch import CalendarWatcher
from maillage.bots.runtime.binding import RoomBindings
from maillage.bots.runtime.bot import BotContext
from maillage.bots.runtime.metrics import Metrics
from maillage.bots.runtime.store import upgrade_table
from maillage.config import parse_config

ROOM = "!salle:localhost"
AGENT = "@claire.martin:localhost"
CALENDAR = "service"


class FakeCalDav(CalDav):
    """One calendar, ``service``, in memory; ids and hrefs checked as the real client does."""

    def __init__(self) -> None:
        super().__init__("http://dav.invalid/maillage/", "maillage", "secret")
        self.items: dict[str, Item] = {}
        self.names = {CALENDAR: "Service"}

    async def calendars(self) -> list[Calendar]:
        return [Calendar(key, name, frozenset({"VEVENT"})) for key, name in sorted(self.names.items())]

    async def calendar(self, calendar_id: str) -> Calendar | None:
        self.calendar_url(calendar_id)  # raises on an id the real client would refuse
        return next((c for c in await self.calendars() if c.id == calendar_id), None)

    async def make_calendar(self, calendar_id: str, name: str, component: str = "VEVENT") -> None:
        self.calendar_url(calendar_id)
        if calendar_id in self.names:
            raise CalDavError("MKCALENDAR", calendar_id, 405)
        self.names[calendar_id] = name

    async def put(self, href: str, data: str, etag: str | None = None) -> str:
        self.item_url(href)
        current = self.items.get(href)
        if (etag is None and current is not None) or (etag is not None and (current is None or current.etag != etag)):
            raise CalDavError("PUT", href, 412)
        new_etag = '"' + hashlib.sha256(data.encode()).hexdigest()[:16] + '"'
        self.items[href] = Item(href, new_etag, data)
        return new_etag

    async def get(self, href: str) -> Item | None:
        self.item_url(href)
        return self.items.get(href)

    async def delete(self, href: str, etag: str | None = None) -> None:
        self.items.pop(href, None)

    async def between(self, calendar_id: str, start: datetime, end: datetime, component: str = "VEVENT") -> list[Item]:
        return list(self.items.values())

    async def everything(self, calendar_id: str, component: str = "VEVENT") -> list[Item]:
        return list(self.items.values())

    async def several(self, calendar_id: str, hrefs: list[str]) -> list[Item]:
        return [self.items[href] for href in hrefs if href in self.items]

    async def changes(self, calendar_id: str, token: str) -> Changes:
        return Changes("t", [(item.href, item.etag) for item in self.items.values()], [])


class FakeMedia:
    async def upload(self, chunks: AsyncIterator[bytes], **kwargs: object) -> str:
        async for _ in chunks:
            pass
        return "mxc://localhost/media"


class FakeStateStore:
    async def is_encrypted(self, room_id: str) -> bool:
        return False


class FakeClient:
    """The room: bound to ``service``, the agent and the bot its members."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"calendrier": CALENDAR}
        self.state_store = FakeStateStore()

    async def get_state_event(self, room_id: RoomID, event_type: EventType) -> Any:
        return self.state

    async def send_state_event(self, room_id: RoomID, event_type: EventType, content: Any, **kwargs: Any) -> None:
        if event_type == AgendaBot.binding.event_type:
            self.state = content

    async def get_joined_members(self, room_id: RoomID) -> dict[str, Any]:
        return {AGENT: None, "@agenda:localhost": None}


class OfflineAgendaBot(AgendaBot):
    replies: list[str]

    async def reply(self, event: MessageEvent, body: str, formatted: str | None = None, *,
                    thread_root: str | None = None, key: str = "reponse") -> EventID:
        self.replies.append(body)
        return EventID(f"$reponse{len(self.replies)}")

    async def send_about(self, room_id: str, about: str, content: dict[str, Any], *, key: str,
                         event_type: EventType = EventType.ROOM_MESSAGE) -> EventID:
        if content.get("msgtype") == "m.file":
            self.replies.append("[fichier]")
        else:
            self.replies.append(str(content.get("body", "")))
        return EventID(f"$envoi{len(self.replies)}")

    async def is_room_admin(self, room_id: str, user_id: str, event_type: EventType | None = None) -> bool:
        return True


_CONFIG = parse_config({"collectivite": {"nom": "Mairie de Test", "nom_serveur": "localhost"}},
                       source=Path("maillage.toml"))


class OfflineAgenda:
    """A bot on a fresh SQLite database in ``folder``; ``dispatch(body)`` gives its answers."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "agenda.db"

    async def _bot(self, db: Database) -> OfflineAgendaBot:
        bot = OfflineAgendaBot(BotContext(config=_CONFIG, secrets=cast(Any, None), db=db, metrics=Metrics()))
        bot.replies = []
        bot.client = cast(Any, FakeClient())
        bot.caldav = FakeCalDav()
        bot.media = cast(Any, FakeMedia())
        bot.zone = ZoneInfo("Europe/Paris")
        bot.numbers = RoomNumbers(db, AgendaBot.number_table)
        bot.bindings = RoomBindings(bot, AgendaBot.binding)
        bot.copy = bot.make_copy()
        bot.watcher = CalendarWatcher(bot.caldav, db, "agenda", bot.bound_collections, bot.announce,
                                      bot.announce_batch, 5, copy=bot.copy)
        bot._following = set()
        bot._names = {}
        bot.reminders = Reminders(bot)
        return bot

    def dispatch(self, *bodies: str) -> list[str]:
        """The answers to ``bodies``, sent in turn; an exception here is one the runtime would have
        to catch (the agent would only read « la commande a échoué »)."""
        async def run() -> list[str]:
            db = Database.create(f"sqlite:{self.path}", upgrade_table=upgrade_table)
            await db.start()
            try:
                for table in AgendaBot.tables:
                    await table.upgrade(db)
                bot = await self._bot(db)
                for body in bodies:
                    await bot._dispatch(_message(body, next(_EVENT_NUMBERS)))
                return bot.replies
            finally:
                await db.stop()

        return asyncio.run(run())


_EVENT_NUMBERS = itertools.count(1)


def _message(body: str, number: int) -> MessageEvent:
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body=body)
    return MessageEvent(type=EventType.ROOM_MESSAGE, room_id=RoomID(ROOM), event_id=EventID(f"$commande{number}"),
                        sender=UserID(AGENT), timestamp=1_795_000_000_000, content=content)
