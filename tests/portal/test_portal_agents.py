"""An agent's life after their creation: moved to another service (rooms, powers, folder and
calendar rights follow), their open work listed from the bots, their departure (account
closed, DAV access gone, their work listed for reassignment, their record kept). Wrong
input and non-admins change nothing; the bots' work API answers the portal only."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from maillage.synapse_admin import AdminApiError, SynapseAdmin
from tests.harness.browserless import Browser, csrf_of
from tests.harness.matrix import login_agent
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_dav import DOMAIN, app_password, make_agent
from tests.portal.test_portal_login import sign_in
from tests.portal.test_portal_organisation import service_ids

pytestmark = pytest.mark.usefixtures("in_french")
LUCIE = "@lucie.garnier:localhost"


def task(uid: str, title: str, assignee: str) -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//FR\r\nBEGIN:VTODO\r\n"
            f"UID:{uid}\r\nDTSTAMP:20261201T080000Z\r\nSUMMARY:{title}\r\nSTATUS:NEEDS-ACTION\r\n"
            f"DUE;VALUE=DATE:20270115\r\nATTENDEE;CN=\"{assignee}\";ROLE=REQ-PARTICIPANT:matrix:u/{assignee[1:]}\r\n"
            "END:VTODO\r\nEND:VCALENDAR\r\n").encode()


async def membership(admin: SynapseAdmin, room_id: str, user_id: str) -> str:
    try:
        return str((await admin.state(room_id, "m.room.member", user_id))["membership"])
    except AdminApiError:  # never a member: no such state event
        return "none"


async def test_an_agent_moves_then_leaves_and_what_waits_for_them_is_listed(
        portal: PortalStack, browser: Browser, admin_token: str, tmp_path: Path) -> None:
    config = portal.stack.config
    webdav = f"http://127.0.0.1:{config.reseau.port_webdav}"
    caldav = f"http://127.0.0.1:{config.reseau.port_caldav}/{config.caldav.utilisateur}"
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    for key, name in (("parcs-mv", "Parcs et jardins"), ("eau-mv", "Eau et assainissement")):
        made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key, "nom": name})
        assert made.status_code == 200, made.text[:500]
    first = await make_agent(browser, portal, "lucie.garnier", "parcs-mv", "agent")
    lucie_browser, lucie_password = await app_password(portal, "lucie.garnier", first, "Ordinateur")
    parcs_space, parcs_room = await service_ids(browser, portal, "parcs-mv")
    eau_space, eau_room = await service_ids(browser, portal, "eau-mv")
    agent_url = f"{portal.url}/agents/{quote(LUCIE)}"
    try:
        detail = await browser.get(agent_url)
        assert detail.status_code == 200 and "Parcs et jardins" in detail.text
        csrf = csrf_of(detail)

        # Wrong values, no form token, or an agent trying: refused, and nothing moves.
        for values, told in (({"service": "inconnu", "role": "agent"}, "Service inconnu"),
                             ({"service": "eau-mv", "role": "maire"}, "Rôle inconnu")):
            refused = await browser.post(agent_url, data={"csrf": csrf, **values})
            assert refused.status_code == 422 and told in refused.text, refused.text[:400]
        assert (await browser.post(agent_url, data={"service": "eau-mv", "role": "chef"})).status_code == 403
        own = await lucie_browser.get(f"{portal.url}/moi")
        sneaky = await lucie_browser.post(agent_url, data={"csrf": csrf_of(own), "service": "eau-mv",
                                                            "role": "admin"})
        assert sneaky.status_code == 403
        async with SynapseAdmin(config.synapse_url, admin_token) as admin:
            assert await membership(admin, parcs_room, LUCIE) == "join"
            assert await membership(admin, eau_room, LUCIE) == "none"

        # Moved to « Eau » as head of service: rooms, power and DAV rights follow.
        moved = await browser.post(agent_url, data={"csrf": csrf, "service": "eau-mv", "role": "chef"})
        assert moved.status_code == 200 and "Modification enregistrée" in moved.text, moved.text[:500]
        async with SynapseAdmin(config.synapse_url, admin_token) as admin:
            for room_id in (eau_space, eau_room):
                assert await membership(admin, room_id, LUCIE) == "join"
            for room_id in (parcs_space, parcs_room):
                assert await membership(admin, room_id, LUCIE) == "leave"
            assert (await admin.state(eau_room, "m.room.power_levels"))["users"][LUCIE] == 50
            assert LUCIE not in (await admin.state(parcs_room, "m.room.power_levels"))["users"]
        async with httpx.AsyncClient(auth=("lucie.garnier", lucie_password), timeout=30) as dav:
            assert (await dav.put(f"{webdav}/parcs-mv/note.txt", content=b"x")).status_code == 403
            assert (await dav.put(f"{webdav}/eau-mv/note.txt", content=b"releve")).status_code == 201

        # A task given to her in another app is listed as what waits for her.
        title = f"Relevé des compteurs {uuid.uuid4().hex[:6]}"
        async with httpx.AsyncClient(auth=(config.caldav.utilisateur, portal.stack.secrets.dav_password),
                                     timeout=30) as service_account:
            put = await service_account.put(f"{caldav}/eau-mv-taches/releve.ics", content=task("releve", title, LUCIE),
                                            headers={"Content-Type": "text/calendar; charset=utf-8"})
            assert put.status_code == 201, put.text
        for _ in range(90):
            detail = await browser.get(agent_url)
            if title in detail.text:
                break
            await asyncio.sleep(1)
        work = detail.text.split("Travail en cours", 1)[1].split("<h2>", 1)[0]
        assert title in work and "Tâches ouvertes qui lui sont confiées" in work, work

        # The bots' work API answers the portal's account only.
        bots = f"http://127.0.0.1:{config.bots.port_sante}/api/travail"
        lucie_matrix = await login_agent(config.synapse_url, LUCIE, first, tmp_path / "nio-lucie")
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                assert (await http.get(bots, params={"agent": LUCIE})).status_code == 401
                not_admin = await http.get(bots, params={"agent": LUCIE},
                                           headers={"Authorization": f"Bearer {lucie_matrix.client.access_token}"})
                assert not_admin.status_code == 403 and "Réservé" in not_admin.json()["erreur"]
                asked = await http.get(bots, params={"agent": LUCIE},
                                       headers={"Authorization": f"Bearer {admin_token}"})
                assert asked.status_code == 200 and [t["titre"] for t in asked.json()["taches"]] == [title]
        finally:
            await lucie_matrix.close()

        # Leaving needs the confirmation; then her account is closed and her access gone.
        unconfirmed = await browser.post(f"{agent_url}/depart", data={"csrf": csrf})
        assert unconfirmed.status_code == 422 and "Cochez la case de confirmation" in unconfirmed.text
        async with SynapseAdmin(config.synapse_url, admin_token) as admin:
            assert (await admin.user(LUCIE) or {}).get("deactivated") is False
        left = await browser.post(f"{agent_url}/depart", data={"csrf": csrf, "confirmation": "oui"})
        assert left.status_code == 200 and "Départ enregistré" in left.text, left.text[:500]
        assert title in left.text and "est à confier à quelqu’un d’autre" in left.text
        async with SynapseAdmin(config.synapse_url, admin_token) as admin:
            assert (await admin.user(LUCIE) or {}).get("deactivated") is True
            assert await membership(admin, eau_room, LUCIE) == "leave"
        async with httpx.AsyncClient(auth=("lucie.garnier", lucie_password), timeout=30) as dav:
            assert (await dav.get(f"{webdav}/eau-mv/note.txt")).status_code == 401
        async with httpx.AsyncClient(auth=(config.webdav.utilisateur, portal.stack.secrets.dav_password),
                                     timeout=30) as service_account:
            assert (await service_account.get(f"{webdav}/eau-mv/note.txt")).content == b"releve"  # data kept
        again = Browser()
        try:
            refused = await sign_in(again, portal, f"lucie.garnier@{DOMAIN}", first)
            assert refused.status_code == 403
        finally:
            await again.close()
        twice = await browser.post(f"{agent_url}/depart", data={"csrf": csrf, "confirmation": "oui"})
        assert twice.status_code == 422 and "déjà parti" in twice.text
        listing = await browser.get(f"{portal.url}/agents")
        assert "Lucie Garnier</a> (parti)" in listing.text
        audit = await browser.get(f"{portal.url}/journal?q=lucie.garnier")
        assert "agent.depart" in audit.text and "agent.modification" in audit.text
    finally:
        await lucie_browser.close()
