"""Room access kinds: who may be in a room, decided from room state alone.

Pure rules, no Synapse import: the Synapse module (``access_rules``) applies them
to events, and the tests check them directly too.

A room's kind is the state event ``fr.maillage.acces`` (state key ``""``) with
content ``{"acces": "interne" | "partenaires" | "public"}``. Kinds are relative
to the room's **home server**, the server of its creator:

- ``interne``: accounts of the home server only, external accounts excluded;
- ``partenaires``: the home server and its partner servers;
- ``public``: anyone the federation allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

ACCESS_EVENT_TYPE = "fr.maillage.acces"
EXTERNAL_USER_TYPE = "externe"
PARIS = ZoneInfo("Europe/Paris")


class AccessKind(StrEnum):
    INTERNE = "interne"
    PARTENAIRES = "partenaires"
    PUBLIC = "public"

    @property
    def openness(self) -> int:
        return list(AccessKind).index(self)


class InvalidAccessKind(ValueError):
    pass


def parse_access_content(content: Any) -> AccessKind:
    """The kind in an access event's content; raises InvalidAccessKind if malformed."""
    if not isinstance(content, Mapping) or not isinstance(content.get("acces"), str):
        raise InvalidAccessKind(repr(content)[:80])
    try:
        return AccessKind(content["acces"])
    except ValueError:
        raise InvalidAccessKind(content["acces"][:40]) from None


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


@dataclass(frozen=True)
class Member:
    user_id: str
    external: bool = False
    expired: bool = False


@dataclass(frozen=True)
class Refusal:
    """Why someone may not be in a room: a message key of the catalogue and its values."""

    key: str
    values: dict[str, str]


def may_be_member(member: Member, kind: AccessKind, home_server: str,
                  partners: frozenset[str]) -> Refusal | None:
    """None if ``member`` may be invited to, join or knock on a room of this kind."""
    if member.expired:
        return Refusal("acces.refus.expire", {"user": member.user_id})
    server = server_of(member.user_id)
    if kind is AccessKind.PUBLIC:
        return None
    if kind is AccessKind.INTERNE:
        if server != home_server:
            return Refusal("acces.refus.interne_distant", {"user": member.user_id, "server": home_server})
        if member.external:
            return Refusal("acces.refus.interne_externe", {"user": member.user_id})
        return None
    if server == home_server or server in partners:
        return None
    return Refusal("acces.refus.partenaires", {"user": member.user_id, "server": server})


def may_be_member_seen_from(member: Member, kind: AccessKind, home_server: str, here: str,
                            our_partners: frozenset[str]) -> Refusal | None:
    """``may_be_member`` as the homeserver ``here`` can decide it, for rooms of any home server.

    For a room homed here, our partner list applies. For a room homed elsewhere, that
    server's own list applies and is not known here (its own module enforces it); what
    is known here still holds: an ``interne`` room is for its home server's accounts
    only, and a ``partenaires`` room is shared only with a home server we list as a
    partner, with the servers we list.
    """
    if home_server == here:
        return may_be_member(member, kind, home_server, our_partners)
    if kind is AccessKind.PARTENAIRES and not member.expired:
        if home_server not in our_partners:
            return Refusal("acces.refus.origine_non_partenaire", {"user": member.user_id, "server": home_server})
        server = server_of(member.user_id)
        if server not in {here, home_server, *our_partners}:
            return Refusal("acces.refus.partenaires", {"user": member.user_id, "server": server})
        return None
    return may_be_member(member, kind, home_server, frozenset())


def kind_of_state_content(content: Any) -> AccessKind:
    """The kind a room's current access event gives: a redacted (emptied) or otherwise
    unreadable event means ``interne``, the most restrictive kind, never a wider one."""
    try:
        return parse_access_content(content)
    except InvalidAccessKind:
        return AccessKind.INTERNE


def is_room_admin(user_id: str, creators: set[str], power_levels: Mapping[str, Any]) -> bool:
    """Room admin: a creator (room versions 12+) or power level 100."""
    if user_id in creators:
        return True
    users = power_levels.get("users") or {}
    try:
        level = int(users.get(user_id, power_levels.get("users_default", 0)))
    except (TypeError, ValueError):
        return False
    return level >= 100


def expiry_timestamp_ms(last_day: date) -> int:
    """An external account is valid through ``last_day``, Paris time, midnight excluded."""
    end = datetime.combine(last_day + timedelta(days=1), time(0, 0), tzinfo=PARIS)
    return int(end.timestamp() * 1000)
