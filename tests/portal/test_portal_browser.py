"""The portal in a real browser (Debian's Chromium through Playwright): an admin logs in through
the provider's page, creates a service and an agent, reads the audit log and logs out, with
the keyboard where a person would use it; axe-core finds no serious violation on any page."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, expect

from tests.harness.browser import chromium_page, serious_violations
from tests.portal.conftest import PortalStack

pytestmark = pytest.mark.usefixtures("in_french")


async def accessible(page: Page, seen: dict[str, list[dict[str, Any]]]) -> None:
    seen[page.url] = await serious_violations(page)


@pytest.mark.parametrize("width", [1280, 390], ids=["ordinateur", "telephone"])
async def test_admin_runs_the_collectivite_from_a_browser(portal: PortalStack, width: int) -> None:
    seen: dict[str, list[dict[str, Any]]] = {}
    key = f"voirie-{width}"
    async with chromium_page(width=width, height=900) as page:
        await page.goto(portal.url + "/")
        await accessible(page, seen)
        await page.get_by_role("link", name="Se connecter").click()
        await expect(page.get_by_label("Adresse électronique professionnelle")).to_be_visible()
        await accessible(page, seen)
        await page.get_by_label("Adresse électronique professionnelle").fill(portal.admin_email)
        await page.get_by_label("Mot de passe").fill("faux-mot-de-passe")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("alert")).to_contain_text("mot de passe incorrect")
        await accessible(page, seen)
        await page.get_by_label("Mot de passe").fill(portal.admin_password)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Tableau de bord")).to_be_visible()
        await accessible(page, seen)

        await page.get_by_role("link", name="Services", exact=True).click()
        await page.get_by_label("Nom du service").fill("Voirie")
        await page.get_by_label("Identifiant").fill("Voirie !")
        await page.get_by_role("button", name="Créer le service").click()
        summary = page.locator("#resume-erreurs")
        await expect(summary).to_contain_text("Identifiant invalide")
        await expect(page.get_by_label("Identifiant")).to_have_attribute("aria-invalid", "true")
        await accessible(page, seen)
        await summary.get_by_role("link").click()  # the summary leads to the field at fault
        await expect(page.get_by_label("Identifiant")).to_be_focused()
        await page.keyboard.press("Control+A")
        await page.keyboard.type(key)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("status")).to_contain_text("« Voirie » est créé")
        await accessible(page, seen)

        await page.get_by_role("link", name="Agents", exact=True).click()
        await page.get_by_label("Prénom").fill("Hugo")
        await page.get_by_label("Nom d’usage").fill("Lambert")
        email = f"hugo.lambert{width}@test-sur-loire.example"
        await page.get_by_label("Adresse électronique professionnelle").fill(email)
        await page.get_by_label("Service").select_option(key)
        await page.get_by_label("Rôle").select_option("agent")
        await page.get_by_role("button", name="Créer l’agent").click()
        await expect(page.get_by_role("status")).to_contain_text(f"@hugo.lambert{width}:localhost")
        await expect(page.locator(".secret")).to_have_text(re.compile(r"\w{4}-\w{4}-\w{4}-\w{4}"))
        first_password = await page.locator(".secret").inner_text()
        await accessible(page, seen)

        # The agent's page: what waits for them, another service or role, their departure.
        await page.get_by_role("link", name="Hugo Lambert").first.click()
        await expect(page.get_by_role("heading", name="Travail en cours")).to_be_visible()
        await page.get_by_role("button", name="Enregistrer le départ").click()
        await expect(page.locator("#resume-erreurs")).to_contain_text("Cochez la case de confirmation")
        await accessible(page, seen)
        await page.get_by_role("link", name="Tableau de bord").click()
        await expect(page.get_by_role("img", name="Agents par service")).to_be_visible()
        await accessible(page, seen)

        await page.get_by_role("link", name="Journal").click()
        await expect(page.get_by_role("table")).to_contain_text("agent.creation")
        await accessible(page, seen)
        await page.goto(f"{portal.url}/services/{key}")
        await expect(page.get_by_role("heading", name="Voirie")).to_be_visible()
        await accessible(page, seen)

        # Partners: a wrong server name is said next to its field; an external account is made.
        await page.get_by_role("link", name="Partenaires").click()
        await page.get_by_label("Nom du serveur").fill("pas un serveur")
        await page.get_by_role("button", name="Ajouter le partenaire").click()
        await expect(page.locator("#resume-erreurs")).to_contain_text("Nom de serveur invalide")
        await accessible(page, seen)
        await page.get_by_label("Nom affiché").fill("Paul Conseil")
        await page.get_by_label(re.compile("^Identifiant La partie")).fill(f"p.conseil-{width}")
        await page.get_by_label(re.compile("^Dernier jour Le compte")).fill(
            (datetime.now(ZoneInfo("Europe/Paris")).date() + timedelta(days=20)).isoformat())
        await page.get_by_role("button", name="Créer un compte externe").click()
        await expect(page.get_by_role("status")).to_contain_text(f"@p.conseil-{width}:localhost")
        await accessible(page, seen)
        await page.get_by_role("link", name="Vérification").click()
        await page.get_by_role("button", name="Vérifier maintenant").click()
        await expect(page.get_by_role("status")).to_contain_text("écart")
        await accessible(page, seen)

        await page.get_by_role("button", name="Se déconnecter").click()
        await expect(page.get_by_role("heading", name="Vous êtes déconnecté du portail.")).to_be_visible()
        await accessible(page, seen)

        # The agent signs in and makes an app password for their calendar app.
        await page.goto(portal.url + "/connexion?suite=/moi")
        await page.get_by_label("Adresse électronique professionnelle").fill(email)
        await page.get_by_label("Mot de passe").fill(first_password)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Mots de passe d’application")).to_be_visible()
        await page.get_by_label("Nom de l’appareil ou de l’application").fill("Thunderbird")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("status")).to_contain_text("« Thunderbird » créé")
        await accessible(page, seen)
    assert len(seen) >= 11  # distinct addresses: the dashboard is seen twice
    assert {url: found for url, found in seen.items() if found} == {}
