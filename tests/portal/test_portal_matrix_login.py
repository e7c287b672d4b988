"""Agents sign in to Matrix (Element or any client) with the collectivité's account: Synapse
asks the portal, which asks the identity provider. One identity everywhere; an agent who has
left, someone without an agent account, or a forged request gets nothing."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.async_api import Route, expect

from maillage.portal.matrix_sso import redirect_uri
from maillage.synapse_admin import SynapseAdmin
from tests.harness.browser import chromium_page
from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_dav import DOMAIN, make_agent
from tests.portal.test_portal_login import sign_in

pytestmark = pytest.mark.usefixtures("in_french")

CLIENT_PAGE = "http://element.localhost/retour"  # where a Matrix client waits for its login token


async def service_and_agent(browser: Browser, portal: PortalStack, key: str, localpart: str) -> str:
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/services")
    made = await browser.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": key, "nom": key.title()})
    assert made.status_code == 200, made.text[:500]
    return await make_agent(browser, portal, localpart, key, "agent")


async def test_an_agent_signs_in_to_matrix_in_a_browser_with_the_collectivite_account(
        portal: PortalStack, browser: Browser) -> None:
    config = portal.stack.config
    first_password = await service_and_agent(browser, portal, "etat-civil-sso", "ines.moreau")
    async with httpx.AsyncClient(base_url=config.synapse_url, timeout=30) as matrix:
        flows = (await matrix.get("/_matrix/client/v3/login")).json()["flows"]
        sso = next(flow for flow in flows if flow["type"] == "m.login.sso")
        assert sso["identity_providers"] == [{"id": "oidc-maillage", "name": "Compte de la collectivité"}]

    async with chromium_page() as page:
        async def client_page(route: Route) -> None:
            await route.fulfill(status=200, content_type="text/html", body="<p>Element</p>")

        await page.context.route(CLIENT_PAGE + "*", client_page)
        await page.goto(f"{config.public_baseurl}_matrix/client/v3/login/sso/redirect/oidc-maillage?"
                        + urlencode({"redirectUrl": CLIENT_PAGE}))
        # Synapse → the portal → the identity provider's form (ProConnect's in production).
        await page.get_by_label("Adresse électronique professionnelle").fill(f"ines.moreau@{DOMAIN}")
        await page.get_by_label("Mot de passe").fill(first_password)
        await page.keyboard.press("Enter")
        # Back through the portal to Synapse, whose confirmation page speaks French.
        await expect(page.get_by_role("heading", name="Continuer vers votre compte")).to_be_visible()
        assert await page.evaluate("document.documentElement.lang") == "fr"
        await page.get_by_role("link", name="Continuer").click()
        await page.wait_for_url(CLIENT_PAGE + "?loginToken=*")
        login_token = parse_qs(urlsplit(page.url).query)["loginToken"][0]

    async with httpx.AsyncClient(base_url=config.synapse_url, timeout=30) as matrix:
        logged = await matrix.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": login_token})
        assert logged.status_code == 200, logged.text
        # The very account the portal made (in her service's rooms), not a new one.
        assert logged.json()["user_id"] == f"@ines.moreau:{config.collectivite.nom_serveur}"
        again = await matrix.post("/_matrix/client/v3/login", json={"type": "m.login.token", "token": login_token})
        assert again.status_code == 403  # a login token is used once


def authorisation(config_redirect: str, **changes: str) -> dict[str, str]:
    verifier = secrets.token_urlsafe(48)
    asked = {"response_type": "code", "client_id": "synapse", "redirect_uri": config_redirect,
             "scope": "openid profile email", "state": secrets.token_urlsafe(22)[:30],
             "nonce": secrets.token_urlsafe(32), "code_challenge_method": "S256",
             "code_challenge": base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
             .decode(), "verifier": verifier}
    return {**asked, **changes}


async def test_synapse_gets_one_code_per_sign_in_and_nobody_else_gets_anything(
        portal: PortalStack, browser: Browser, admin_token: str) -> None:
    config = portal.stack.config
    secret = portal.stack.secrets.synapse_oidc_secret
    callback = redirect_uri(config)
    first_password = await service_and_agent(browser, portal, "cadastre-sso", "noe.lambert")
    agent = Browser()
    try:
        await sign_in(agent, portal, f"noe.lambert@{DOMAIN}", first_password, "/moi")

        # Forged requests: another client, another redirect address, no PKCE. Shown an error in
        # French on the portal, never sent anywhere.
        for changes, status in (({"client_id": "intrus"}, 400), ({"redirect_uri": "https://evil.example/cb"}, 400),
                                ({"code_challenge_method": "plain"}, 400), ({"scope": "profile"}, 400)):
            asked = authorisation(callback, **changes)
            asked.pop("verifier")
            refused = await agent.get(f"{portal.url}/matrix/autorisation?{urlencode(asked)}")
            assert refused.status_code == status and "location" not in refused.headers
            assert "Connexion à la messagerie refusée" in refused.text

        # The agent signed in at the portal: a code for Synapse, at Synapse's exact address.
        asked = authorisation(callback)
        verifier = asked.pop("verifier")
        given = await agent.get(f"{portal.url}/matrix/autorisation?{urlencode(asked)}")
        assert given.status_code == 303 and given.headers["location"].startswith(callback + "?")
        answer = parse_qs(urlsplit(given.headers["location"]).query)
        assert answer["state"] == [asked["state"]]
        code = answer["code"][0]
        token_url = f"{portal.url}/matrix/jeton"
        exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback,
                    "client_id": "synapse", "code_verifier": verifier}
        async with httpx.AsyncClient(timeout=30) as synapse_side:
            wrong_secret = await synapse_side.post(token_url, data={**exchange, "client_secret": "pas-le-bon"})
            assert wrong_secret.status_code == 401 and wrong_secret.json() == {"error": "invalid_client"}
            assert secret not in wrong_secret.text
            answered = await synapse_side.post(token_url, data={**exchange, "client_secret": secret})
            assert answered.status_code == 200, answered.text
            keys = KeySet.import_key_set((await synapse_side.get(f"{portal.url}/matrix/cles")).json())
            claims = jwt.decode(answered.json()["id_token"], keys).claims
            assert (claims["iss"], claims["aud"], claims["sub"], claims["nonce"]) == (
                f"{portal.url}/matrix", "synapse", "noe.lambert", asked["nonce"])
            assert (claims["name"], claims["email"]) == ("Noe Lambert", f"noe.lambert@{DOMAIN}")
            replayed = await synapse_side.post(token_url, data={**exchange, "client_secret": secret})
            assert replayed.status_code == 400 and replayed.json() == {"error": "invalid_grant"}

            # A stolen code without the verifier Synapse keeps: nothing.
            asked = authorisation(callback)
            asked.pop("verifier")
            stolen = parse_qs(urlsplit((await agent.get(
                f"{portal.url}/matrix/autorisation?{urlencode(asked)}")).headers["location"]).query)["code"][0]
            guessed = await synapse_side.post(token_url, data={**exchange, "code": stolen, "client_secret": secret,
                                                               "code_verifier": secrets.token_urlsafe(48)})
            assert guessed.status_code == 400 and guessed.json() == {"error": "invalid_grant"}

        # Not signed in at the portal: to the identity provider first, then back to the request.
        stranger = Browser()
        try:
            asked = authorisation(callback)
            asked.pop("verifier")
            sent = await stranger.get(f"{portal.url}/matrix/autorisation?{urlencode(asked)}")
            assert sent.status_code == 303 and sent.headers["location"].startswith("/connexion?suite=")
        finally:
            await stranger.close()

        # The administrator signed in at the portal has no agent account: no Matrix sign-in.
        asked = authorisation(callback)
        asked.pop("verifier")
        admin_refused = await browser.get(f"{portal.url}/matrix/autorisation?{urlencode(asked)}")
        assert admin_refused.status_code == 403 and "n’a pas de compte de messagerie" in admin_refused.text

        # The agent leaves: signed out of the portal, their session gets no more codes, and
        # signing in again is refused.
        agent_url = f"{portal.url}/agents/{'@noe.lambert:' + config.collectivite.nom_serveur}"
        detail = await browser.get(agent_url)
        left = await browser.post(f"{agent_url}/depart", data={"csrf": csrf_of(detail), "confirmation": "oui"})
        assert left.status_code == 200, left.text[:500]
        asked = authorisation(callback)
        asked.pop("verifier")
        departed = await agent.get(f"{portal.url}/matrix/autorisation?{urlencode(asked)}")
        assert departed.status_code == 303 and departed.headers["location"].startswith("/connexion?suite=")
        # (still signed in at the identity provider, which sends them straight back: refused)
        again = await agent.follow(await agent.get(f"{portal.url}/connexion?suite=/moi"))
        assert again.status_code == 403 and "n’est pas connu du portail" in again.text
    finally:
        await agent.close()
    async with SynapseAdmin(config.synapse_url, admin_token) as admin:
        account = await admin.user(f"@noe.lambert:{config.collectivite.nom_serveur}")
        assert account is not None and account["deactivated"]
