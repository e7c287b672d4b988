"""Share links: « !doc lien » gives a document of the room's folder to someone without an
account, served by the portal without revealing any folder, every download recorded; a
withdrawn, expired or vanished link answers clearly; only its author or a moderator
withdraws it; a request asked again (a crash before the reply) gives the same link."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.harness.browserless import Browser, csrf_of
from tests.harness.matrix import bot_reply, login_agent
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_dav import make_agent
from tests.portal.test_portal_login import sign_in
from tests.portal.test_portal_organisation import service_ids

pytestmark = pytest.mark.usefixtures("in_french")
DOCUMENTS = "@documents:localhost"
LINK = re.compile(r"n°(\d+) pour « ([^»]+) », valable jusqu’au (\d\d/\d\d/\d{4}) \d\d:\d\d : (\S+)")


async def test_a_document_is_shared_by_a_link_that_tells_nothing_of_the_folders_and_ends_clearly(
        portal: PortalStack, browser: Browser, tmp_path: Path) -> None:
    config = portal.stack.config
    webdav = f"http://127.0.0.1:{config.reseau.port_webdav}"
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": "secretariat-li",
                                                               "nom": "Secrétariat général"})
    assert made.status_code == 200, made.text[:500]
    anne_first = await make_agent(browser, portal, "anne.petit", "secretariat-li", "agent")
    marc_first = await make_agent(browser, portal, "marc.blanc", "secretariat-li", "agent")
    _, room = await service_ids(browser, portal, "secretariat-li")
    content = b"%PDF-1.4 compte rendu du conseil municipal\n" * 200
    async with httpx.AsyncClient(auth=(config.webdav.utilisateur, portal.stack.secrets.dav_password),
                                 timeout=30) as dav:
        for name in ("compte-rendu.pdf", "annexe.pdf"):
            assert (await dav.put(f"{webdav}/secretariat-li/{name}", content=content)).status_code == 201
    anne = await login_agent(config.synapse_url, "@anne.petit:localhost", anne_first, tmp_path / "anne")
    marc = await login_agent(config.synapse_url, "@marc.blanc:localhost", marc_first, tmp_path / "marc")
    try:
        # Wrong input: said in French, no link made.
        for command, told in (("!doc lien absent.pdf", "Aucun document « absent.pdf »"),
                              ("!doc lien compte-rendu.pdf 45 jours", "de 1 à 30 jours"),
                              ("!doc lien ../autre-service/budget.pdf", "Nom refusé"),
                              ("!doc retire-lien 999999", "Aucun lien de partage n°999999")):
            answer = await bot_reply(anne, room, DOCUMENTS, command)
            assert told in answer, (command, answer)
        assert await bot_reply(anne, room, DOCUMENTS, "!doc liens") == "Aucun lien de partage ouvert dans ce salon."

        answer = await bot_reply(anne, room, DOCUMENTS, "!doc lien compte-rendu.pdf 2 jours")
        found = LINK.search(answer)
        assert found, answer
        number, url = found.group(1), found.group(4)
        assert found.group(3) == (datetime.now(ZoneInfo("Europe/Paris")) + timedelta(days=2)).strftime("%d/%m/%Y")
        assert url.startswith(portal.url + "/partage/") and "secretariat" not in url

        async with httpx.AsyncClient(timeout=30) as anyone:  # no account, no cookie
            got = await anyone.get(url)
            assert got.status_code == 200 and got.content == content
            assert "compte-rendu.pdf" in got.headers["content-disposition"]
            assert "secretariat" not in str(got.headers).lower()  # nothing of the folders
            unknown = await anyone.get(f"{portal.url}/partage/{'A' * 43}")
            assert unknown.status_code == 404 and "n’existe pas" in unknown.text
        listed = await bot_reply(anne, room, DOCUMENTS, "!doc liens")
        assert f"n°{number} — compte-rendu.pdf · par @anne.petit:localhost" in listed
        assert "1 téléchargement(s)" in listed

        # Withdrawn by its author only (or a moderator): then the link says so.
        refused = await bot_reply(marc, room, DOCUMENTS, f"!doc retire-lien {number}")
        assert "Seul l’auteur du lien ou un modérateur" in refused
        withdrawn = await bot_reply(anne, room, DOCUMENTS, f"!doc retire-lien {number}")
        assert withdrawn == f"Lien de partage n°{number} (« compte-rendu.pdf ») retiré : il ne donne plus le document."
        async with httpx.AsyncClient(timeout=30) as anyone:
            gone = await anyone.get(url)
            assert gone.status_code == 410 and "retiré par la collectivité" in gone.text
            assert content[:20] not in gone.content

            # Expired (its end moved to the past, as time would), and a document moved away.
            expiring = LINK.search(await bot_reply(marc, room, DOCUMENTS, "!doc lien annexe.pdf 1 jour"))
            moved = LINK.search(await bot_reply(marc, room, DOCUMENTS, "!doc lien compte-rendu.pdf"))
            assert expiring and moved
            with sqlite3.connect(config.data_dir / "portail" / "portail.db") as db:
                db.execute("UPDATE share_link SET expires_at=? WHERE id=?",
                           (int(datetime.now().timestamp() * 1000) - 1000, int(expiring.group(1))))
            expired = await anyone.get(expiring.group(4))
            assert expired.status_code == 410 and "a expiré" in expired.text
            async with httpx.AsyncClient(auth=(config.webdav.utilisateur, portal.stack.secrets.dav_password),
                                         timeout=30) as dav:
                assert (await dav.delete(f"{webdav}/secretariat-li/compte-rendu.pdf")).status_code == 204
            vanished = await anyone.get(moved.group(4))
            assert vanished.status_code == 410 and "n’est plus disponible" in vanished.text

        # Asked again with the same command (a crash before the reply): the same link, not another.
        async with httpx.AsyncClient(timeout=30, headers={
                "Authorization": f"Bearer {portal.stack.secrets.portal_bots_token}"}) as bots:
            body = {"cle": "$evenement-rejoue", "chemin": "secretariat-li/annexe.pdf", "salon": room,
                    "auteur": "@anne.petit:localhost", "jours": 3}
            first = await bots.post(f"{portal.url}/api/robots/liens", json=body)
            again = await bots.post(f"{portal.url}/api/robots/liens", json=body)
            assert first.status_code == again.status_code == 201
            assert first.json()["url"] == again.json()["url"] and first.json()["numero"] == again.json()["numero"]
            outside = await bots.post(f"{portal.url}/api/robots/liens", json={**body, "cle": "$autre",
                                                                               "chemin": "../../etc/passwd"})
            assert outside.status_code == 422
            trashed = {**body, "cle": "$corbeille", "chemin": "secretariat-li/.corbeille/x.pdf"}
            trash = await bots.post(f"{portal.url}/api/robots/liens", json=trashed)
            assert trash.status_code == 422
    finally:
        await anne.close()
        await marc.close()
    audit = await browser.get(f"{portal.url}/journal?q=lien")
    assert "lien.creation" in audit.text and "lien.retrait" in audit.text
