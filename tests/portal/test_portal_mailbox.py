"""A service's mailbox given from the portal: the address in its team room's state, @courriel
invited, mail to it read there by the service's agents; a wrong or taken address refused."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from tests.bridges.test_email_inbound import DOMAIN, JEAN, mail, smtp_send
from tests.conftest import ServerStack, ServiceProcess
from tests.harness.browserless import Browser, csrf_of
from tests.harness.matrix import login_agent
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_dav import make_agent
from tests.portal.test_portal_login import sign_in
from tests.portal.test_portal_organisation import service_ids

pytestmark = pytest.mark.usefixtures("in_french")


async def test_a_service_gets_its_mailbox_from_the_portal(
        portal: PortalStack, synapse: ServerStack, bridge: ServiceProcess, browser: Browser,
        tmp_path: Path) -> None:
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    for key, name in (("etat-civil-ml", "État civil"), ("cimetiere-ml", "Cimetière")):
        made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key, "nom": name})
        assert made.status_code == 200, made.text[:300]
    first = await make_agent(browser, portal, "lina.roux", "etat-civil-ml", "agent")
    _, team = await service_ids(browser, portal, "etat-civil-ml")
    url = f"{portal.url}/services/etat-civil-ml/courriel"
    detail = await browser.get(f"{portal.url}/services/etat-civil-ml")
    wrong = await browser.post(url, data={"csrf": csrf_of(detail), "adresse": "État Civil"})
    assert wrong.status_code == 422 and "Adresse invalide" in wrong.text
    assert (await browser.post(url, data={"adresse": "etat-civil-ml"})).status_code == 403
    added = await browser.post(url, data={"csrf": csrf_of(detail), "adresse": "etat-civil-ml"})
    assert added.status_code == 200 and f"etat-civil-ml@{DOMAIN}" in added.text, added.text[:300]
    taken = await browser.post(f"{portal.url}/services/cimetiere-ml/courriel",
                               data={"csrf": csrf_of(detail), "adresse": "etat-civil-ml"})
    assert taken.status_code == 422 and "mène déjà au salon du service « État civil »" in taken.text

    # An agent of the service may not give it an address.
    agent = Browser()
    try:
        own = await sign_in(agent, portal, "lina.roux@test-sur-loire.example", first, "/moi")
        refused = await agent.post(f"{portal.url}/services/cimetiere-ml/courriel",
                                   data={"csrf": csrf_of(own), "adresse": "cimetiere-ml"})
        assert refused.status_code == 403
        # …nor take one away, even from their own service.
        removal = await agent.post(f"{portal.url}/services/etat-civil-ml/courriel/retirer",
                                   data={"csrf": csrf_of(own), "adresse": f"etat-civil-ml@{DOMAIN}"})
        assert removal.status_code == 403
    finally:
        await agent.close()

    lina = await login_agent(synapse.config.synapse_url, "@lina.roux:localhost", first, tmp_path / "lina")
    try:
        question = mail("Acte de naissance", "Je voudrais une copie intégrale.", to=f"etat-civil-ml@{DOMAIN}")
        for _ in range(30):  # the bridge's bot joins and reads the room's addresses within seconds
            try:
                await asyncio.to_thread(smtp_send, synapse, question, "jean.dupont@exemple.fr",
                                        [f"etat-civil-ml@{DOMAIN}"])
                break
            except smtplib.SMTPRecipientsRefused:  # not known to the bridge yet
                await asyncio.sleep(1)
        shown = await lina.wait_for_text(team, lambda m: m.sender == JEAN, timeout=60)
        assert "copie intégrale" in shown.body
    finally:
        await lina.close()

    # Removed from the portal: no longer listed, and mail to it is refused once the bridge knows.
    detail = await browser.get(f"{portal.url}/services/etat-civil-ml")
    assert f"<li>etat-civil-ml@{DOMAIN}" in detail.text
    remove = f"{portal.url}/services/etat-civil-ml/courriel/retirer"
    absent = await browser.post(remove, data={"csrf": csrf_of(detail), "adresse": f"inconnue@{DOMAIN}"})
    assert absent.status_code == 422 and f"inconnue@{DOMAIN} ne mène pas au salon de ce service" in absent.text
    removed = await browser.post(remove, data={"csrf": csrf_of(detail), "adresse": f"etat-civil-ml@{DOMAIN}"})
    assert removed.status_code == 200 and "ne mène plus au salon d’équipe" in removed.text, removed.text[:300]
    assert f"<li>etat-civil-ml@{DOMAIN}" not in removed.text and "pas encore d’adresse" in removed.text

    def refused_now() -> bool:
        try:
            smtp_send(synapse, mail("Encore", "x", to=f"etat-civil-ml@{DOMAIN}"), "jean.dupont@exemple.fr",
                      [f"etat-civil-ml@{DOMAIN}"])
        except smtplib.SMTPRecipientsRefused:
            return True
        return False

    for _ in range(30):
        if await asyncio.to_thread(refused_now):
            break
        await asyncio.sleep(1)
    else:
        raise AssertionError("the removed address still accepted mail after 30 s")
    audit = await browser.get(f"{portal.url}/journal?q=courriel")
    assert "service.courriel" in audit.text and "service.courriel.retrait" in audit.text
