"""A bot's direct room with an agent: made once, found again after a crash.

The room is encrypted and marked by the state event ``fr.maillage.rappels`` naming the
agent, so that after a crash between making it and recording it, it is found rather than
made twice. A message waits until the agent has joined: keys are only shared with members.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING

from mautrix.errors import MatrixRequestError
from mautrix.types import (
    EncryptionAlgorithm,
    EventType,
    Membership,
    MemberStateEventContent,
    RoomEncryptionStateEventContent,
    RoomID,
    UserID,
)
from mautrix.util.async_db import Connection

from maillage.bots.runtime.binding import state_content

if TYPE_CHECKING:
    from maillage.bots.runtime.bot import Bot

MARK = EventType.find("fr.maillage.rappels", t_class=EventType.Class.STATE)
ACCESS = EventType.find("fr.maillage.acces", t_class=EventType.Class.STATE)  # the homeserver's access rules
ENCRYPTION = {"algorithm": "m.megolm.v1.aes-sha2"}


async def create_table(conn: Connection) -> None:
    await conn.execute("CREATE TABLE maillage_direct_room (bot TEXT NOT NULL, user_id TEXT NOT NULL,"
                       " room_id TEXT NOT NULL, PRIMARY KEY (bot, user_id))")


class DirectRooms:
    def __init__(self, bot: Bot, room_name: str) -> None:
        self.bot = bot
        self.room_name = room_name
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # per agent: one room made

    async def joined(self, user_id: str) -> str | None:
        """The bot's direct room with the agent, made when there is none; None until they joined."""
        async with self._locks[user_id]:
            return await self._joined(user_id)

    async def _joined(self, user_id: str) -> str | None:
        db = self.bot.context.db
        room_id = await db.fetchval("SELECT room_id FROM maillage_direct_room WHERE bot=$1 AND user_id=$2",
                                    self.bot.localpart, user_id)
        if room_id is None:
            room_id = await self._marked_room(user_id) or await self._make_room(user_id)
            await db.execute("INSERT INTO maillage_direct_room (bot, user_id, room_id) VALUES ($1, $2, $3)"
                             " ON CONFLICT (bot, user_id) DO UPDATE SET room_id=$3", self.bot.localpart, user_id,
                             room_id)
        members = await self.bot.client.get_members(RoomID(str(room_id)), membership=None)
        state = {str(member.state_key): member.content.membership for member in members
                 if isinstance(member.content, MemberStateEventContent)}
        if state.get(user_id) == Membership.JOIN:
            return str(room_id)
        if user_id not in state:  # the invitation never went out (refused by the homeserver): again
            await self.bot.client.invite_user(RoomID(str(room_id)), UserID(user_id))
        return None  # invited and not joined yet, or declined or left: nothing sent

    async def _marked_room(self, user_id: str) -> str | None:
        for room_id in await self.bot.client.get_joined_rooms():
            try:
                mark = await self.bot.client.get_state_event(room_id, MARK)
            except MatrixRequestError:
                continue
            if state_content(mark).get("agent") == user_id:
                return str(room_id)
        return None

    async def _make_room(self, user_id: str) -> str:
        # A partner's agent (in a « partenaires » room) needs a room their server may join.
        local = user_id.split(":", 1)[1] == self.bot.context.config.collectivite.nom_serveur
        room_id = await self.bot.client.create_room(
            name=self.room_name, is_direct=True, invitees=[UserID(user_id)],
            initial_state=[{"type": "m.room.encryption", "state_key": "", "content": ENCRYPTION},
                           {"type": MARK.t, "state_key": "", "content": {"agent": user_id}},
                           {"type": ACCESS.t, "state_key": "", "content": {"acces": "interne" if local
                                                                           else "partenaires"}}])
        assert self.bot.client.state_store is not None
        await self.bot.client.state_store.set_encryption_info(
            room_id, RoomEncryptionStateEventContent(algorithm=EncryptionAlgorithm.MEGOLM_V1))
        await self.bot.client.state_store.set_membership(room_id, UserID(user_id), Membership.INVITE)
        return str(room_id)
