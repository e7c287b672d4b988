"""The portal's write path against the real servers: a service becomes a Matrix space with its
team room, a WebDAV folder, a calendar and a task list bound to the bots; an agent becomes a
Matrix account in their service. Wrong input is told next to its field and changes nothing;
agents cannot use the admin pages; a creation cut by an outage resumes without repeating."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import caldav.davclient
import httpx
import pytest

from maillage.synapse_admin import SynapseAdmin
from tests.conftest import ServiceProcess
from tests.harness.browserless import Browser, csrf_of
from tests.harness.matrix import login_agent
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_login import sign_in

pytestmark = pytest.mark.usefixtures("in_french")
ROOM_ID = re.compile(r"![A-Za-z0-9_-]{18,}(?::[a-z0-9.:-]+)?")  # room version 12: no server part


async def admin_page(browser: Browser, portal: PortalStack, path: str) -> httpx.Response:
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, path)
    assert page.status_code == 200, page.text[:300]
    return page


async def state(admin_token: str, portal: PortalStack, room_id: str, event_type: str, key: str = "") -> dict[str, Any]:
    async with SynapseAdmin(portal.stack.config.synapse_url, admin_token) as admin:
        return await admin.state(room_id, event_type, key)


async def service_ids(browser: Browser, portal: PortalStack, key: str) -> tuple[str, str]:
    """The space and the team room, as the service's page shows them."""
    page = await browser.get(f"{portal.url}/services/{key}")
    ids = list(dict.fromkeys(ROOM_ID.findall(page.text)))
    assert len(ids) == 2, page.text
    return ids[0], ids[1]


async def test_a_service_is_made_everywhere_and_bad_input_changes_nothing(
        portal: PortalStack, browser: Browser, admin_token: str) -> None:
    page = await admin_page(browser, portal, "/services")
    csrf = csrf_of(page)
    no_token = await browser.post(f"{portal.url}/services", data={"cle": "urbanisme-po", "nom": "Urbanisme"})
    assert no_token.status_code == 403
    bad = await browser.post(f"{portal.url}/services", data={"csrf": csrf, "cle": "Urba nisme", "nom": "Urbanisme"})
    assert bad.status_code == 422 and "Identifiant invalide" in bad.text
    assert 'id="champ-cle"' in bad.text and 'aria-invalid="true"' in bad.text
    assert "Urba nisme" in bad.text  # what was typed is kept for correcting
    listing = await browser.get(f"{portal.url}/services")
    assert "/services/urbanisme-po" not in listing.text

    made = await browser.post(f"{portal.url}/services", data={"csrf": csrf, "cle": "urbanisme-po", "nom": "Urbanisme"})
    assert made.status_code == 200 and "est créé" in made.text
    again = await browser.post(f"{portal.url}/services", data={"csrf": csrf, "cle": "urbanisme-po", "nom": "Autre"})
    assert again.status_code == 422 and "déjà celui d’un service" in again.text

    space, room = await service_ids(browser, portal, "urbanisme-po")
    assert (await state(admin_token, portal, space, "m.room.create"))["type"] == "m.space"
    assert "via" in await state(admin_token, portal, space, "m.space.child", room)
    rules = await state(admin_token, portal, room, "m.room.join_rules")
    assert rules["join_rule"] == "restricted" and rules["allow"] == [{"type": "m.room_membership", "room_id": space}]
    assert (await state(admin_token, portal, room, "m.room.encryption"))["algorithm"] == "m.megolm.v1.aes-sha2"
    assert await state(admin_token, portal, room, "fr.maillage.documents") == {"dossier": "urbanisme-po"}
    assert await state(admin_token, portal, room, "fr.maillage.agenda") == {"calendrier": "urbanisme-po"}
    assert await state(admin_token, portal, room, "fr.maillage.projet") == {"liste": "urbanisme-po-taches"}

    config, secrets = portal.stack.config, portal.stack.secrets
    async with httpx.AsyncClient(auth=(config.webdav.utilisateur, secrets.dav_password)) as dav:
        folder = await dav.request("PROPFIND", f"http://127.0.0.1:{config.reseau.port_webdav}/urbanisme-po/",
                                   headers={"Depth": "0"})
    assert folder.status_code == 207
    client: Any = caldav.davclient.DAVClient(url=f"http://127.0.0.1:{config.reseau.port_caldav}/",
                                             username="maillage", password=secrets.dav_password)
    calendars = {c.url.path.rstrip("/").rsplit("/", 1)[1]: c for c in client.principal().calendars()}
    assert "VEVENT" in calendars["urbanisme-po"].get_supported_components()
    assert "VTODO" in calendars["urbanisme-po-taches"].get_supported_components()

    async with SynapseAdmin(config.synapse_url, admin_token) as admin:  # the bots take up their binding
        for bot in ("documents", "agenda", "projets"):
            for _ in range(60):
                membership = (await admin.state(room, "m.room.member", f"@{bot}:localhost")).get("membership")
                if membership == "join":
                    break
                await asyncio.sleep(0.5)
            assert membership == "join", bot

    journal = await browser.get(f"{portal.url}/journal?q=urbanisme-po")
    assert "service.creation" in journal.text and portal.admin_email in journal.text


async def test_an_agent_is_made_in_their_service_and_cannot_use_admin_pages(
        portal: PortalStack, browser: Browser, admin_token: str, tmp_path: Path) -> None:
    page = await admin_page(browser, portal, "/services")
    made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": "etat-civil",
                                                               "nom": "État civil"})
    assert made.status_code == 200, made.text[:500]
    agents = await browser.get(f"{portal.url}/agents")
    csrf = csrf_of(agents)
    good = {"csrf": csrf, "prenom": "Léa", "nom": "Fournier", "email": "lea.fournier@test-sur-loire.example",
            "service": "etat-civil", "role": "chef"}
    for field, value, told in (("email", "lea.fournier", "Adresse électronique invalide"),
                               ("service", "inconnu", "Service inconnu"), ("role", "maire", "Rôle inconnu"),
                               ("prenom", "  ", "prénom et le nom d’usage sont obligatoires"),
                               ("email", "Léa.Fournier@test-sur-loire.example", "ne peut pas devenir un identifiant")):
        refused = await browser.post(f"{portal.url}/agents", data={**good, field: value})
        assert refused.status_code == 422 and told in refused.text, (field, refused.text[:400])
    async with SynapseAdmin(portal.stack.config.synapse_url, admin_token) as admin:
        assert await admin.user("@lea.fournier:localhost") is None  # nothing made by the refused forms

    created = await browser.post(f"{portal.url}/agents", data=good)
    assert created.status_code == 200 and "@lea.fournier:localhost" in created.text
    password = re.search(r'class="secret">([^<]+)<', created.text)
    assert password
    twice = await browser.post(f"{portal.url}/agents", data=good)
    assert twice.status_code == 422 and "existe déjà" in twice.text

    space, room = await service_ids(browser, portal, "etat-civil")
    async with SynapseAdmin(portal.stack.config.synapse_url, admin_token) as admin:
        account = await admin.user("@lea.fournier:localhost")
        assert account is not None and account["displayname"] == "Léa Fournier"
        # Synapse finds this very account when she signs in through the portal (its subject).
        assert account["external_ids"] == [{"auth_provider": "oidc-maillage", "external_id": "lea.fournier"}]
        for joined in (space, room):
            assert (await admin.state(joined, "m.room.member", "@lea.fournier:localhost"))["membership"] == "join"
        assert (await admin.state(room, "m.room.power_levels"))["users"]["@lea.fournier:localhost"] == 50

    # Her first password opens a Matrix client too: she is in her service's space and team room.
    lea = await login_agent(portal.stack.config.synapse_url, "@lea.fournier:localhost", password.group(1),
                            tmp_path / "nio-lea")
    try:
        assert space in lea.client.rooms and room in lea.client.rooms
        assert lea.client.rooms[room].display_name == "État civil — équipe"
    finally:
        await lea.close()

    agent = Browser()
    try:
        mine = await sign_in(agent, portal, "lea.fournier@test-sur-loire.example", password.group(1))
        assert mine.status_code == 200 and "État civil" in mine.text and "@lea.fournier:localhost" in mine.text
        for path in ("/services", "/agents", "/journal", "/journal.csv", "/services/etat-civil"):
            denied = await agent.get(portal.url + path)
            assert denied.status_code == 403 and "réservée aux administrateurs" in denied.text, path
        sneaky = await agent.post(f"{portal.url}/agents", data={**good, "csrf": csrf_of(mine),
                                                                 "email": "complice@test-sur-loire.example"})
        assert sneaky.status_code == 403
    finally:
        await agent.close()
    listing = await browser.get(f"{portal.url}/agents")
    assert "complice" not in listing.text
    export = await browser.get(f"{portal.url}/journal.csv")
    assert export.headers["content-type"].startswith("text/csv") and "agent.creation" in export.text


async def test_a_service_cut_by_an_outage_resumes_without_repeating(
        portal: PortalStack, browser: Browser, admin_token: str, webdav_process: ServiceProcess) -> None:
    page = await admin_page(browser, portal, "/services")
    webdav_process.stop()
    try:
        cut = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": "finances-po",
                                                                  "nom": "Trésorerie municipale"})
        assert cut.status_code == 422 and "s’est arrêtée à l’étape « dossier WebDAV »" in cut.text
    finally:
        webdav_process.start()
    detail = await browser.get(f"{portal.url}/services/finances-po")
    assert "Reprendre" in detail.text
    unknown = await browser.post(f"{portal.url}/services/inconnu/reprendre", data={"csrf": csrf_of(detail)})
    assert unknown.status_code == 404 and "Page introuvable" in unknown.text
    resumed = await browser.post(f"{portal.url}/services/finances-po/reprendre", data={"csrf": csrf_of(detail)})
    assert resumed.status_code == 303
    space, room = await service_ids(browser, portal, "finances-po")
    assert "Reprendre" not in (await browser.get(f"{portal.url}/services/finances-po")).text
    async with SynapseAdmin(portal.stack.config.synapse_url, admin_token) as admin:
        rooms = await admin._call("GET", "/_synapse/admin/v1/rooms?search_term=Trésorerie&limit=50")
        ours = [r["room_id"] for r in rooms["rooms"]
                if r["name"] in ("Trésorerie municipale", "Trésorerie municipale — équipe")]
        assert sorted(ours) == sorted([space, room])  # made once each
        assert await admin.state(room, "fr.maillage.documents") == {"dossier": "finances-po"}
