"""WsgiDAV's domain controller for Maillage (``http_authenticator.domain_controller``).

Agents sign in with one of their app passwords; the stack's account with its password.
Each request is then allowed by the right the portal gave on the folder it touches (the
first segment of its path, and of its ``Destination`` for COPY and MOVE): reading needs
``r``, changing needs ``rw``. An agent gets the root itself only (Depth 0, so that file
managers can connect), never its listing: the folder names of other services are not
shown to them. A refusal is a 403, not a new password prompt.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError
from wsgidav.dc.base_dc import BaseDomainController

from maillage.deploy.dav_access import WSGIDAV_CONFIG_KEY, AccessReader, Right

READING = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})


def folder_of(path: str) -> str:
    """The first segment of a path once ``.`` and ``..`` are resolved ("" for the root)."""
    normal = posixpath.normpath("/" + path).lstrip("/")
    return "" if normal in ("", ".") else normal.split("/", 1)[0]


class DomainController(BaseDomainController):  # type: ignore[misc]
    def __init__(self, wsgidav_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, config)
        self.access = AccessReader(Path(config[WSGIDAV_CONFIG_KEY]))

    def __str__(self) -> str:
        return "Maillage"

    def get_domain_realm(self, path_info: str, environ: dict[str, Any] | None) -> str:
        return "Maillage"

    def require_authentication(self, realm: str, environ: dict[str, Any] | None) -> bool:
        return True

    def supports_http_digest_auth(self) -> bool:
        return False

    def basic_auth_user(self, realm: str, user_name: str, password: str, environ: dict[str, Any]) -> bool:
        if not self.access.check(user_name, password):
            return False
        if not self.access.is_service(user_name) and not self._allowed(user_name, environ):
            raise DAVError(HTTP_FORBIDDEN)
        return True

    def _allowed(self, login: str, environ: dict[str, Any]) -> bool:
        method = str(environ.get("REQUEST_METHOD", "")).upper()
        folder = folder_of(str(environ.get("PATH_INFO", "")))
        if not folder:  # the root: what it is, not what it holds
            return method == "OPTIONS" or (method == "PROPFIND" and str(environ.get("HTTP_DEPTH", "")) == "0")
        if method in ("COPY", "MOVE"):  # the source read (or taken away), the destination written
            target = folder_of(unquote(urlsplit(str(environ.get("HTTP_DESTINATION", ""))).path))
            return (self._has(login, folder, "r" if method == "COPY" else "rw")
                    and bool(target) and self._has(login, target, "rw"))
        return self._has(login, folder, "r" if method in READING else "rw")

    def _has(self, login: str, folder: str, needed: Right) -> bool:
        right = self.access.folder_right(login, folder)
        return right == "rw" or (needed == "r" and right == "r")
