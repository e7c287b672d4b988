"""Changes made in other apps (Thunderbird, DAVx5, Nextcloud), found and handed over once.

Each bound calendar is looked at every interval with one cheap request: an RFC 6578
``sync-collection`` since the last token where the server offers it, a Depth 1
PROPFIND of the ETags otherwise. Only what changed is then read, so the cost
follows the changes, not the size of the calendar. The bot's own writes are
recorded with their ETag and not handed back to it.

Exactly once: a change is handed over, then recorded; after a crash in between it
is handed over again with the same identity (``Change.key``), which the bot turns
into the same transaction id, so the room sees it once.

A bot may keep a copy of the calendars' content (``Copy``, the agenda's occurrence
index): the watcher fills it with everything on the first look, updates it with each
change before recording the change as seen, and with the bot's own writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from icalendar import Calendar as ICalendar
from mautrix.util.async_db import Connection, Database, UpgradeTable

from maillage.bots.caldav.client import CalDav, CalDavError, Item
from maillage.bots.runtime.store import transaction

log = logging.getLogger("maillage.bots.caldav")

tables = UpgradeTable(version_table_name="maillage_caldav_version")


async def _seen(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE caldav_sync (
            bot TEXT NOT NULL,
            calendar_id TEXT NOT NULL,
            token TEXT NOT NULL,
            PRIMARY KEY (bot, calendar_id)
        )"""
    )
    await conn.execute(
        """CREATE TABLE caldav_item (
            bot TEXT NOT NULL,
            calendar_id TEXT NOT NULL,
            href TEXT NOT NULL,
            etag TEXT NOT NULL,
            summary TEXT NOT NULL,
            PRIMARY KEY (bot, calendar_id, href)
        )"""
    )


tables.register(_seen, description="What the bots last saw of each bound calendar")


async def _bursts(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE caldav_burst (
            bot TEXT NOT NULL,
            calendar_id TEXT NOT NULL,
            started BIGINT NOT NULL,
            last_change BIGINT NOT NULL,
            told INTEGER NOT NULL,
            summarised INTEGER NOT NULL,
            added INTEGER NOT NULL,
            changed INTEGER NOT NULL,
            removed INTEGER NOT NULL,
            PRIMARY KEY (bot, calendar_id)
        )"""
    )


tables.register(_bursts, description="Bursts of changes: told one by one up to a limit, then counted")


Kind = Literal["ajout", "modification", "suppression"]


@dataclass(frozen=True)
class Change:
    calendar_id: str
    kind: Kind
    href: str
    etag: str
    data: str  # the item's iCalendar text; "" when removed
    summary: str  # its title (for a removal: the last one seen)

    @property
    def key(self) -> str:
        return f"{self.calendar_id}|{self.href}|{self.etag or self.kind}"


@dataclass(frozen=True)
class Batch:
    """Many changes at once: counted, not listed."""

    calendar_id: str
    added: int
    changed: int
    removed: int
    key: str


class Copy(Protocol):
    """A bot's copy of what its calendars hold, kept up to date by the watcher (changes are
    applied again after a crash: applying one twice must change nothing)."""

    async def complete(self, calendar_id: str) -> bool:
        """Whether the copy holds the calendar whole (else the next look reads it all)."""

    async def refill(self, calendar_id: str, items: list[Item]) -> None:
        """The calendar's whole content."""

    async def update(self, calendar_id: str, items: list[Item], removed: list[str]) -> None:
        """Items changed or removed."""


@dataclass
class Burst:
    """Changes seen with no quiet time between (an import that lasts several looks, or is
    made in waves): the room is told at most ``BATCH`` of them one by one, one count at once,
    and the rest counted and told when the calendar has been quiet for three intervals."""

    started: int  # ms; part of the identity of the count told
    last_change: int  # ms
    told: int = 0  # changes told one by one
    summarised: bool = False  # a count already told
    added: int = 0  # counted, not yet told
    changed: int = 0
    removed: int = 0

    @property
    def counting(self) -> bool:
        return self.summarised or bool(self.added or self.changed or self.removed)


Announce = Callable[[Change], Awaitable[None]]
BATCH = 10
PARALLEL = 8
LONGEST_BURST_MS = 10 * 60 * 1000  # a count is told at least this often, even if changes never stop


class CalendarWatcher:
    def __init__(self, caldav: CalDav, db: Database, owner: str, calendars: Callable[[], Awaitable[list[str]]],
                 announce: Announce, announce_batch: Callable[[Batch], Awaitable[None]], interval: float,
                 copy: Copy | None = None, component: str = "VEVENT") -> None:
        self.caldav, self.db, self.owner = caldav, db, owner
        self.calendars, self.interval = calendars, interval
        self.quiet_ms = int(3 * interval * 1000)  # a burst ends after this long with no change
        self.announce, self.announce_batch = announce, announce_batch
        self.copy, self.component = copy, component  # what the copy reads: events or tasks
        self._looking: dict[str, asyncio.Lock] = {}
        self._reached: dict[str, datetime] = {}
        self._unreachable: set[str] = set()
        self._started = datetime.now(UTC)
        self._wanted: set[str] = set()

    def unreachable_since(self, calendar_id: str) -> datetime | None:
        """When the server last answered about this calendar, if it did not at the last look
        (what the copy holds is as of then)."""
        if calendar_id not in self._unreachable:
            return None
        return self._reached.get(calendar_id, self._started)

    async def run(self) -> None:
        """Each calendar looked at once per interval on its own (``PARALLEL`` at a time): a slow
        server or a failing look delays or stops only that calendar, never the others. The
        list of calendars is read again every interval (a room bound or unbound meanwhile)."""
        limit = asyncio.Semaphore(PARALLEL)
        looking: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    self._wanted = set(await self.calendars())
                except Exception:  # the database away a moment: the same calendars for now
                    log.exception("%s: bound calendars not read; read again next interval", self.owner)
                for calendar_id in self._wanted:
                    if calendar_id not in looking or looking[calendar_id].done():
                        looking[calendar_id] = asyncio.create_task(self._keep_looking(calendar_id, limit))
                await asyncio.sleep(self.interval)
        finally:
            for task in looking.values():
                task.cancel()
            await asyncio.gather(*looking.values(), return_exceptions=True)

    async def _keep_looking(self, calendar_id: str, limit: asyncio.Semaphore) -> None:
        clock = asyncio.get_running_loop()
        while calendar_id in self._wanted:
            started = clock.time()
            async with limit:
                await self._look_safely(calendar_id)
            await asyncio.sleep(max(0.0, self.interval - (clock.time() - started)))

    async def _look_safely(self, calendar_id: str) -> None:
        try:
            await self.look(calendar_id)
        except (CalDavError, OSError) as error:  # the server away: looked at again next time
            self._unreachable.add(calendar_id)
            log.info("calendar %s not looked at: %s", calendar_id, error)
        except Exception:  # nothing recorded: the same changes are handed over again next time
            log.exception("%s: look at calendar %s failed; made again next interval", self.owner, calendar_id)

    async def look(self, calendar_id: str) -> None:
        """One look at one calendar: what changed since the last one is handed over. The first
        look only takes note; a batch of more than ``BATCH`` changes (an import in another app)
        is handed over as counts (the copy reads the changed items a few hundred a request)."""
        async with self.writing(calendar_id):
            await self._look(calendar_id)
        self._reached[calendar_id] = datetime.now(UTC)
        self._unreachable.discard(calendar_id)

    async def _look(self, calendar_id: str) -> None:
        known = {str(row["href"]): (str(row["etag"]), str(row["summary"])) for row in await self.db.fetch(
            "SELECT href, etag, summary FROM caldav_item WHERE bot=$1 AND calendar_id=$2", self.owner, calendar_id)}
        token = await self.db.fetchval("SELECT token FROM caldav_sync WHERE bot=$1 AND calendar_id=$2",
                                       self.owner, calendar_id)
        changed, removed, new_token = await self._differences(calendar_id, str(token or ""), known)
        refilled = False
        if self.copy is not None and not await self.copy.complete(calendar_id):
            # Read whole after the token was taken: a change made between the two is in the copy
            # now and handed over again at the next look, never missed by both.
            await self.copy.refill(calendar_id, await self.caldav.everything(calendar_id, self.component))
            refilled = True
        changed = [(href, etag) for href, etag in changed if not etag or known.get(href, ("", ""))[0] != etag]
        removed = [href for href in removed if href in known]
        if token is None:  # the first look only takes note
            await self._record(calendar_id, changed, removed, known, new_token, None)
            return
        count = len(changed) + len(removed)
        burst = await self._burst(calendar_id)
        if count == 0:
            if burst is not None and _now_ms() - burst.last_change >= self.quiet_ms:  # the burst ends
                await self._tell_counted(calendar_id, burst)
                await self.db.execute("DELETE FROM caldav_burst WHERE bot=$1 AND calendar_id=$2",
                                      self.owner, calendar_id)
            await self._record(calendar_id, [], [], known, new_token, None)
        elif count > BATCH or (burst is not None and (burst.counting or burst.told + count > BATCH)):
            if self.copy is not None and not refilled:  # only what changed is read, a few hundred a request
                await self.copy.update(calendar_id, await self.caldav.several(calendar_id, [h for h, _ in changed]),
                                       removed)
            added = sum(href not in known for href, _ in changed)
            await self._record(calendar_id, changed, removed, known, new_token,
                               (added, len(changed) - added, len(removed)))
            await self._tell_first_count(calendar_id)
        else:
            await self._one_by_one(calendar_id, changed, removed, known)
            await self._record(calendar_id, [], [], known, new_token, None)
            await self._told_one_by_one(calendar_id, count)

    async def _record(self, calendar_id: str, changed: list[tuple[str, str]], removed: list[str],
                      known: dict[str, tuple[str, str]], token: str, counted: tuple[int, int, int] | None
                      ) -> None:
        """What was seen, the counts not yet told and the next token, in one transaction: after a
        crash the look is made again whole, or not at all (a change counted twice or never)."""
        async with transaction(self.db) as conn:
            for href, etag in changed:
                await self._remember(calendar_id, href, etag, known.get(href, ("", ""))[1], conn)
            for href in removed:
                await self.forget(calendar_id, href, conn)
            if counted is not None:
                await conn.execute(
                    "INSERT INTO caldav_burst (bot, calendar_id, started, last_change, told, summarised, added,"
                    " changed, removed) VALUES ($1, $2, $3, $3, 0, 0, $4, $5, $6) ON CONFLICT (bot, calendar_id)"
                    " DO UPDATE SET last_change=$3, added=caldav_burst.added+$4, changed=caldav_burst.changed+$5,"
                    " removed=caldav_burst.removed+$6",
                    self.owner, calendar_id, _now_ms(), *counted)
            await conn.execute(
                "INSERT INTO caldav_sync (bot, calendar_id, token) VALUES ($1, $2, $3)"
                " ON CONFLICT (bot, calendar_id) DO UPDATE SET token=$3", self.owner, calendar_id, token)

    async def _tell_first_count(self, calendar_id: str) -> None:
        """The first count of a burst is told at once (the usual import, seen in one look); the
        next ones when the calendar is quiet again, or after ``LONGEST_BURST_MS``."""
        burst = await self._burst(calendar_id)
        if burst is None or (burst.summarised and _now_ms() - burst.started <= LONGEST_BURST_MS):
            return
        await self._tell_counted(calendar_id, burst)
        await self.db.execute(
            "UPDATE caldav_burst SET summarised=1, started=$3, added=0, changed=0, removed=0"
            " WHERE bot=$1 AND calendar_id=$2", self.owner, calendar_id, _now_ms())

    async def _tell_counted(self, calendar_id: str, burst: Burst) -> None:
        """Told, then cleared by the caller: after a crash in between it is told again with the
        same identity (the count's start), which the bot turns into the same transaction id."""
        if burst.added or burst.changed or burst.removed:
            await self.announce_batch(Batch(calendar_id, burst.added, burst.changed, burst.removed,
                                            f"compte|{burst.started}"))

    async def _told_one_by_one(self, calendar_id: str, count: int) -> None:
        await self.db.execute(
            "INSERT INTO caldav_burst (bot, calendar_id, started, last_change, told, summarised, added, changed,"
            " removed) VALUES ($1, $2, $3, $3, $4, 0, 0, 0, 0) ON CONFLICT (bot, calendar_id) DO UPDATE SET"
            " last_change=$3, told=caldav_burst.told+$4", self.owner, calendar_id, _now_ms(), count)

    async def _burst(self, calendar_id: str) -> Burst | None:
        row = await self.db.fetchrow(
            "SELECT started, last_change, told, summarised, added, changed, removed FROM caldav_burst"
            " WHERE bot=$1 AND calendar_id=$2", self.owner, calendar_id)
        if row is None:
            return None
        return Burst(int(row["started"]), int(row["last_change"]), int(row["told"]), bool(row["summarised"]),
                     int(row["added"]), int(row["changed"]), int(row["removed"]))

    async def _one_by_one(self, calendar_id: str, changed: list[tuple[str, str]], removed: list[str],
                          known: dict[str, tuple[str, str]]) -> None:
        for href, etag in changed:
            item = await self.caldav.get(href)
            if item is None:
                continue
            summary = _summary(item.data)
            if self.copy is not None:
                await self.copy.update(calendar_id, [item], [])
            kind: Kind = "modification" if href in known else "ajout"
            await self.announce(Change(calendar_id, kind, href, item.etag or etag, item.data, summary))
            await self._remember(calendar_id, href, item.etag or etag, summary)
        for href in removed:
            if self.copy is not None:
                await self.copy.update(calendar_id, [], [href])
            await self.announce(Change(calendar_id, "suppression", href, "", "", known[href][1]))
            await self.forget(calendar_id, href)

    async def _differences(self, calendar_id: str, token: str, known: dict[str, tuple[str, str]]
                           ) -> tuple[list[tuple[str, str]], list[str], str]:
        """(changed, removed, next token): by sync-collection, or by comparing ETags."""
        try:
            changes = await self.caldav.changes(calendar_id, token)
            if changes.token:
                return changes.changed, changes.removed, changes.token
        except CalDavError as error:
            if error.unavailable or error.status in (401, 404):
                raise
            # sync-collection not offered, or the token no longer valid: compare ETags
        etags = await self.caldav.etags(calendar_id)
        changed = [(href, etag) for href, etag in etags.items() if known.get(href, ("", ""))[0] != etag]
        return changed, [href for href in known if href not in etags], ""

    def writing(self, calendar_id: str) -> asyncio.Lock:
        """Held by the bot around its own write and its ``wrote``/``removed``, as by each look:
        otherwise a look could meet the write before it is recorded (and announce it as made
        elsewhere), or a whole read begun before it could overwrite it in the copy."""
        return self._looking.setdefault(calendar_id, asyncio.Lock())

    async def wrote(self, calendar_id: str, item: Item) -> None:
        """The bot's own write (within ``writing``): in the copy at once, not announced back."""
        if self.copy is not None:
            await self.copy.update(calendar_id, [item], [])
        await self._remember(calendar_id, item.href, item.etag, _summary(item.data))

    async def removed(self, calendar_id: str, href: str) -> None:
        """The bot's own removal (within ``writing``): out of the copy at once, not announced."""
        if self.copy is not None:
            await self.copy.update(calendar_id, [], [href])
        await self.forget(calendar_id, href)

    async def forget(self, calendar_id: str, href: str, conn: Connection | None = None) -> None:
        await (conn or self.db).execute("DELETE FROM caldav_item WHERE bot=$1 AND calendar_id=$2 AND href=$3",
                                        self.owner, calendar_id, href)

    async def _remember(self, calendar_id: str, href: str, etag: str, summary: str,
                        conn: Connection | None = None) -> None:
        await (conn or self.db).execute(
            "INSERT INTO caldav_item (bot, calendar_id, href, etag, summary) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (bot, calendar_id, href) DO UPDATE SET etag=$4, summary=$5",
            self.owner, calendar_id, href, etag, summary[:200])


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _summary(data: str) -> str:
    try:
        calendar = ICalendar.from_ical(data)
    except ValueError:
        return ""
    for component in calendar.walk():
        if component.name in ("VEVENT", "VTODO") and component.get("summary"):
            return str(component.get("summary"))
    return ""
