"""What the bots ask of the homeserver's sync, and how no message falls in a gap.

The filter leaves out what no bot uses (typing, read receipts, presence,
account data): in a thousand busy rooms those would wake every bot at every
keystroke. Timelines stay whole; members are loaded lazily, which makes each
sync of a bot in a thousand rooms cheaper for the homeserver.

A sync after a pause (the bots were stopped, the homeserver was away) gives at
most a few dozen events per room and says ``limited``; the events in between
are fetched with ``/messages`` back to the previous sync position and put in
front, so commands and files sent meanwhile are all handled, in order. Past
``[bots] rattrapage_max`` events in one room, the oldest are not read and the
room is told so (``on_gap_truncated``), never silently.

The sync loop is the client's own, for three reasons mautrix's does not cover:
the position is stored only after a sync's events are handled; a sync whose
handling failed (the database away, the homeserver gone mid-reply) is fetched
again rather than skipped; and after an outage the client asks again within
seconds of the homeserver answering (mautrix doubles its pause up to 320 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mautrix.api import Method, Path
from mautrix.client import Client, InternalEventType
from mautrix.errors import MUnknownToken
from mautrix.types import JSON, Filter, FilterID, RoomID, SyncToken

log = logging.getLogger("maillage.bots.sync")

TIMELINE_LIMIT = 50
MAX_PAUSE = 5.0  # seconds between two sync attempts while the homeserver does not answer
SYNC_TIMEOUT_MS = 30_000

_FILTER = {
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
    "room": {
        "ephemeral": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "timeline": {"limit": TIMELINE_LIMIT},
        # Members come with the messages that need them; the crypto machine asks the
        # homeserver for a room's whole member list before it shares a room key.
        "state": {"lazy_load_members": True},
    },
}
BOT_FILTER = Filter.deserialize(JSON(_FILTER))

# (room, timestamp of the oldest message read, how many were read) when a gap was cut short.
GapTruncated = Callable[[RoomID, int, int], Awaitable[None]]


def pause_after(failures: int) -> float:
    """1, 2, 4, then 5 s: a homeserver back after a long outage is asked again within seconds."""
    return min(float(2 ** max(0, failures - 1)), MAX_PAUSE)


class GaplessClient(Client):
    """A mautrix client whose syncs never skip timeline events, nor a sync that failed."""

    max_gap: int = 10_000
    on_gap_truncated: GapTruncated | None = None
    # Set by a handler when it could not finish for a reason outside the event (an outage):
    # the same sync is then fetched and handled again, handled events being skipped by id.
    _handling_failed: bool = False
    # Every such failure, counted: pushed transactions (appservice.py) are handled beside the
    # sync, whose loop clears the flag at each sync; they compare counts instead.
    handling_failures: int = 0
    # None: a long poll (the homeserver answers as soon as there is something new). Else the
    # seconds between two syncs that return at once: with the rooms pushed (appservice.py) a
    # long poll would still be woken, and walk every room of the bot, at each event of its rooms.
    poll_seconds: float | None = None

    @property
    def handling_failed(self) -> bool:
        return self._handling_failed

    @handling_failed.setter
    def handling_failed(self, failed: bool) -> None:
        self._handling_failed = failed
        self.handling_failures += failed

    async def sync(self, since: SyncToken | None = None, *args: Any, **kwargs: Any) -> Any:
        data = await super().sync(since, *args, **kwargs)
        if since and isinstance(data, dict):
            for room_id, room in (data.get("rooms", {}).get("join") or {}).items():
                timeline = room.get("timeline") or {}
                if timeline.get("limited") and timeline.get("prev_batch"):
                    await self._fill_gap(RoomID(room_id), timeline, since)
        return data

    async def _fill_gap(self, room_id: RoomID, timeline: dict[str, Any], since: SyncToken) -> None:
        missing: list[dict[str, Any]] = []
        token: str | None = timeline["prev_batch"]
        truncated = False
        while token:
            if len(missing) >= self.max_gap:
                truncated = True
                break
            # Raw events, as the sync gives them: the syncer parses and dispatches them itself.
            page = await self.api.request(Method.GET, Path.v3.rooms[room_id].messages, query_params={
                "from": token, "to": since, "dir": "b", "limit": "100"})
            if not page.get("chunk"):
                break
            missing.extend(page["chunk"])
            token = page.get("end")
        seen = {event.get("event_id") for event in timeline.get("events", [])}
        earlier = [event for event in reversed(missing) if event.get("event_id") not in seen]
        timeline["events"] = earlier + list(timeline.get("events", []))
        timeline["limited"] = False
        if earlier:
            log.info("%s: %d events fetched after a gap in %s", self.mxid, len(earlier), room_id)
        if truncated:
            oldest = int(timeline["events"][0].get("origin_server_ts", 0)) if timeline["events"] else 0
            log.warning("%s: more than %d events missed in %s; the older ones are not read, the room is told",
                        self.mxid, self.max_gap, room_id)
            if self.on_gap_truncated is not None:
                await self.on_gap_truncated(room_id, oldest, len(timeline["events"]))

    async def _start(self, filter_id: FilterID | None) -> None:
        assert self.sync_store is not None
        next_batch = await self.sync_store.get_next_batch()
        await self.run_internal_event(InternalEventType.SYNC_STARTED)
        failures, is_first = 0, True
        while True:
            current = next_batch
            try:
                if self.poll_seconds is not None and not is_first:
                    await asyncio.sleep(self.poll_seconds)
                data = await self.sync(since=current, filter_id=filter_id, set_presence=self.presence,
                                       timeout=SYNC_TIMEOUT_MS if self.poll_seconds is None else 0)
            except (asyncio.CancelledError, MUnknownToken):
                raise
            except Exception as error:
                failures += 1
                pause = pause_after(failures)
                await self.run_internal_event(InternalEventType.SYNC_ERRORED, error=error, sleep_for=pause)
                await asyncio.sleep(pause)
                continue
            data["net.maunium.mautrix"] = {"is_initial": not current, "is_first": is_first}
            is_first = False
            await self.run_internal_event(InternalEventType.SYNC_SUCCESSFUL, data=data)
            self.handling_failed = False
            started = time.monotonic()
            await asyncio.gather(*self.handle_sync(data))
            if time.monotonic() - started > 10:
                log.warning("%s: handling one sync took %.1f s", self.mxid, time.monotonic() - started)
            if self.handling_failed or not await self._stored(data["next_batch"]):
                failures += 1
                await asyncio.sleep(pause_after(failures))
                continue  # the same sync again: what was handled is skipped by event id
            next_batch, failures = data["next_batch"], 0

    async def _stored(self, next_batch: SyncToken) -> bool:
        assert self.sync_store is not None
        try:
            await self.sync_store.put_next_batch(next_batch)
        except Exception as error:  # the database is away: handle this sync again once it is back
            log.warning("%s: sync position not stored (%s); the sync will be read again",
                        self.mxid, type(error).__name__)
            return False
        return True
