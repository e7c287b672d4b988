"""The bots' rooms' events pushed by Synapse (``[bots] reception = "appservice"``).

A sync costs the homeserver in proportion to the rooms an account is in: with a bot in
10,000 rooms, each new message cost its sync 63 ms (docs/benchmarks.md); a push to an
application service costs the same whatever the rooms. Synapse pushes every event of the
rooms the bots are in to ``PUT /_matrix/app/v1/transactions/<id>``:

- a transaction is stored in the bots' database before it is acknowledged: killed before,
  Synapse sends it again; after, it waits in the inbox; refused (the database away), Synapse
  backs off (up to 8.5 min), so it is pinged once the database answers again;
- the inbox is handed out in arrival order, each event to the bots that are in its room
  (or that it invites), through the bots' own event handlers, as a sync's timeline would be;
- a transaction leaves the inbox once every bot has handled it; when a handling fails (the
  database or the homeserver away), it is handed out again, handled events skipped by id.

Each bot keeps a sync for what belongs to its device alone (room keys and other to-device
messages, device lists, one-time key counts), with a filter that leaves out every room: that
sync costs nothing per room.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any, cast

import httpx
from aiohttp import web
from mautrix.client import SyncStream
from mautrix.types import JSON, Event, Filter

from maillage.bots.runtime.metrics import Handler
from maillage.bots.runtime.store import transaction
from maillage.bots.runtime.sync import GaplessClient, pause_after

if TYPE_CHECKING:
    from mautrix.util.async_db import Database

    from maillage.bots.runtime.bot import BotRuntime

log = logging.getLogger("maillage.bots.appservice")

APPSERVICE_ID = "maillage-robots"
PREFIX = "/_matrix/app/v1"
# The bots' own sync: every room left out (Synapse skips the rooms' part entirely).
DEVICE_ONLY_FILTER = Filter.deserialize(JSON({
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
    "room": {"rooms": []},
}))
# ... asked for every so often rather than long-polled: Synapse wakes a long poll at every event
# of the account's rooms and works out what changed in all of them (~60 ms for 10,000 rooms),
# even when the filter leaves every room out (docs/benchmarks.md: 3.04× the floor long-polled,
# 1.05× polled, with 10,000 rooms). A room key sent with an agent's first message of a session
# thus reaches the bot within this delay; the message waits for it in line (bot.KEY_WAIT, 5 s),
# so no key request goes out for it.
DEVICE_POLL_SECONDS = 2.0


class Inbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, txn_id: str, body: str) -> None:
        """Once: a transaction sent again (its acknowledgement was lost) changes nothing."""
        async with transaction(self.db) as conn:
            if await conn.fetchval("SELECT 1 FROM maillage_appservice_inbox WHERE txn_id=$1", txn_id):
                return
            last = await conn.fetchval("SELECT MAX(ordre) FROM maillage_appservice_inbox")
            await conn.execute("INSERT INTO maillage_appservice_inbox (txn_id, ordre, body, recu_ms)"
                               " VALUES ($1, $2, $3, $4)", txn_id, int(last or 0) + 1, body, int(time.time() * 1000))

    async def first(self) -> tuple[str, dict[str, Any]] | None:
        row = await self.db.fetchrow(
            "SELECT txn_id, body FROM maillage_appservice_inbox ORDER BY ordre LIMIT 1")
        return (str(row["txn_id"]), json.loads(row["body"])) if row else None

    async def remove(self, txn_id: str) -> None:
        await self.db.execute("DELETE FROM maillage_appservice_inbox WHERE txn_id=$1", txn_id)


class PushedEvents:
    """Synapse's transactions in, the bots' handlers out."""

    def __init__(self, runtime: BotRuntime) -> None:
        self.runtime = runtime
        self.joined: dict[str, set[str]] = {}
        self._arrived = asyncio.Event()
        self._inbox: Inbox | None = None  # once the runtime has opened its database
        self._refused = False  # a transaction answered 503 since the last ping

    @property
    def hs_token(self) -> str:
        return self.runtime.secrets.bots_hs_token

    def mount(self, app: web.Application) -> None:
        app.router.add_put(PREFIX + "/transactions/{txn_id}", self._only_synapse(self.on_transaction))
        app.router.add_post(PREFIX + "/ping", self._only_synapse(self.on_ping))
        app.router.add_get(PREFIX + "/users/{user_id}", self._only_synapse(self.on_query))
        app.router.add_get(PREFIX + "/rooms/{alias}", self._only_synapse(self.on_query))

    async def start(self) -> asyncio.Task[None]:
        """Once every bot runs: learn their rooms, hand out what waits in the inbox, and ask
        Synapse for what it kept (a transaction refused while the bots started)."""
        assert self.runtime.db is not None
        for bot in self.runtime.bots:
            self.joined[bot.user_id] = {str(room) for room in await bot.client.get_joined_rooms()}
        self._inbox = Inbox(self.runtime.db)
        task = asyncio.create_task(self.hand_out_forever())
        await self.ping()
        return task

    # --- Synapse's side -----------------------------------------------------------

    def _only_synapse(self, handler: Handler) -> Handler:
        """Every endpoint answers Synapse alone: its hs_token, or 403."""
        async def checked(request: web.Request) -> web.StreamResponse:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not self.hs_token or not hmac.compare_digest(given.encode(), self.hs_token.encode()):
                return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
            return await handler(request)
        return checked

    async def on_transaction(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            if not isinstance(json.loads(body), dict):
                raise ValueError
        except ValueError:
            return web.json_response({"errcode": "M_NOT_JSON"}, status=400)
        if self._inbox is None:  # the bots are starting: Synapse sends it again, sooner after the ping
            return web.json_response({"errcode": "M_UNKNOWN"}, status=503)
        try:
            await self._inbox.put(request.match_info["txn_id"], body)
        except Exception as error:  # not stored: Synapse keeps it, and is pinged once the inbox answers
            log.warning("transaction %s not stored (%s); Synapse will send it again",
                        request.match_info["txn_id"], type(error).__name__)
            self._refused = True
            return web.json_response({"errcode": "M_UNKNOWN"}, status=503)
        self.runtime.metrics.pushed.inc()
        self._arrived.set()
        return web.json_response({})

    async def on_ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def on_query(self, request: web.Request) -> web.Response:
        return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)  # the bots make no users nor rooms

    async def ping(self) -> None:
        """Synapse retries a transaction it could not deliver only after a back-off (up to 8.5 min):
        a ping makes it send what it kept at once."""
        try:
            async with httpx.AsyncClient(base_url=self.runtime.config.bots_homeserver_url, timeout=30) as http:
                answer = await http.post(f"/_matrix/client/v1/appservice/{APPSERVICE_ID}/ping", json={},
                                         headers={"Authorization": f"Bearer {self.runtime.secrets.bots_as_token}"})
            if answer.status_code != 200:
                log.warning("Synapse's ping of the bots answered %s", answer.status_code)
        except httpx.HTTPError as error:
            log.warning("Synapse's ping of the bots not made (%s)", type(error).__name__)

    # --- the bots' side -----------------------------------------------------------

    async def hand_out_forever(self) -> None:
        assert self._inbox is not None
        failures = 0
        while True:
            try:
                pending = await self._inbox.first()
                await self._ping_if_refused()
                if pending is None:
                    self._arrived.clear()
                    failures = 0
                    await self._wait_for_more()
                    continue
                txn_id, body = pending
                if await self.hand_out(body):
                    await self._inbox.remove(txn_id)
                    failures = 0
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database away: the inbox is read again shortly
                log.warning("pushed events not handed out for now (%s)", type(error).__name__)
            failures += 1
            await asyncio.sleep(pause_after(failures))

    async def _ping_if_refused(self) -> None:
        """The database answers again: Synapse, whose back-off after refused transactions grows to
        8.5 min, is asked to send them now (at most once per turn of the inbox, 5 s when idle)."""
        if self._refused:
            self._refused = False
            await self.ping()

    async def _wait_for_more(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), 5)

    async def hand_out(self, body: dict[str, Any]) -> bool:
        """Each event to the bots it concerns, in order; whether every bot handled all of its own."""
        started = time.monotonic()
        clients = {bot.user_id: cast(GaplessClient, bot.client) for bot in self.runtime.bots}
        failures_before = {user_id: client.handling_failures for user_id, client in clients.items()}
        tasks: list[asyncio.Task[Any]] = []
        for raw in body.get("events") or []:
            if not isinstance(raw, dict) or "room_id" not in raw:
                continue
            for user_id in self._concerned(raw):
                client = clients[user_id]
                event = client._try_deserialize(Event, cast(JSON, dict(raw)))  # mautrix's parsing, as in a sync
                tasks += client.dispatch_event(cast(Event, event), source=SyncStream.JOINED_ROOM | SyncStream.TIMELINE)
        await asyncio.gather(*tasks)
        if time.monotonic() - started > 10:
            log.warning("handling one pushed transaction took %.1f s", time.monotonic() - started)
        return all(client.handling_failures == failures_before[user_id] for user_id, client in clients.items())

    def _concerned(self, raw: dict[str, Any]) -> list[str]:
        """The bots this event is for: those in its room, or the one it is about (an invitation)."""
        room = str(raw["room_id"])
        if raw.get("type") == "m.room.member" and raw.get("state_key") in self.joined:
            bot = str(raw["state_key"])
            membership = (raw.get("content") or {}).get("membership")
            if membership == "join":
                self.joined[bot].add(room)
            elif membership in ("leave", "ban"):
                self.joined[bot].discard(room)
            others = [user for user, rooms in self.joined.items() if user != bot and room in rooms]
            return [bot, *others]
        return [user for user, rooms in self.joined.items() if room in rooms]
