"""``!accès``: access requests to another service's room, folder or calendar, made and decided
in Matrix; the portal keeps them (``portal/access.py``) and says who may decide. Requests
made on the portal are told in the rooms by ``requests.announce_requests``.
"""

from __future__ import annotations

from typing import Any

from mautrix.types import MessageEvent

from maillage.bots.documents.bot import DocumentsBot, access_commands
from maillage.bots.runtime.commands import Argument, CommandError
from maillage.i18n import t

RIGHT_WORDS = {"lecture": "lecture", "read": "lecture", "écriture": "ecriture", "ecriture": "ecriture",
               "write": "ecriture"}
RESOURCE_WORDS = {"salon": "salon", "room": "salon", "dossier": "dossier", "folder": "dossier", "agenda": "agenda",
                  "calendrier": "agenda", "calendar": "agenda"}


def request_number(text: str) -> int:
    digits = text.removeprefix("n°").removeprefix("#")
    if not digits.isdigit() or len(digits) > 9:
        raise CommandError(t("access.unknown", number=text[:20]))
    return int(digits)


NUMBER = Argument("numéro", "le numéro de la demande", parse=request_number)


def read_request(words: list[str]) -> dict[str, str]:
    """« culture dossier [lecture|écriture] [jusqu'au 31/12/2026] <motif…> »."""
    if len(words) < 2 or words[1].lower() not in RESOURCE_WORDS:
        raise CommandError(t("access.resource_invalid"))
    body = {"service": words[0].lower(), "ressource": RESOURCE_WORDS[words[1].lower()], "droit": "", "jusqu_au": ""}
    rest = words[2:]
    if rest and rest[0].lower() in RIGHT_WORDS:
        body["droit"], rest = RIGHT_WORDS[rest[0].lower()], rest[1:]
    if len(rest) >= 2 and rest[0].lower().replace("’", "'") in ("jusqu'au", "jusquau", "until"):
        body["jusqu_au"], rest = rest[1], rest[2:]
    body["motif"] = " ".join(rest)
    return body


async def portal_answer(bot: DocumentsBot, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    status, found = await bot.portal.call(method, path, body)
    if status >= 400:
        raise CommandError(str(found.get("detail", "")) if isinstance(found, dict) else t("access.portal_unreachable"))
    return found


@access_commands.subcommand(
    "demande", "demander", "request", help="demander l’accès au salon, au dossier ou à l’agenda d’un autre service",
    example="!accès demande culture dossier lecture jusqu’au 31/12/2026 préparer la saison culturelle",
    arguments=(Argument("demande", "service, salon|dossier|agenda, [lecture|écriture], [jusqu’au date], motif",
                        rest=True),))
async def ask(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    body = read_request(str(arguments["demande"]).split())
    made = await portal_answer(bot, "POST", "/acces", {"demandeur": event.sender, **body})
    await bot.reply(event, t("access.asked_in_matrix", number=made["numero"], service=body["service"]))


@access_commands.subcommand("accorde", "accorder", "grant", help="accorder une demande d’accès (chef du service)",
                            example="!accès accorde 12", arguments=(NUMBER,))
async def grant(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    number = arguments["numéro"]
    decided = await portal_answer(bot, "POST", f"/acces/{number}/decision",
                                  {"decideur": event.sender, "accord": True, "motif": ""})
    await bot.reply(event, t("access.granted", number=decided["numero"], name=decided["nom"],
                             resource=t("access.resource_" + decided["ressource"]), service=decided["nom_service"]))


@access_commands.subcommand("refuse", "refuser", "deny", help="refuser une demande d’accès, avec un motif",
                            example="!accès refuse 12 le dossier contient des données personnelles",
                            arguments=(NUMBER, Argument("motif", "", required=False, rest=True)))
async def refuse(bot: DocumentsBot, event: MessageEvent, **arguments: Any) -> None:
    number = arguments["numéro"]
    reason = str(arguments.get("motif", ""))
    await portal_answer(bot, "POST", f"/acces/{number}/decision",
                        {"decideur": event.sender, "accord": False, "motif": reason})
    await bot.reply(event, t("access.refused", number=number, reason=reason))


