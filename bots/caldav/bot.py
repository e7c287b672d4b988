"""What a bot whose rooms are bound to CalDAV collections shares with the others like it.

@agenda (events) and @projets (tasks) each bind a room to a collection of the
CalDAV server by room state. Both need: the client, the change watcher with the
bot's copy of the collections (its index), short numbers of items in rooms, writes
that the watcher does not announce back, binding and creating a collection, and
what to tell an agent when the server refuses or does not answer. They are here,
once; a bot adds its commands, its copy and its announcements.

Messages are the bot's own (``<binding.messages>.caldav_refused`` and so on), so
each speaks of « agenda » or « liste de tâches ».
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from mautrix.errors import MForbidden
from mautrix.types import MessageEvent
from mautrix.util.async_db import Database

from maillage.bots.caldav.client import CalDav, CalDavError, Item
from maillage.bots.caldav.watch import Batch, CalendarWatcher, Change, Copy
from maillage.bots.runtime.bot import Bot, RetryLater
from maillage.bots.runtime.commands import CommandError
from maillage.i18n import t

log = logging.getLogger("maillage.bots.caldav")
ROUND = 20.0


class RoomNumbers:
    """Short numbers of a collection's items in a room (« n°12 »): given once, never reused,
    whoever made the item, so a number always means one item."""

    def __init__(self, db: Database, table: str, numbering: Callable[[str], Awaitable[str]] | None = None) -> None:
        self.db, self.table = db, table
        self.numbering = numbering  # the room whose numbers a room uses (its space's)
        self._giving = asyncio.Lock()  # commands and the watcher both give numbers

    async def _holder(self, room_id: str) -> str:
        return room_id if self.numbering is None else await self.numbering(room_id)

    async def of(self, room_id: str, uid: str, href: str) -> int:
        room_id = await self._holder(room_id)
        async with self._giving:
            number = await self.db.fetchval(f"SELECT number FROM {self.table} WHERE room_id=$1 AND uid=$2",
                                            room_id, uid)
            if number is not None:
                return int(number)
            await self.db.execute(  # the room's next number, in one statement
                f"INSERT INTO {self.table} (room_id, number, uid, href)"
                f" SELECT $1, COALESCE(MAX(number), 0) + 1, $2, $3 FROM {self.table} WHERE room_id=$1",
                room_id, uid, href)
            return int(await self.db.fetchval(f"SELECT number FROM {self.table} WHERE room_id=$1 AND uid=$2",
                                              room_id, uid))

    async def of_many(self, room_id: str, items: list[tuple[str, str]]) -> list[int]:
        """The numbers of many (uid, href) at once (a listing, a state): those known in one read,
        new ones given in the order asked."""
        holder = await self._holder(room_id)
        rows = await self.db.fetch(f"SELECT uid, number FROM {self.table} WHERE room_id=$1", holder)
        known = {str(row["uid"]): int(row["number"]) for row in rows}
        return [known[uid] if uid in known else await self.of(holder, uid, href) for uid, href in items]

    async def find(self, room_id: str, number: int) -> tuple[str, str] | None:
        """(uid, href) of the item numbered ``number`` in the room."""
        room_id = await self._holder(room_id)
        row = await self.db.fetchrow(f"SELECT uid, href FROM {self.table} WHERE room_id=$1 AND number=$2",
                                     room_id, number)
        return None if row is None else (str(row["uid"]), str(row["href"]))

    async def of_href(self, room_id: str, href: str) -> int | None:
        room_id = await self._holder(room_id)
        number = await self.db.fetchval(f"SELECT number FROM {self.table} WHERE room_id=$1 AND href=$2",
                                        room_id, href)
        return None if number is None else int(number)


class CalendarBot(Bot):
    component: ClassVar[str] = "VEVENT"  # what its collections hold (VTODO: task lists)
    number_table: ClassVar[str]

    caldav: CalDav
    zone: ZoneInfo
    numbers: RoomNumbers
    copy: Copy | None
    watcher: CalendarWatcher

    # --- what subclasses add -------------------------------------------------------

    def make_copy(self) -> Copy | None:
        """The bot's copy of its collections (an index), kept up to date by the watcher."""
        return None

    async def shown(self, room_id: str, change: Change) -> str | None:
        """The item a change made in another app added or changed, as the room sees it (with its
        number there); None when it is not one of the bot's items."""
        return None

    def background(self) -> list[Any]:
        """Coroutines to run beside the watcher (reminders…)."""
        return []

    # --- given ---------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(self.zone).replace(microsecond=0)

    def round_seconds(self) -> float:
        return min(ROUND, self.context.config.agenda.intervalle_secondes)

    def message(self, key: str, **values: Any) -> str:
        assert self.binding is not None
        return t(f"{self.binding.messages}.{key}", **values)

    async def setup(self) -> None:
        config = self.context.config
        requests = self.context.metrics.dav_requests
        self.caldav = CalDav.for_stack(config, self.context.secrets.dav_password,
                                       lambda method: requests.labels(self.localpart, method).inc())
        self.zone = ZoneInfo(config.collectivite.fuseau_horaire)
        self.numbers = RoomNumbers(self.context.db, self.number_table,
                                   self.bindings.numbering_room if self.binding and self.binding.spaces else None)
        self.copy = self.make_copy()
        self.watcher = CalendarWatcher(self.caldav, self.context.db, self.localpart, self.bound_collections,
                                       self.announce, self.announce_batch, config.agenda.intervalle_secondes,
                                       copy=self.copy, component=self.component)
        self._tasks = [asyncio.create_task(self.watcher.run())]
        self._tasks += [asyncio.create_task(work) for work in self.background()]
        self._following: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in [*self._tasks, *self._following]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.caldav.close()

    def explain(self, error: Exception) -> str | None:
        if isinstance(error, CalDavError) and error.refused:
            return self.message("caldav_refused")
        if isinstance(error, CalDavError) and error.unavailable:
            return self.message("caldav_unavailable")
        return None

    def deferred(self, error: CalDavError) -> Exception:
        """The server away during a change: the command is kept and done when it is back (the
        agent is told); anything else as it is."""
        return RetryLater(self.message("caldav_deferred")) if error.unavailable else error

    async def bound_collections(self) -> list[str]:
        rows = await self.context.db.fetch("SELECT DISTINCT target FROM maillage_room_binding WHERE bot=$1",
                                           self.localpart)
        return [str(row["target"]) for row in rows]

    async def bound_rooms(self) -> list[tuple[str, str]]:
        """(room, collection) of every bound room."""
        rows = await self.context.db.fetch("SELECT room_id, target FROM maillage_room_binding WHERE bot=$1",
                                           self.localpart)
        return [(str(row["room_id"]), str(row["target"])) for row in rows]

    async def rooms_of(self, collection_id: str) -> list[str]:
        """The rooms where the collection's changes are told: bound ones, and for a bound space
        (which has no timeline in clients) the child rooms the bot is in that use it."""
        rows = await self.context.db.fetch("SELECT room_id FROM maillage_room_binding WHERE bot=$1 AND target=$2",
                                           self.localpart, collection_id)
        rooms: list[str] = []
        joined: set[str] | None = None
        for row in rows:
            room_id = str(row["room_id"])
            if self.binding is None or not self.binding.spaces or not await self.bindings.is_space(room_id):
                rooms.append(room_id)
                continue
            if joined is None:
                joined = {str(room) for room in await self.client.get_joined_rooms()}
            for child in await self.bindings.children(room_id):
                if child in joined and await self.bindings.numbering_room(child) == room_id:
                    rooms.append(child)
        return list(dict.fromkeys(rooms))

    # --- changes made elsewhere ------------------------------------------------------

    async def announce(self, change: Change) -> None:
        """Tell the collection's rooms what another app added, changed or removed."""
        for room_id in await self.rooms_of(change.calendar_id):
            if change.kind == "suppression":
                number = await self.numbers.of_href(room_id, change.href)
                body = self.message("announce_removed", number=number or "?", title=change.summary or "—")
            else:
                item = await self.shown(room_id, change)
                if item is None:
                    continue
                body = self.message("announce_added" if change.kind == "ajout" else "announce_changed", item=item)
            await self._tell(room_id, change.key, body)

    async def announce_batch(self, batch: Batch) -> None:
        """Many changes at once (an import in another app): counted in one message, not listed."""
        body = self.message("announce_batch", added=batch.added, changed=batch.changed, removed=batch.removed)
        for room_id in await self.rooms_of(batch.calendar_id):
            await self._tell(room_id, f"{batch.calendar_id}|lot|{batch.key}", body)

    async def _tell(self, room_id: str, about: str, body: str) -> None:
        """A room that refuses the bot's messages (read-only since its service was archived, the
        bot's power taken away) is left out, so the other rooms are still told; a homeserver
        away raises, and the change is handed over again."""
        try:
            await self.send_about(room_id, about, {"msgtype": "m.notice", "body": body}, key="annonce")
        except MForbidden:
            log.warning("%s: room %s refuses the bot's messages; a change of its calendar not told there",
                        self.localpart, room_id)

    # --- binding -------------------------------------------------------------------------

    async def bind_existing(self, event: MessageEvent, raw: str) -> str:
        """``lier``: the room bound to a collection that exists; read in the background (it may
        hold thousands of items) while the room is answered."""
        async def exists(collection_id: str) -> None:
            if await self.caldav.calendar(collection_id) is None:
                known = ", ".join(c.id for c in await self.caldav.calendars() if self.component in c.components)
                raise CommandError(self.message("no_such_calendar", calendar=collection_id, known=known or "—"))

        collection_id = await self.bindings.bind(event, raw, prepare=exists)
        self.follow_soon(collection_id)
        return collection_id

    async def create_and_bind(self, event: MessageEvent, name: str) -> str:
        """``créer``: a new collection on the server, the room bound to it, and read at once (it
        is empty), so what other apps add next is announced."""
        async def make(collection_id: str) -> None:
            try:
                await self.caldav.make_calendar(collection_id, name.strip()[:100], self.component)
            except CalDavError as error:
                if error.status not in (405, 409):
                    raise
                if not self.is_replay(event):  # made by this very command before a crash: bind it
                    raise CommandError(self.message("calendar_exists", calendar=collection_id)) from None

        collection_id = await self.bindings.bind(event, name, prepare=make)
        await self.follow(collection_id)
        return collection_id

    async def follow(self, collection_id: str) -> None:
        """Read a newly bound collection now rather than at the watcher's next round."""
        try:
            await self.watcher.look(collection_id)
        except (CalDavError, OSError) as error:  # the next round tries again
            log.info("collection %s not read yet: %s", collection_id, type(error).__name__)

    def follow_soon(self, collection_id: str) -> None:
        task = asyncio.create_task(self.follow(collection_id))
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    def stale_note(self, collection_id: str) -> str:
        """A listing made from the copy while the server does not answer says as of when."""
        since = self.watcher.unreachable_since(collection_id)
        if since is None:
            return ""
        return self.message("stale", time=f"{since.astimezone(self.zone):%H:%M}") + "\n"

    # --- writing -------------------------------------------------------------------------

    async def write(self, collection_id: str, href: str, text: str, etag: str | None) -> None:
        """PUT (``etag`` None: a new item, never overwriting) and note it as the bot's own write
        (in the copy at once, never announced back), in turn with the watcher's looks."""
        async with self.watcher.writing(collection_id):
            new_etag = await self.caldav.put(href, text, etag)
            await self._note(collection_id, Item(href, new_etag, text))

    async def noted(self, collection_id: str, item: Item) -> None:
        """Something the bot wrote before (an earlier attempt at a command), noted as its own."""
        async with self.watcher.writing(collection_id):
            await self._note(collection_id, item)

    async def _note(self, collection_id: str, item: Item) -> None:
        if not item.etag:  # not every server answers a PUT with the ETag (nor a 412 with the text)
            item = await self.caldav.get(item.href) or item
        await self.watcher.wrote(collection_id, item)

    async def delete_item(self, collection_id: str, href: str, etag: str) -> None:
        async with self.watcher.writing(collection_id):
            await self.caldav.delete(href, etag or None)
            await self.watcher.removed(collection_id, href)

    async def item_numbered(self, room_id: str, number: int, unknown: str) -> tuple[str, Item]:
        """The room's collection and the item numbered ``number`` in it; ``unknown``: the key of
        the message when there is none (given ``number``)."""
        collection_id = await self.bindings.required(room_id)
        found = await self.numbers.find(room_id, number)
        if found is None or not found[1].startswith(self.caldav.href_of(collection_id, "x").rsplit("/", 1)[0] + "/"):
            raise CommandError(t(unknown, number=number))  # none, or from a collection bound before
        item = await self.caldav.get(found[1])
        if item is None:
            raise CommandError(t(unknown, number=number))
        return collection_id, item
