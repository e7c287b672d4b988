"""Differentiated access enforced by the DAV servers themselves: an agent's app password opens
their service's folder and calendar in Radicale and WsgiDAV with the rights of their role,
and nothing else — another service's folder, calendar or even their names are refused with
a 403, a revoked password stops working at the next request, with no restart."""

from __future__ import annotations

import re
import stat

import httpx
import pytest

from maillage.deploy.dav_access import AGENTS_FILE, access_directory
from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_login import sign_in

pytestmark = pytest.mark.usefixtures("in_french")
DOMAIN = "test-sur-loire.example"
SECRET = re.compile(r'class="secret">([a-z2-9]{5}(?:-[a-z2-9]{5}){4})<')


def event(uid: str) -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//FR\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20261201T080000Z\r\nDTSTART:20270105T090000Z\r\n"
            f"DTEND:20270105T100000Z\r\nSUMMARY:Réunion {uid}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()


async def make_agent(admin: Browser, portal: PortalStack, localpart: str, service: str, role: str) -> str:
    """The agent's first password at the development provider."""
    page = await admin.get(f"{portal.url}/agents")
    made = await admin.post(f"{portal.url}/agents", data={
        "csrf": csrf_of(page), "prenom": localpart.split(".")[0].title(), "nom": localpart.split(".")[1].title(),
        "email": f"{localpart}@{DOMAIN}", "service": service, "role": role})
    assert made.status_code == 200, made.text[:500]
    found = re.search(r'class="secret">([^<]+)<', made.text)
    assert found
    return found.group(1)


async def app_password(portal: PortalStack, localpart: str, first_password: str, device: str) -> tuple[Browser, str]:
    """Signs the agent in and makes an app password from their page (the browser stays signed in)."""
    agent = Browser()
    mine = await sign_in(agent, portal, f"{localpart}@{DOMAIN}", first_password, "/moi")
    assert mine.status_code == 200 and "Aucun mot de passe d’application" in mine.text
    assert f'class="secret">{localpart}<' in mine.text  # the login their apps use
    made = await agent.post(f"{portal.url}/moi/mots-de-passe", data={"csrf": csrf_of(mine), "nom": device})
    assert made.status_code == 200 and f"« {device} » créé" in made.text, made.text[:500]
    found = SECRET.search(made.text)
    assert found
    return agent, found.group(1)


async def test_each_role_gets_what_the_dav_servers_allow_and_nothing_more(
        portal: PortalStack, browser: Browser) -> None:
    config = portal.stack.config
    webdav = f"http://127.0.0.1:{config.reseau.port_webdav}"
    caldav = f"http://127.0.0.1:{config.reseau.port_caldav}/{config.caldav.utilisateur}"
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    for key, name in (("voirie-dav", "Voirie"), ("culture-dav", "Culture")):
        made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key, "nom": name})
        assert made.status_code == 200, made.text[:500]
    paul_first = await make_agent(browser, portal, "paul.martin", "voirie-dav", "agent")
    ines_first = await make_agent(browser, portal, "ines.roux", "voirie-dav", "elu")
    sophie_first = await make_agent(browser, portal, "sophie.blanc", "culture-dav", "direction")

    paul_browser, paul = await app_password(portal, "paul.martin", paul_first, "Thunderbird au bureau")
    ines_browser, ines = await app_password(portal, "ines.roux", ines_first, "Téléphone")
    sophie_browser, sophie = await app_password(portal, "sophie.blanc", sophie_first, "DAVx5")
    try:
        async with httpx.AsyncClient(auth=("paul.martin", paul), timeout=30) as dav:
            # An agent writes in their service's folder and calendar...
            assert (await dav.put(f"{webdav}/voirie-dav/plan.txt", content=b"plan de voirie")).status_code == 201
            assert (await dav.get(f"{webdav}/voirie-dav/plan.txt")).content == b"plan de voirie"
            put = await dav.put(f"{caldav}/voirie-dav/chantier.ics", content=event("chantier"),
                                headers={"Content-Type": "text/calendar; charset=utf-8"})
            assert put.status_code == 201
            # ...and nothing of another service: not its content, not its name, not through a move.
            assert (await dav.put(f"{webdav}/culture-dav/intrus.txt", content=b"x")).status_code == 403
            assert (await dav.request("PROPFIND", f"{webdav}/culture-dav/", headers={"Depth": "1"})).status_code == 403
            assert (await dav.request("PROPFIND", f"{webdav}/", headers={"Depth": "1"})).status_code == 403
            assert (await dav.request("PROPFIND", f"{webdav}/", headers={"Depth": "0"})).status_code == 207
            assert (await dav.get(f"{webdav}/voirie-dav/../culture-dav/")).status_code in (403, 404)
            moved = await dav.request("MOVE", f"{webdav}/voirie-dav/plan.txt",
                                      headers={"Destination": f"{webdav}/culture-dav/plan.txt"})
            assert moved.status_code == 403
            assert (await dav.get(f"{webdav}/voirie-dav/plan.txt")).status_code == 200  # still where it was
            assert (await dav.put(f"{caldav}/culture-dav/intrus.ics", content=event("intrus"),
                                  headers={"Content-Type": "text/calendar"})).status_code == 403
            assert (await dav.request("PROPFIND", f"{caldav}/culture-dav/", headers={"Depth": "1"})).status_code == 403
            listing = await dav.request("PROPFIND", f"{caldav}/", headers={"Depth": "1"})
            assert listing.status_code == 403 or "culture-dav" not in listing.text
            assert (await dav.delete(f"{caldav}/voirie-dav/")).status_code == 403  # a calendar is not removed so
        for login, password in (("paul.martin", "mauvais-mot-de-passe"), ("ines.roux", paul)):
            async with httpx.AsyncClient(auth=(login, password), timeout=30) as wrong:
                assert (await wrong.request("PROPFIND", f"{webdav}/voirie-dav/", headers={"Depth": "0"})
                        ).status_code == 401
                assert (await wrong.get(f"{caldav}/voirie-dav/")).status_code == 401

        # An élu reads their service and writes nothing.
        async with httpx.AsyncClient(auth=("ines.roux", ines), timeout=30) as dav:
            assert (await dav.get(f"{webdav}/voirie-dav/plan.txt")).content == b"plan de voirie"
            assert (await dav.put(f"{webdav}/voirie-dav/plan.txt", content=b"effac\xc3\xa9")).status_code == 403
            assert (await dav.delete(f"{webdav}/voirie-dav/plan.txt")).status_code == 403
            assert "chantier" in (await dav.get(f"{caldav}/voirie-dav/chantier.ics")).text
            assert (await dav.put(f"{caldav}/voirie-dav/autre.ics", content=event("autre"),
                                  headers={"Content-Type": "text/calendar"})).status_code == 403
            assert (await dav.get(f"{webdav}/culture-dav/")).status_code == 403

        # The direction reads every service and writes in its own.
        async with httpx.AsyncClient(auth=("sophie.blanc", sophie), timeout=30) as dav:
            assert (await dav.get(f"{webdav}/voirie-dav/plan.txt")).content == b"plan de voirie"
            assert (await dav.put(f"{webdav}/voirie-dav/plan.txt", content=b"x")).status_code == 403
            assert (await dav.put(f"{webdav}/culture-dav/saison.txt", content=b"saison")).status_code == 201
            assert "chantier" in (await dav.get(f"{caldav}/voirie-dav/chantier.ics")).text

        # Her page lists what she reaches, with her rights; Paul's lists his service only.
        sophie_page = await sophie_browser.get(f"{portal.url}/moi")
        assert "voirie-dav/" in sophie_page.text and "lecture seule" in sophie_page.text
        paul_page = await paul_browser.get(f"{portal.url}/moi")
        assert "Thunderbird au bureau" in paul_page.text and "/culture-dav/" not in paul_page.text

        # A nameless password is refused and nothing is made; no form token, nothing either.
        refused = await paul_browser.post(f"{portal.url}/moi/mots-de-passe", data={"csrf": csrf_of(paul_page),
                                                                                     "nom": " "})
        assert refused.status_code == 422 and "Donnez un nom à ce mot de passe" in refused.text
        assert not SECRET.search(refused.text)
        forged = await paul_browser.post(f"{portal.url}/moi/mots-de-passe", data={"nom": "Pirate"})
        assert forged.status_code == 403
        assert (await paul_browser.get(f"{portal.url}/moi")).text.count("/revoquer") == 1

        # Nobody revokes someone else's password; Paul revokes his: refused at the next request.
        paul_id = re.search(r'/moi/mots-de-passe/(\d+)/revoquer', paul_page.text)
        assert paul_id
        ines_page = await ines_browser.get(f"{portal.url}/moi")
        not_hers = await ines_browser.post(f"{portal.url}/moi/mots-de-passe/{paul_id.group(1)}/revoquer",
                                           data={"csrf": csrf_of(ines_page)})
        assert not_hers.status_code == 404
        async with httpx.AsyncClient(auth=("paul.martin", paul), timeout=30) as dav:
            assert (await dav.get(f"{webdav}/voirie-dav/plan.txt")).status_code == 200
            revoked = await paul_browser.post(f"{portal.url}/moi/mots-de-passe/{paul_id.group(1)}/revoquer",
                                              data={"csrf": csrf_of(paul_page)})
            assert revoked.status_code == 303
            assert (await dav.get(f"{webdav}/voirie-dav/plan.txt")).status_code == 401
            assert (await dav.get(f"{caldav}/voirie-dav/chantier.ics")).status_code == 401

        # What the DAV servers read holds digests only, readable by the stack's user alone.
        published = access_directory(config.data_dir) / AGENTS_FILE
        assert stat.S_IMODE(published.stat().st_mode) == 0o600
        assert ines not in published.read_text() and "ines.roux" in published.read_text()
        audit = await browser.get(f"{portal.url}/journal?q=mot_de_passe_application")
        assert "mot_de_passe_application.revocation" in audit.text
    finally:
        for agent in (paul_browser, ines_browser, sophie_browser):
            await agent.close()


async def test_what_the_portal_knows_is_published_again_when_it_starts(portal: PortalStack,
                                                                       browser: Browser) -> None:
    """A crash between the database's commit and the file's rename loses nothing: at its start
    the portal publishes its truth again (here the file is gone altogether)."""
    config = portal.stack.config
    webdav = f"http://127.0.0.1:{config.reseau.port_webdav}"
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": "sports-dav",
                                                               "nom": "Sports"})
    assert made.status_code == 200, made.text[:500]
    first = await make_agent(browser, portal, "hugo.petit", "sports-dav", "chef")
    agent, password = await app_password(portal, "hugo.petit", first, "Explorateur de fichiers")
    await agent.close()
    published = access_directory(config.data_dir) / AGENTS_FILE
    async with httpx.AsyncClient(auth=("hugo.petit", password), timeout=30) as dav:
        assert (await dav.request("PROPFIND", f"{webdav}/sports-dav/", headers={"Depth": "0"})).status_code == 207
        portal.process.kill()
        published.unlink()
        assert (await dav.request("PROPFIND", f"{webdav}/sports-dav/", headers={"Depth": "0"})).status_code == 401
        portal.process.start()
        assert (await dav.request("PROPFIND", f"{webdav}/sports-dav/", headers={"Depth": "0"})).status_code == 207
