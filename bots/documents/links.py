"""``!doc lien``: a document of the room's folder given by a link to someone without an account
(the portal serves it until its end, records every download, answers clearly once it is
withdrawn or expired); ``!doc liens`` lists the room's open links, ``!doc retire-lien`` withdraws
one (its author or a moderator of the room).

The request carries the command's event id: after a crash between the portal's answer and the
reply, the command is read again and the portal gives back the same link.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

from mautrix.types import MessageEvent

from maillage.bots.documents.access import portal_answer
from maillage.bots.documents.bot import DocumentsBot, documents_commands
from maillage.bots.documents.library import bound_folder, existing, resolve
from maillage.bots.runtime.commands import Argument, CommandError
from maillage.i18n import t

LONGEST_DAYS = 30
DEFAULT_DAYS = 7
_DURATION = re.compile(r"^(?P<name>.+?)\s+(?P<days>\d{1,4})\s*(?:jours?|j|days?)$", re.IGNORECASE)


def name_and_days(text: str) -> tuple[str, int]:
    """« plan.pdf 7 jours » → ("plan.pdf", 7); without a duration, seven days."""
    found = _DURATION.match(text.strip())
    if found is None:
        return text.strip(), DEFAULT_DAYS
    days = int(found.group("days"))
    if not 1 <= days <= LONGEST_DAYS:
        raise CommandError(t("doc.link_days_invalid", longest=LONGEST_DAYS))
    return found.group("name").strip(), days


def link_number(text: str) -> int:
    digits = text.removeprefix("n°").removeprefix("#")
    if not digits.isdigit() or len(digits) > 9:
        raise CommandError(t("doc.link_unknown", number=text[:20]))
    return int(digits)


def until(bot: DocumentsBot, expires_ms: int) -> str:
    zone = ZoneInfo(bot.context.config.collectivite.fuseau_horaire)
    return datetime.fromtimestamp(expires_ms / 1000, zone).strftime("%d/%m/%Y %H:%M")


@documents_commands.subcommand("lien", "link", "share",
                               help="un lien de partage du document, pour qui n’a pas de compte",
                               example="!doc lien 2026-11-22_urbanisme_plan.pdf 7 jours",
                               arguments=(Argument("document", "nom du document, [durée en jours]", rest=True),))
async def share(bot: DocumentsBot, event: MessageEvent, document: str) -> None:
    name, days = name_and_days(document)
    folder = await bound_folder(bot, event)
    entry = await existing(bot, resolve(folder, name), name)
    made = await portal_answer(bot, "POST", "/liens", {"cle": event.event_id, "chemin": entry.path,
                                                       "salon": event.room_id, "auteur": event.sender, "jours": days})
    await bot.reply(event, t("doc.link_made", number=made["numero"], name=made["nom"],
                             until=until(bot, made["expire"]), url=made["url"]))


@documents_commands.subcommand("liens", "links", help="les liens de partage ouverts dans ce salon",
                               example="!doc liens")
async def links(bot: DocumentsBot, event: MessageEvent) -> None:
    found = await portal_answer(bot, "GET", f"/liens?salon={quote(event.room_id)}")
    if not found:
        await bot.reply(event, t("doc.links_none"))
        return
    lines = [t("doc.links_title")] + [
        t("doc.links_line", number=link["numero"], name=link["nom"], author=link["auteur"],
          until=until(bot, link["expire"]), downloads=link["telechargements"]) for link in found]
    await bot.reply(event, "\n".join(lines))


@documents_commands.subcommand("retire-lien", "retirer-lien", "unshare", help="retirer un lien de partage",
                               example="!doc retire-lien 3",
                               arguments=(Argument("numéro", "le numéro du lien"),))
async def withdraw(bot: DocumentsBot, event: MessageEvent, **arguments: str) -> None:
    number = link_number(arguments["numéro"])
    mine = [link for link in await portal_answer(bot, "GET", f"/liens?salon={quote(event.room_id)}")
            if link["numero"] == number]
    if mine and mine[0]["auteur"] != event.sender and not await bot.is_room_admin(event.room_id, event.sender):
        raise CommandError(t("doc.link_revoke_refused"))
    withdrawn = await portal_answer(bot, "POST", f"/liens/{number}/retrait",
                                    {"salon": event.room_id, "auteur": event.sender})
    await bot.reply(event, t("doc.link_revoked", number=withdrawn["numero"], name=withdrawn["nom"]))
