"""Synapse signs agents in through the portal: the portal is its homeserver's OpenID provider.

Why not Synapse straight to ProConnect: Synapse sends a ``state`` of 30 characters
(ProConnect refuses under 32) and reads the userinfo as JSON only (ProConnect signs it).
So Synapse's ``oidc_providers`` names the portal; the portal signs the agent in at
ProConnect, Keycloak or the development provider as it does for its own pages, then
answers Synapse. One identity everywhere, and only an agent the portal knows, and has not
offboarded, gets into Matrix.

What a relying party expects of a provider, for one client (Synapse): its secret from the
stack's secrets, its redirect URI exact, the authorisation code flow with PKCE (S256)
required, a code used once within 60 s (a replay is refused), an ID token signed RS256
with the nonce. Its subject is the agent's Matrix localpart, the external ID the portal
gives every account it makes, so Synapse finds that account and never makes another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import delete, select

from maillage.config import Config
from maillage.i18n import t
from maillage.portal.auth import digest
from maillage.portal.db import Agent, Database, MatrixCode, now_ms
from maillage.portal.idp_dev import client_credentials, signing_key

CLIENT_ID = "synapse"
PREFIX = "/matrix"
CODE_SECONDS = 60
TOKEN_SECONDS = 300  # Synapse reads the ID token at once and keeps its own session
LONGEST_PARAMETER = 256  # state, nonce, challenge: far above what Synapse sends, bounded


class SsoRefusal(Exception):
    """The authorisation cannot be given; the message (French) is shown to the agent on the
    portal's page, never sent to a redirect URI (an unknown client is not redirected to)."""


class TokenRefusal(Exception):
    """An OAuth error of the token endpoint (RFC 6749 §5.2)."""

    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error, self.status = error, status


@dataclass(frozen=True)
class Authorisation:
    """What Synapse asked, as checked."""

    redirect_uri: str
    state: str
    nonce: str
    challenge: str


def redirect_uri(config: Config) -> str:
    return config.public_baseurl.rstrip("/") + "/_synapse/client/oidc/callback"


def internal_url(config: Config) -> str:
    """Where Synapse's server side reaches the portal (loopback), not the browsers' address."""
    host = config.reseau.adresse_ecoute
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{config.portail.port}"


def issuer(config: Config) -> str:
    return config.portal_url + PREFIX


def provider_settings(config: Config, client_secret: str) -> dict[str, Any]:
    """Synapse's ``oidc_providers`` entry. The endpoints are written out (no discovery): Synapse
    starts before the portal, and the token and key endpoints are reached on loopback."""
    return {
        "idp_id": "maillage",
        "idp_name": t("portal.sso_idp_name"),
        "discover": False,
        "issuer": issuer(config),
        "client_id": CLIENT_ID,
        "client_secret": client_secret,
        "client_auth_method": "client_secret_post",
        "authorization_endpoint": config.portal_url + PREFIX + "/autorisation",
        "token_endpoint": internal_url(config) + PREFIX + "/jeton",
        "jwks_uri": internal_url(config) + PREFIX + "/cles",
        "scopes": ["openid", "profile", "email"],
        "user_profile_method": "auto",  # the ID token holds every claim: no userinfo call
        "pkce_method": "always",
        # Synapse checks that an issuer is HTTPS; the embedded default serves the portal over
        # HTTP on localhost only (behind a reverse proxy in production: HTTPS, checked).
        "skip_verification": not config.portal_url.startswith("https://"),
        "allow_existing_users": True,  # accounts made before this mapping: found by localpart
        "enable_registration": False,  # every account is made by the portal, never on the fly
        "user_mapping_provider": {"config": {
            "subject_claim": "sub",
            "localpart_template": "{{ user.preferred_username }}",
            "display_name_template": "{{ user.name }}",
            "email_template": "{{ user.email }}",
        }},
    }


class MatrixSso:
    def __init__(self, config: Config, client_secret: str, database: Database) -> None:
        self.config, self.client_secret, self.database = config, client_secret, database
        self.issuer = issuer(config)
        self.redirect_uri = redirect_uri(config)
        self.key: RSAKey = signing_key(config.data_dir / "portail" / "cle-oidc-matrix.pem")
        self.kid = self.key.thumbprint()

    def metadata(self) -> dict[str, Any]:
        base = self.issuer
        return {"issuer": base, "authorization_endpoint": base + "/autorisation", "token_endpoint": base + "/jeton",
                "jwks_uri": base + "/cles", "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "scopes_supported": ["openid", "profile", "email"],
                "claims_supported": ["sub", "preferred_username", "name", "email"]}

    def keys(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    # --- authorisation ---------------------------------------------------------------------

    def checked(self, asked: dict[str, str]) -> Authorisation:
        """The request checked before anything else: an unknown client or another redirect URI
        is shown an error here and never redirected to (no open redirect)."""
        if asked.get("client_id") != CLIENT_ID or asked.get("redirect_uri") != self.redirect_uri:
            raise SsoRefusal(t("portal.sso_unknown_client"))
        state = asked.get("state", "")
        if asked.get("response_type") != "code" or "openid" not in asked.get("scope", "").split():
            raise SsoRefusal(t("portal.sso_bad_request"))
        nonce, challenge = asked.get("nonce", ""), asked.get("code_challenge", "")
        if (asked.get("code_challenge_method") != "S256" or not 43 <= len(challenge) <= 128 or not nonce
                or any(len(v) > LONGEST_PARAMETER for v in (state, nonce, challenge))):
            raise SsoRefusal(t("portal.sso_bad_request"))
        return Authorisation(self.redirect_uri, state, nonce, challenge)

    async def grant(self, request: Authorisation, email: str) -> str:
        """The redirect back to Synapse with a code for the signed-in agent, else SsoRefusal."""
        async with self.database.session() as session:
            agent = (await session.execute(select(Agent).where(Agent.email == email))).scalar_one_or_none()
            if agent is None:
                raise SsoRefusal(t("portal.sso_no_matrix_account", email=email))
            if not agent.active:
                raise SsoRefusal(t("portal.sso_agent_departed"))
            code = secrets.token_urlsafe(32)
            await session.execute(delete(MatrixCode).where(MatrixCode.created_at < now_ms() - CODE_SECONDS * 1000))
            session.add(MatrixCode(code_hash=digest(code), agent_id=agent.id, nonce=request.nonce,
                                   challenge=request.challenge, auth_time=int(time.time())))
            await session.commit()
        return f"{request.redirect_uri}?{urlencode({'code': code, 'state': request.state})}"

    # --- token -----------------------------------------------------------------------------

    async def token(self, form: dict[str, str], authorization: str) -> dict[str, Any]:
        """The ID token for a code, once; else TokenRefusal."""
        client_id, secret = client_credentials(form, authorization)
        if client_id != CLIENT_ID or not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
            raise TokenRefusal("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            raise TokenRefusal("unsupported_grant_type")
        async with self.database.session() as session:
            found = await session.get(MatrixCode, digest(form.get("code", "")))
            if found is None:
                raise TokenRefusal("invalid_grant")
            await session.delete(found)  # once, whatever comes next: a replay finds nothing
            await session.commit()
            agent = await session.get(Agent, found.agent_id)
        verifier = form.get("code_verifier", "")
        if (found.created_at < now_ms() - CODE_SECONDS * 1000 or form.get("redirect_uri") != self.redirect_uri
                or not hmac.compare_digest(pkce_challenge(verifier), found.challenge)
                or agent is None or not agent.active):
            raise TokenRefusal("invalid_grant")
        localpart = agent.user_id[1:].split(":", 1)[0]
        now = int(time.time())
        id_token = jwt.encode({"alg": "RS256", "kid": self.kid, "typ": "JWT"}, {
            "iss": self.issuer, "aud": CLIENT_ID, "sub": localpart, "iat": now, "exp": now + TOKEN_SECONDS,
            "nonce": found.nonce, "auth_time": found.auth_time, "preferred_username": localpart,
            "name": agent.display_name, "email": agent.email}, self.key)
        return {"access_token": secrets.token_urlsafe(32), "token_type": "Bearer", "expires_in": TOKEN_SECONDS,
                "id_token": id_token, "scope": "openid profile email"}


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
