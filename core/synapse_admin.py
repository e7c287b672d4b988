"""A small client for Synapse's Admin API and the few client-API calls provisioning needs.

Shared by the launcher (demo seeding), the test harness and later the portal.
The access token is never logged: errors name the request path and the
homeserver's error code only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any
from urllib.parse import quote

import httpx

# A join refused while the main process has not yet heard of the invitation (workers): asked
# again after these pauses (s).
JOIN_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)


class AdminApiError(Exception):
    def __init__(self, method: str, path: str, status: int, errcode: str, error: str) -> None:
        super().__init__(f"{method} {path} → {status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode


def _q(value: str) -> str:
    return quote(value, safe="")


async def register_with_shared_secret(
    base_url: str,
    shared_secret: str,
    username: str,
    password: str,
    *,
    admin: bool = False,
    displayname: str | None = None,
) -> dict[str, Any]:
    """Create an account with the registration shared secret (needs no admin yet)."""
    path = "/_synapse/admin/v1/register"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        nonce_response = await http.get(path)
        nonce = nonce_response.json()["nonce"]
        mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        body: dict[str, Any] = {"nonce": nonce, "username": username, "password": password,
                                "admin": admin, "mac": mac.hexdigest()}
        if displayname:
            body["displayname"] = displayname
        response = await http.post(path, json=body)
    return _checked("POST", path, response)


def _checked(method: str, path: str, response: httpx.Response) -> dict[str, Any]:
    if response.is_success:
        return response.json() if response.content else {}
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    raise AdminApiError(method, path, response.status_code, payload.get("errcode", ""),
                        payload.get("error", response.reason_phrase))


class SynapseAdmin:
    """Calls made with an admin account's access token."""

    def __init__(self, base_url: str, access_token: str) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {access_token}"}
        )

    async def __aenter__(self) -> SynapseAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self._http.request(method, path, json=body)
        return _checked(method, path, response)

    async def whoami(self) -> str:
        return str((await self._call("GET", "/_matrix/client/v3/account/whoami"))["user_id"])

    async def user(self, user_id: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", f"/_synapse/admin/v2/users/{_q(user_id)}")
        except AdminApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def put_user(
        self, user_id: str, *, password: str | None = None, displayname: str | None = None,
        admin: bool = False, user_type: str | None = None, external_ids: list[dict[str, str]] | None = None,
        threepids: list[dict[str, str]] | None = None, deactivated: bool | None = None,
    ) -> dict[str, Any]:
        """Create the account, or update it (the Admin API's PUT is an upsert)."""
        body: dict[str, Any] = {"admin": admin}
        if external_ids is not None:  # its identity at the OIDC provider (SSO login)
            body["external_ids"] = external_ids
        if threepids is not None:
            body["threepids"] = threepids
        if deactivated is not None:
            body["deactivated"] = deactivated
        if password is not None:
            body["password"] = password
            body["logout_devices"] = False
        if displayname is not None:
            body["displayname"] = displayname
        if user_type is not None:
            body["user_type"] = user_type
        return await self._call("PUT", f"/_synapse/admin/v2/users/{_q(user_id)}", body)

    async def override_ratelimit(self, user_id: str) -> None:
        """Lift message rate limits for one account (bots, benchmarks)."""
        await self._call("POST", f"/_synapse/admin/v1/users/{_q(user_id)}/override_ratelimit",
                         {"messages_per_second": 0, "burst_count": 0})

    async def create_room(self, body: dict[str, Any]) -> str:
        return str((await self._call("POST", "/_matrix/client/v3/createRoom", body))["room_id"])

    async def force_join(self, room_id: str, user_id: str) -> None:
        """Join a local user to a room the admin account is in (Admin API); already in, nothing to do.

        Synapse invites, then joins. With workers the invitation is written by the event
        persister and the join checked by the main process, which may not have heard of it yet
        (« You are not invited to this room »): asked again a moment later, it has."""
        for delay in (*JOIN_RETRY_DELAYS, None):
            try:
                await self._call("POST", f"/_synapse/admin/v1/join/{_q(room_id)}", {"user_id": user_id})
                return
            except AdminApiError as exc:
                if exc.status != 403:
                    raise
                if await self._member(room_id, user_id, ("join",)):
                    return
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def send_state(self, room_id: str, event_type: str, state_key: str,
                         content: dict[str, Any]) -> str:
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}"
        return str((await self._call("PUT", path, content))["event_id"])

    async def state(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any]:
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}"
        return await self._call("GET", path)

    async def invite(self, room_id: str, user_id: str) -> None:
        """Invite; someone already invited or in the room is left as they are."""
        try:
            await self._call("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/invite", {"user_id": user_id})
        except AdminApiError as exc:
            if exc.status != 403 or not await self._member(room_id, user_id, ("invite", "join")):
                raise

    async def kick(self, room_id: str, user_id: str, reason: str) -> None:
        """Out of the room; someone not in it (or not invited) is left as they are."""
        try:
            await self._call("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/kick",
                             {"user_id": user_id, "reason": reason})
        except AdminApiError as exc:
            if exc.status != 403 or await self._member(room_id, user_id, ("invite", "join")):
                raise

    async def joined_members(self, room_id: str) -> set[str]:
        """Who is in the room now (Admin API: the admin account need not be in it)."""
        answer = await self._call("GET", f"/_synapse/admin/v1/rooms/{_q(room_id)}/members")
        return {str(member) for member in answer.get("members", [])}

    async def deactivate(self, user_id: str) -> None:
        """The account closed (logged out everywhere, out of every room); its messages are kept."""
        await self._call("POST", f"/_synapse/admin/v1/deactivate/{_q(user_id)}", {"erase": False})

    async def _member(self, room_id: str, user_id: str, memberships: tuple[str, ...]) -> bool:
        try:
            event = await self.state(room_id, "m.room.member", user_id)
        except AdminApiError:
            return False
        return event.get("membership") in memberships
