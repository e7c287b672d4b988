"""The portal's CSV import (issue 12), ``-k portal_import``.

Goal: importing 2,000 agents (a CSV file checked, confirmed, run with the progress bar)
takes at most 1.2 × the floor: the same account creations made directly against Synapse's
Admin API by a plain client with the same concurrency (8) and no portal logic — for each
agent, the account (PUT /_synapse/admin/v2/users) and its joins to the service's space and
team room (POST /_synapse/admin/v1/join). Floor, import, floor, each into services of its
own (20 services of 100 agents), so every phase joins rooms of the same sizes. The portal
runs as in production (an external OIDC provider: no development password to make), and
the progress bar must move while it runs.
"""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import quote

import httpx
import psutil
import pytest

from maillage.config import load_config
from maillage.synapse_admin import SynapseAdmin
from tests.benchmarks.report import judge, record
from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack, browser, portal  # noqa: F401  (fixtures)
from tests.portal.test_portal_import import upload
from tests.portal.test_portal_login import sign_in

pytestmark = [pytest.mark.benchmark, pytest.mark.usefixtures("in_french")]

AGENTS, SERVICES, CONCURRENCY, GOAL = 2_000, 20, 8, 1.2


async def make_services(browser: Browser, portal: PortalStack, phase: str) -> list[str]:  # noqa: F811
    keys = []
    for index in range(SERVICES):
        page = await browser.get(f"{portal.url}/services")
        key = f"{phase}-{index}"
        made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key,
                                                                   "nom": f"Service {phase} {index}"})
        assert made.status_code == 200, made.text[:300]
        keys.append(key)
    return keys


async def rooms_of(browser: Browser, portal: PortalStack, key: str) -> list[str]:  # noqa: F811
    page = await browser.get(f"{portal.url}/services/{key}")
    return list(dict.fromkeys(re.findall(r"![A-Za-z0-9_-]{18,}", page.text)))


async def floor(portal: PortalStack, admin_token: str, rooms: dict[str, list[str]], phase: str) -> float:  # noqa: F811
    """The same accounts and joins, straight to the Admin API: the best a plain client does."""
    gate = asyncio.Semaphore(CONCURRENCY)
    headers = {"Authorization": f"Bearer {admin_token}"}
    keys = list(rooms)
    async with httpx.AsyncClient(base_url=portal.stack.config.synapse_url, headers=headers, timeout=120,
                                 limits=httpx.Limits(max_connections=CONCURRENCY)) as http:
        async def one(index: int) -> None:
            async with gate:
                user_id = f"@{phase}.{index}:localhost"
                email = f"{phase}.{index}@banc.example"
                response = await http.put(f"/_synapse/admin/v2/users/{quote(user_id)}", json={
                    "admin": False, "displayname": f"Agent {index}",
                    "threepids": [{"medium": "email", "address": email}]})
                assert response.status_code in (200, 201), response.text
                for room_id in rooms[keys[index % len(keys)]]:
                    joined = await http.post(f"/_synapse/admin/v1/join/{quote(room_id)}", json={"user_id": user_id})
                    assert joined.status_code == 200, joined.text

        started = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(AGENTS)))
        return time.perf_counter() - started


async def imported(browser: Browser, portal: PortalStack,  # noqa: F811
                   keys: list[str], phase: str) -> tuple[float, float, list[int]]:
    """Upload → check → confirm → done (s); confirm → done (s); the progress values seen."""
    rows = "".join(f"{phase}.{i}@banc.example;Agent;{phase} {i};{keys[i % len(keys)]};agent\n"
                   for i in range(AGENTS))
    started = time.perf_counter()
    checked = await upload(browser, portal, ("email;prenom;nom;service;role\n" + rows).encode(), f"{phase}.csv")
    job = int(re.search(r"/agents/import/(\d+)/lancer", checked.text).group(1))  # type: ignore[union-attr]
    confirmed = time.perf_counter()
    await browser.post(f"{portal.url}/agents/import/{job}/lancer", data={"csrf": csrf_of(checked)})
    seen: list[int] = []
    while True:
        state = (await browser.get(f"{portal.url}/agents/import/{job}/etat")).json()
        seen.append(state["faits"])
        if state["etat"] != "en_cours":
            break
        await asyncio.sleep(0.25)
    ended = time.perf_counter()
    assert state["etat"] == "termine" and state["faits"] == AGENTS and state["erreurs"] == [], state
    return ended - started, ended - confirmed, seen


async def test_portal_import_2000_agents_over_the_admin_api_floor(
        portal: PortalStack, browser: Browser, admin_token: str) -> None:  # noqa: F811
    config = portal.stack.config
    production = config.source.with_name("maillage-production.toml")
    external = f'[portail]\noidc_emetteur = "{portal.issuer}"'
    production.write_text(config.source.read_text().replace("[portail]", external))
    portal.process.stop()
    portal.process.start(load_config(production))  # as with ProConnect: no development passwords
    try:
        await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
        phases = {}
        for phase in ("plancher1", "import", "plancher2"):
            keys = await make_services(browser, portal, phase)
            phases[phase] = {key: await rooms_of(browser, portal, key) for key in keys}
        process = psutil.Process(portal.process.process.process.pid)  # type: ignore[union-attr]
        first = await floor(portal, admin_token, phases["plancher1"], "plancher1")
        cpu_before = process.cpu_times()
        total, applying, seen = await imported(browser, portal, list(phases["import"]), "import")
        cpu_after = process.cpu_times()
        second = await floor(portal, admin_token, phases["plancher2"], "plancher2")
    finally:
        portal.process.stop()
        portal.process.start()
    async with SynapseAdmin(config.synapse_url, admin_token) as admin:
        assert await admin.user("@import.1999:localhost") is not None
    floor_s = (first + second) / 2
    moves = len(set(seen))
    figures = {
        "what": "CSV import of 2,000 agents through the portal (upload, check, confirm, run) ÷ the same accounts "
                "and joins made straight to the Admin API with the same concurrency; floor, import, floor",
        "agents": AGENTS, "services": SERVICES, "concurrency": CONCURRENCY,
        "floor_s": [round(first, 2), round(second, 2)], "import_total_s": round(total, 2),
        "import_after_confirm_s": round(applying, 2), "ratio": total / floor_s,
        "portal_cpu_s": round(sum(cpu_after[:2]) - sum(cpu_before[:2]), 2),
        "progress_values_seen": moves, "agents_per_second": round(AGENTS / total, 1),
    }
    assert moves >= 5, f"the progress bar barely moved: {sorted(set(seen))[:20]}"
    record("portal_import_2000", figures, judge("portal_import_2000", total / floor_s, GOAL))
