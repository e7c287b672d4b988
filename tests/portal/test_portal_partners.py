"""Partners from the portal: the partner servers (the federation allowlist in maillage.toml, as
the ``maillage partenaire`` command keeps it) and external accounts with their last day,
enforced by the homeserver's access rules without a restart."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from maillage.config import load_config
from maillage.deploy.tls import issue_server_certificate
from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_dav import app_password, make_agent
from tests.portal.test_portal_login import sign_in

pytestmark = pytest.mark.usefixtures("in_french")

PARIS = ZoneInfo("Europe/Paris")


def paris_today() -> str:
    return datetime.now(PARIS).date().isoformat()


def in_days(days: int) -> str:
    return (datetime.now(PARIS).date() + timedelta(days=days)).isoformat()


async def test_partner_servers_are_added_and_removed_in_the_config_file_with_bad_input_refused(
        portal: PortalStack, browser: Browser) -> None:
    config = portal.stack.config
    original = config.source.read_text("utf-8")
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/partenaires")
    assert page.status_code == 200 and "Aucun serveur partenaire" in page.text
    csrf = csrf_of(page)
    url = f"{portal.url}/partenaires/serveurs"
    try:
        for server, told in (("pas un serveur", "Nom de serveur invalide"), ("agglo.example:99999", "invalide"),
                             (config.collectivite.nom_serveur, "votre propre serveur")):
            refused = await browser.post(url, data={"csrf": csrf, "serveur": server, "action": "ajouter"})
            assert refused.status_code == 422 and told in refused.text, refused.text[:300]
            assert 'aria-invalid="true"' in refused.text
        refused = await browser.post(url, data={"csrf": csrf, "serveur": "inconnu.example", "action": "retirer"})
        assert refused.status_code == 422 and "inconnu.example" in refused.text
        assert config.source.read_text("utf-8") == original  # nothing written by a refusal
        assert (await browser.post(url, data={"serveur": "agglo.example", "action": "ajouter"})).status_code == 403

        # Federation needs the server's TLS certificate: without it in the file, said and not saved.
        no_certificate = await browser.post(url, data={"csrf": csrf, "serveur": "agglo.example", "action": "ajouter"})
        assert no_certificate.status_code == 422 and "certificat TLS" in no_certificate.text
        assert config.source.read_text("utf-8") == original
        paths = issue_server_certificate(config.data_dir / "ac-test", config.data_dir / "tls-test", "localhost")
        config.source.write_text(original + (  # the test config has no [federation] table
            f'\n[federation]\ncertificat = "{paths.certificate}"\ncle = "{paths.key}"\n'), "utf-8")

        added = await browser.post(url, data={"csrf": csrf, "serveur": "Agglo.Example", "action": "ajouter"})
        assert added.status_code == 200 and "prochain démarrage" in added.text  # this stack is not the launcher's
        assert load_config(config.source).federation.partenaires == ["agglo.example"]
        assert "agglo.example" in added.text
        twice = await browser.post(url, data={"csrf": csrf, "serveur": "agglo.example", "action": "ajouter"})
        assert twice.status_code == 422 and "déjà" in twice.text
        removed = await browser.post(url, data={"csrf": csrf, "serveur": "agglo.example", "action": "retirer"})
        assert removed.status_code == 200 and load_config(config.source).federation.partenaires == []
        audit = await browser.get(f"{portal.url}/journal?q=partenaire")
        assert "partenaire.ajout" in audit.text and "partenaire.retrait" in audit.text

        # An agent gets neither the page nor the change.
        first = await make_agent(browser, portal, "yann.leroux", await any_service(browser, portal), "agent")
        agent, _ = await app_password(portal, "yann.leroux", first, "Ordinateur")
        try:
            assert (await agent.get(f"{portal.url}/partenaires")).status_code == 403
            own = await agent.get(f"{portal.url}/moi")
            sneaky = await agent.post(url, data={"csrf": csrf_of(own), "serveur": "pirate.example",
                                                 "action": "ajouter"})
            assert sneaky.status_code == 403 and load_config(config.source).federation.partenaires == []
        finally:
            await agent.close()
    finally:
        config.source.write_text(original, "utf-8")


async def any_service(browser: Browser, portal: PortalStack) -> str:
    page = await browser.get(f"{portal.url}/services")
    made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": "accueil-pa",
                                                               "nom": "Accueil"})
    assert made.status_code == 200, made.text[:300]
    return "accueil-pa"


async def matrix_login(synapse_url: str, user_id: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=synapse_url, timeout=30) as matrix:
        return await matrix.post("/_matrix/client/v3/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": password})


async def test_an_external_account_lives_until_its_last_day_and_is_closed_without_a_restart(
        portal: PortalStack, browser: Browser) -> None:
    config = portal.stack.config
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/partenaires")
    csrf = csrf_of(page)
    url = f"{portal.url}/partenaires/externes"
    good = {"csrf": csrf, "identifiant": "j.dupont-cabinet", "nom": "Jeanne Dupont",
            "email": "j.dupont@cabinet.example", "organisme": "Cabinet d’urbanisme Dupont", "type": "partenaire",
            "fin": in_days(30)}
    user_id = f"@j.dupont-cabinet:{config.collectivite.nom_serveur}"
    for field, value, told in (("identifiant", "J Dupont!", "Identifiant invalide"),
                               ("nom", " ", "Nom affiché manquant"),
                               ("email", "pas-une-adresse", "Adresse électronique invalide"),
                               ("type", "maire", "Type de compte inconnu"),
                               ("fin", "31/12/2026", "Date invalide"),
                               ("fin", in_days(-1), "Ce jour est passé"),
                               ("fin", in_days(400), "Au plus 366 jours")):
        refused = await browser.post(url, data={**good, field: value})
        assert refused.status_code == 422 and told in refused.text, (field, refused.text[:300])
    listing = await browser.get(f"{portal.url}/partenaires")
    assert user_id not in listing.text  # nothing made by a refusal
    assert (await matrix_login(config.synapse_url, user_id, "Nimporte-quoi-123")).status_code == 403

    made = await browser.post(url, data=good)
    assert made.status_code == 200 and f"Compte {user_id} créé" in made.text, made.text[:500]
    found = re.search(r'class="secret">([^<]+)<', made.text)
    assert found
    password = found.group(1)
    twice = await browser.post(url, data=good)
    assert twice.status_code == 422 and "existe déjà" in twice.text

    logged = await matrix_login(config.synapse_url, user_id, password)
    assert logged.status_code == 200, logged.text
    token = logged.json()["access_token"]
    async with httpx.AsyncClient(base_url=config.synapse_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as jeanne:
        # An external account is limited: no room of its own.
        room = await jeanne.post("/_matrix/client/v3/createRoom", json={"name": "Salon du cabinet"})
        assert room.status_code == 403 and "ne peuvent pas créer de salon" in room.text

        # Closed now: no new sign-in, and the open session stops working — no restart of Synapse.
        listing = await browser.get(f"{portal.url}/partenaires")
        closed = await browser.post(f"{portal.url}/partenaires/externes/{user_id}",
                                    data={"csrf": csrf_of(listing), "action": "clore"})
        assert closed.status_code == 303
        for _ in range(30):  # the homeserver reads the published file again within a second or two
            if (await jeanne.get("/_matrix/client/v3/account/whoami")).status_code != 200:
                break
            await asyncio.sleep(0.5)
        assert (await jeanne.get("/_matrix/client/v3/account/whoami")).status_code == 403
        refused = await matrix_login(config.synapse_url, user_id, password)
        assert refused.status_code == 403 and "a expiré" in refused.text
        listing = await browser.get(f"{portal.url}/partenaires")
        assert "expiré" in listing.text

        # A date in the past is refused; a new last day opens it again.
        past = await browser.post(f"{portal.url}/partenaires/externes/{user_id}",
                                  data={"csrf": csrf, "action": "prolonger", "fin": in_days(-3)})
        assert past.status_code == 422 and "Ce jour est passé" in past.text
        extended = await browser.post(f"{portal.url}/partenaires/externes/{user_id}",
                                      data={"csrf": csrf, "action": "prolonger", "fin": paris_today()})
        assert extended.status_code == 303
        for _ in range(30):
            if (await jeanne.get("/_matrix/client/v3/account/whoami")).status_code == 200:
                break
            await asyncio.sleep(0.5)
        assert (await jeanne.get("/_matrix/client/v3/account/whoami")).json()["user_id"] == user_id

    audit = await browser.get(f"{portal.url}/journal?q=externe")
    for action in ("externe.creation", "externe.cloture", "externe.echeance"):
        assert action in audit.text
    published = config.data_dir / "acces-externes" / "externes.json"
    assert published.stat().st_mode & 0o777 == 0o600
