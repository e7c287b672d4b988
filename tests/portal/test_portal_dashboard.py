"""The admins' dashboard: agents per service and role (the portal's truth), messages of the
week per service (Synapse's statistics), circuits waiting and projects' progress per
objective (the bots' read API) — as charts with their figures. Agents never see it."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.harness.browserless import Browser, csrf_of
from tests.harness.matrix import login_agent
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_dav import DOMAIN, make_agent
from tests.portal.test_portal_login import sign_in
from tests.portal.test_portal_organisation import service_ids

pytestmark = pytest.mark.usefixtures("in_french")


def todo(uid: str, title: str, extra: str) -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//FR\r\nBEGIN:VTODO\r\n"
            f"UID:{uid}\r\nDTSTAMP:20261201T080000Z\r\nSUMMARY:{title}\r\n{extra}"
            "END:VTODO\r\nEND:VCALENDAR\r\n").encode()


def figure(page: str, chart: str, label: str) -> str:
    """The figure a chart's table gives for ``label``."""
    section = page.split(f'id="{chart}-titre"', 1)[1].split("</figure>", 1)[0]
    found = re.search(rf"<th scope=\"row\">{re.escape(label)}</th><td>([^<]+)</td>", section)
    assert found, section[:2000]
    return found.group(1)


async def test_the_dashboard_shows_agents_activity_circuits_and_projects_as_charts(
        portal: PortalStack, browser: Browser, tmp_path: Path) -> None:
    config = portal.stack.config
    caldav = f"http://127.0.0.1:{config.reseau.port_caldav}/{config.caldav.utilisateur}"
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": "fetes-tb",
                                                               "nom": "Fêtes et cérémonies"})
    assert made.status_code == 200, made.text[:500]
    chef_password = await make_agent(browser, portal, "agathe.morin", "fetes-tb", "chef")
    await make_agent(browser, portal, "jules.perrin", "fetes-tb", "agent")
    _, team_room = await service_ids(browser, portal, "fetes-tb")

    # A week's conversation in the team room, and a project with an objective in its task list.
    chef = await login_agent(config.synapse_url, "@agathe.morin:localhost", chef_password, tmp_path / "nio-agathe")
    try:
        for line in ("Le programme du 14 juillet est prêt", "Les barrières sont commandées"):
            await chef.send_text(team_room, line)
    finally:
        await chef.close()
    objective = f"Fête nationale {uuid.uuid4().hex[:4]}"
    items = {"objectif": todo("objectif-tb", objective, "STATUS:NEEDS-ACTION\r\nX-MAILLAGE-OBJECTIF:TRUE\r\n"
                                                       "CATEGORIES:Objectif\r\nDUE;VALUE=DATE:20270714\r\n"),
             "estrade": todo("estrade-tb", "Monter l’estrade", "STATUS:COMPLETED\r\n"
                                                                "RELATED-TO;RELTYPE=PARENT:objectif-tb\r\n"),
             "feu": todo("feu-tb", "Feu d’artifice", "STATUS:NEEDS-ACTION\r\n"
                                                     "RELATED-TO;RELTYPE=PARENT:objectif-tb\r\n")}
    async with httpx.AsyncClient(auth=(config.caldav.utilisateur, portal.stack.secrets.dav_password),
                                 timeout=30) as dav:
        for name, data in items.items():
            put = await dav.put(f"{caldav}/fetes-tb-taches/{name}.ics", content=data,
                                headers={"Content-Type": "text/calendar; charset=utf-8"})
            assert put.status_code == 201, put.text

    # Refreshed on request (and every minute): the bots read the list within a few seconds.
    for _ in range(60):
        home = await browser.get(f"{portal.url}/")
        refreshed = await browser.post(f"{portal.url}/tableau/actualiser", data={"csrf": csrf_of(home)})
        assert refreshed.status_code == 303
        home = await browser.get(f"{portal.url}/")
        if objective in home.text:
            break
        await asyncio.sleep(2)
    assert home.status_code == 200 and objective in home.text, home.text[:3000]
    assert figure(home.text, "agents", "Fêtes et cérémonies") == "2"
    assert int(figure(home.text, "activite", "Fêtes et cérémonies")) >= 2
    assert int(figure(home.text, "roles", "chef de service")) >= 1
    assert home.text.count("<svg") >= 3 and 'role="img"' in home.text  # charts, not only tables
    project = home.text.split(objective, 1)[1].split("</tr>", 1)[0]
    assert 'value="1"' in project and "1 / 2" in project  # one task done out of two for that objective
    assert "lus le" in home.text

    # Without the form's token nothing is refreshed; an agent never sees the dashboard.
    assert (await browser.post(f"{portal.url}/tableau/actualiser", data={})).status_code == 403
    agent = Browser()
    try:
        mine = await sign_in(agent, portal, f"agathe.morin@{DOMAIN}", chef_password)
        assert mine.status_code == 200 and "Agents par service" not in mine.text  # « Mon espace »
        denied = await agent.post(f"{portal.url}/tableau/actualiser", data={"csrf": csrf_of(mine)})
        assert denied.status_code == 403
    finally:
        await agent.close()
