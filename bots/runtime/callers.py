"""Who calls the bots' read APIs: the Matrix account behind a bearer token.

The token is checked with the homeserver (``/account/whoami``) and remembered a minute by
its hash (never the token itself, never logged), so a dashboard's requests do not each
cost a round trip to Synapse.
"""

from __future__ import annotations

import hashlib
import time

import httpx
from aiohttp import web

from maillage.i18n import t

TOKEN_TTL = 60.0


class CallerRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def answer(self) -> web.Response:
        return refused(self.status, self.message)


class Callers:
    def __init__(self, homeserver_url: str) -> None:
        self.homeserver_url = homeserver_url.rstrip("/")
        self._known: dict[str, tuple[str, float]] = {}  # token hash → (user, until)

    async def of(self, request: web.Request) -> str:
        """The caller's Matrix ID, or CallerRefused (401) without a valid token."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token:
            raise CallerRefused(401, t("projet.api_no_token"))
        user_id = await self._user(token)
        if user_id is None:
            raise CallerRefused(401, t("projet.api_bad_token"))
        return user_id

    async def _user(self, token: str) -> str | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        known = self._known.get(key)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(f"{self.homeserver_url}/_matrix/client/v3/account/whoami",
                                          headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError:
            return None
        user_id = response.json().get("user_id") if response.status_code == 200 else None
        if not isinstance(user_id, str):
            return None
        self._known[key] = (user_id, time.monotonic() + TOKEN_TTL)
        return user_id


def refused(status: int, message: str) -> web.Response:
    return web.json_response({"erreur": message}, status=status)
