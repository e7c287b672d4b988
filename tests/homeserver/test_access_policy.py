"""The access rules themselves, and the module's config parsing (Synapse's own entry point)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from synapse.module_api.errors import ConfigError

from maillage.homeserver.access_policy import (
    AccessKind,
    InvalidAccessKind,
    Member,
    expiry_timestamp_ms,
    is_room_admin,
    kind_of_state_content,
    may_be_member,
    may_be_member_seen_from,
    parse_access_content,
)
from maillage.homeserver.access_rules import RoomAccessRules

HOME, PARTNER, OTHER = "mairie.fr", "agglo.fr", "ailleurs.fr"
PARTNERS = frozenset({PARTNER})

AGENT = Member(f"@agent:{HOME}")
EXTERNAL = Member(f"@consultant:{HOME}", external=True)
EXPIRED = Member(f"@ancien:{HOME}", external=True, expired=True)
PARTNER_AGENT = Member(f"@agent:{PARTNER}")
STRANGER = Member(f"@agent:{OTHER}")


@pytest.mark.parametrize(
    ("member", "kind", "allowed"),
    [
        (AGENT, AccessKind.INTERNE, True), (EXTERNAL, AccessKind.INTERNE, False),
        (PARTNER_AGENT, AccessKind.INTERNE, False), (STRANGER, AccessKind.INTERNE, False),
        (AGENT, AccessKind.PARTENAIRES, True), (EXTERNAL, AccessKind.PARTENAIRES, True),
        (PARTNER_AGENT, AccessKind.PARTENAIRES, True), (STRANGER, AccessKind.PARTENAIRES, False),
        (AGENT, AccessKind.PUBLIC, True), (EXTERNAL, AccessKind.PUBLIC, True),
        (PARTNER_AGENT, AccessKind.PUBLIC, True), (STRANGER, AccessKind.PUBLIC, True),
        (EXPIRED, AccessKind.PUBLIC, False), (EXPIRED, AccessKind.PARTENAIRES, False),
    ],
)
def test_who_may_be_a_member_of_each_kind(member: Member, kind: AccessKind, allowed: bool) -> None:
    assert (may_be_member(member, kind, HOME, PARTNERS) is None) is allowed


@pytest.mark.parametrize(
    ("member", "kind", "home", "allowed"),
    [
        # a room homed on our partner: its own rules apply there; ours still hold here
        (AGENT, AccessKind.PARTENAIRES, PARTNER, True), (EXTERNAL, AccessKind.PARTENAIRES, PARTNER, True),
        (AGENT, AccessKind.INTERNE, PARTNER, False), (AGENT, AccessKind.PUBLIC, PARTNER, True),
        (STRANGER, AccessKind.PARTENAIRES, PARTNER, False), (EXPIRED, AccessKind.PARTENAIRES, PARTNER, False),
        # a room homed on a server we do not list: only its public rooms
        (AGENT, AccessKind.PARTENAIRES, OTHER, False), (AGENT, AccessKind.INTERNE, OTHER, False),
        (AGENT, AccessKind.PUBLIC, OTHER, True), (STRANGER, AccessKind.PARTENAIRES, OTHER, False),
        # a room homed here: the partner list applies as such
        (PARTNER_AGENT, AccessKind.PARTENAIRES, HOME, True), (STRANGER, AccessKind.PARTENAIRES, HOME, False),
    ],
)
def test_who_may_be_a_member_seen_from_this_server(member: Member, kind: AccessKind, home: str,
                                                    allowed: bool) -> None:
    assert (may_be_member_seen_from(member, kind, home, HOME, PARTNERS) is None) is allowed


@pytest.mark.parametrize("content", [{}, {"acces": "ouvert"}, {"acces": None}, None, "public"])
def test_a_redacted_or_unreadable_kind_means_internal(content: object) -> None:
    assert kind_of_state_content(content) is AccessKind.INTERNE


@pytest.mark.parametrize("content", [{"acces": "ouvert"}, {"acces": 3}, {}, [], "interne", {"access": "interne"}])
def test_malformed_access_content_is_refused(content: object) -> None:
    with pytest.raises(InvalidAccessKind):
        parse_access_content(content)


def test_kinds_are_ordered_from_closed_to_open() -> None:
    assert AccessKind.INTERNE.openness < AccessKind.PARTENAIRES.openness < AccessKind.PUBLIC.openness


def test_room_admins_are_creators_or_level_100() -> None:
    levels = {"users": {"@chef:m": 100, "@moderateur:m": 50}, "users_default": 0}
    assert is_room_admin("@createur:m", {"@createur:m"}, levels)
    assert is_room_admin("@chef:m", set(), levels)
    assert not is_room_admin("@moderateur:m", set(), levels)
    assert not is_room_admin("@inconnu:m", set(), levels)
    assert not is_room_admin("@x:m", set(), {"users": {"@x:m": "beaucoup"}})


def test_an_external_account_is_valid_through_its_last_day_in_paris_time() -> None:
    # Summer time (UTC+2) on 31 March 2027: the account ends at 22:00 UTC; in winter at 23:00 UTC.
    assert expiry_timestamp_ms(date(2027, 3, 31)) == datetime(2027, 3, 31, 22, tzinfo=UTC).timestamp() * 1000
    assert expiry_timestamp_ms(date(2027, 1, 31)) == datetime(2027, 1, 31, 23, tzinfo=UTC).timestamp() * 1000


def test_module_config_is_parsed_by_its_static_entry_point() -> None:
    config = RoomAccessRules.parse_config(
        {"partenaires": [PARTNER], "acces_par_defaut": "partenaires", "externes": {"@c:m": "2027-01-31"}})
    assert config.partners == PARTNERS and config.default_kind is AccessKind.PARTENAIRES
    assert config.externals == {"@c:m": expiry_timestamp_ms(date(2027, 1, 31))}


@pytest.mark.parametrize(
    "bad", [{"partenaires": "agglo.fr"}, {"acces_par_defaut": "ouvert"}, {"externes": {"@c:m": "demain"}}]
)
def test_a_bad_module_config_is_a_synapse_config_error(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RoomAccessRules.parse_config(bad)
