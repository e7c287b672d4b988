"""@documents: files every document posted in a room into that room's WebDAV folder.

The room's folder is room state (``fr.maillage.documents``, state key ``""``,
content ``{"dossier": "urbanisme/permis"}``; empty content: unbound), so any
client shows it and it survives the loss of the bot's database.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, ClassVar

from mautrix.errors import MatrixRequestError, MForbidden
from mautrix.types import EventType, MessageEvent, PowerLevelStateEventContent, RoomID, UserID

from maillage.bots.commands import Argument, CommandError, CommandSet
from maillage.bots.runtime import Bot
from maillage.i18n import t

BINDING_EVENT = EventType.find("fr.maillage.documents", t_class=EventType.Class.STATE)
MAX_FOLDER_LENGTH = 200
_SAFE_PART = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

documents_commands = CommandSet(("doc", "documents"), "les documents du salon, rangés dans son dossier partagé")


def normalise_folder(raw: str) -> str:
    """A folder path inside the documents tree, or CommandError saying why not.

    Accents and spaces are normalised; ``..``, absolute paths, encoded separators
    and control characters are refused rather than cleaned, so nobody is
    surprised about where a room's documents go.
    """
    if "%" in raw or "\\" in raw or any(unicodedata.category(c) == "Cc" for c in raw):
        raise CommandError(t("doc.folder_invalid", value=raw[:60]))
    if raw.startswith("/") or len(raw) > MAX_FOLDER_LENGTH:
        raise CommandError(t("doc.folder_invalid", value=raw[:60]))
    parts = []
    for part in raw.strip().split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise CommandError(t("doc.folder_invalid", value=raw[:60]))
        slug = slugify(part)
        if not _SAFE_PART.match(slug):
            raise CommandError(t("doc.folder_invalid", value=raw[:60]))
        parts.append(slug)
    if not parts:
        raise CommandError(t("doc.folder_invalid", value=raw[:60]))
    return "/".join(parts)


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9._]+", "-", ascii_text.lower()).strip("-")


class DocumentsBot(Bot):
    localpart = "documents"
    displayname = "Documents"
    title = "Robot Documents — aide"
    commands: ClassVar[list[CommandSet]] = [documents_commands]

    async def binding(self, room_id: str) -> str | None:
        try:
            content = await self.client.get_state_event(RoomID(room_id), BINDING_EVENT)
        except MatrixRequestError:
            return None
        folder = content.get("dossier") if isinstance(content, dict) else getattr(content, "dossier", None)
        return str(folder) if folder else None

    async def is_room_admin(self, room_id: str, user_id: str) -> bool:
        """May change the room's state: a creator (room versions 12+) or enough power."""
        state = await self.client.get_state(RoomID(room_id))
        create = next((e for e in state if e.type == EventType.ROOM_CREATE), None)
        creators = {create.sender, *(create.content.get("additional_creators") or [])} if create else set()
        if user_id in creators:
            return True
        levels = next((e.content for e in state if e.type == EventType.ROOM_POWER_LEVELS), None)
        if not isinstance(levels, PowerLevelStateEventContent):
            return False
        return bool(levels.get_user_level(UserID(user_id)) >= levels.get_event_level(BINDING_EVENT))

    async def send_binding(self, event: MessageEvent, content: dict[str, Any]) -> None:
        if not await self.is_room_admin(event.room_id, event.sender):
            raise CommandError(t("doc.admin_only"))
        try:
            await self.client.send_state_event(event.room_id, BINDING_EVENT, content)
        except MForbidden:
            raise CommandError(t("doc.bot_needs_power")) from None


@documents_commands.subcommand("lier", "bind", help="lier ce salon à un dossier de documents",
                               example="!doc lier urbanisme/permis-de-construire",
                               arguments=(Argument("dossier", "chemin du dossier", rest=True),))
async def bind(bot: DocumentsBot, event: MessageEvent, dossier: str) -> None:
    folder = normalise_folder(dossier)
    await bot.send_binding(event, {"dossier": folder})
    await bot.reply(event, t("doc.bound", folder=folder))


@documents_commands.subcommand("délier", "delier", "unbind", help="ne plus ranger les documents de ce salon",
                               example="!doc délier")
async def unbind(bot: DocumentsBot, event: MessageEvent) -> None:
    if await bot.binding(event.room_id) is None:
        raise CommandError(t("doc.not_bound"))
    await bot.send_binding(event, {})
    await bot.reply(event, t("doc.unbound"))


@documents_commands.subcommand("dossier", "folder", help="le dossier lié à ce salon", example="!doc dossier")
async def show_folder(bot: DocumentsBot, event: MessageEvent) -> None:
    folder = await bot.binding(event.room_id)
    await bot.reply(event, t("doc.current", folder=folder) if folder else t("doc.not_bound"))
