"""Logging in to the portal with OpenID Connect (ProConnect, Keycloak, the bundled provider).

The authorisation code flow through authlib, with what ProConnect asks of a relying
party: ``state`` and ``nonce`` of 43 random characters (≥ 32), the ID token's signature,
issuer, audience, expiry and nonce checked, the userinfo read as a signed JWT (JSON is
accepted from providers that send it), and logout by redirect with ``id_token_hint``.

A login under way is a row (its state hashed), deleted when the provider comes back: a
replayed or forged callback finds nothing. A session is a random token in an HttpOnly,
Secure, SameSite=Lax cookie; the table keeps its hash, the CSRF token of its forms and
the ID token for logout. Nothing here is logged with a token or a code in it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, select

from maillage.config import Config
from maillage.i18n import t
from maillage.portal.db import Agent, Database, LoginAttempt, WebSession, now_ms

with warnings.catch_warnings():  # authlib 1.9 points at a successor of httpx; its httpx client works as is
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

SESSION_COOKIE = "maillage_portail"
SESSION_HOURS = 8
LOGIN_MINUTES = 10
SCOPES = "openid email given_name usual_name uid siret"


class LoginError(Exception):
    """The login cannot go on; the message (French) says what to do. Never holds a secret."""


@dataclass(frozen=True)
class Identity:
    sub: str
    email: str
    name: str
    claims: dict[str, Any]


@dataclass(frozen=True)
class CurrentUser:
    email: str
    name: str
    is_admin: bool
    csrf: str
    token_hash: str


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class OidcLogin:
    def __init__(self, config: Config, client_secret: str, database: Database) -> None:
        self.config = config
        self.client_id = config.portail.oidc_client
        self.client_secret = client_secret
        self.database = database
        self.redirect_uri = config.portal_url + "/connexion/retour"
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = self.config.oidc_issuer + "/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=15) as http:
                    response = await http.get(url)
                response.raise_for_status()
                self._metadata = dict(response.json())
            except (httpx.HTTPError, ValueError):
                raise LoginError(t("portal.login_provider_down")) from None
        return self._metadata

    async def keys(self, *, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            try:
                async with httpx.AsyncClient(timeout=15) as http:
                    response = await http.get((await self.metadata())["jwks_uri"])
                response.raise_for_status()
                self._keys = KeySet.import_key_set(response.json())
            except (httpx.HTTPError, ValueError, KeyError, JoseError):
                raise LoginError(t("portal.login_provider_down")) from None
        return self._keys

    # --- the flow --------------------------------------------------------------------------

    async def start(self, next_page: str) -> str:
        """Where to send the browser: the provider's authorisation endpoint."""
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        async with self.database.session() as session:
            stale = now_ms() - LOGIN_MINUTES * 60_000
            await session.execute(delete(LoginAttempt).where(LoginAttempt.created_at < stale))
            session.add(LoginAttempt(state_hash=digest(state), nonce=nonce, next_page=safe_next(next_page)))
            await session.commit()
        query = urlencode({"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                           "scope": SCOPES, "state": state, "nonce": nonce, "acr_values": "eidas1"})
        return f"{(await self.metadata())['authorization_endpoint']}?{query}"

    async def finish(self, code: str, state: str) -> tuple[Identity, str, str]:
        """The identity the provider vouches for, its ID token, and the page to go back to."""
        async with self.database.session() as session:
            attempt = await session.get(LoginAttempt, digest(state)) if state else None
            if attempt is None or attempt.created_at < now_ms() - LOGIN_MINUTES * 60_000:
                raise LoginError(t("portal.login_state_unknown"))
            await session.delete(attempt)  # once: a replayed callback finds nothing
            await session.commit()
        metadata = await self.metadata()
        async with AsyncOAuth2Client(self.client_id, self.client_secret, redirect_uri=self.redirect_uri, timeout=15,
                                     token_endpoint_auth_method="client_secret_post") as client:
            try:
                token = await client.fetch_token(metadata["token_endpoint"], code=code,
                                                 grant_type="authorization_code")
            except Exception:  # authlib raises its own OAuthError, or httpx's: neither is shown
                raise LoginError(t("portal.login_code_refused")) from None
            id_token = str(token.get("id_token", ""))
            claims = await self.verified(id_token, nonce=attempt.nonce)
            try:
                response = await client.get(metadata["userinfo_endpoint"])
            except httpx.HTTPError:
                raise LoginError(t("portal.login_provider_down")) from None
        if response.status_code != 200:
            raise LoginError(t("portal.login_code_refused"))
        userinfo = await self.userinfo(response)
        if userinfo.get("sub") != claims["sub"]:
            raise LoginError(t("portal.login_forged"))
        email = str(userinfo.get("email", "")).lower()
        name = " ".join(str(userinfo.get(k, "")) for k in ("given_name", "usual_name")).strip() or email
        return Identity(str(claims["sub"]), email, name, userinfo), id_token, attempt.next_page

    async def verified(self, token: str, *, nonce: str | None = None) -> dict[str, Any]:
        """The claims of a JWT the provider signed for this portal, else LoginError."""
        for refresh in (False, True):  # a key unknown: the provider may have rotated
            try:
                decoded = jwt.decode(token, await self.keys(refresh=refresh), algorithms=["RS256", "ES256"])
                break
            except (JoseError, ValueError):
                if refresh:
                    raise LoginError(t("portal.login_forged")) from None
        claims = dict(decoded.claims)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        issuer = (await self.metadata())["issuer"]
        if claims.get("iss") != issuer or self.client_id not in audiences or "sub" not in claims:
            raise LoginError(t("portal.login_forged"))
        if "exp" in claims and float(claims["exp"]) < time.time() - 60:
            raise LoginError(t("portal.login_forged"))
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise LoginError(t("portal.login_forged"))
        return claims

    async def userinfo(self, response: httpx.Response) -> dict[str, Any]:
        if response.headers.get("content-type", "").split(";")[0].strip() == "application/jwt":
            return await self.verified(response.text.strip())
        try:
            return dict(response.json())
        except ValueError:
            raise LoginError(t("portal.login_forged")) from None

    async def logout_url(self, id_token: str) -> str:
        metadata = await self.metadata()
        query = urlencode({"id_token_hint": id_token, "state": secrets.token_urlsafe(32),
                           "post_logout_redirect_uri": self.config.portal_url + "/deconnecte"})
        return f"{metadata['end_session_endpoint']}?{query}"


def safe_next(page: str) -> str:
    """Only a page of the portal itself: never an open redirect."""
    if not page.startswith("/") or page.startswith("//") or "\\" in page or any(ord(c) < 32 for c in page):
        return "/"
    return page


def is_admin(config: Config, identity: Identity) -> bool:
    if identity.email and identity.email in config.portail.administrateurs:
        return True
    claim = config.portail.claim_admin
    return bool(claim and identity.claims.get(claim) in (True, "true", "1", 1))


async def open_session(database: Database, identity: Identity, id_token: str, admin: bool) -> str:
    token = secrets.token_urlsafe(32)
    async with database.session() as session:
        await session.execute(delete(WebSession).where(WebSession.expires_at < now_ms()))
        session.add(WebSession(token_hash=digest(token), email=identity.email, name=identity.name, is_admin=admin,
                               csrf=secrets.token_urlsafe(32), id_token=id_token,
                               expires_at=now_ms() + SESSION_HOURS * 3_600_000))
        agent = (await session.execute(select(Agent).where(Agent.email == identity.email))).scalar_one_or_none()
        if agent is not None and agent.oidc_sub is None:
            agent.oidc_sub = identity.sub
        await session.commit()
    return token


async def session_user(database: Database, token: str | None) -> CurrentUser | None:
    if not token:
        return None
    async with database.session() as session:
        found = await session.get(WebSession, digest(token))
    if found is None or found.expires_at < now_ms():
        return None
    return CurrentUser(found.email, found.name, found.is_admin, found.csrf, found.token_hash)


async def close_session(database: Database, user: CurrentUser) -> str:
    """The session ended; its ID token (for the provider's logout)."""
    async with database.session() as session:
        found = await session.get(WebSession, user.token_hash)
        id_token = found.id_token if found else ""
        await session.execute(delete(WebSession).where(WebSession.token_hash == user.token_hash))
        await session.commit()
    return id_token
