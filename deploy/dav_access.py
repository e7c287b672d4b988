"""Who may read or write which folder and calendar, as the DAV servers themselves enforce it.

The portal is the truth (agents, roles, app passwords, grants); it publishes what the DAV
servers need in one file, ``<data>/acces-dav/agents.json`` (0600), and the launcher writes
the stack's own account (the bots') beside it in ``service.json``. Radicale's auth and
rights plugins (``radicale_access``) and WsgiDAV's domain controller (``wsgidav_access``)
read both files and take a new version as soon as it is written: a right taken away is
gone at the next request, with no restart.

Passwords in these files are SHA-256 digests: app passwords and the stack's password are
random strings of 120 bits or more, made by Maillage (a slow hash buys nothing against a
guess of that size and would cost every DAV request, as DAV clients send Basic
credentials each time).

Rights are ``"rw"`` (read and write), ``"r"`` (read) or nothing, per folder (the first
segment of a WebDAV path: a service's folder, ``Archives``) and per calendar or task
list of the stack's account; ``"*"`` stands for all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maillage.secretstore import write_private

log = logging.getLogger("maillage.dav_access")

Right = Literal["rw", "r", ""]
AGENTS_FILE, SERVICE_FILE = "agents.json", "service.json"
FORMAT = 1
WSGIDAV_CONFIG_KEY = "maillage_acces"  # the files' directory, in WsgiDAV's YAML


def digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class Account:
    """One agent's DAV access: their app passwords' digests and their rights."""

    digests: tuple[str, ...]
    folders: dict[str, Right] = field(default_factory=dict)
    calendars: dict[str, Right] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"mots_de_passe": list(self.digests), "dossiers": self.folders, "calendriers": self.calendars}


def access_directory(data_dir: Path) -> Path:
    return data_dir / "acces-dav"


def publish_service_account(data_dir: Path, login: str, password: str) -> None:
    """The stack's own account (bots, portal): every right everywhere."""
    write_private(access_directory(data_dir) / SERVICE_FILE,
                  json.dumps({"format": FORMAT, "compte": login, "mot_de_passe": digest(password)}))


def agents_document(accounts: dict[str, Account]) -> str:
    """The agents' file as the portal writes it (the drift check compares it with what is there)."""
    return json.dumps({"format": FORMAT, "comptes": {login: account.as_json()
                                                      for login, account in sorted(accounts.items())}},
                      ensure_ascii=False, sort_keys=True)


def published_agents(data_dir: Path) -> str | None:
    path = access_directory(data_dir) / AGENTS_FILE
    return path.read_text("utf-8") if path.exists() else None


def publish_agents(data_dir: Path, accounts: dict[str, Account]) -> None:
    """Replaces the agents' access at once (written aside, then renamed: never read half-written)."""
    write_private(access_directory(data_dir) / AGENTS_FILE, agents_document(accounts))


def strongest(*rights: Right) -> Right:
    return "rw" if "rw" in rights else "r" if "r" in rights else ""


class AccessReader:
    """The two files as last written, read again whenever one of them changes (its modification
    time or size): each DAV request costs a ``stat`` of each, not a read."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: tuple[tuple[int, int], tuple[int, int]] | None = None
        self._service: tuple[str, str] = ("", "")
        self._accounts: dict[str, Account] = {}

    def _stamp(self, name: str) -> tuple[int, int]:
        try:
            info = os.stat(self.directory / name)
        except FileNotFoundError:
            return (0, 0)
        return (info.st_mtime_ns, info.st_size)

    def _refresh(self) -> None:
        stamp = (self._stamp(SERVICE_FILE), self._stamp(AGENTS_FILE))
        if stamp == self._seen:
            return
        try:
            service = _read(self.directory / SERVICE_FILE)
            agents = _read(self.directory / AGENTS_FILE)
            self._service = (str(service.get("compte", "")), str(service.get("mot_de_passe", "")))
            self._accounts = {str(login): _account(entry) for login, entry in agents.get("comptes", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as error:  # keep the last good version
            log.error("DAV access file unreadable, previous version kept: %s", type(error).__name__)
            return
        self._seen = stamp

    def is_service(self, login: str) -> bool:
        self._refresh()
        return bool(login) and login == self._service[0]

    def check(self, login: str, password: str) -> bool:
        """The stack's password for its account, or one of the agent's app passwords."""
        self._refresh()
        offered = digest(password)
        if login == self._service[0] and self._service[1]:
            return hmac.compare_digest(offered, self._service[1])
        account = self._accounts.get(login)
        return account is not None and any(hmac.compare_digest(offered, known) for known in account.digests)

    def folder_right(self, login: str, folder: str) -> Right:
        if self.is_service(login):
            return "rw"
        account = self._accounts.get(login)
        return strongest(account.folders.get(folder, ""), account.folders.get("*", "")) if account else ""

    def calendar_right(self, login: str, calendar_id: str) -> Right:
        if self.is_service(login):
            return "rw"
        account = self._accounts.get(login)
        return strongest(account.calendars.get(calendar_id, ""), account.calendars.get("*", "")) if account else ""

    @property
    def service_login(self) -> str:
        self._refresh()
        return self._service[0]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path.name}: format {FORMAT} expected")
    return data


def _account(entry: dict[str, Any]) -> Account:
    def rights(kind: str) -> dict[str, Right]:
        return {str(name): right for name, right in entry.get(kind, {}).items() if right in ("rw", "r")}

    return Account(tuple(str(d) for d in entry.get("mots_de_passe", [])), rights("dossiers"), rights("calendriers"))
