"""Drift: things changed by hand behind the portal's back (a member removed or added, a power
level, a bot's binding, a deleted folder and calendar, the DAV rights file, a departed agent's
account reopened) are found by ``maillage portail vérifier`` and the « Vérification » page,
in French, and repaired only on request."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest

from maillage.synapse_admin import SynapseAdmin
from tests.deploy.test_launcher import maillage
from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_dav import app_password, make_agent
from tests.portal.test_portal_login import sign_in
from tests.portal.test_portal_organisation import service_ids

pytestmark = pytest.mark.usefixtures("in_french")

PAUL, LEA, ZOE = "@paul.girard:localhost", "@lea.morin:localhost", "@zoe.perrin:localhost"


def mine(output: str) -> list[str]:
    """The lines about this test's service and agents (other tests' services may drift too)."""
    return [line for line in output.splitlines()
            if any(name in line for name in ("Voirie DR", "voirie-dr", PAUL, LEA, ZOE, "droits publiés"))]


async def test_changes_made_by_hand_are_found_and_repaired_only_on_request(
        portal: PortalStack, browser: Browser, admin_token: str) -> None:
    config = portal.stack.config
    data_dir = config.data_dir
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    for key, name in (("voirie-dr", "Voirie DR"), ("eau-dr", "Eau DR")):
        made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key, "nom": name})
        assert made.status_code == 200, made.text[:500]
    paul_first = await make_agent(browser, portal, "paul.girard", "voirie-dr", "agent")
    await make_agent(browser, portal, "lea.morin", "voirie-dr", "chef")
    await make_agent(browser, portal, "zoe.perrin", "eau-dr", "agent")
    paul_browser, _ = await app_password(portal, "paul.girard", paul_first, "Téléphone")
    await paul_browser.close()
    _, room = await service_ids(browser, portal, "voirie-dr")

    # Behind the portal's back: Paul leaves, Léa loses her power, Zoé (Eau) is added, the agenda
    # bot's binding is removed, the folder and the task list are deleted, the DAV file edited.
    async with SynapseAdmin(config.synapse_url, admin_token) as admin:
        await admin.kick(room, PAUL, "à la main")
        levels = await admin.state(room, "m.room.power_levels")
        await admin.send_state(room, "m.room.power_levels", "", {
            **levels, "users": {k: v for k, v in levels["users"].items() if k != LEA}})
        await admin.force_join(room, ZOE)
        await admin.send_state(room, "fr.maillage.agenda", "", {})
    async with httpx.AsyncClient(auth=(config.webdav.utilisateur, portal.stack.secrets.dav_password),
                                 timeout=30) as dav:
        assert (await dav.delete(f"http://127.0.0.1:{config.reseau.port_webdav}/voirie-dr/")).status_code == 204
    # (the calendar server refuses to delete a calendar: removed on its disk instead)
    shutil.rmtree(data_dir / "caldav" / "collections" / "collection-root" / config.caldav.utilisateur
                  / "voirie-dr-taches")
    access_file = data_dir / "acces-dav" / "agents.json"
    published = json.loads(access_file.read_text("utf-8"))
    published["comptes"]["paul.girard"]["dossiers"]["eau-dr"] = "rw"  # a right given by hand
    access_file.write_text(json.dumps(published), "utf-8")

    # The command finds each of them, in French, and changes nothing.
    found = await asyncio.to_thread(maillage, data_dir, "portail", "vérifier")
    assert found.returncode == 1, found.stdout + found.stderr
    lines = "\n".join(mine(found.stdout))
    for expected in (f"{PAUL} n’est plus membre de « Voirie DR — équipe »",
                     f"{LEA} a le niveau 0 dans « Voirie DR — équipe » (service Voirie DR) au lieu de 50",
                     f"{ZOE}, d’un autre service et sans accès accordé, est membre de « Voirie DR — équipe »",
                     "n’est plus lié comme il faut pour @agenda:localhost",
                     "Le dossier « voirie-dr » du service Voirie DR n’existe plus",
                     "Le calendrier « voirie-dr-taches » du service Voirie DR n’existe plus",
                     "Les droits publiés pour les serveurs DAV ne sont plus ceux du portail"):
        assert expected in lines, f"{expected!r} not in:\n{found.stdout}"
    assert "--réparer" in found.stdout
    again = await asyncio.to_thread(maillage, data_dir, "portail", "vérifier")
    assert mine(again.stdout) == mine(found.stdout)  # nothing was repaired by looking

    # The page: an agent is refused, a form without its token too; the admin sees and repairs.
    assert (await browser.post(f"{portal.url}/verification")).status_code == 403
    shown = await browser.post(f"{portal.url}/verification", data={"csrf": csrf_of(page)})
    assert shown.status_code == 200 and f"{ZOE}, d’un autre service" in shown.text
    repaired = await browser.post(f"{portal.url}/verification/reparer", data={"csrf": csrf_of(page)})
    assert repaired.status_code == 200 and "réparé :" in repaired.text
    assert "non réparé" not in "\n".join(line for line in repaired.text.splitlines() if "Voirie DR" in line)

    after = await asyncio.to_thread(maillage, data_dir, "portail", "vérifier")
    assert mine(after.stdout) == [], after.stdout
    async with SynapseAdmin(config.synapse_url, admin_token) as admin:
        members = await admin.joined_members(room)
        assert PAUL in members and ZOE not in members
        assert (await admin.state(room, "m.room.power_levels"))["users"][LEA] == 50
        assert (await admin.state(room, "fr.maillage.agenda")) == {"calendrier": "voirie-dr"}
    assert "eau-dr" not in json.loads(access_file.read_text("utf-8"))["comptes"]["paul.girard"]["dossiers"]
    async with httpx.AsyncClient(auth=(config.webdav.utilisateur, portal.stack.secrets.dav_password),
                                 timeout=30) as dav:
        folder = await dav.request("PROPFIND", f"http://127.0.0.1:{config.reseau.port_webdav}/voirie-dr/",
                                   headers={"Depth": "0"})
        assert folder.status_code == 207
    audit = await browser.get(f"{portal.url}/journal?q=derive")
    assert "derive.reparation" in audit.text


def test_the_check_says_clearly_when_there_is_no_portal_yet(tmp_path: Path) -> None:
    data_dir = tmp_path / "neuve"
    assert maillage(data_dir, "init").returncode == 0
    said = maillage(data_dir, "portail", "vérifier")
    assert said.returncode == 2 and "pas encore de base de données" in said.stdout
    assert "Traceback" not in said.stdout + said.stderr
