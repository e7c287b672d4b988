"""Once a day, one direct message per agent: their tasks due tomorrow and their late ones,
every project together — never one message per task.

The direct room is the bot's with that agent, made once (encrypted, marked by the state
event ``fr.maillage.rappels`` naming the agent, so that after a crash between making it
and recording it, it is found rather than made twice). The message waits until the agent
has joined it: keys are only shared with members. It is sent once, even across restarts:
its transaction id comes from (agent, day), and the day is recorded after sending.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
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

from maillage.bots.agenda.events import one_line
from maillage.bots.projets.tasks import Task
from maillage.bots.runtime.binding import state_content
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.projets.bot import ProjetsBot

log = logging.getLogger("maillage.bots.projets")

MARK = EventType.find("fr.maillage.rappels", t_class=EventType.Class.STATE)
ACCESS = EventType.find("fr.maillage.acces", t_class=EventType.Class.STATE)  # the homeserver's access rules
ENCRYPTION = {"algorithm": "m.megolm.v1.aes-sha2"}


async def create_tables(conn: Connection) -> None:
    await conn.execute("CREATE TABLE projet_direct (user_id TEXT PRIMARY KEY, room_id TEXT NOT NULL)")
    await conn.execute("CREATE TABLE projet_reminded (user_id TEXT NOT NULL, day TEXT NOT NULL,"
                       " PRIMARY KEY (user_id, day))")


Due = tuple[Task, str, int]  # the task, its project's name, its number in the project's room


class AssigneeReminders:
    def __init__(self, bot: ProjetsBot) -> None:
        self.bot = bot

    async def tick(self, now: datetime) -> None:
        settings = self.bot.context.config.projets
        if not settings.rappels or now.strftime("%H:%M") < settings.rappels_heure:
            return
        day = now.date().isoformat()
        for user_id, due in (await self.due(now)).items():
            try:  # one agent's failure (their server away) does not hold back the others
                await self.remind(user_id, due, day, now)
            except Exception as error:
                log.info("reminder for %s not sent for now: %s", user_id, type(error).__name__)

    async def remind(self, user_id: str, due: list[Due], day: str, now: datetime) -> None:
        if await self.bot.context.db.fetchval("SELECT 1 FROM projet_reminded WHERE user_id=$1 AND day=$2",
                                              user_id, day):
            return
        room_id = await self.direct_room(user_id)
        if room_id is None:
            return  # invited, not joined yet: tried again at the next tick
        await self.bot.send_about(room_id, f"rappels|{user_id}|{day}",
                                  {"msgtype": "m.text", "body": self.message(due, now)}, key="rappel")
        await self.bot.context.db.execute(
            "INSERT INTO projet_reminded (user_id, day) VALUES ($1, $2) ON CONFLICT DO NOTHING", user_id, day)

    async def due(self, now: datetime) -> dict[str, list[Due]]:
        """Per agent, their open tasks due tomorrow or late, in the projects whose room they are in."""
        tomorrow = now.date() + timedelta(days=1)
        found: dict[str, list[Due]] = defaultdict(list)
        for room_id, list_id in await self.bot.bound_rooms():
            tasks = await self.bot.index.tasks(list_id)
            if not tasks:
                continue
            members = set(await self.bot.client.get_joined_members(RoomID(room_id)))
            name = ""
            for task in tasks:
                if task.objective or not task.is_open or task.assignee not in members or task.due is None:
                    continue
                if task.late(now) or task.due.date() == tomorrow:
                    name = name or await self.bot.room_name(room_id) or list_id
                    found[task.assignee].append((task, name, await self.bot.numbers.of(room_id, task.uid,
                                                                                         task.href)))
        return found

    def message(self, due: list[Due], now: datetime) -> str:
        late = sorted((entry for entry in due if entry[0].late(now)), key=lambda entry: entry[0].due or now)
        tomorrow = [entry for entry in due if not entry[0].late(now)]
        lines = [t("projet.reminder_title")]
        for key, entries in (("projet.reminder_tomorrow", tomorrow), ("projet.reminder_late", late)):
            if entries:
                lines.append(t(key, count=len(entries)))
                lines += [f"– [{one_line(name)[:80]}] " + self.bot.describe(number, task)
                          for task, name, number in entries]
        return "\n".join(lines)

    async def direct_room(self, user_id: str) -> str | None:
        """The bot's direct room with the agent, made when there is none; None until they joined."""
        db = self.bot.context.db
        room_id = await db.fetchval("SELECT room_id FROM projet_direct WHERE user_id=$1", user_id)
        if room_id is None:
            room_id = await self._marked_room(user_id) or await self._make_room(user_id)
            await db.execute("INSERT INTO projet_direct (user_id, room_id) VALUES ($1, $2)"
                             " ON CONFLICT (user_id) DO UPDATE SET room_id=$2", user_id, room_id)
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
        # A partner's agent (a task in a « partenaires » room) needs a room their server may join.
        local = user_id.split(":", 1)[1] == self.bot.context.config.collectivite.nom_serveur
        room_id = await self.bot.client.create_room(
            name=t("projet.reminder_room"), is_direct=True, invitees=[UserID(user_id)],
            initial_state=[{"type": "m.room.encryption", "state_key": "", "content": ENCRYPTION},
                           {"type": MARK.t, "state_key": "", "content": {"agent": user_id}},
                           {"type": ACCESS.t, "state_key": "", "content": {"acces": "interne" if local
                                                                           else "partenaires"}}])
        assert self.bot.client.state_store is not None
        await self.bot.client.state_store.set_encryption_info(
            room_id, RoomEncryptionStateEventContent(algorithm=EncryptionAlgorithm.MEGOLM_V1))
        await self.bot.client.state_store.set_membership(room_id, UserID(user_id), Membership.INVITE)
        return str(room_id)

