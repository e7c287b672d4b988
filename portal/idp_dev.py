"""The development OIDC provider: ProConnect's protocol on loopback, for the embedded default.

ProConnect (the State's identity federation for public agents) is what a collectivité
plugs in production; it cannot run here, so ``maillage up`` starts this provider instead,
with the same constraints a relying party meets there (partenaires.proconnect.gouv.fr):

- ``state`` and ``nonce`` of at least 32 characters, refused otherwise;
- the ``redirect_uri`` and ``post_logout_redirect_uri`` registered exactly;
- an authorisation code used once, within 60 s, by the client it was given to
  (``client_secret_post`` or ``client_secret_basic``); a code replayed revokes what it gave;
- an ID token signed RS256 carrying the nonce, and the **userinfo returned as a signed JWT**
  (``application/jwt``) with ``iss`` and ``aud``, holding ProConnect's claims (``email``,
  ``given_name``, ``usual_name``, ``uid``, ``siret``);
- logout by redirect to ``end_session_endpoint`` with ``id_token_hint``, ``state`` and a
  registered ``post_logout_redirect_uri``.

Its accounts are the agents the portal created (``annuaire.json``, passwords bcrypt-hashed);
codes, tokens and browser sessions live in memory: a restart logs everyone out, as a
development provider may.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import bcrypt
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from maillage.i18n import t
from maillage.portal.pages import templates
from maillage.secretstore import check_private, write_private

MIN_RANDOM = 32  # ProConnect refuses a state or nonce shorter than this
CODE_SECONDS = 60
TOKEN_SECONDS = 3600
SESSION_COOKIE = "idp_dev_session"
PREFIX = "/api/v2"  # ProConnect's paths, so a relying party's settings differ by the domain only


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()


@dataclass(frozen=True)
class Account:
    email: str
    given_name: str
    usual_name: str
    password_hash: str
    siret: str = ""

    @property
    def sub(self) -> str:
        """Stable, opaque, the same for every client (as ProConnect's)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "mailto:" + self.email.lower()))

    def claims(self) -> dict[str, str]:
        return {"sub": self.sub, "email": self.email, "given_name": self.given_name,
                "usual_name": self.usual_name, "uid": self.sub, "siret": self.siret}


@dataclass
class Grant:
    """What one authorisation gave: a code, then the tokens it was exchanged for."""

    client_id: str
    redirect_uri: str
    nonce: str
    sub: str
    auth_time: int
    expires: float
    used: bool = False
    access_tokens: list[str] = field(default_factory=list)


class Directory:
    """The provider's accounts, one JSON file (0600): the portal writes it, the provider reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def accounts(self) -> dict[str, Account]:
        if not self.path.exists():
            return {}
        check_private(self.path)
        return {key: Account(**value) for key, value in json.loads(self.path.read_text("utf-8")).items()}

    def find(self, email: str) -> Account | None:
        return self.accounts().get(email.strip().lower())

    def put(self, email: str, given_name: str, usual_name: str, password: str, siret: str = "") -> Account:
        accounts = self.accounts()
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        accounts[email.lower()] = Account(email.lower(), given_name, usual_name, hashed, siret)
        self._save(accounts)
        return accounts[email.lower()]

    def remove(self, email: str) -> None:
        accounts = self.accounts()
        if accounts.pop(email.lower(), None) is not None:
            self._save(accounts)

    def _save(self, accounts: dict[str, Account]) -> None:
        write_private(self.path, json.dumps({k: vars(v) for k, v in accounts.items()}, ensure_ascii=False,
                                            indent=1))


def client_credentials(form: dict[str, str], authorization: str) -> tuple[str, str]:
    """(client id, secret) from the form (client_secret_post) or the Basic header."""
    if authorization.lower().startswith("basic "):
        try:
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "", ""
        return client_id, secret
    return form.get("client_id", ""), form.get("client_secret", "")


def signing_key(path: Path) -> RSAKey:
    """The provider's RSA key, generated once (0600)."""
    if path.exists():
        check_private(path)
        return RSAKey.import_key(path.read_bytes())
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"})
    write_private(path, key.as_pem(private=True).decode())
    return key


class DevProvider:
    def __init__(self, issuer: str, key: RSAKey, clients: list[Client], directory: Directory) -> None:
        self.issuer = issuer.rstrip("/")
        self.key = key
        self.kid = key.thumbprint()
        self.clients = {client.client_id: client for client in clients}
        self.directory = directory
        self.grants: dict[str, Grant] = {}  # by code
        self.tokens: dict[str, tuple[Grant, float]] = {}  # access token → grant, expiry
        self.sessions: dict[str, tuple[str, int]] = {}  # browser session → sub, auth_time
        self.pending: dict[str, dict[str, str]] = {}  # login form → the authorisation request

    # --- tokens -----------------------------------------------------------------------------

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode({"alg": "RS256", "kid": self.kid, "typ": "JWT"}, claims, self.key)

    def id_token(self, grant: Grant, account: Account) -> str:
        now = int(time.time())
        return self.sign({"iss": self.issuer, "aud": grant.client_id, "sub": account.sub, "iat": now,
                          "exp": now + TOKEN_SECONDS, "nonce": grant.nonce, "auth_time": grant.auth_time,
                          "acr": "eidas1", "amr": ["pwd"], "idp_id": "maillage-dev"})

    def verify_id_token(self, token: str) -> dict[str, Any] | None:
        """An ID token this provider signed (``id_token_hint``); expiry does not matter for logout."""
        try:
            claims = dict(jwt.decode(token, self.key).claims)
        except (JoseError, ValueError):
            return None
        return claims if claims.get("iss") == self.issuer else None

    def client_of(self, request: Request, form: dict[str, str]) -> Client | None:
        client_id, secret = client_credentials(form, request.headers.get("authorization", ""))
        client = self.clients.get(client_id)
        if client is None or not hmac.compare_digest(client.secret.encode(), secret.encode()):
            return None
        return client

    def revoke(self, grant: Grant) -> None:
        for token in grant.access_tokens:
            self.tokens.pop(token, None)


def _error_page(request: Request, message: str, status: int = 400) -> HTMLResponse:
    return templates.TemplateResponse(request, "idp/erreur.html", {"message": message}, status_code=status)


def _redirect_error(redirect_uri: str, error: str, description: str, state: str) -> RedirectResponse:
    query = urlencode({"error": error, "error_description": description, **({"state": state} if state else {})})
    return RedirectResponse(f"{redirect_uri}?{query}", status_code=303)


def _token_error(error: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status, headers={"Cache-Control": "no-store"})


def create_app(provider: DevProvider) -> FastAPI:
    app = FastAPI(title="Maillage — fournisseur d’identité de développement", docs_url=None, redoc_url=None,
                  openapi_url=None)
    base = urlsplit(provider.issuer).path.rstrip("/")

    @app.get(base + "/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        issuer = provider.issuer
        return {
            "issuer": issuer, "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token", "userinfo_endpoint": f"{issuer}/userinfo",
            "end_session_endpoint": f"{issuer}/session/end", "jwks_uri": f"{issuer}/jwks",
            "response_types_supported": ["code"], "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
            "userinfo_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "scopes_supported": ["openid", "email", "given_name", "usual_name", "uid", "siret"],
            "claims_supported": ["sub", "email", "given_name", "usual_name", "uid", "siret", "idp_id"],
        }

    @app.get(base + "/jwks")
    async def jwks() -> dict[str, Any]:
        public = provider.key.as_dict(private=False)
        return {"keys": [{**public, "kid": provider.kid, "use": "sig", "alg": "RS256"}]}

    @app.get(base + "/authorize")
    async def authorize(request: Request) -> Response:
        asked = dict(request.query_params)
        client = provider.clients.get(asked.get("client_id", ""))
        redirect_uri = asked.get("redirect_uri", "")
        if client is None or redirect_uri not in client.redirect_uris:
            return _error_page(request, t("idp.unknown_client"))  # never redirect to an unknown address
        state = asked.get("state", "")
        if asked.get("response_type") != "code":
            return _redirect_error(redirect_uri, "unsupported_response_type", "response_type=code", state)
        if "openid" not in asked.get("scope", "").split():
            return _redirect_error(redirect_uri, "invalid_scope", "openid", state)
        if len(state) < MIN_RANDOM or len(asked.get("nonce", "")) < MIN_RANDOM:
            return _redirect_error(redirect_uri, "invalid_request",
                                   f"state and nonce of at least {MIN_RANDOM} characters", state)
        session = provider.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session and asked.get("prompt") != "login":
            return _grant(client, asked, *session)
        form_id = secrets.token_urlsafe(32)
        provider.pending[form_id] = asked
        return templates.TemplateResponse(request, "idp/connexion.html", {"form_id": form_id, "error": "",
                                                                         "email": asked.get("login_hint", "")})

    @app.post(base + "/login")
    async def login(request: Request, form_id: str = Form(""), email: str = Form(""),
                    password: str = Form("")) -> Response:
        asked = provider.pending.get(form_id)
        if asked is None:
            return _error_page(request, t("idp.form_expired"))
        account = provider.directory.find(email)
        if account is None or not bcrypt.checkpw(password.encode(), account.password_hash.encode()):
            return templates.TemplateResponse(request, "idp/connexion.html",
                                              {"form_id": form_id, "error": t("idp.wrong_password"),
                                               "email": email}, status_code=401)
        provider.pending.pop(form_id)
        auth_time = int(time.time())
        session_id = secrets.token_urlsafe(32)
        provider.sessions[session_id] = (account.sub, auth_time)
        response = _grant(provider.clients[asked["client_id"]], asked, account.sub, auth_time)
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="lax", path=base or "/")
        return response

    def _grant(client: Client, asked: dict[str, str], sub: str, auth_time: int) -> RedirectResponse:
        code = secrets.token_urlsafe(32)
        provider.grants[code] = Grant(client.client_id, asked["redirect_uri"], asked["nonce"], sub, auth_time,
                                      time.monotonic() + CODE_SECONDS)
        query = urlencode({"code": code, "state": asked["state"]})
        return RedirectResponse(f"{asked['redirect_uri']}?{query}", status_code=303)

    @app.post(base + "/token")
    async def token(request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        client = provider.client_of(request, form)
        if client is None:
            return _token_error("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            return _token_error("unsupported_grant_type")
        grant = provider.grants.get(form.get("code", ""))
        if grant is None or grant.client_id != client.client_id or grant.redirect_uri != form.get("redirect_uri"):
            return _token_error("invalid_grant")
        if grant.used:  # a replayed code: what it gave is revoked (RFC 6749 §4.1.2)
            provider.revoke(grant)
            return _token_error("invalid_grant")
        grant.used = True
        if time.monotonic() > grant.expires:
            return _token_error("invalid_grant")
        account = next((a for a in provider.directory.accounts().values() if a.sub == grant.sub), None)
        if account is None:
            return _token_error("invalid_grant")
        access = secrets.token_urlsafe(32)
        provider.tokens[access] = (grant, time.monotonic() + TOKEN_SECONDS)
        grant.access_tokens.append(access)
        return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": TOKEN_SECONDS,
                             "id_token": provider.id_token(grant, account), "scope": "openid"},
                            headers={"Cache-Control": "no-store"})

    @app.get(base + "/userinfo")
    async def userinfo(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        found = provider.tokens.get(header[7:]) if header.lower().startswith("bearer ") else None
        if found is None or time.monotonic() > found[1]:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        grant = found[0]
        account = next((a for a in provider.directory.accounts().values() if a.sub == grant.sub), None)
        if account is None:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        now = int(time.time())
        claims = {**account.claims(), "iss": provider.issuer, "aud": grant.client_id, "iat": now,
                  "exp": now + TOKEN_SECONDS}
        return Response(provider.sign(claims), media_type="application/jwt")

    @app.get(base + "/session/end")
    async def end_session(request: Request) -> Response:
        asked = dict(request.query_params)
        claims = provider.verify_id_token(asked.get("id_token_hint", ""))
        if claims is None:
            return _error_page(request, t("idp.logout_without_hint"))
        client = provider.clients.get(str(claims.get("aud", "")))
        target = asked.get("post_logout_redirect_uri", "")
        if client is None or (target and target not in client.post_logout_redirect_uris):
            return _error_page(request, t("idp.unknown_logout_address"))
        cookie = request.cookies.get(SESSION_COOKIE, "")
        provider.sessions.pop(cookie, None)
        for grant in provider.grants.values():
            if grant.sub == claims.get("sub"):
                provider.revoke(grant)
        if not target:
            response: Response = templates.TemplateResponse(request, "idp/deconnecte.html", {})
        else:
            state = asked.get("state", "")
            response = RedirectResponse(target + (f"?{urlencode({'state': state})}" if state else ""),
                                        status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=base or "/")
        return response

    return app



def ensure_admin_accounts(data_dir: Path, emails: list[str]) -> dict[str, str]:
    """An account at the development provider for each portal administrator, made once;
    their first passwords, kept (0600) so that ``maillage up`` can show them."""
    directory = Directory(data_dir / "oidc-dev" / "annuaire.json")
    kept_path = data_dir / "oidc-dev" / "administrateurs.json"
    kept: dict[str, str] = json.loads(kept_path.read_text("utf-8")) if kept_path.exists() else {}
    for email in emails:
        if directory.find(email) is None:
            password = first_password()
            directory.put(email, t("idp.admin_given_name"), email.split("@")[0], password)
            kept[email] = password
            write_private(kept_path, json.dumps(kept, ensure_ascii=False, indent=1))
    return {email: kept[email] for email in emails if email in kept}


def first_password() -> str:
    """Readable and strong: four groups of four letters and digits (mixed case, a digit)."""
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    while True:
        password = "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))
        if any(c.isdigit() for c in password) and any(c.islower() for c in password) \
                and any(c.isupper() for c in password):
            return password
