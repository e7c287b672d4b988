"""The access requests' side of @documents that is not a command: the portal's API for the bots
(``PortalClient``), and the round that tells requests made on the portal in their service's
team room, once each (the message's transaction id is the request's: a crash between the
message and the portal's « told » does not tell it twice).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import httpx

from maillage.bots.runtime.commands import CommandError
from maillage.config import Config, url_host
from maillage.i18n import t

if TYPE_CHECKING:
    from maillage.bots.documents.bot import DocumentsBot

log = logging.getLogger("maillage.bots.documents.access")


class PortalClient:
    """The portal's API for the bots, with the stack's ``portal_bots_token``."""

    def __init__(self, config: Config, token: str) -> None:
        base = f"http://{url_host(config.reseau.adresse_ecoute)}:{config.portail.port}/api/robots"
        self._http = httpx.AsyncClient(base_url=base, timeout=20, headers={"Authorization": f"Bearer {token}"})

    async def close(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        try:
            answer = await self._http.request(method, path, json=body)
        except httpx.HTTPError:
            raise CommandError(t("access.portal_unreachable")) from None
        if answer.status_code >= 500:
            raise CommandError(t("access.portal_unreachable"))
        return answer.status_code, answer.json()


async def announce_requests(bot: DocumentsBot) -> None:
    """Requests made on the portal, told in their service's team room (a round's work)."""
    status, pending = await bot.portal.call("GET", "/acces/annonces")
    if status != 200:
        log.warning("access requests not read from the portal (HTTP %s)", status)
        return
    for request in pending:
        heads = list(request["responsables"])
        until = t("access.announce_until", day=_day(request["jusqu_au"])) if request["jusqu_au"] else ""
        body = t("access.announce", number=request["numero"], name=request["nom"],
                 from_service=request["service_demandeur"] or "—",
                 resource=t("access.resource_" + request["ressource"]), service=request["nom_service"],
                 right=t("portal.right_" + request["droit"]), until=until, reason=request["motif"],
                 heads=t("access.announce_heads", heads=", ".join(heads)) if heads else "")
        content = {"msgtype": "m.notice", "body": body, "m.mentions": {"user_ids": heads}}
        await bot.send_about(request["salon"], f"acces|{request['numero']}", content, key="annonce")
        await bot.portal.call("POST", f"/acces/{request['numero']}/annoncee")


def _day(iso: str) -> str:
    year, month, day = iso.split("-")
    return f"{day}/{month}/{year}"
