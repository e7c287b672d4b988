"""Secrets generated once per stack and kept apart from the config.

They live in ``<data>/secrets/`` (folder 0700, files 0600): ``secrets.toml`` for
shared secrets and passwords, ``signing.key`` for the homeserver's signing key in
Synapse's own format. They are never printed nor logged; files found with wider
permissions are brought back to 0600 and the admin is told.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from maillage.i18n import t

SECRETS_DIRNAME = "secrets"


class SecretsError(Exception):
    """A secret file cannot be used safely; the message says what to do."""


@dataclass(frozen=True)
class Secrets:
    registration_shared_secret: str
    macaroon_secret_key: str
    form_secret: str
    dav_password: str
    # The stack's own admin account (provisioning), created at first start.
    admin_password: str = ""
    admin_access_token: str = ""
    # Encrypts the bots' end-to-end keys at rest in their database.
    bots_pickle_key: str = ""
    # Given by the admin, never generated: the SMTP relay's password, the PostgreSQL
    # server's (scaled profile; empty: trust or peer authentication), Redis's.
    smtp_password: str = ""
    postgresql_password: str = ""
    redis_password: str = ""
    # The portal's client secret at the bundled development OIDC provider, or at
    # ProConnect/Keycloak when the admin writes it here (``maillage`` never prints it).
    portal_oidc_secret: str = ""
    portal_bots_token: str = ""  # what the bots show the portal's API for them (access requests)
    synapse_oidc_secret: str = ""  # Synapse's client secret at the portal (agents' Matrix sign-in)
    # The email bridge's appservice: what it shows Synapse, and what Synapse would show it.
    courriel_as_token: str = ""
    courriel_hs_token: str = ""
    # The bots' appservice ([bots] reception = "appservice"): Synapse pushes them their rooms' events.
    bots_as_token: str = ""
    bots_hs_token: str = ""
    # Shared by Synapse and the TURN server (coturn's use-auth-secret): calls through NAT.
    turn_secret: str = ""

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return "Secrets(…)"


# Generated secrets that older stacks lack: made at their next start.
ADDED_LATER = ("portal_oidc_secret", "portal_bots_token", "synapse_oidc_secret", "courriel_as_token",
               "courriel_hs_token", "turn_secret", "bots_as_token", "bots_hs_token")


def _token(length: int = 48) -> str:
    return secrets.token_urlsafe(length)


def secrets_dir(data_dir: Path) -> Path:
    return data_dir / SECRETS_DIRNAME


def write_private(path: Path, content: str) -> None:
    """Write a file readable by its owner only, atomically (no window at 0644)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def check_private(path: Path, warn: Callable[[str], None] | None = None) -> None:
    """Refuse a secret file owned by someone else; narrow one readable by others."""
    info = path.stat()
    if info.st_uid != os.getuid():
        raise SecretsError(t("secrets.not_owned", path=path))
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        (warn or _stderr)(t("secrets.permissions_fixed", path=path, mode=oct(mode)))


PRIVATE_UMASK = 0o077


def private_umask() -> None:
    """Files and folders created from now on (by this process and its children) are the owner's only."""
    os.umask(PRIVATE_UMASK)


def make_private_tree(directory: Path, warn: Callable[[str], None] | None = None) -> int:
    """Narrow a data directory to its owner: folders 0700, files without group/other bits.

    Data directories written by older versions (or copied with a wide umask) hold
    access tokens (``homeserver.db``, the bots' database), keys and passwords. Symbolic
    links are not followed; what belongs to another user is left as it is. Returns how
    many entries were narrowed, and says so through ``warn``.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    narrowed = 0
    uid = os.getuid()
    for root, _folders, files in os.walk(directory):  # each folder comes once as ``root``
        for path in [root, *(os.path.join(root, name) for name in files)]:
            try:
                info = os.lstat(path)
                mode = stat.S_IMODE(info.st_mode)
                if info.st_uid != uid or stat.S_ISLNK(info.st_mode) or not mode & 0o077:
                    continue
                os.chmod(path, 0o700 if stat.S_ISDIR(info.st_mode) else mode & 0o700)
                narrowed += 1
            except OSError:  # gone meanwhile, or not ours to change: nothing to narrow
                continue
    if narrowed:
        (warn or _stderr)(t("secrets.tree_narrowed", count=narrowed, path=directory))
    return narrowed


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def ensure_secrets(data_dir: Path, warn: Callable[[str], None] | None = None) -> Secrets:
    """The stack's secrets, generated on first use and reused afterwards."""
    folder = secrets_dir(data_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / "secrets.toml"
    if path.exists():
        loaded = load_secrets(data_dir, warn)
        missing = {name: _token() for name in ADDED_LATER if not getattr(loaded, name)}
        if missing:  # a stack made before these existed gets them now
            loaded = replace(loaded, **missing)
            save_secrets(data_dir, loaded)
    else:
        loaded = Secrets(
            registration_shared_secret=_token(),
            macaroon_secret_key=_token(),
            form_secret=_token(),
            dav_password=_token(24),
            admin_password=_token(24),
            bots_pickle_key=_token(),
            **{name: _token() for name in ADDED_LATER},
        )
        save_secrets(data_dir, loaded)
    ensure_signing_key(folder / "signing.key", warn)
    return loaded


def load_secrets(data_dir: Path, warn: Callable[[str], None] | None = None) -> Secrets:
    path = secrets_dir(data_dir) / "secrets.toml"
    check_private(path, warn)
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
        known = {field.name for field in fields(Secrets)}
        return Secrets(**{key: str(value) for key, value in raw.items() if key in known})
    except (tomllib.TOMLDecodeError, TypeError, UnicodeDecodeError) as exc:
        # The exception text never holds a secret value: TOML errors name positions.
        raise SecretsError(t("secrets.corrupt", path=path, detail=type(exc).__name__)) from None


def save_secrets(data_dir: Path, values: Secrets) -> None:
    lines = ["# Secrets de la pile Maillage : ne pas partager, ne pas versionner."]
    for field in fields(Secrets):
        lines.append(f"{field.name} = {json.dumps(getattr(values, field.name))}")
    write_private(secrets_dir(data_dir) / "secrets.toml", "\n".join(lines) + "\n")


def update_secrets(data_dir: Path, **changes: str) -> Secrets:
    updated = replace(load_secrets(data_dir), **changes)
    save_secrets(data_dir, updated)
    return updated


def ensure_signing_key(path: Path, warn: Callable[[str], None] | None = None) -> None:
    """Synapse's ed25519 signing key: losing it breaks federation, so never regenerate."""
    if path.exists():
        check_private(path, warn)
        return
    from signedjson.key import generate_signing_key, write_signing_keys

    key = generate_signing_key("a_" + secrets.token_hex(2))
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        write_signing_keys(handle, [key])
