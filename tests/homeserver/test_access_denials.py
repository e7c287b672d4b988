"""Denials beyond the matrix: members who no longer qualify, knocks and email invitations in every
kind of room, redacted or replaced access kinds, rooms homed on the partner's server, and the
bots' own accounts. Each is a real attempt on real homeservers (mairie and agglo run Maillage and
are partners; prefecture is a plain Synapse, not a partner); the docstrings say which layer
refuses (tests/homeserver/attempts.py)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from tests.harness.federation import EXPIRED_EXTERNAL, Federation, Homeserver
from tests.harness.matrix import AgentFactory
from tests.homeserver import attempts as attempt
from tests.homeserver.attempts import FEDERATION, MODULE, NOT_MEMBER, TOKEN, Account, Outcome

AgentsOn = Callable[[Homeserver], AgentFactory]


async def account(agents_on: AgentsOn, server: Homeserver, name: str, *, external: bool = False) -> Account:
    made = Account.of(await agents_on(server)(name), server)
    if external:
        await attempt.mark_user_type(server, made.user_id, "externe")
    return made


async def access_event(observer: Account, room_id: str) -> dict[str, Any]:
    response = await observer.call("GET", f"/rooms/{quote(room_id)}/state")
    return next(e for e in response.json() if e["type"] == "fr.maillage.acces" and e["state_key"] == "")


async def redact(by: Account, room_id: str, event_id: str) -> Outcome:
    return attempt.layer(await by.call("PUT", f"/rooms/{quote(room_id)}/redact/{quote(event_id)}/"
                                       f"{secrets.token_hex(8)}", {"reason": "effacement"}))


async def test_a_member_turned_external_can_no_longer_act_in_an_internal_room(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """An agent who becomes an external account (user type ``externe`` set through the Admin
    API: a former agent now a consultant) is still a member of the internal rooms: no event tells
    the module to remove them, but whatever they try there is refused by the module
    (``check_event_allowed``, the sender no longer qualifies). Leaving stays possible."""
    mairie = federation.mairie
    owner = await account(agents_on, mairie, "chef")
    colleague = await account(agents_on, mairie, "ancien-agent")
    other = await account(agents_on, mairie, "agent")
    room = await attempt.create_room(owner, "interne", open_join=False, name="Service")
    assert await attempt.invite(owner, room, colleague.user_id) is True
    assert await attempt.join(colleague, room, mairie) is True
    assert await attempt.send(colleague, room, "Encore agent") is True

    await attempt.mark_user_type(mairie, colleague.user_id, "externe")
    response = await colleague.call("PUT", f"/rooms/{quote(room)}/send/m.room.message/apres",
                                    {"msgtype": "m.text", "body": "Devenu externe"})
    assert attempt.layer(response) == MODULE and "n’a plus accès à ce salon" in response.json()["error"]
    assert await attempt.invite(colleague, room, other.user_id) == MODULE
    assert await attempt.put_state(colleague, room, "m.room.topic", {"topic": "Sujet"}) == MODULE
    assert (await colleague.call("POST", f"/rooms/{quote(room)}/leave", {})).is_success


KNOCKS: dict[str, dict[str, Outcome]] = {
    "interne": {"agent": True, "externe": MODULE, "partenaire": MODULE, "non_partenaire": FEDERATION,
                "externe_expire": TOKEN},
    "partenaires": {"agent": True, "externe": True, "partenaire": True, "non_partenaire": FEDERATION,
                    "externe_expire": TOKEN},
    "public": {"agent": True, "externe": True, "partenaire": True, "non_partenaire": FEDERATION,
               "externe_expire": TOKEN},
}


@pytest.mark.parametrize("kind", list(KNOCKS))
async def test_knocking_in_every_kind_of_room(kind: str, federation: Federation, agents_on: AgentsOn) -> None:
    """Rooms of each kind whose join rule is ``knock``. A partner agent's knock is refused by the
    module of the room's home server (it makes the knock event for the partner's server:
    ``make_knock``); the préfecture never reaches mairie (allowlist); the expired account's
    tokens no longer work."""
    mairie = federation.mairie
    owner = await account(agents_on, mairie, "chef")
    accounts = {
        "agent": await account(agents_on, mairie, "agent"),
        "externe": await account(agents_on, mairie, "externe", external=True),
        "partenaire": await account(agents_on, federation.agglo, "partenaire"),
        "non_partenaire": await account(agents_on, federation.prefecture, "prefet"),
        "externe_expire": await attempt.token_made_by_admin(mairie, mairie.user_id(EXPIRED_EXTERNAL)),
    }
    room = await attempt.create_room(owner, kind, open_join=False, name=f"Sur demande ({kind})", extra_state=[
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}])
    seen = {label: await attempt.knock(a, room, mairie) for label, a in accounts.items()}
    assert seen == KNOCKS[kind]


@dataclass
class IdentityServer:
    """Where an email invitation goes once the homeserver lets it through: a listener that
    counts the homeserver's connections (the invitation itself is not carried further)."""

    port: int = 0
    contacts: int = 0


@pytest.fixture
async def identity_server() -> AsyncIterator[IdentityServer]:
    door = IdentityServer()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        door.contacts += 1
        writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    door.port = server.sockets[0].getsockname()[1]
    yield door
    server.close()
    await server.wait_closed()


async def email_invite(by: Account, room_id: str, door: IdentityServer) -> tuple[int, str]:
    response = await by.call("POST", f"/rooms/{quote(room_id)}/invite", {
        "id_server": f"127.0.0.1:{door.port}", "id_access_token": "jeton", "medium": "email",
        "address": "usager@example.fr"})
    return response.status_code, str(response.json().get("error", ""))


@pytest.mark.parametrize("kind", ["interne", "partenaires", "public"])
async def test_email_invitations_in_every_kind_of_room(
    kind: str, federation: Federation, agents_on: AgentsOn, identity_server: IdentityServer
) -> None:
    """An email invitation (third-party invite) into an ``interne`` room is refused by the module
    before any identity server is asked (``check_threepid_can_be_invited``: Synapse words that
    refusal itself); in ``partenaires`` and ``public`` rooms it goes on to the identity server
    (whoever answers it joins later under the usual rules); an expired account's tokens no
    longer work."""
    mairie = federation.mairie
    owner = await account(agents_on, mairie, "chef")
    room = await attempt.create_room(owner, kind, open_join=False, name=f"Courriel ({kind})")
    status, error = await email_invite(owner, room, identity_server)
    if kind == "interne":
        assert status == 403 and "can not be invited in this room" in error, error
        assert identity_server.contacts == 0
    else:
        assert status != 403 and identity_server.contacts >= 1, (status, error)
    expired = await attempt.token_made_by_admin(mairie, mairie.user_id(EXPIRED_EXTERNAL))
    before = identity_server.contacts
    refused = await expired.call("POST", f"/rooms/{quote(room)}/invite", {
        "id_server": f"127.0.0.1:{identity_server.port}", "id_access_token": "jeton", "medium": "email",
        "address": "usager@example.fr"})
    assert attempt.layer(refused) == TOKEN and identity_server.contacts == before


async def test_a_redacted_access_kind_means_internal(federation: Federation, agents_on: AgentsOn) -> None:
    """Redacting the access event empties it: the module reads that as ``interne`` (never a
    wider kind), removes who no longer qualifies as when the room is closed, and a moderator
    cannot open it again (that takes a room admin)."""
    mairie = federation.mairie
    owner_agent = await agents_on(mairie)("chef")
    owner = Account.of(owner_agent, mairie)
    colleague_agent = await agents_on(mairie)("collegue")
    colleague = Account.of(colleague_agent, mairie)
    partner = await account(agents_on, federation.agglo, "partenaire")
    external = await account(agents_on, mairie, "externe", external=True)
    room = await attempt.create_room(owner, "partenaires", open_join=False, name="Projet")
    for member in (colleague, partner, external):
        assert await attempt.invite(owner, room, member.user_id) is True
        assert await attempt.join(member, room, mairie) is True
        assert await attempt.becomes_member(owner, room, member.user_id)
    assert await attempt.set_power(owner, room, colleague.user_id, 50) is True

    event = await access_event(owner, room)
    assert await redact(owner, room, event["event_id"]) is True
    notice = await colleague_agent.wait_for_text(room, lambda m: "Type d’accès du salon effacé" in m.body)
    assert partner.user_id in notice.body and external.user_id in notice.body
    assert await attempt.stops_being_member(owner, room, partner.user_id)
    assert await attempt.stops_being_member(owner, room, external.user_id)
    assert (await access_event(owner, room))["content"] == {}

    assert await attempt.invite(owner, room, partner.user_id) == MODULE
    assert await attempt.invite(owner, room, external.user_id) == MODULE
    assert await attempt.put_state(colleague, room, "fr.maillage.acces", {"acces": "partenaires"}) == MODULE
    assert await attempt.put_state(owner, room, "fr.maillage.acces", {"acces": "partenaires"}) is True


async def test_redacting_the_kind_of_an_unencrypted_room_is_refused(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """A redacted kind means ``interne``, which must be encrypted: the module refuses the
    redaction of a public room's kind while the room is not encrypted; nothing changes."""
    owner = await account(agents_on, federation.mairie, "chef")
    room = await attempt.create_room(owner, "public", open_join=True, name="Annonces")
    event = await access_event(owner, room)
    assert await redact(owner, room, event["event_id"]) == MODULE
    assert (await access_event(owner, room))["content"] == {"acces": "public"}


async def test_an_access_kind_under_another_state_key_is_refused(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """Only the empty state key counts: the module refuses a second, misleading access event."""
    owner = await account(agents_on, federation.mairie, "chef")
    room = await attempt.create_room(owner, "interne", open_join=False, name="Service")
    assert await attempt.put_state(owner, room, "fr.maillage.acces", {"acces": "public"}, state_key="public") \
        == MODULE
    assert (await access_event(owner, room))["content"] == {"acces": "interne"}


async def test_only_the_home_server_s_admins_open_a_room(federation: Federation, agents_on: AgentsOn) -> None:
    """A partner agent made room admin (level 100) in mairie's room cannot replace its kind with
    a wider one: refused by the module of the partner's own homeserver (agglo). Closing it stays
    possible for whoever may change the room's state."""
    mairie = federation.mairie
    owner = await account(agents_on, mairie, "chef")
    partner = await account(agents_on, federation.agglo, "partenaire")
    room = await attempt.create_room(owner, "partenaires", open_join=False, name="Projet")
    assert await attempt.invite(owner, room, partner.user_id) is True
    assert await attempt.join(partner, room, mairie) is True
    assert await attempt.set_power(owner, room, partner.user_id, 100) is True
    for _ in range(50):  # until agglo knows the new power level
        levels = await partner.call("GET", f"/rooms/{quote(room)}/state/m.room.power_levels/")
        if levels.json().get("users", {}).get(partner.user_id) == 100:
            break
        await asyncio.sleep(0.2)
    response = await partner.call("PUT", f"/rooms/{quote(room)}/state/fr.maillage.acces/", {"acces": "public"})
    assert attempt.layer(response) == MODULE and "serveur d’origine" in response.json()["error"], response.text
    assert (await access_event(owner, room))["content"] == {"acces": "partenaires"}


async def test_mairie_s_bot_cannot_be_invited_into_a_room_homed_on_a_non_partner(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """@documents of mairie, invited by the préfecture (not a partner) into its own room: mairie
    refuses the préfecture's request (allowlist)."""
    bot = await attempt.bot_account(federation.mairie)
    prefet = await account(agents_on, federation.prefecture, "prefet")
    response = await prefet.call("POST", "/createRoom", {"name": "Préfecture", "preset": "private_chat"})
    room = str(response.json()["room_id"])
    assert await attempt.invite(prefet, room, bot.user_id) == FEDERATION


async def test_a_room_homed_on_agglo_follows_agglo_s_rules_for_mairie_s_bot(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """A bot's account is a mairie account like any other for agglo's module: refused in agglo's
    internal rooms, let into its partners' rooms (mairie is agglo's partner), removed when such a
    room is closed (agglo's module); once out it cannot write there (Matrix: not a member)."""
    agglo = federation.agglo
    bot = await attempt.bot_account(federation.mairie)
    owner_agent = await agents_on(agglo)("chef")
    owner = Account.of(owner_agent, agglo)
    internal = await attempt.create_room(owner, "interne", open_join=False, name="Agglo interne")
    assert await attempt.invite(owner, internal, bot.user_id) == MODULE

    shared = await attempt.create_room(owner, "partenaires", open_join=False, name="Agglo partenaires")
    try:
        assert await attempt.invite(owner, shared, bot.user_id) is True
        assert await attempt.join(bot, shared, agglo) is True
        assert await attempt.send(bot, shared, "Bonjour de la part du robot") is True
        await owner_agent.wait_for_text(shared, "Bonjour de la part du robot")
        assert await attempt.put_state(owner, shared, "fr.maillage.acces", {"acces": "interne"}) is True
        assert await attempt.stops_being_member(owner, shared, bot.user_id)
        for _ in range(50):  # mairie learns of the removal
            if bot.user_id not in await attempt.members(bot, shared):
                break
            await asyncio.sleep(0.2)
        assert await attempt.send(bot, shared, "Encore là ?") == NOT_MEMBER
    finally:
        await bot.call("POST", f"/rooms/{quote(shared)}/leave", {})


async def test_a_bot_account_is_held_to_the_rules_of_its_own_server(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """A bot given every power in an internal room still cannot bring in an external account or
    a non-partner, nor give an external account power: refused by the module like anyone."""
    mairie = federation.mairie
    bot = await attempt.bot_account(mairie)
    owner = await account(agents_on, mairie, "chef")
    external = await account(agents_on, mairie, "externe", external=True)
    prefet = await account(agents_on, federation.prefecture, "prefet")
    room = await attempt.create_room(owner, "interne", open_join=False, name="Service avec robot")
    try:
        assert await attempt.invite(owner, room, bot.user_id) is True
        assert await attempt.join(bot, room, mairie) is True
        assert await attempt.set_power(owner, room, bot.user_id, 100) is True
        assert await attempt.invite(bot, room, external.user_id) == MODULE
        assert await attempt.invite(bot, room, prefet.user_id) == MODULE
        assert await attempt.set_power(bot, room, external.user_id, 50) == MODULE
    finally:
        await bot.call("POST", f"/rooms/{quote(room)}/leave", {})
