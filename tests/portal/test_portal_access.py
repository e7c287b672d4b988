"""Access requests: an agent asks for another service's folder (on the portal) or room (in
Matrix); the bot tells the request in that service's team room, mentioning its head; only
the head (or the direction, an admin) decides; a grant opens the DAV server or the room,
until its last day, when the portal takes it back. Wrong input changes nothing; everything
is in the audit."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.harness.browserless import Browser, csrf_of
from tests.harness.matrix import bot_reply, login_agent
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_dav import app_password, make_agent
from tests.portal.test_portal_login import sign_in
from tests.portal.test_portal_organisation import service_ids

pytestmark = pytest.mark.usefixtures("in_french")
DOCUMENTS = "@documents:localhost"


def paris_today() -> date:
    return datetime.now(ZoneInfo("Europe/Paris")).date()


async def test_an_access_request_is_decided_by_the_head_of_service_in_matrix_and_ends_on_its_day(
        portal: PortalStack, browser: Browser, tmp_path: Path) -> None:
    config = portal.stack.config
    webdav = f"http://127.0.0.1:{config.reseau.port_webdav}"
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    for key, name in (("urba-ac", "Urbanisme"), ("culture-ac", "Culture")):
        made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key, "nom": name})
        assert made.status_code == 200, made.text[:500]
    remi_first = await make_agent(browser, portal, "remi.faure", "urba-ac", "agent")
    nina_first = await make_agent(browser, portal, "nina.roche", "culture-ac", "chef")
    theo_first = await make_agent(browser, portal, "theo.vidal", "culture-ac", "agent")
    _, urba_room = await service_ids(browser, portal, "urba-ac")
    _, culture_room = await service_ids(browser, portal, "culture-ac")
    remi_browser, remi_password = await app_password(portal, "remi.faure", remi_first, "Portable")
    nina = await login_agent(config.synapse_url, "@nina.roche:localhost", nina_first, tmp_path / "nina")
    theo = await login_agent(config.synapse_url, "@theo.vidal:localhost", theo_first, tmp_path / "theo")
    remi = await login_agent(config.synapse_url, "@remi.faure:localhost", remi_first, tmp_path / "remi")
    try:
        # Wrong values on the portal: told next to the field, nothing asked.
        mine = await remi_browser.get(f"{portal.url}/moi")
        good = {"csrf": csrf_of(mine), "service": "culture-ac", "ressource": "dossier", "droit": "lecture",
                "jusqu_au": (paris_today() + timedelta(days=30)).isoformat(), "motif": "Préparer le festival"}
        for field, value, told in (("motif", "", "Donnez le motif"), ("service", "urba-ac", "votre propre service"),
                                   ("jusqu_au", "2020-01-01", "La date de fin doit être"),
                                   ("jusqu_au", "demain", "n’est pas une date"),
                                   ("ressource", "tout", "Choisissez ce qui est demandé")):
            refused = await remi_browser.post(f"{portal.url}/moi/acces", data={**good, field: value})
            assert refused.status_code == 422 and told in refused.text, (field, refused.text[:300])
        assert "Mes demandes d’accès" not in (await remi_browser.get(f"{portal.url}/moi")).text
        assert (await remi_browser.post(f"{portal.url}/moi/acces", data={**good, "csrf": ""})).status_code == 403

        asked = await remi_browser.post(f"{portal.url}/moi/acces", data=good)
        assert asked.status_code == 200 and "envoyée" in asked.text, asked.text[:500]
        number = re.search(r"Demande n°(\d+) envoyée", asked.text)
        assert number
        n = number.group(1)

        # Told in Culture's team room, mentioning its head.
        announcement = await nina.wait_for_text(culture_room, lambda m: m.sender == DOCUMENTS
                                                and f"Demande d’accès n°{n}" in m.body, timeout=90)
        assert "Remi Faure" in announcement.body and "le dossier" in announcement.body
        assert "@nina.roche:localhost" in announcement.body

        async with httpx.AsyncClient(auth=("remi.faure", remi_password), timeout=30) as dav:
            assert (await dav.request("PROPFIND", f"{webdav}/culture-ac/", headers={"Depth": "0"})).status_code == 403
            # Somebody who is not the head cannot decide; the head can, once.
            not_head = await bot_reply(theo, culture_room, DOCUMENTS, f"!accès accorde {n}")
            assert "Seuls le chef du service Culture" in not_head
            assert (await dav.request("PROPFIND", f"{webdav}/culture-ac/", headers={"Depth": "0"})).status_code == 403
            granted = await bot_reply(nina, culture_room, DOCUMENTS, f"!accès accorde {n}")
            assert f"Demande n°{n} accordée" in granted and "Remi Faure" in granted
            assert (await dav.request("PROPFIND", f"{webdav}/culture-ac/", headers={"Depth": "0"})).status_code == 207
            assert (await dav.put(f"{webdav}/culture-ac/note.txt", content=b"x")).status_code == 403  # read only
            again = await bot_reply(nina, culture_room, DOCUMENTS, f"!accès accorde {n}")
            assert "déjà accordée" in again

            # A request made in Matrix, refused with a reason (and not without one).
            in_matrix = await bot_reply(remi, urba_room, DOCUMENTS,
                                        "!accès demande culture-ac salon suivre le festival")
            other = re.search(r"Demande n°(\d+) envoyée", in_matrix)
            assert other, in_matrix
            m = other.group(1)
            await nina.wait_for_text(culture_room, lambda msg: f"Demande d’accès n°{m}" in msg.body, timeout=90)
            assert "Un refus se motive" in await bot_reply(nina, culture_room, DOCUMENTS, f"!accès refuse {m}")
            assert f"Demande n°{m} refusée" in await bot_reply(nina, culture_room, DOCUMENTS,
                                                             f"!accès refuse {m} pas pendant le montage")
            bad = await bot_reply(remi, urba_room, DOCUMENTS, "!accès demande culture-ac tout ce que vous avez")
            assert "Choisissez ce qui est demandé" in bad
            mine = await remi_browser.get(f"{portal.url}/moi")
            assert "refusée — pas pendant le montage" in mine.text and "accordée" in mine.text

            # The grant's last day passes: the portal takes it back (looked for every minute).
            with sqlite3.connect(config.data_dir / "portail" / "portail.db") as db:
                db.execute("UPDATE access_request SET until=? WHERE id=?",
                           ((paris_today() - timedelta(days=1)).isoformat(), int(n)))
            for _ in range(80):
                if (await dav.request("PROPFIND", f"{webdav}/culture-ac/", headers={"Depth": "0"})).status_code == 403:
                    break
                await asyncio.sleep(1)
            assert (await dav.request("PROPFIND", f"{webdav}/culture-ac/", headers={"Depth": "0"})).status_code == 403
        assert "expirée" in (await remi_browser.get(f"{portal.url}/moi")).text
        audit = await browser.get(f"{portal.url}/journal?q=acces.")
        for action in ("acces.demande", "acces.accord", "acces.refus", "acces.expiration"):
            assert action in audit.text, action
    finally:
        for agent in (nina, theo, remi):
            await agent.close()
        await remi_browser.close()


async def test_the_api_for_the_bots_refuses_anybody_without_the_stack_s_token(portal: PortalStack) -> None:
    async with httpx.AsyncClient(base_url=f"{portal.url}/api/robots", timeout=30) as http:
        for headers in ({}, {"Authorization": "Bearer faux-jeton"},
                        {"Authorization": f"Bearer {portal.stack.secrets.portal_oidc_secret}"}):
            assert (await http.get("/acces/annonces", headers=headers)).status_code == 401
            forged = await http.post("/acces/1/decision", headers=headers,
                                     json={"decideur": "@admin:localhost", "accord": True, "motif": ""})
            assert forged.status_code == 401 and "Jeton" in forged.json()["detail"]
        allowed = await http.get("/acces/annonces",
                                 headers={"Authorization": f"Bearer {portal.stack.secrets.portal_bots_token}"})
        assert allowed.status_code == 200
