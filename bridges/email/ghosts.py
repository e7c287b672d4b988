"""Correspondents as ghost users of the bridge's appservice: ``@_mail_jean.dupont=40exemple.fr``
for jean.dupont@exemple.fr, named from the From header, brought into the room by the bridge's
bot and speaking there through the appservice (mautrix's IntentAPI with its token).

In an encrypted room the bot's own device encrypts what a ghost says (ghosts hold no keys),
as mautrix bridges do; the ghost sends the encrypted event.

A ghost speaks from a device of its own (``PASSERELLE``, made once by an appservice login):
Synapse then keeps each transaction id in its database, so a message sent again after a
crash — ours or Synapse's — gives back the first event instead of a second one. Without a
device the transaction ids live in Synapse's memory only, and a Synapse restart between the
send and our record of it would show the message twice.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from mautrix.api import Method, Path
from mautrix.appservice import AppServiceAPI, IntentAPI
from mautrix.appservice.state_store.memory import ASStateStore
from mautrix.client.state_store.memory import MemoryStateStore
from mautrix.errors import MatrixRequestError, MForbidden
from mautrix.types import EventID, EventType, RoomID, UserID

from maillage.bots.runtime.bot import Bot, transaction_id
from maillage.homeserver.render import BRIDGE_SENDER, GHOST_PREFIX

GHOST_DEVICE = "PASSERELLE"
_PLAIN = set("abcdefghijklmnopqrstuvwxyz0123456789._-/")


class _GhostStates(ASStateStore, MemoryStateStore):
    def __init__(self) -> None:
        ASStateStore.__init__(self)
        MemoryStateStore.__init__(self)


def localpart_of(address: str) -> str:
    """The ghost's localpart: the address with every other character as ``=xx`` (its UTF-8 bytes)."""
    escaped = "".join(c if c in _PLAIN else "".join(f"={b:02x}" for b in c.encode()) for c in address.lower())
    return GHOST_PREFIX + escaped[:200]


def is_ghost(user_id: str) -> bool:
    return user_id.startswith("@" + GHOST_PREFIX)


class Ghosts:
    def __init__(self, homeserver_url: str, as_token: str, server_name: str, bot: Bot) -> None:
        self.server_name, self.bot = server_name, bot
        sender = UserID(f"@{BRIDGE_SENDER}:{server_name}")
        self.api = AppServiceAPI(homeserver_url, bot_mxid=sender, token=as_token, state_store=_GhostStates(),
                                 log=cast(Any, logging.getLogger("maillage.courriel.fantomes")), default_retry_count=5)
        self.sender = IntentAPI(sender, self.api, state_store=self.api.state_store)
        self._names: dict[str, str] = {}

    async def close(self) -> None:
        await self.api.session.close()

    def user_id(self, address: str) -> str:
        return f"@{localpart_of(address)}:{self.server_name}"

    async def in_room(self, room_id: str, address: str, name: str) -> IntentAPI:
        """The correspondent's ghost, registered, named and joined to the room (invited by the bot)."""
        ghost = self.sender.user(UserID(self.user_id(address)))
        await ghost.ensure_registered()
        shown = f"{name} ({address})" if name and name.lower() != address else address
        if self._names.get(ghost.mxid) != shown:
            await ghost.set_displayname(shown[:200])
            self._names[ghost.mxid] = shown
        if not await self.api.state_store.is_joined(RoomID(room_id), ghost.mxid):
            try:
                await ghost.join_room_by_id(RoomID(room_id))
            except MForbidden:  # not invited yet: the bot invites, then the ghost joins
                await self.bot.client.invite_user(RoomID(room_id), ghost.mxid)
                await ghost.join_room_by_id(RoomID(room_id))
            await self.api.state_store.joined(RoomID(room_id), ghost.mxid)
        return ghost

    async def send(self, ghost: IntentAPI, room_id: str, about: str, key: str, content: dict[str, Any]) -> EventID:
        """Sent once (the transaction id is the same at every attempt), encrypted by the bot's
        device when the room is encrypted."""
        event_type, body = EventType.ROOM_MESSAGE, content
        assert self.bot.client.state_store is not None
        if await self.bot.client.state_store.is_encrypted(RoomID(room_id)):
            body = (await self.bot.client.encrypt(RoomID(room_id), EventType.ROOM_MESSAGE,
                                                 cast(Any, content))).serialize()
            event_type = EventType.ROOM_ENCRYPTED
        path = Path.v3.rooms[RoomID(room_id)].send[str(event_type)][transaction_id(ghost.mxid, about, key)]
        try:
            sent = await ghost.api.request(Method.PUT, path, body, query_params={"device_id": GHOST_DEVICE})
        except MatrixRequestError as error:
            if getattr(error, "errcode", None) != "M_UNKNOWN_DEVICE":
                raise
            await self._give_device(ghost)
            sent = await ghost.api.request(Method.PUT, path, body, query_params={"device_id": GHOST_DEVICE})
        return EventID(sent["event_id"])

    async def _give_device(self, ghost: IntentAPI) -> None:
        """The ghost's device, made by an appservice login (its access token is not kept: the
        appservice's own token acts for the ghost)."""
        await ghost.api.request(Method.POST, Path.v3.login, {
            "type": "m.login.application_service", "device_id": GHOST_DEVICE,
            "identifier": {"type": "m.id.user", "user": ghost.mxid},
            "initial_device_display_name": "Passerelle de courriel"})
