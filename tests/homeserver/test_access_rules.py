"""Room access kinds and external accounts, across three real homeservers.

mairie and agglo are Maillage homeservers, partners of each other; prefecture is
a plain Synapse that mairie does not list as a partner (until the last test).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from nio import (
    JoinError,
    RoomCreateError,
    RoomInviteError,
    RoomPutStateError,
)
from nio.api import RoomPreset

from maillage.config import load_config
from tests.harness.federation import EXPIRED_EXTERNAL, VALID_EXTERNAL, Federation, Homeserver
from tests.harness.matrix import Agent, AgentFactory, access_state, create_encrypted_room, login_agent
from tests.harness.servers import toml_dump
from tests.homeserver import attempts as attempt
from tests.homeserver.attempts import FEDERATION, MODULE, NOT_MEMBER, REMOVED, TOKEN, Account, Outcome

AgentsOn = Callable[[Homeserver], AgentFactory]


async def make_external(federation: Federation, agents_on: AgentsOn, name: str = "externe") -> Agent:
    """An external account, marked with the `externe` user type through the Admin API."""
    agent = await agents_on(federation.mairie)(name)
    async with httpx.AsyncClient() as http:
        response = await http.put(
            f"{federation.mairie.client_url}/_synapse/admin/v2/users/{agent.user_id}",
            headers={"Authorization": f"Bearer {federation.mairie.admin_token}"},
            json={"user_type": "externe"},
        )
    assert response.is_success, response.text
    return agent


async def create_room(owner: Agent, kind: str, *, name: str, join_rule_public: bool = False) -> str:
    preset = RoomPreset.public_chat if join_rule_public else RoomPreset.private_chat
    response = await owner.client.room_create(name=name, preset=preset, initial_state=[access_state(kind)])
    assert not isinstance(response, RoomCreateError), response.message
    return str(response.room_id)


async def is_member(observer: Agent, room_id: str, user_id: str, *, timeout: float = 15) -> bool:
    """Whether ``observer``'s homeserver sees ``user_id`` joined, waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await observer.client.joined_members(room_id)
        if user_id in {m.user_id for m in getattr(response, "members", [])}:
            return True
        await asyncio.sleep(0.3)
    return False


async def set_power(owner: Agent, room_id: str, user_id: str, level: int) -> RoomPutStateError | None:
    current = await owner.client.room_get_state_event(room_id, "m.room.power_levels")
    content: dict[str, Any] = dict(current.content)
    content["users"] = {**content.get("users", {}), user_id: level}
    response = await owner.client.room_put_state(room_id, "m.room.power_levels", content)
    return response if isinstance(response, RoomPutStateError) else None


# The matrix of docs/acces.md, "Qui peut faire quoi": room kind → account → (invite, join, send,
# be given power). True: the homeserver accepts; otherwise the layer that refuses (tests/homeserver/
# attempts.py): MODULE (access rules, French message), TOKEN (the expired account's tokens no longer
# work: the module's account-validity callback), FEDERATION (the allowlist), NOT_MEMBER (Matrix: a
# non-member cannot send), REMOVED (the home server accepts a remote join, the module removes the
# member at once); None: not applicable (not a member).
Row = tuple[Outcome, Outcome, Outcome, Outcome | None]
EXPECTED: dict[str, dict[str, Row]] = {
    "interne": {"agent": (True, True, True, True), "externe": (MODULE, MODULE, MODULE, MODULE),
                "partenaire": (MODULE, MODULE, MODULE, None),
                "non_partenaire": (MODULE, FEDERATION, NOT_MEMBER, None),
                "externe_expire": (MODULE, TOKEN, TOKEN, MODULE)},
    "partenaires": {"agent": (True, True, True, True), "externe": (True, True, True, MODULE),
                    "partenaire": (True, True, True, True),
                    "non_partenaire": (MODULE, FEDERATION, NOT_MEMBER, None),
                    "externe_expire": (MODULE, TOKEN, TOKEN, MODULE)},
    "public": {"agent": (True, True, True, True), "externe": (True, True, True, MODULE),
               "partenaire": (True, True, True, True),
               "non_partenaire": (FEDERATION, FEDERATION, NOT_MEMBER, None),
               "externe_expire": (MODULE, TOKEN, TOKEN, MODULE)},
}


@pytest.mark.parametrize("home", ["mairie", "agglo"])
@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_access_matrix(kind: str, home: str, federation: Federation, agents_on: AgentsOn) -> None:
    """Every cell is a real attempt, and the layer that refuses is checked.

    - invite: the room's owner invites the account into a room of this kind;
    - join: the account joins a room of this kind whose join rule is open, so that the access
      kind is the only barrier (a remote account's join is refused by the module of the room's
      home server, which makes the join event for the remote server: ``make_join``);
    - send: the account is a member of a room that was ``public`` and was then closed to this
      kind by a moderator, with no room admin left to remove anyone: a member who no longer
      qualifies cannot write, refused by the module of its own homeserver (mairie's for its
      external account, agglo's for its agent); the préfecture agent never got in (allowlist)
      and, not a member, cannot write (Matrix); the expired account's tokens no longer work;
    - power: the owner gives the account level 50 (accounts of the home server, members).

    ``home="agglo"``: the same for a room homed on the partner's server, whose own module and
    partner list apply (mairie is its partner; its external account is marked through the
    Admin API; the expired row is mairie's only).
    """
    here = getattr(federation, home)
    partner = federation.agglo if home == "mairie" else federation.mairie
    owner = Account.of(await agents_on(here)("proprietaire"), here)
    moderator_agent = await agents_on(here)("moderateur")
    moderator = Account.of(moderator_agent, here)
    external = Account.of(await agents_on(here)("externe"), here)
    await attempt.mark_user_type(here, external.user_id, "externe")
    accounts = {
        "agent": Account.of(await agents_on(here)("agent"), here),
        "externe": external,
        "partenaire": Account.of(await agents_on(partner)("partenaire"), partner),
        "non_partenaire": Account.of(await agents_on(federation.prefecture)("prefecture"), federation.prefecture),
    }
    if home == "mairie":
        accounts["externe_expire"] = await attempt.token_made_by_admin(here, here.user_id(EXPIRED_EXTERNAL))
    invite_room = await attempt.create_room(owner, kind, open_join=False, name=f"Invitations {kind}")
    join_room = await attempt.create_room(owner, kind, open_join=True, name=f"Entrées {kind}")
    send_room = await _room_closed_without_admin(owner, moderator, kind, list(accounts.values()))

    invited = {label: await attempt.invite(owner, invite_room, a.user_id) for label, a in accounts.items()}
    joined = {label: await attempt.join(a, join_room, here) for label, a in accounts.items()}
    sent: dict[str, Outcome] = {}
    for label, account in accounts.items():
        body = f"Message de {label} ({kind}, {home})"
        sent[label] = await attempt.send(account, send_room, body)
        if sent[label] is True:
            received = await moderator_agent.wait_for_text(send_room, body, timeout=30)
            sent[label] = received.sender == account.user_id
    members_now = await attempt.members(owner, join_room)
    for label, account in accounts.items():
        if joined[label] is True and account.user_id not in members_now:
            joined[label] = REMOVED
    powered: dict[str, Outcome | None] = {
        label: await attempt.set_power(owner, join_room, a.user_id, 50)
        if a.server is here or joined[label] is True else None
        for label, a in accounts.items()}
    seen = {label: (invited[label], joined[label], sent[label], powered[label]) for label in accounts}
    expected = {label: row for label, row in EXPECTED[kind].items() if label in accounts}
    assert seen == expected
    stayed = {a.user_id for label, a in accounts.items() if joined[label] is True}
    assert await attempt.members(owner, join_room) >= stayed  # and they are still members


async def _room_closed_without_admin(owner: Account, moderator: Account, kind: str, accounts: list[Account]) -> str:
    """A ``public`` room that every account able to joins, then closed to ``kind`` by a
    moderator after its only admin left: nobody is removed, so who may still write is decided
    when they write."""
    room = await attempt.create_room(owner, "public", open_join=True, name=f"Écriture {kind}")
    assert await attempt.put_state(owner, room, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}) is True
    assert await attempt.join(moderator, room, owner.server) is True
    assert await attempt.set_power(owner, room, moderator.user_id, 50) is True
    for account in accounts:
        if await attempt.join(account, room, owner.server) is True:
            assert await attempt.becomes_member(owner, room, account.user_id)
    assert (await owner.call("POST", f"/rooms/{quote(room)}/leave", {})).is_success
    if kind != "public":
        assert await attempt.put_state(moderator, room, "fr.maillage.acces", {"acces": kind}) is True
    return room


async def test_agents_of_partner_servers_exchange_encrypted_messages(
    federation: Federation, agents_on: AgentsOn
) -> None:
    claire = await agents_on(federation.mairie)("claire")
    paul = await agents_on(federation.agglo)("paul")
    room = await create_encrypted_room(claire, paul, access="partenaires", name="Projet voirie intercommunale")
    await claire.send_text(room, "Le marché de voirie est publié.")
    assert (await paul.wait_for_text(room, "Le marché de voirie est publié.")).encrypted
    await paul.send_text(room, "Merci, l’agglo relaie aux communes.")
    answer = await claire.wait_for_text(room, "Merci, l’agglo relaie aux communes.")
    assert answer.encrypted and answer.sender == paul.user_id


async def test_only_a_room_admin_may_open_a_room(federation: Federation, agents_on: AgentsOn) -> None:
    owner = await agents_on(federation.mairie)("chef")
    moderator = await agents_on(federation.mairie)("moderateur")
    room = await create_encrypted_room(owner, moderator, access="interne")
    assert await set_power(owner, room, moderator.user_id, 50) is None

    refused = await moderator.client.room_put_state(room, "fr.maillage.acces", {"acces": "partenaires"})
    assert isinstance(refused, RoomPutStateError)
    assert "Seul un administrateur du salon" in refused.message
    state = await owner.client.room_get_state_event(room, "fr.maillage.acces")
    assert state.content == {"acces": "interne"}

    opened = await owner.client.room_put_state(room, "fr.maillage.acces", {"acces": "partenaires"})
    assert not isinstance(opened, RoomPutStateError)


@pytest.mark.parametrize("content", [{"acces": "ouvert"}, {"acces": 3}, {"type": "interne"}])
async def test_a_malformed_access_kind_is_refused_and_nothing_changes(
    content: dict[str, Any], federation: Federation, agents_on: AgentsOn
) -> None:
    owner = await agents_on(federation.mairie)("chef")
    room = await create_room(owner, "partenaires", name="Salon")
    refused = await owner.client.room_put_state(room, "fr.maillage.acces", content)
    assert isinstance(refused, RoomPutStateError)
    assert "Type d’accès inconnu ou mal formé" in refused.message
    state = await owner.client.room_get_state_event(room, "fr.maillage.acces")
    assert state.content == {"acces": "partenaires"}


async def test_closing_a_room_removes_who_no_longer_qualifies_and_they_cannot_return(
    federation: Federation, agents_on: AgentsOn
) -> None:
    owner = await agents_on(federation.mairie)("chef")
    colleague = await agents_on(federation.mairie)("collegue")
    partner = await agents_on(federation.agglo)("partenaire")
    room = await create_encrypted_room(owner, colleague, partner, access="partenaires")

    closed = await owner.client.room_put_state(room, "fr.maillage.acces", {"acces": "interne"})
    assert not isinstance(closed, RoomPutStateError)

    notice = await colleague.wait_for_text(room, lambda m: "passé en « interne »" in m.body)
    assert partner.user_id in notice.body
    assert not await is_member(owner, room, partner.user_id, timeout=2)
    assert await is_member(owner, room, colleague.user_id, timeout=2)

    again = await owner.client.room_invite(room, partner.user_id)
    assert isinstance(again, RoomInviteError) and "interne" in again.message
    rejoined = await partner.client.join(room)
    assert isinstance(rejoined, JoinError)
    assert not await is_member(owner, room, partner.user_id, timeout=2)


async def test_inviting_an_agent_of_a_non_partner_server_is_refused(
    federation: Federation, agents_on: AgentsOn
) -> None:
    owner = await agents_on(federation.mairie)("chef")
    outsider = await agents_on(federation.prefecture)("prefet")
    room = await create_room(owner, "partenaires", name="Partenaires")
    refused = await owner.client.room_invite(room, outsider.user_id)
    assert isinstance(refused, RoomInviteError)
    assert f"le serveur {federation.prefecture.server_name}" in refused.message


async def test_a_non_allowlisted_server_cannot_join_even_a_public_room(
    federation: Federation, agents_on: AgentsOn
) -> None:
    owner = await agents_on(federation.mairie)("chef")
    outsider = await agents_on(federation.prefecture)("prefet")
    room = await create_room(owner, "public", name="Annonces", join_rule_public=True)
    refused = await outsider.client.join(room)
    assert isinstance(refused, JoinError)
    assert not await is_member(owner, room, outsider.user_id, timeout=2)
    # nor can the other server fetch our agents' profiles for its users
    response = httpx.get(
        f"{federation.prefecture.client_url}/_matrix/client/v3/profile/{owner.user_id}",
        headers={"Authorization": f"Bearer {outsider.client.access_token}"},
    )
    assert response.status_code in (403, 404)
    partner = await agents_on(federation.agglo)("voisin")
    allowed = httpx.get(f"{federation.agglo.client_url}/_matrix/client/v3/profile/{owner.user_id}",
                        headers={"Authorization": f"Bearer {partner.client.access_token}"})
    assert allowed.status_code == 200


async def _knock(agent: Agent, room_id: str, via: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{agent.client.homeserver}/_matrix/client/v3/knock/{room_id}?server_name={via}",
            headers={"Authorization": f"Bearer {agent.client.access_token}"}, json={"reason": "Bonjour"},
        )


async def test_knocking_follows_the_access_kind(federation: Federation, agents_on: AgentsOn) -> None:
    owner = await agents_on(federation.mairie)("chef")
    colleague = await agents_on(federation.mairie)("collegue")
    partner = await agents_on(federation.agglo)("partenaire")
    room = await create_room(owner, "interne", name="Sur demande")
    knock_rule = await owner.client.room_put_state(room, "m.room.join_rules", {"join_rule": "knock"})
    assert not isinstance(knock_rule, RoomPutStateError)

    assert (await _knock(colleague, room, federation.mairie.server_name)).status_code == 200
    refused = await _knock(partner, room, federation.mairie.server_name)  # checked by mairie over federation
    assert refused.status_code == 403


async def test_an_email_invite_into_an_internal_room_is_refused(
    federation: Federation, agents_on: AgentsOn
) -> None:
    owner = await agents_on(federation.mairie)("chef")
    room = await create_room(owner, "interne", name="Interne")
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{federation.mairie.client_url}/_matrix/client/v3/rooms/{room}/invite",
            headers={"Authorization": f"Bearer {owner.client.access_token}"},
            json={"id_server": "identite.example.fr", "id_access_token": "x",
                  "medium": "email", "address": "citoyen@example.fr"},
        )
    assert response.status_code == 403


async def test_an_external_account_cannot_create_rooms(federation: Federation, agents_on: AgentsOn) -> None:
    external = await make_external(federation, agents_on)
    refused = await external.client.room_create(name="Mon salon")
    assert isinstance(refused, RoomCreateError)
    assert "ne peuvent pas créer de salon" in refused.message


async def test_an_external_account_cannot_join_an_internal_room_even_an_open_one(
    federation: Federation, agents_on: AgentsOn
) -> None:
    owner = await agents_on(federation.mairie)("chef")
    external = await make_external(federation, agents_on)
    room = await create_room(owner, "interne", name="Tous les agents", join_rule_public=True)
    refused = await external.client.join(room)
    assert isinstance(refused, JoinError) and "compte externe" in refused.message


async def test_an_external_account_finds_only_people_it_shares_a_room_with(
    federation: Federation, agents_on: AgentsOn
) -> None:
    owner = await agents_on(federation.mairie)("cheffe-de-projet", displayname="Cheffe de projet Annuaire")
    stranger = await agents_on(federation.mairie)("inconnu", displayname="Inconnu Annuaire")
    external = await make_external(federation, agents_on, "consultant")
    room = await create_room(owner, "partenaires", name="Projet")
    await owner.client.room_invite(room, external.user_id)
    await external.client.join(room)
    assert await is_member(owner, room, external.user_id)

    async def search(agent: Agent) -> set[str]:
        response = httpx.post(
            f"{federation.mairie.client_url}/_matrix/client/v3/user_directory/search",
            headers={"Authorization": f"Bearer {agent.client.access_token}"},
            json={"search_term": "Annuaire", "limit": 50},
        )
        return {r["user_id"] for r in response.json()["results"]}

    deadline = time.monotonic() + 20  # the directory is updated in the background
    while owner.user_id not in await search(external) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert await search(external) == {owner.user_id}
    assert stranger.user_id in await search(owner)  # agents still find everyone


async def test_an_expired_external_account_cannot_log_in(federation: Federation, agents_on: AgentsOn) -> None:
    server = federation.mairie
    for localpart in (EXPIRED_EXTERNAL, VALID_EXTERNAL):
        async with httpx.AsyncClient() as http:
            await http.put(f"{server.client_url}/_synapse/admin/v2/users/{server.user_id(localpart)}",
                           headers={"Authorization": f"Bearer {server.admin_token}"},
                           json={"password": "Mot-de-passe-Externe-1"})
    response = httpx.post(f"{server.client_url}/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": EXPIRED_EXTERNAL},
        "password": "Mot-de-passe-Externe-1"})
    assert response.status_code == 403
    assert "a expiré" in response.json()["error"]
    valid = await login_agent(server.client_url, server.user_id(VALID_EXTERNAL), "Mot-de-passe-Externe-1",
                              server.directory / "nio-valide")
    try:
        refused = await valid.client.room_create(name="x")
        assert isinstance(refused, RoomCreateError)  # named in [[externes]]: external too
    finally:
        await valid.close()


async def test_non_public_rooms_are_always_encrypted(federation: Federation, agents_on: AgentsOn) -> None:
    owner = await agents_on(federation.mairie)("chef")
    for kind, encrypted in (("interne", True), ("partenaires", True), ("public", False)):
        room = await create_room(owner, kind, name=kind, join_rule_public=True)  # public_chat: no encryption asked
        state = await owner.client.room_get_state_event(room, "m.room.encryption")
        assert (getattr(state, "content", {}).get("algorithm") == "m.megolm.v1.aes-sha2") is encrypted, kind
    default = await owner.client.room_create(name="Sans précision", preset=RoomPreset.public_chat)
    access = await owner.client.room_get_state_event(default.room_id, "fr.maillage.acces")
    assert access.content == {"acces": "interne"}


async def test_a_partner_agent_cannot_join_an_open_internal_room(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """The room's home server makes the join event for the partner's server (``make_join``):
    its module refuses it there, with its French message relayed to the partner agent."""
    owner = await agents_on(federation.mairie)("chef")
    partner = await agents_on(federation.agglo)("curieux")
    room = await create_room(owner, "interne", name="Ouvert aux agents", join_rule_public=True)
    # via mairie: room ids (version 12) name no server
    response = await Account.of(partner, federation.agglo).call(
        "POST", f"/join/{quote(room)}", {}, {"server_name": federation.mairie.server_name})
    assert attempt.layer(response) == MODULE and "interne" in response.json()["error"], response.text
    assert not await is_member(owner, room, partner.user_id, timeout=2)


async def test_an_external_account_that_expires_can_no_longer_act_in_its_rooms(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """A consultant, member of a partners' room, expires: here an admin ends the mission early
    (``expire_le`` set to yesterday in ``[[externes]]``, mairie restarted). Its device's token
    stops working (the module's account-validity callback: it can no longer send, join or
    invite), logging in again is refused (module, French message), and nobody can invite it or
    make it join, not even through the Admin API (module, ``check_event_allowed``). It stays a
    member of its room, unable to act there."""
    mairie = federation.mairie
    owner = Account.of(await agents_on(mairie)("chef"), mairie)
    colleague = Account.of(await agents_on(mairie)("collegue"), mairie)
    consultant_agent = await agents_on(mairie)("consultant")
    consultant = Account.of(consultant_agent, mairie)
    await attempt.mark_user_type(mairie, consultant.user_id, "externe")
    room = await attempt.create_room(owner, "partenaires", open_join=False, name="Mission")
    other_room = await attempt.create_room(owner, "partenaires", open_join=True, name="Autre projet")
    assert await attempt.invite(owner, room, consultant.user_id) is True
    assert await attempt.join(consultant, room, mairie) is True
    assert await attempt.send(consultant, room, "Livrable déposé") is True

    original = mairie.config
    assert original is not None
    document: dict[str, Any] = original.model_dump(exclude_none=True)
    document["externes"] = [*document.get("externes", []),
                            {"compte": consultant.user_id, "expire_le": date.today() - timedelta(days=1)}]
    original.source.write_text(toml_dump(document))
    try:
        await asyncio.get_running_loop().run_in_executor(None, federation.restart_mairie,
                                                         load_config(original.source))
        assert await attempt.send(consultant, room, "Encore un mot") == TOKEN
        assert await attempt.join(consultant, other_room, mairie) == TOKEN
        assert await attempt.invite(consultant, room, colleague.user_id) == TOKEN
        login = httpx.post(f"{mairie.client_url}/_matrix/client/v3/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": consultant.user_id},
            "password": consultant_agent.password})
        assert login.status_code == 403 and "a expiré" in login.json()["error"]
        assert await attempt.invite(owner, other_room, consultant.user_id) == MODULE
        forced = await attempt.admin_call(mairie, "POST", f"/v1/join/{quote(other_room)}",
                                          {"user_id": consultant.user_id})
        assert attempt.layer(forced) == MODULE, forced.text
        assert consultant.user_id not in await attempt.members(owner, other_room)
        assert consultant.user_id in await attempt.members(owner, room)
    finally:
        original.source.write_text(toml_dump(original.model_dump(exclude_none=True)))
        federation.restart_mairie(load_config(original.source))


async def test_with_open_federation_the_access_kind_alone_keeps_a_non_partner_out(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """``[federation] ouverte = true``: any server may federate with mairie, so no allowlist
    stands in front of the module any more. The préfecture (still not a partner) is then kept
    out of internal and partners' rooms by the module alone — its invitations, its joins and
    knocks (the join or knock event mairie makes for it, ``make_join``/``make_knock``) — and
    may join and write in public rooms, as the access kinds say."""
    mairie = federation.mairie
    original = mairie.config
    assert original is not None
    document: dict[str, Any] = original.model_dump(exclude_none=True)
    document["federation"]["ouverte"] = True
    original.source.write_text(toml_dump(document))
    try:
        await asyncio.get_running_loop().run_in_executor(None, federation.restart_mairie,
                                                         load_config(original.source))
        owner_agent = await agents_on(mairie)("chef")
        owner = Account.of(owner_agent, mairie)
        prefet = Account.of(await agents_on(federation.prefecture)("prefet"), federation.prefecture)
        knock_rule = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]
        seen: dict[str, tuple[Outcome, Outcome, Outcome]] = {}
        for kind in ("interne", "partenaires", "public"):
            invite_room = await attempt.create_room(owner, kind, open_join=False, name=f"Invitations {kind}")
            open_room = await attempt.create_room(owner, kind, open_join=True, name=f"Ouvert {kind}")
            knock_room = await attempt.create_room(owner, kind, open_join=False, name=f"Sur demande {kind}",
                                                   extra_state=knock_rule)
            seen[kind] = (await attempt.invite(owner, invite_room, prefet.user_id),
                          await attempt.join(prefet, open_room, mairie),
                          await attempt.knock(prefet, knock_room, mairie))
            if kind == "public":
                assert await attempt.send(prefet, open_room, "Bonjour de la préfecture") is True
                await owner_agent.wait_for_text(open_room, "Bonjour de la préfecture", timeout=60)
        assert seen == {"interne": (MODULE, MODULE, MODULE), "partenaires": (MODULE, MODULE, MODULE),
                        "public": (True, True, True)}
    finally:
        original.source.write_text(toml_dump(original.model_dump(exclude_none=True)))
        federation.restart_mairie(load_config(original.source))


async def test_adding_a_partner_lets_a_plain_synapse_in_without_losing_messages(
    federation: Federation, agents_on: AgentsOn, tmp_path_factory: pytest.TempPathFactory
) -> None:
    owner = await agents_on(federation.mairie)("chef")
    paul = await agents_on(federation.agglo)("paul")
    prefet = await agents_on(federation.prefecture)("prefet")
    room = await create_encrypted_room(owner, paul, access="partenaires", name="Crise inondations")
    original = federation.mairie.config
    assert original is not None
    assert isinstance(await owner.client.room_invite(room, prefet.user_id), RoomInviteError)

    # Paul's client already shares its room key with mairie: what this test checks is that
    # the homeserver restart loses no message, not key exchange during an outage.
    await paul.send_text(room, "Point de situation à 8 h")
    await owner.wait_for_text(room, "Point de situation à 8 h")

    document = _document_with_partners(original, [*original.federation.partenaires,
                                                  federation.prefecture.server_name])
    original.source.write_text(toml_dump(document))
    try:
        # a message sent by a partner while mairie restarts is delivered afterwards
        restart = asyncio.get_running_loop().run_in_executor(
            None, federation.restart_mairie, load_config(original.source))
        await asyncio.sleep(0.5)
        await paul.send_text(room, "Message pendant le redémarrage")
        await restart
        started = time.perf_counter()
        invited = await owner.client.room_invite(room, prefet.user_id)
        assert not isinstance(invited, RoomInviteError), invited.message
        assert not isinstance(await prefet.client.join(room), JoinError)
        assert await is_member(owner, room, prefet.user_id)
        effective = time.perf_counter() - started
        await owner.send_text(room, "Bienvenue à la préfecture")
        assert (await prefet.wait_for_text(room, "Bienvenue à la préfecture")).encrypted
        assert await owner.wait_for_text(room, "Message pendant le redémarrage", timeout=90)
        print(f"partner effective {effective:.2f} s after restart")
    finally:
        original.source.write_text(toml_dump(_document_with_partners(original, original.federation.partenaires)))
        federation.restart_mairie(load_config(original.source))


def _document_with_partners(config: Any, partners: list[str]) -> dict[str, Any]:
    document: dict[str, Any] = config.model_dump(exclude_none=True)
    document["federation"]["partenaires"] = partners
    return document
