"""Radicale's auth and rights plugins for Maillage (``[auth] type`` and ``[rights] type``).

Agents sign in with one of their app passwords; the stack's account with its password.
Rights follow the portal (``dav_access``): the stack's account may do everything; an
agent reads their own principal and may keep personal calendars there, and reads or
writes the service calendars and task lists (under the stack's account) the portal gives
them, and nothing else — not even their names: the stack's account's home is not
listed to them.
"""

from __future__ import annotations

from pathlib import Path

from radicale import auth, config, pathutils, rights

from maillage.deploy.dav_access import AccessReader

# Radicale's letters: R/W on plain collections (principals), r/w on calendars and task lists.
ALL = "RrWw"
OWN_PRINCIPAL, OWN_CALENDARS, ROOT = "RW", "rw", "R"


class Auth(auth.BaseAuth):
    def __init__(self, configuration: config.Configuration) -> None:
        super().__init__(configuration)
        self.access = AccessReader(Path(configuration.get("auth", "acces")))

    def _login(self, login: str, password: str) -> str:
        return login if self.access.check(login, password) else ""


class Rights(rights.BaseRights):
    def __init__(self, configuration: config.Configuration) -> None:
        super().__init__(configuration)
        self.access = AccessReader(Path(configuration.get("rights", "acces")))

    def authorization(self, user: str, user_groups: set[str], path: str) -> str:
        parts = [part for part in pathutils.strip_path(path).split("/") if part]
        if not user:
            return ""
        if self.access.is_service(user):
            return ALL
        if not parts:
            return ROOT
        if parts[0] == user:
            return OWN_PRINCIPAL if len(parts) == 1 else OWN_CALENDARS
        if parts[0] == self.access.service_login and len(parts) >= 2:
            return self.access.calendar_right(user, parts[1])
        return ""
