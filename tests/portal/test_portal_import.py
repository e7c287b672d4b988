"""CSV import of agents through the portal, against the real Synapse: every error by line and
column with nothing made, Windows-1252 files, an idempotent re-run, first passwords given once,
and an import that survives SIGKILLs of the portal at random moments: each agent made once."""

from __future__ import annotations

import asyncio
import os
import random
import re
import time

import httpx
import pytest

from maillage.synapse_admin import SynapseAdmin
from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_login import sign_in

pytestmark = pytest.mark.usefixtures("in_french")
JOB = re.compile(r"/agents/import/(\d+)/lancer")


async def service(browser: Browser, portal: PortalStack, key: str, name: str) -> None:
    page = await browser.get(f"{portal.url}/services")
    made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key, "nom": name})
    assert made.status_code == 200, made.text[:300]


async def upload(browser: Browser, portal: PortalStack, content: bytes, name: str = "agents.csv") -> httpx.Response:
    page = await browser.get(f"{portal.url}/agents/import")
    return await browser.post(f"{portal.url}/agents/import", data={"csrf": csrf_of(page)},
                              files={"fichier": (name, content, "text/csv")})


async def finished(browser: Browser, portal: PortalStack, job: int, timeout: float = 300) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        answer = await browser.get(f"{portal.url}/agents/import/{job}/etat")
        if answer.status_code == 200:
            state = answer.json()
            seen.append(state["faits"])
            if state["etat"] == "termine":
                state["vus"] = seen
                return dict(state)
        await asyncio.sleep(0.3)
    raise AssertionError(f"import {job} not finished: {seen[-5:]}")


async def healthy(portal: PortalStack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{portal.url}/sante")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the portal did not come back")


async def test_every_error_is_told_by_line_and_column_and_nothing_is_made(
        portal: PortalStack, browser: Browser, admin_token: str) -> None:
    await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    await service(browser, portal, "culture", "Culture")
    content = ("email;prenom;nom;service;role\n"
               "pas-une-adresse;Anne;Roy;culture;agent\n"
               "paul.noel@test-sur-loire.example;Paul;Noël;inconnu;agent\n"
               "rose.blanc@test-sur-loire.example;Rose;Blanc;culture;agent\n"
               "rose.blanc@test-sur-loire.example;Rosa;Blanc;culture;agent\n"
               "eve.dupuis@test-sur-loire.example;=cmd()|' /C calc'!A0;Dupuis;culture;agent\n"
               "ines.morel@test-sur-loire.example;<b>Inès</b>;Morel;culture;maire\n"
               "jean.valide@test-sur-loire.example;Jean;Valide;culture;agent\n").encode()
    checked = await upload(browser, portal, content)
    assert checked.status_code == 422
    rows = re.findall(r"<tr><td>(\d+)</td><td>([a-z]+)</td><td>([^<]+)</td></tr>", checked.text)
    assert [(line, column) for line, column, _ in rows] == [
        ("2", "email"), ("3", "service"), ("4", "email"), ("5", "email"), ("6", "prenom"), ("7", "role")]
    assert "Service « inconnu » inconnu" in checked.text and "plusieurs fois" in checked.text
    assert "formule de tableur" in checked.text and "<b>Inès" not in checked.text  # never echoed as HTML
    assert "/lancer" not in checked.text  # nothing can be confirmed
    async with SynapseAdmin(portal.stack.config.synapse_url, admin_token) as admin:
        assert await admin.user("@jean.valide:localhost") is None

    for content, told in ((b"courriel;prenom\nx@y.example;X\n", "Colonnes manquantes"),
                          ("email;prenom;nom;service\n".encode("utf-16"), "pas un CSV texte"),
                          (b"email;prenom;nom;service\n", "aucun agent"),
                          (b"x" * 2_000_001, "trop volumineux")):
        refused = await upload(browser, portal, content)
        assert refused.status_code == 422 and told in refused.text, told
        assert 'aria-invalid="true"' in refused.text


async def test_a_spreadsheet_export_is_imported_once_with_a_progress_bar(
        portal: PortalStack, browser: Browser, admin_token: str) -> None:
    await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    await service(browser, portal, "sports", "Sports")
    lines = ["Email;Prénom;Nom;Service;Rôle", "chloe.meunier@test-sur-loire.example;Chloé;Meunier;sports;chef"]
    lines += [f"agent.sport{i}@test-sur-loire.example;Agnès;Lefèvre-{i};sports;agent" for i in range(12)]
    content = ("\r\n".join(lines) + "\r\n").encode("cp1252")  # Excel's « CSV (séparateur : point-virgule) »
    checked = await upload(browser, portal, content, "export-rh.csv")
    assert checked.status_code == 200 and "lu en Windows-1252" in checked.text and "Chloé" in checked.text
    job = int(JOB.search(checked.text).group(1))  # type: ignore[union-attr]
    started = await browser.post(f"{portal.url}/agents/import/{job}/lancer", data={"csrf": csrf_of(checked)})
    assert started.status_code == 303
    page = await browser.get(f"{portal.url}/agents/import/{job}")
    assert "<progress" in page.text and 'max="13"' in page.text
    state = await finished(browser, portal, job)
    assert state["faits"] == 13 and state["erreurs"] == []
    done_page = await browser.get(f"{portal.url}/agents/import/{job}")
    assert "13 agent(s) créé(s), 0 en erreur" in done_page.text and 'http-equiv="refresh"' not in done_page.text

    async with SynapseAdmin(portal.stack.config.synapse_url, admin_token) as admin:
        chloe = await admin.user("@chloe.meunier:localhost")
        assert chloe is not None and chloe["displayname"] == "Chloé Meunier"
    passwords = await browser.post(f"{portal.url}/agents/import/{job}/mots-de-passe",
                                   data={"csrf": csrf_of(done_page)})
    assert passwords.text.count("@test-sur-loire.example") == 13
    again = await browser.post(f"{portal.url}/agents/import/{job}/mots-de-passe", data={"csrf": csrf_of(done_page)})
    assert "@test-sur-loire.example" not in again.text  # given once

    rerun = await upload(browser, portal, content, "export-rh.csv")
    assert rerun.status_code == 200 and "déjà présents : rien à créer" in rerun.text
    assert "13 déjà présent(s)" in rerun.text
    twice = await browser.post(f"{portal.url}/agents/import/{job}/lancer", data={"csrf": csrf_of(done_page)})
    assert twice.status_code == 303  # confirming again starts nothing
    assert (await finished(browser, portal, job))["faits"] == 13


async def test_an_import_cut_by_sigkill_makes_each_agent_once(
        portal: PortalStack, browser: Browser, admin_token: str) -> None:
    seed = int(os.environ.get("MAILLAGE_KILL_SEED", random.randrange(1_000_000)))
    chance = random.Random(seed)
    await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    await service(browser, portal, "jeunesse", "Jeunesse")
    count = 40
    content = "email;prenom;nom;service;role\n" + "".join(
        f"anim{i}@test-sur-loire.example;Anim;Numéro {i};jeunesse;{'chef' if i % 10 == 0 else 'agent'}\n"
        for i in range(count))
    checked = await upload(browser, portal, content.encode())
    job = int(JOB.search(checked.text).group(1))  # type: ignore[union-attr]
    await browser.post(f"{portal.url}/agents/import/{job}/lancer", data={"csrf": csrf_of(checked)})
    kills = 0
    for _ in range(3):
        await asyncio.sleep(chance.uniform(0.2, 1.5))
        state = (await browser.get(f"{portal.url}/agents/import/{job}/etat")).json()
        if state["etat"] == "termine":
            break
        portal.process.kill()
        kills += 1
        portal.process.launch()  # from this thread: a worker thread's end would stop the child
        await healthy(portal)  # the import is taken up again at start
    assert kills >= 1, f"the import ended before any kill (seed {seed})"
    state = await finished(browser, portal, job)
    assert state["faits"] == count and state["erreurs"] == [], f"seed {seed}: {state}"

    agents = await browser.get(f"{portal.url}/agents")
    for i in range(count):
        assert agents.text.count(f"@anim{i}:localhost") == 1, f"seed {seed}: anim{i}"
    journal = await browser.get(f"{portal.url}/journal.csv?q=anim")
    made = [line for line in journal.text.splitlines() if "agent.creation" in line]
    assert len(made) == count, f"seed {seed}: {len(made)} creations in the audit"
    async with SynapseAdmin(portal.stack.config.synapse_url, admin_token) as admin:
        for i in (0, count - 1):
            assert await admin.user(f"@anim{i}:localhost") is not None
