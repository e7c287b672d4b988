"""Logging in to the portal through the development OIDC provider (ProConnect's protocol),
as a browser does: the state and nonce, the signed userinfo, sessions, CSRF, logout."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from maillage.portal.auth import SESSION_COOKIE
from maillage.portal.idp_dev import Directory
from maillage.portal.web import csv_cell
from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack

pytestmark = pytest.mark.usefixtures("in_french")


async def sign_in(browser: Browser, portal: PortalStack, email: str, password: str,
                  page: str = "/") -> httpx.Response:
    start = await browser.get(f"{portal.url}/connexion?suite={page}")
    assert start.status_code == 303 and start.headers["location"].startswith(portal.issuer + "/authorize?")
    form = await browser.follow(start)
    assert form.status_code == 200
    back = await browser.sign_in_at_provider(form, email, password)
    return await browser.follow(back)


async def test_admin_signs_in_with_proconnect_rules_and_gets_a_locked_down_cookie(
        portal: PortalStack, browser: Browser) -> None:
    start = await browser.get(f"{portal.url}/connexion")
    asked = parse_qs(urlsplit(start.headers["location"]).query)
    assert len(asked["state"][0]) >= 32 and len(asked["nonce"][0]) >= 32
    assert "openid" in asked["scope"][0].split() and asked["response_type"] == ["code"]
    form = await browser.follow(start)
    back = await browser.sign_in_at_provider(form, portal.admin_email, portal.admin_password)
    assert back.status_code == 303 and back.headers["location"].startswith(portal.url + "/connexion/retour?")
    landed = await browser.get(back.headers["location"])
    cookie = next(h for h in landed.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "="))
    assert all(flag in cookie.lower() for flag in ("httponly", "secure", "samesite=lax"))
    home = await browser.follow(landed)
    assert home.status_code == 200 and "Tableau de bord" in home.text


async def test_a_wrong_password_at_the_provider_is_told_and_gives_nothing(portal: PortalStack,
                                                                         browser: Browser) -> None:
    form = await browser.follow(await browser.get(f"{portal.url}/connexion"))
    again = await browser.sign_in_at_provider(form, portal.admin_email, "pas-le-bon-mot-de-passe")
    assert again.status_code == 401 and "mot de passe incorrect" in again.text
    assert browser.cookie(portal.url, SESSION_COOKIE) is None


async def test_replayed_forged_or_refused_callbacks_are_refused(portal: PortalStack, browser: Browser) -> None:
    form = await browser.follow(await browser.get(f"{portal.url}/connexion"))
    back = await browser.sign_in_at_provider(form, portal.admin_email, portal.admin_password)
    callback = back.headers["location"]
    assert (await browser.get(callback)).status_code == 303  # the real one
    thief = Browser()
    try:
        replayed = await thief.get(callback)
        assert replayed.status_code == 400 and "déjà utilisée" in replayed.text
        assert thief.cookie(portal.url, SESSION_COOKIE) is None
        code = parse_qs(urlsplit(callback).query)["code"][0]
        forged = await thief.get(f"{portal.url}/connexion/retour?code={code}&state={'x' * 43}")
        assert forged.status_code == 400 and thief.cookie(portal.url, SESSION_COOKIE) is None
        refused = await thief.get(f"{portal.url}/connexion/retour?error=access_denied&state={'y' * 43}")
        assert refused.status_code == 400 and "annulée ou refusée" in refused.text
    finally:
        await thief.close()


async def test_the_provider_keeps_proconnect_rules_for_any_client(portal: PortalStack, browser: Browser) -> None:
    """Short state or nonce, unknown return address, replayed code: refused as ProConnect does."""
    client_id = portal.stack.config.portail.oidc_client
    redirect = f"{portal.url}/connexion/retour"
    base = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect, "scope": "openid email"}
    short = await browser.get(f"{portal.issuer}/authorize", params={**base, "state": "a" * 31, "nonce": "b" * 40})
    assert short.status_code == 303 and "error=invalid_request" in short.headers["location"]
    elsewhere = await browser.get(f"{portal.issuer}/authorize", params={
        **base, "redirect_uri": "https://attaquant.example/vol", "state": "a" * 40, "nonce": "b" * 40})
    assert elsewhere.status_code == 400 and "location" not in elsewhere.headers

    # A whole exchange as a client does, then the same code again.
    form = await browser.get(f"{portal.issuer}/authorize", params={**base, "state": "s" * 40, "nonce": "n" * 40})
    back = await browser.sign_in_at_provider(form, portal.admin_email, portal.admin_password)
    code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
    secret = portal.stack.secrets.portal_oidc_secret
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                "client_id": client_id, "client_secret": secret}
    async with httpx.AsyncClient() as http:
        tokens = (await http.post(f"{portal.issuer}/token", data=exchange)).json()
        keys = KeySet.import_key_set((await http.get(f"{portal.issuer}/jwks")).json())
        claims = jwt.decode(tokens["id_token"], keys).claims
        assert claims["nonce"] == "n" * 40 and claims["aud"] == client_id
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        info = await http.get(f"{portal.issuer}/userinfo", headers=bearer)
        assert info.headers["content-type"].startswith("application/jwt")
        userinfo = jwt.decode(info.text, keys).claims
        assert userinfo["email"] == portal.admin_email and userinfo["iss"] == portal.issuer
        assert userinfo["aud"] == client_id and userinfo["sub"] == claims["sub"]
        replay = await http.post(f"{portal.issuer}/token", data=exchange)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        revoked = await http.get(f"{portal.issuer}/userinfo", headers=bearer)
        assert revoked.status_code == 401  # what the replayed code gave is taken back
        basic = base64.b64encode(f"{client_id}:mauvais-secret".encode()).decode()
        wrong = await http.post(f"{portal.issuer}/token", data={**exchange, "client_secret": ""},
                                headers={"Authorization": f"Basic {basic}"})
        assert wrong.status_code == 401


async def test_logout_needs_the_form_token_and_ends_both_sessions(portal: PortalStack, browser: Browser) -> None:
    home = await sign_in(browser, portal, portal.admin_email, portal.admin_password)
    csrf = csrf_of(home)
    refused = await browser.post(f"{portal.url}/deconnexion", data={"csrf": "faux"})
    assert refused.status_code == 403 and "rien n’a été modifié" in refused.text
    still = await browser.get(f"{portal.url}/services")
    assert still.status_code == 200
    out = await browser.post(f"{portal.url}/deconnexion", data={"csrf": csrf})
    assert out.status_code == 303
    ending = urlsplit(out.headers["location"])
    assert out.headers["location"].startswith(portal.issuer + "/session/end?")
    assert "id_token_hint" in parse_qs(ending.query)
    done = await browser.follow(out)
    assert done.status_code == 200 and "déconnecté" in done.text
    after = await browser.get(f"{portal.url}/services")
    assert after.status_code == 303 and after.headers["location"].startswith("/connexion")
    # The provider's own session ended too: the next login asks for the password again.
    again = await browser.follow(await browser.get(f"{portal.url}/connexion"))
    assert 'name="password"' in again.text


async def test_someone_the_portal_does_not_know_cannot_sign_in(portal: PortalStack, browser: Browser) -> None:
    Directory(portal.stack.config.data_dir / "oidc-dev" / "annuaire.json").put(
        "inconnu@ailleurs.example", "Inès", "Connue", "Mot-de-passe-42-Long")
    landed = await sign_in(browser, portal, "inconnu@ailleurs.example", "Mot-de-passe-42-Long")
    assert landed.status_code == 403 and "n’est pas connu du portail" in landed.text
    assert browser.cookie(portal.url, SESSION_COOKIE) is None


def test_audit_export_cells_are_never_formulas() -> None:
    assert csv_cell("=cmd|'/C calc'!A0") == "'=cmd|'/C calc'!A0"
    assert csv_cell("+33 1 23") == "'+33 1 23" and csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("Urbanisme") == "Urbanisme"
