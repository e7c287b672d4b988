"""The portal's HTTP API: tokens made and revoked by an admin, the same write path as the pages,
French errors naming the field, 401/403 for who has no right — and a fuzz of every operation
from its OpenAPI description (schemathesis): never a 500."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.browserless import Browser, csrf_of
from tests.portal.conftest import PortalStack
from tests.portal.test_portal_login import sign_in

pytestmark = pytest.mark.usefixtures("in_french")


async def make_token(portal: PortalStack, name: str) -> tuple[str, Browser]:
    browser = Browser()
    page = await sign_in(browser, portal, portal.admin_email, portal.admin_password, "/jetons")
    made = await browser.post(f"{portal.url}/jetons", data={"csrf": csrf_of(page), "nom": name})
    secret = re.search(r'class="secret">([^<]+)<', made.text)
    assert made.status_code == 200 and secret, made.text[:400]
    return secret.group(1), browser


@pytest.fixture(scope="module")
def api_token(portal: PortalStack) -> str:
    async def one() -> str:
        token, browser = await make_token(portal, "Banc d’essai")
        await browser.close()
        return token

    return asyncio.run(one())


async def test_the_api_makes_services_and_agents_and_refuses_the_rest(portal: PortalStack) -> None:
    token, browser = await make_token(portal, "Logiciel RH")
    bearer = {"Authorization": f"Bearer {token}"}
    try:
        page = await browser.get(f"{portal.url}/jetons")
        unnamed = await browser.post(f"{portal.url}/jetons", data={"csrf": csrf_of(page), "nom": " x "})
        assert unnamed.status_code == 422 and "de 2 à 80 caractères" in unnamed.text
        assert 'class="secret"' not in unnamed.text
        async with httpx.AsyncClient(base_url=f"{portal.url}/api/v1", timeout=120) as http:
            assert (await http.get("/services")).status_code == 401
            wrong = await http.get("/services", headers={"Authorization": "Bearer pas-un-jeton"})
            assert wrong.status_code == 401 and "inconnu ou révoqué" in wrong.json()["detail"]
            made = await http.post("/services", json={"cle": "rh-api", "nom": "Ressources humaines"}, headers=bearer)
            assert made.status_code == 201 and made.json()["pret"] and made.json()["espace"].startswith("!")
            bad = await http.post("/agents", headers=bearer, json={
                "email": "x", "prenom": "Zoé", "nom": "Martin", "service": "rh-api"})
            assert bad.status_code == 422 and bad.json()["champ"] == "email"
            assert "Adresse électronique invalide" in bad.json()["detail"]
            missing = await http.post("/agents", headers=bearer, json={"email": "zoe.martin@test-sur-loire.example"})
            assert missing.status_code == 422 and missing.json()["champ"] == "prenom"
            agent = await http.post("/agents", headers=bearer, json={
                "email": "zoe.martin@test-sur-loire.example", "prenom": "Zoé", "nom": "Martin", "service": "rh-api",
                "role": "chef"})
            assert agent.status_code == 201 and agent.json()["identifiant_matrix"] == "@zoe.martin:localhost"
            listed = await http.get("/agents", headers=bearer)
            assert any(a["email"] == "zoe.martin@test-sur-loire.example" and a["service"] == "rh-api"
                       for a in listed.json())
            journal = await http.get("/journal", params={"q": "zoe.martin"}, headers=bearer)
            assert [e["qui"] for e in journal.json()] == [f"{portal.admin_email} (jeton « Logiciel RH »)"]

            # The HR software moves her, then records her departure; the service is renamed, then
            # archived once empty; an external account is made and its last day changed.
            zoe = "/agents/@zoe.martin:localhost"
            assert (await http.post("/services", json={"cle": "paie-api", "nom": "Paie"}, headers=bearer)
                    ).status_code == 201
            wrong_role = await http.patch(zoe, json={"service": "paie-api", "role": "maire"}, headers=bearer)
            assert wrong_role.status_code == 422 and wrong_role.json()["champ"] == "role"
            moved = await http.patch(zoe, json={"service": "paie-api", "role": "agent"}, headers=bearer)
            assert moved.status_code == 200 and (moved.json()["service"], moved.json()["role"]) == ("paie-api", "agent")
            assert (await http.get("/agents/@personne:localhost", headers=bearer)).status_code == 404
            renamed = await http.patch("/services/rh-api", json={"nom": "Ressources humaines et paie"}, headers=bearer)
            assert renamed.status_code == 200 and renamed.json()["nom"] == "Ressources humaines et paie"
            archived = await http.post("/services/rh-api/archivage", headers=bearer)
            assert archived.status_code == 200 and archived.json()["archive"]
            left = await http.post(f"{zoe}/depart", headers=bearer)
            assert left.status_code == 200 and not left.json()["actif"]
            assert (await http.post(f"{zoe}/depart", headers=bearer)).status_code == 409
            assert (await http.patch(zoe, json={"service": "paie-api", "role": "chef"}, headers=bearer)
                    ).status_code == 409
            day = (datetime.now(ZoneInfo("Europe/Paris")).date() + timedelta(days=60)).isoformat()
            external = await http.post("/externes", headers=bearer, json={
                "identifiant": "cabinet-rh", "nom": "Cabinet RH", "organisme": "Cabinet", "dernier_jour": day})
            assert external.status_code == 201 and external.json()["mot_de_passe"], external.text
            past = await http.patch("/externes/@cabinet-rh:localhost", json={"dernier_jour": "2020-01-01"},
                                    headers=bearer)
            assert past.status_code == 422 and past.json()["champ"] == "fin" and "passé" in past.json()["detail"]
            unknown = await http.patch("/externes/@personne:localhost", json={"dernier_jour": day}, headers=bearer)
            assert unknown.status_code == 404

            page = await browser.get(f"{portal.url}/jetons")
            token_id = re.findall(r'action="/jetons/(\d+)/revoquer"', page.text)[-1]
            await browser.post(f"{portal.url}/jetons/{token_id}/revoquer", data={"csrf": csrf_of(page)})
            revoked = await http.get("/services", headers=bearer)
            assert revoked.status_code == 401
    finally:
        await browser.close()


async def test_an_agent_cannot_make_tokens(portal: PortalStack, browser: Browser) -> None:
    admin = Browser()
    try:
        page = await sign_in(admin, portal, portal.admin_email, portal.admin_password, "/agents")
        await admin.post(f"{portal.url}/services", data={"csrf": csrf_of(page), "cle": "tokens-refus", "nom": "Refus"})
        made = await admin.post(f"{portal.url}/agents", data={
            "csrf": csrf_of(page), "prenom": "Yves", "nom": "Tardy", "email": "yves.tardy@test-sur-loire.example",
            "service": "tokens-refus", "role": "agent"})
        password = re.search(r'class="secret">([^<]+)<', made.text)
        assert password
    finally:
        await admin.close()
    mine = await sign_in(browser, portal, "yves.tardy@test-sur-loire.example", password.group(1))
    denied = await browser.post(f"{portal.url}/jetons", data={"csrf": csrf_of(mine), "nom": "Le mien"})
    assert denied.status_code == 403
    assert (await browser.get(f"{portal.url}/jetons")).status_code == 403


def test_no_request_makes_the_api_fail(portal: PortalStack, api_token: str) -> None:
    """Every operation of the OpenAPI description, with values generated from its schemas (and
    beyond them), with and without a valid token: never a 500, always a JSON message."""
    schema = schemathesis.openapi.from_url(f"{portal.url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "GET /api/v1/services", "POST /api/v1/services", "GET /api/v1/agents", "POST /api/v1/agents",
        "GET /api/v1/journal", "PATCH /api/v1/agents/{identifiant_matrix}",
        "POST /api/v1/agents/{identifiant_matrix}/depart",
        "PATCH /api/v1/services/{cle}", "POST /api/v1/services/{cle}/archivage", "GET /api/v1/externes",
        "POST /api/v1/externes", "PATCH /api/v1/externes/{identifiant_matrix}"}
    for operation in operations:
        @given(case=operation.as_strategy(), authorised=st.booleans())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any, authorised: bool) -> None:
            headers = {"Authorization": f"Bearer {api_token}"} if authorised else {}
            # Sent with httpx: caldav's niquests brings urllib3-future, which breaks schemathesis's
            # own requests transport (« 'TrafficPolice' object has no attribute 'keys' »).
            request = case.as_transport_kwargs(base_url=portal.url, headers=headers)
            request.pop("timeout", None)
            if "data" in request and not isinstance(request["data"], (bytes, str)):
                request["data"] = request.pop("data")
            response = httpx.request(timeout=120, **request)
            assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
            if response.status_code >= 400:
                answer = (request, response.status_code, response.text[:200])
                assert response.headers["content-type"].startswith("application/json"), answer
                assert response.json()["detail"]  # a message, in French, never a traceback

        check()
