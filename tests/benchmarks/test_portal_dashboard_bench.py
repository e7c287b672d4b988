"""The admins' dashboard under load (issue 12), ``-k portal_dashboard``.

Goal: with 2,000 agents and 50 projects, the dashboard page's median response time under a
concurrent load is at most 3 × the median of the portal's own health endpoint under the
same load (the floor: the least a request to this server costs). The load is wrk's
(8 connections, 2 threads, 10 s per round), alternating the health endpoint and the
dashboard, four rounds each, signed in as an admin for both.

Setup: 50 services made through the portal (space, rooms, folder, calendar, task list),
each task list holding one project (two objectives of five tasks each, written over CalDAV
as another app would) read by @projets; 2,000 active agents written into the portal's
database (the dashboard counts them there; making them in Synapse is the import
benchmark's work). The dashboard's figures from Synapse and the bots are read in the
background (``portal/dashboard.py``), so the page costs the database's counts and its
rendering.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import statistics
import subprocess
import time

import httpx
import pytest

from tests.benchmarks.report import judge, record
from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack, browser, portal  # noqa: F401  (fixtures)
from tests.portal.test_portal_login import sign_in

pytestmark = [pytest.mark.benchmark, pytest.mark.usefixtures("in_french")]

AGENTS, PROJECTS, OBJECTIVES, TASKS = 2_000, 50, 2, 5
CONNECTIONS, SECONDS, ROUNDS, GOAL = 8, 10, 4, 3.0
LATENCY = re.compile(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)


def todo(uid: str, title: str, extra: str) -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//banc//FR\r\nBEGIN:VTODO\r\n"
            f"UID:{uid}\r\nDTSTAMP:20261201T080000Z\r\nSUMMARY:{title}\r\n{extra}"
            "END:VTODO\r\nEND:VCALENDAR\r\n").encode()


async def fill_projects(portal: PortalStack, keys: list[str]) -> None:  # noqa: F811
    config = portal.stack.config
    base = f"http://127.0.0.1:{config.reseau.port_caldav}/{config.caldav.utilisateur}"
    items = []
    for key in keys:
        for o in range(OBJECTIVES):
            items.append((f"{key}-taches/o{o}.ics", todo(f"{key}-o{o}", f"Objectif {o} de {key}",
                                                         "STATUS:NEEDS-ACTION\r\nX-MAILLAGE-OBJECTIF:TRUE\r\n"
                                                         "CATEGORIES:Objectif\r\nDUE;VALUE=DATE:20270630\r\n")))
            for n in range(TASKS):
                status = "COMPLETED" if n < 2 else "NEEDS-ACTION"
                items.append((f"{key}-taches/o{o}t{n}.ics", todo(
                    f"{key}-o{o}t{n}", f"Tâche {n}", f"STATUS:{status}\r\nRELATED-TO;RELTYPE=PARENT:{key}-o{o}\r\n"
                                                     "DUE;VALUE=DATE:20270115\r\n")))
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(auth=(config.caldav.utilisateur, portal.stack.secrets.dav_password),
                                 timeout=60) as dav:
        async def put(path: str, data: bytes) -> None:
            async with gate:
                answer = await dav.put(f"{base}/{path}", content=data,
                                       headers={"Content-Type": "text/calendar; charset=utf-8"})
                assert answer.status_code in (201, 204), answer.text

        await asyncio.gather(*(put(path, data) for path, data in items))


def add_agents(portal: PortalStack, keys: list[str]) -> None:  # noqa: F811
    database = portal.stack.config.data_dir / "portail" / "portail.db"
    with sqlite3.connect(database) as db:
        ids = dict(db.execute("SELECT key, id FROM service"))
        now = int(time.time() * 1000)
        db.executemany(
            "INSERT INTO agent (user_id, email, display_name, service_id, role, active, created_at)"
            " VALUES (?, ?, ?, ?, ?, 1, ?)",
            [(f"@banc.{i}:localhost", f"banc.{i}@banc.example", f"Agent {i}", ids[keys[i % len(keys)]],
              ("agent", "agent", "agent", "chef", "elu")[i % 5], now) for i in range(AGENTS)])


def wrk(url: str, cookie: str) -> tuple[float, float]:
    """(median latency in ms, requests per second) of one round."""
    run = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-H", f"Cookie: {cookie}",
                          url], capture_output=True, text=True, check=True, timeout=SECONDS * 6)
    latency, rate = LATENCY.search(run.stdout), RATE.search(run.stdout)
    assert latency and rate, run.stdout
    value, unit = float(latency.group(1)), latency.group(2)
    assert "Non-2xx" not in run.stdout, run.stdout
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], float(rate.group(1))


async def test_portal_dashboard_2000_agents_50_projects_under_load(
        portal: PortalStack, browser: Browser) -> None:  # noqa: F811
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    keys = []
    for index in range(PROJECTS):
        key = f"tableau-{index}"
        made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key,
                                                                   "nom": f"Service {index}"})
        assert made.status_code == 200, made.text[:300]
        keys.append(key)
    add_agents(portal, keys)
    await fill_projects(portal, keys)
    for _ in range(120):  # until @projets has read the 50 lists
        home = await browser.get(f"{portal.url}/")
        await browser.post(f"{portal.url}/tableau/actualiser", data={"csrf": csrf_of(home)})
        home = await browser.get(f"{portal.url}/")
        if home.text.count('class="projet"') >= PROJECTS:
            break
        await asyncio.sleep(2)
    agents = re.search(r'<span class="nombre">(\d+)</span> agents en service', home.text)
    assert home.text.count('class="projet"') >= PROJECTS and agents and int(agents.group(1)) >= AGENTS
    cookie = f"maillage_portail={browser.cookie(portal.url, 'maillage_portail')}"

    rounds: dict[str, list[tuple[float, float]]] = {"sante": [], "tableau": [], "jetons": []}
    for _ in range(ROUNDS):  # alternated: the floor, the measured page, and for reference the least signed-in page
        rounds["sante"].append(await asyncio.to_thread(wrk, f"{portal.url}/sante", cookie))
        rounds["tableau"].append(await asyncio.to_thread(wrk, f"{portal.url}/", cookie))
        rounds["jetons"].append(await asyncio.to_thread(wrk, f"{portal.url}/jetons", cookie))
    health = statistics.median(latency for latency, _ in rounds["sante"])
    dashboard = statistics.median(latency for latency, _ in rounds["tableau"])
    figures = {
        "what": "median latency of the dashboard (2,000 agents, 50 projects) under wrk's load ÷ that of the "
                "portal's health endpoint under the same load; rounds alternated",
        "agents": AGENTS, "projects": PROJECTS, "connections": CONNECTIONS, "seconds_per_round": SECONDS,
        "health_median_ms": [round(latency, 2) for latency, _ in rounds["sante"]],
        "dashboard_median_ms": [round(latency, 2) for latency, _ in rounds["tableau"]],
        "health_requests_per_s": [rate for _, rate in rounds["sante"]],
        "dashboard_requests_per_s": [rate for _, rate in rounds["tableau"]],
        "tokens_page_median_ms": [round(latency, 2) for latency, _ in rounds["jetons"]],
        "page_bytes": len(home.content), "ratio": dashboard / health,
    }
    record("portal_dashboard", figures, judge("portal_dashboard", dashboard / health, GOAL))
