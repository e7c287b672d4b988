"""Attempts made as a client would make them (plain client-server API calls), and which layer
of the homeserver refused each: the access-rules module, the account's token, the federation
allowlist, or Matrix itself (membership, join rules)."""

from __future__ import annotations

import asyncio
import secrets
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tests.harness.federation import Homeserver
from tests.harness.matrix import Agent

# What an attempt came to: True when the homeserver accepted it, otherwise the layer that refused.
Outcome = bool | str
MODULE = "module"  # a refusal of maillage.homeserver.access_rules, with its French message
TOKEN = "jeton"  # the account's tokens no longer work (the module's account-validity callback)
FEDERATION = "federation"  # the federation allowlist: the servers do not talk to each other
NOT_MEMBER = "non-membre"  # Matrix: not a member of the room (never let in, or removed)
REMOVED = "retire"  # accepted by the home server then removed at once by the module

_CATALOGUE = tomllib.loads((Path(__file__).parents[2] / "core" / "locales" / "fr.toml").read_text())
_MODULE_PREFIXES = [str(v).split("{")[0] for k, v in _CATALOGUE.items() if k.startswith("acces.")]


@dataclass
class Account:
    """Someone able to call a homeserver's client API (a logged-in agent, or a token made
    by an admin for an account that can no longer log in)."""

    user_id: str
    server: Homeserver
    token: str

    @classmethod
    def of(cls, agent: Agent, server: Homeserver) -> Account:
        return cls(agent.user_id, server, str(agent.client.access_token))

    async def call(self, method: str, path: str, json: dict[str, Any] | None = None,
                   params: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as http:
            return await http.request(method, f"{self.server.client_url}/_matrix/client/v3{path}", json=json,
                                      params=params, headers={"Authorization": f"Bearer {self.token}"})


def layer(response: httpx.Response) -> Outcome:
    """True for a success; otherwise which layer refused, told apart by what it answers."""
    if response.is_success:
        return True
    body: dict[str, Any] = response.json() if response.headers.get("content-type", "").startswith(
        "application/json") else {}
    error, code = str(body.get("error", "")), body.get("errcode")
    if code in ("M_EXPIRED_ACCOUNT", "ORG_MATRIX_EXPIRED_ACCOUNT"):
        return TOKEN
    if any(error.startswith(p) for p in _MODULE_PREFIXES if len(p) >= 8):
        return MODULE
    if "ederation denied" in error or "not on the federation allowlist" in error or "whitelist" in error:
        return FEDERATION
    if "not in room" in error or "not joined" in error or "not a member" in error.lower():
        return NOT_MEMBER
    return f"{response.status_code} {code}: {error[:120]}"


async def invite(by: Account, room_id: str, user_id: str) -> Outcome:
    return layer(await by.call("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": user_id}))


async def join(account: Account, room_id: str, via: Homeserver) -> Outcome:
    return layer(await account.call("POST", f"/join/{quote(room_id)}", {}, {"server_name": via.server_name}))


async def knock(account: Account, room_id: str, via: Homeserver) -> Outcome:
    return layer(await account.call("POST", f"/knock/{quote(room_id)}", {"reason": "Bonjour"},
                                    {"server_name": via.server_name}))


async def send(account: Account, room_id: str, body: str) -> Outcome:
    """A plain message (the homeserver's decision does not depend on encryption)."""
    return layer(await account.call("PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{secrets.token_hex(8)}",
                                    {"msgtype": "m.text", "body": body}))


async def put_state(account: Account, room_id: str, event_type: str, content: dict[str, Any],
                    state_key: str = "") -> Outcome:
    return layer(await account.call("PUT", f"/rooms/{quote(room_id)}/state/{event_type}/{quote(state_key)}",
                                    content))


async def set_power(by: Account, room_id: str, user_id: str, level: int) -> Outcome:
    current = await by.call("GET", f"/rooms/{quote(room_id)}/state/m.room.power_levels/")
    content: dict[str, Any] = current.json()
    content["users"] = {**content.get("users", {}), user_id: level}
    return await put_state(by, room_id, "m.room.power_levels", content)


async def create_room(owner: Account, kind: str, *, open_join: bool, name: str = "Salon",
                      extra_state: list[dict[str, Any]] | None = None) -> str:
    """A room of this access kind; ``open_join``: anyone may join (join rule ``public``), so
    that the access kind is the only barrier left."""
    response = await owner.call("POST", "/createRoom", {
        "name": name, "preset": "public_chat" if open_join else "private_chat",
        "initial_state": [{"type": "fr.maillage.acces", "state_key": "", "content": {"acces": kind}},
                          *(extra_state or [])]})
    assert response.is_success, response.text
    return str(response.json()["room_id"])


async def members(observer: Account, room_id: str) -> set[str]:
    response = await observer.call("GET", f"/rooms/{quote(room_id)}/joined_members")
    return set(response.json().get("joined", {})) if response.is_success else set()


async def becomes_member(observer: Account, room_id: str, user_id: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if user_id in await members(observer, room_id):
            return True
        await asyncio.sleep(0.3)
    return False


async def stops_being_member(observer: Account, room_id: str, user_id: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if user_id not in await members(observer, room_id):
            return True
        await asyncio.sleep(0.3)
    return False


async def admin_call(server: Homeserver, method: str, path: str, json: dict[str, Any] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.request(method, f"{server.client_url}/_synapse/admin{path}", json=json,
                                  headers={"Authorization": f"Bearer {server.admin_token}"})


async def mark_user_type(server: Homeserver, user_id: str, user_type: str | None) -> None:
    response = await admin_call(server, "PUT", f"/v2/users/{quote(user_id)}", {"user_type": user_type})
    assert response.is_success, response.text


async def token_made_by_admin(server: Homeserver, user_id: str) -> Account:
    """A token for an account, made through the Admin API: what a device logged in before the
    account expired still holds."""
    created = await admin_call(server, "PUT", f"/v2/users/{quote(user_id)}",
                               {"password": f"Mot-de-passe-{secrets.token_hex(6)}-A1"})
    assert created.is_success, created.text
    response = await admin_call(server, "POST", f"/v1/users/{quote(user_id)}/login", {})
    assert response.is_success, response.text
    return Account(user_id, server, str(response.json()["access_token"]))


async def bot_account(server: Homeserver, localpart: str = "documents") -> Account:
    """A service bot's own account (Synapse user type ``bot``), as the bots' runtime makes it;
    a token is made for it through the Admin API, so a running bot keeps its own devices."""
    user_id = server.user_id(localpart)
    found = await admin_call(server, "GET", f"/v2/users/{quote(user_id)}")
    if found.status_code == 404:
        made = await admin_call(server, "PUT", f"/v2/users/{quote(user_id)}",
                                {"user_type": "bot", "displayname": localpart.capitalize()})
        assert made.is_success, made.text
    else:
        assert found.json().get("user_type") == "bot", found.text
    response = await admin_call(server, "POST", f"/v1/users/{quote(user_id)}/login", {})
    assert response.is_success, response.text
    return Account(user_id, server, str(response.json()["access_token"]))
