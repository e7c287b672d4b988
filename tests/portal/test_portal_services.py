"""A service renamed (its space and room follow, its identifier, folder and calendar stay) and a
service archived (its rooms read-only, its data kept, out of forms and rights) — refused with
a clear message while agents remain, without confirmation, or with a wrong name."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from maillage.synapse_admin import SynapseAdmin
from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_dav import make_agent
from tests.portal.test_portal_login import sign_in
from tests.portal.test_portal_organisation import service_ids

pytestmark = pytest.mark.usefixtures("in_french")


async def test_a_service_is_renamed_then_archived_with_its_data_kept(
        portal: PortalStack, browser: Browser, admin_token: str) -> None:
    config = portal.stack.config
    webdav = f"http://127.0.0.1:{config.reseau.port_webdav}"
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    for key, name in (("musee-ar", "Musée"), ("ecole-ar", "École")):
        made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key, "nom": name})
        assert made.status_code == 200, made.text[:500]
    await make_agent(browser, portal, "ella.brun", "musee-ar", "agent")
    space, room = await service_ids(browser, portal, "musee-ar")
    service_url = f"{portal.url}/services/musee-ar"
    csrf = csrf_of(await browser.get(service_url))

    # Renamed: a name too short is refused and changes nothing; then space and room follow.
    short = await browser.post(f"{service_url}/renommer", data={"csrf": csrf, "nom": " x "})
    assert short.status_code == 422 and 'aria-invalid="true"' in short.text
    renamed = await browser.post(f"{service_url}/renommer", data={"csrf": csrf, "nom": "Musée municipal"})
    assert renamed.status_code == 200 and "Service renommé" in renamed.text, renamed.text[:500]
    async with SynapseAdmin(config.synapse_url, admin_token) as admin:
        assert (await admin.state(space, "m.room.name"))["name"] == "Musée municipal"
        assert (await admin.state(room, "m.room.name"))["name"] == "Musée municipal — équipe"
    async with httpx.AsyncClient(auth=(config.webdav.utilisateur, portal.stack.secrets.dav_password),
                                 timeout=30) as dav:
        assert (await dav.put(f"{webdav}/musee-ar/inventaire.txt", content=b"vases")).status_code == 201

        # Archived: not without the confirmation, not while an agent works there.
        unconfirmed = await browser.post(f"{service_url}/archiver", data={"csrf": csrf})
        assert unconfirmed.status_code == 422 and "Cochez la case de confirmation" in unconfirmed.text
        busy = await browser.post(f"{service_url}/archiver", data={"csrf": csrf, "confirmation": "oui"})
        assert busy.status_code == 422 and "encore 1 agent(s)" in busy.text
        assert (await browser.post(f"{service_url}/archiver", data={"confirmation": "oui"})).status_code == 403
        moved = await browser.post(f"{portal.url}/agents/{quote('@ella.brun:localhost')}",
                                   data={"csrf": csrf, "service": "ecole-ar", "role": "agent"})
        assert moved.status_code == 200, moved.text[:500]
        archived = await browser.post(f"{service_url}/archiver", data={"csrf": csrf, "confirmation": "oui"})
        assert archived.status_code == 200 and "Service archivé" in archived.text, archived.text[:500]
        assert "(archivé)" in archived.text and "Renommer" not in archived.text

        # Its rooms are kept, read-only; its files are kept; it is out of the forms and the dashboard.
        async with SynapseAdmin(config.synapse_url, admin_token) as admin:
            for room_id in (space, room):
                assert (await admin.state(room_id, "m.room.power_levels"))["events_default"] == 100
                assert "archivé" in (await admin.state(room_id, "m.room.topic"))["topic"]
        assert (await dav.get(f"{webdav}/musee-ar/inventaire.txt")).content == b"vases"
    agents = await browser.get(f"{portal.url}/agents")
    assert 'value="musee-ar"' not in agents.text
    refused = await browser.post(f"{portal.url}/agents", data={
        "csrf": csrf, "prenom": "Léo", "nom": "Blanc", "email": "leo.blanc@test-sur-loire.example",
        "service": "musee-ar", "role": "agent"})
    assert refused.status_code == 422 and "Service inconnu ou archivé" in refused.text
    again = await browser.post(f"{service_url}/renommer", data={"csrf": csrf, "nom": "Autre nom"})
    assert again.status_code == 422 and "archivé" in again.text
    audit = await browser.get(f"{portal.url}/journal?q=musee-ar")
    assert "service.renommage" in audit.text and "service.archivage" in audit.text
