"""A room bound to a resource of a server — a WebDAV folder, a CalDAV calendar — by room state.

The binding is a state event of the room (state key ``""``, content
``{<field>: <value>}``; empty content: unbound), as hookshot keeps its
connections: any client shows it, it survives the loss of the bot's database and
follows the room across federation. The bot keeps a cache of every room's
binding, to refuse one resource bound to two rooms.

Any client can send room state, not only the bot's ``lier`` command: a value set
by hand that the command would refuse (a way out of the tree, another room's
resource) is not used, and the room is told why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mautrix.errors import MatrixRequestError, MForbidden
from mautrix.types import EventType, MessageEvent, RoomID, StateEvent

from maillage.bots.runtime.commands import CommandError, reply_content
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.runtime.bot import Bot


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

    @staticmethod
    def overlap(one: str, other: str) -> bool:
        """The same resource, or one inside the other (folders)."""
        return one == other or one.startswith(other + "/") or other.startswith(one + "/")


class RoomBindings:
    """One bot's bindings: read from room state, cached in ``maillage_room_binding``."""

    def __init__(self, bot: Bot, spec: Binding) -> None:
        self.bot = bot
        self.spec = spec

    def _message(self, key: str, **values: Any) -> str:
        return t(f"{self.spec.messages}.{key}", **values)

    async def target(self, room_id: str) -> str | None:
        """The room's resource, normalised; None when unbound or when its state is refused."""
        raw = await self._state_value(room_id)
        if not raw or await self.refusal(room_id, raw) is not None:
            return None
        return self.spec.normalise(str(raw))

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
        try:
            content = await self.bot.client.get_state_event(RoomID(room_id), self.spec.event_type)
        except MatrixRequestError:
            return None
        if isinstance(content, dict):
            return content.get(self.spec.field)
        return getattr(content, self.spec.field, None)

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
        """Another room's resource that is this one (or contains it, or is inside it)."""
        rows = await self.bot.context.db.fetch(
            "SELECT target FROM maillage_room_binding WHERE bot=$1 AND room_id<>$2", self.bot.localpart, room_id)
        return next((str(row["target"]) for row in rows if self.spec.overlap(value, str(row["target"]))), None)

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
        try:
            await self.bot.client.send_state_event(RoomID(event.room_id), self.spec.event_type, content)
        except MForbidden:
            raise CommandError(self._message("bot_needs_power")) from None
