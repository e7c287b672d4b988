"""A room bound to a resource of a server — a WebDAV folder, a CalDAV calendar — by room state.

The binding is a state event of the room (state key ``""``, content
``{<field>: <value>}``; empty content: unbound), as hookshot keeps its
connections: any client shows it, it survives the loss of the bot's database and
follows the room across federation. The bot keeps a cache of every room's
binding, to refuse one resource bound to two rooms.

Any client can send room state, not only the bot's ``lier`` command: a value set
by hand that the command would refuse (a way out of the tree, another room's
resource) is not used, and the room is told why.

A bot may let a space be bound (``Binding.spaces``): every room the space lists as
its child (``m.space.child``, which only the space's admins send; a room naming the
space as its parent is not enough) and that has no binding of its own then uses
the space's resource, with the space's numbering.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mautrix.errors import MatrixRequestError, MForbidden, MNotFound
from mautrix.types import EventType, MessageEvent, RoomID, StateEvent

from maillage.bots.runtime.commands import CommandError, reply_content
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.runtime.bot import Bot

CHILDREN_TTL = 60.0


@dataclass(frozen=True)
class Binding:
    """What a bot declares: its state event type, the content's field, how a value typed by an
    agent is checked (``normalise`` raises ``CommandError`` in French), and the prefix of its
    messages (``<prefix>.bound_elsewhere``, ``.binding_refused``, ``.admin_only``,
    ``.bot_needs_power``, ``.not_bound``); ``invalid``, the key of the message for a value
    of the wrong kind (given ``value``)."""

    event_type: EventType
    field: str
    normalise: Callable[[str], str]
    messages: str
    invalid: str
    spaces: bool = False  # a space's binding holds for its child rooms

    @staticmethod
    def overlap(one: str, other: str) -> bool:
        """The same resource, or one inside the other (folders)."""
        return one == other or one.startswith(other + "/") or other.startswith(one + "/")


class RoomBindings:
    """One bot's bindings: read from room state, cached in ``maillage_room_binding``."""

    def __init__(self, bot: Bot, spec: Binding) -> None:
        self.bot = bot
        self.spec = spec
        self._is_space: dict[str, bool] = {}  # a room's type never changes
        self._raw: dict[str, object] = {}  # each room's binding as its state says it
        self._children: dict[str, tuple[list[str], float]] = {}  # a space's, until a change is seen

    def _message(self, key: str, **values: Any) -> str:
        return t(f"{self.spec.messages}.{key}", **values)

    async def target(self, room_id: str) -> str | None:
        """The room's resource, normalised (or its space's); None when unbound or when its state
        is refused."""
        found = await self.holder(room_id)
        return None if found is None else found[1]

    async def holder(self, room_id: str) -> tuple[str, str] | None:
        """(the room whose binding holds here: this one or its space, the resource)."""
        raw = await self._state_value(room_id)
        if raw:
            if await self.refusal(room_id, raw) is not None:
                return None
            return room_id, self.spec.normalise(str(raw))
        if not self.spec.spaces:
            return None
        return await self.bound_space(room_id)

    async def bound_space(self, room_id: str) -> tuple[str, str] | None:
        """A bound space (and its resource) that lists the room as its child."""
        rows = await self.bot.context.db.fetch(
            "SELECT room_id, target FROM maillage_room_binding WHERE bot=$1 AND room_id<>$2",
            self.bot.localpart, room_id)
        for row in rows:
            if room_id in await self.children(str(row["room_id"])):
                return str(row["room_id"]), str(row["target"])
        return None

    async def is_space(self, room_id: str) -> bool:
        if room_id not in self._is_space:
            try:
                create = await self.bot.client.get_state_event(RoomID(room_id), EventType.ROOM_CREATE)
            except MatrixRequestError:
                return False
            self._is_space[room_id] = state_content(create).get("type") == "m.space"
        return self._is_space[room_id]

    async def children(self, space_id: str) -> list[str]:
        """The rooms a space lists as its children (none for a room that is not a space); kept
        until the bot sees the space's children change, or a minute at most."""
        if not await self.is_space(space_id):  # one small request per room, once: not its whole state
            return []
        known = self._children.get(space_id)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        try:
            state = await self.bot.client.get_state(RoomID(space_id))
        except MatrixRequestError:
            return []
        children = [str(event.state_key) for event in state
                    if event.type == EventType.SPACE_CHILD and state_content(event.content).get("via")]
        self._children[space_id] = (children, time.monotonic() + CHILDREN_TTL)
        return children

    async def on_space_child(self, event: StateEvent) -> None:
        self._children.pop(str(event.room_id), None)

    async def numbering_room(self, room_id: str) -> str:
        """Whose numbers the room uses: its own, or its bound space's (a database read and
        what is kept of the spaces: asked for every number shown)."""
        if not self.spec.spaces or await self.bot.context.db.fetchval(
                "SELECT 1 FROM maillage_room_binding WHERE bot=$1 AND room_id=$2", self.bot.localpart, room_id):
            return room_id
        space = await self.bound_space(room_id)
        return room_id if space is None else space[0]

    async def spaces_of(self, room_id: str) -> list[str]:
        """The spaces the bot is in that list the room as their child."""
        found = []
        for joined in await self.bot.client.get_joined_rooms():
            if str(joined) != room_id and room_id in await self.children(str(joined)):
                found.append(str(joined))
        return found

    async def move_to_space(self, event: MessageEvent, space_id: str, value: str) -> None:
        """The room's resource becomes its space's (for every child room): the space's state
        first, then the room's own binding cleared; a crash in between leaves both bound to
        the same resource, the room's own binding winning, and the command can be run again."""
        if not await self.bot.is_room_admin(space_id, event.sender, self.spec.event_type):
            raise CommandError(self._message("space_admin_only"))
        if not await self.bot.is_room_admin(space_id, self.bot.user_id, self.spec.event_type):
            raise CommandError(self._message("bot_needs_power_space"))
        await self._send_to(space_id, {self.spec.field: value})
        await self.remember(space_id, value)
        await self._send_to(event.room_id, {})
        await self.remember(event.room_id, None)

    async def required(self, room_id: str) -> str:
        """The room's resource, or the French message saying the room is not bound."""
        value = await self.target(room_id)
        if value is None:
            raise CommandError(self._message("not_bound"))
        return value

    async def has_state(self, room_id: str) -> bool:
        """Whether the room's state names a resource at all, even one that is refused."""
        return bool(await self._state_value(room_id))

    async def _state_value(self, room_id: str) -> object:
        """The binding's value in the room's state: asked of the homeserver once, then kept in
        step by ``on_state`` (every change comes through the bot's sync) and the bot's own writes."""
        if room_id in self._raw:
            return self._raw[room_id]
        try:
            content = await self.bot.client.get_state_event(RoomID(room_id), self.spec.event_type)
        except MNotFound:
            self._raw[room_id] = None
            return None
        except MatrixRequestError:  # not in the room, or the homeserver away: not kept
            return None
        self._raw[room_id] = _value(content, self.spec.field)
        return self._raw[room_id]

    async def refusal(self, room_id: str, raw: object) -> str | None:
        """Why ``raw`` (from room state) cannot be this room's resource, in French."""
        if not isinstance(raw, str):
            return t(self.spec.invalid, value=str(raw)[:60])
        try:
            value = self.spec.normalise(raw)
        except CommandError as error:
            return str(error)
        other = await self.bound_elsewhere(room_id, value)
        return None if other is None else self._message("bound_elsewhere", value=value, other=other)

    async def bound_elsewhere(self, room_id: str, value: str) -> str | None:
        """Another room's resource that is this one (or contains it, or is inside it); a space
        and its child rooms are one place."""
        rows = await self.bot.context.db.fetch(
            "SELECT room_id, target FROM maillage_room_binding WHERE bot=$1 AND room_id<>$2",
            self.bot.localpart, room_id)
        for row in rows:
            other = str(row["room_id"])
            if self.spec.overlap(value, str(row["target"])) and not (
                    self.spec.spaces and (room_id in await self.children(other)
                                          or other in await self.children(room_id))):
                return str(row["target"])
        return None

    async def remember(self, room_id: str, value: str | None) -> None:
        db = self.bot.context.db
        if value is None:
            await db.execute("DELETE FROM maillage_room_binding WHERE bot=$1 AND room_id=$2",
                             self.bot.localpart, room_id)
        else:
            await db.execute(
                "INSERT INTO maillage_room_binding (bot, room_id, target) VALUES ($1, $2, $3)"
                " ON CONFLICT (bot, room_id) DO UPDATE SET target=$3", self.bot.localpart, room_id, value)

    async def on_state(self, event: StateEvent) -> None:
        """Keep the cache in step with room state, whoever changed it; a value set by hand that
        ``lier`` would refuse is not taken, and the room is told why."""
        if event.state_key != "":
            return
        raw = event.content.get(self.spec.field) if hasattr(event.content, "get") else None
        self._raw[event.room_id] = raw
        if not raw:
            await self.remember(event.room_id, None)
            return
        refusal = await self.refusal(event.room_id, raw)
        if refusal is None:
            await self.remember(event.room_id, self.spec.normalise(str(raw)))
            return
        await self.remember(event.room_id, None)
        if event.sender != self.bot.user_id and not self.bot.in_initial_sync:
            await self.bot.send_about(event.room_id, event.event_id,
                                      reply_content(self._message("binding_refused", reason=refusal), None,
                                                    to_event=event.event_id, thread_root=None), key="liaison")

    async def bind(self, event: MessageEvent, raw: str,
                   prepare: Callable[[str], Awaitable[None]] | None = None) -> str:
        """``lier``: check the value, the agent's and the bot's rights, let the bot ``prepare`` the
        resource (make the folder, check the calendar), then write the room state. Nothing is
        made on a server before every check has passed."""
        await self.check_admin(event)  # first: who may not bind learns nothing of other rooms' bindings
        value = self.spec.normalise(raw)
        other = await self.bound_elsewhere(event.room_id, value)
        if other is not None:
            raise CommandError(self._message("bound_elsewhere", value=value, other=other))
        if not await self.bot.is_room_admin(event.room_id, self.bot.user_id, self.spec.event_type):
            raise CommandError(self._message("bot_needs_power"))
        if prepare is not None:
            await prepare(value)
        await self._send(event, {self.spec.field: value})
        await self.remember(event.room_id, value)
        return value

    async def unbind(self, event: MessageEvent) -> None:
        """``délier``: a refused value can be cleared too."""
        if not await self.has_state(event.room_id):
            raise CommandError(self._message("not_bound"))
        await self.check_admin(event)
        await self._send(event, {})
        await self.remember(event.room_id, None)

    async def check_admin(self, event: MessageEvent) -> None:
        if not await self.bot.is_room_admin(event.room_id, event.sender, self.spec.event_type):
            raise CommandError(self._message("admin_only"))

    async def _send(self, event: MessageEvent, content: dict[str, Any]) -> None:
        await self._send_to(event.room_id, content)

    async def _send_to(self, room_id: str, content: dict[str, Any]) -> None:
        try:
            await self.bot.client.send_state_event(RoomID(room_id), self.spec.event_type, content)
        except MForbidden:
            raise CommandError(self._message("bot_needs_power")) from None
        self._raw[room_id] = content.get(self.spec.field)


def _value(content: Any, field: str) -> object:
    if isinstance(content, dict):
        return content.get(field)
    return getattr(content, field, None)


def state_content(content: Any) -> dict[str, Any]:
    """A state event's content as a dict, whichever mautrix class it was parsed into."""
    if isinstance(content, dict):
        return content
    serialized = content.serialize() if hasattr(content, "serialize") else {}
    return serialized if isinstance(serialized, dict) else {}
