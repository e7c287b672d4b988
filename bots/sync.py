"""What the bots ask of the homeserver's sync, and how no message falls in a gap.

The filter leaves out what no bot uses (typing, read receipts, presence,
account data): in a thousand busy rooms those would wake every bot at every
keystroke. Timelines stay whole; members are loaded lazily, which makes each
sync of a bot in a thousand rooms cheaper for the homeserver.

A sync after a pause (the bots were stopped, the homeserver was away) gives at
most a few dozen events per room and says ``limited``; the events in between
are fetched with ``/messages`` back to the previous sync position and put in
front, so commands and files sent meanwhile are all handled, in order.
"""

from __future__ import annotations

import logging
from typing import Any

from mautrix.api import Method, Path
from mautrix.client import Client
from mautrix.types import JSON, Filter, RoomID, SyncToken

log = logging.getLogger("maillage.bots.sync")

TIMELINE_LIMIT = 50
MAX_GAP = 2000  # per room and sync; a longer gap is logged, the rest handled

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


class GaplessClient(Client):
    """A mautrix client whose syncs never skip timeline events."""

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
        while token and len(missing) < MAX_GAP:
            # Raw events, as the sync gives them: the syncer parses and dispatches them itself.
            page = await self.api.request(Method.GET, Path.v3.rooms[room_id].messages, query_params={
                "from": token, "to": since, "dir": "b", "limit": "100"})
            if not page.get("chunk"):
                break
            missing.extend(page["chunk"])
            token = page.get("end")
        if len(missing) >= MAX_GAP:
            log.warning("%s: more than %d events missed in %s; the oldest are skipped", self.mxid, MAX_GAP, room_id)
        seen = {event.get("event_id") for event in timeline.get("events", [])}
        earlier = [event for event in reversed(missing) if event.get("event_id") not in seen]
        timeline["events"] = earlier + list(timeline.get("events", []))
        timeline["limited"] = False
        if earlier:
            log.info("%s: %d events fetched after a gap in %s", self.mxid, len(earlier), room_id)
