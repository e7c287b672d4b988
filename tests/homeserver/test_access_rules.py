"""Room access kinds and external accounts, across three real homeservers.

mairie and agglo are Maillage homeservers, partners of each other; prefecture is
a plain Synapse that mairie does not list as a partner (until the last test).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from nio import (
    JoinError,
    RoomCreateError,
    RoomInviteError,
    RoomPutStateError,
    RoomSendError,
)
from nio.api import RoomPreset

from maillage.config import load_config
from tests.harness.federation import EXPIRED_EXTERNAL, VALID_EXTERNAL, Federation, Homeserver
from tests.harness.matrix import Agent, AgentFactory, access_state, create_encrypted_room, login_agent
from tests.harness.servers import toml_dump

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


# kind → account → (invite, join, send, raise power); None: not applicable (not a member)
EXPECTED: dict[str, dict[str, tuple[bool, bool, bool, bool | None]]] = {
    "interne": {"local": (True, True, True, True), "externe": (False, False, False, False),
                "partenaire": (False, False, False, None), "non_partenaire": (False, False, False, None)},
    "partenaires": {"local": (True, True, True, True), "externe": (True, True, True, False),
                    "partenaire": (True, True, True, True), "non_partenaire": (False, False, False, None)},
    "public": {"local": (True, True, True, True), "externe": (True, True, True, False),
               "partenaire": (True, True, True, True), "non_partenaire": (False, False, False, None)},
}


@pytest.mark.parametrize("kind", list(EXPECTED))
async def test_access_matrix(kind: str, federation: Federation, agents_on: AgentsOn) -> None:
    owner = await agents_on(federation.mairie)("proprietaire")
    accounts = {
        "local": await agents_on(federation.mairie)("agent"),
        "externe": await make_external(federation, agents_on),
        "partenaire": await agents_on(federation.agglo)("partenaire"),
        "non_partenaire": await agents_on(federation.prefecture)("prefecture"),
    }
    public = kind == "public"
    room = await create_room(owner, kind, name=f"Salon {kind}", join_rule_public=public)
    seen: dict[str, tuple[bool, bool, bool, bool | None]] = {}
    for label, account in accounts.items():
        invited = not isinstance(await owner.client.room_invite(room, account.user_id), RoomInviteError)
        # invited or not: a public room is joined without an invitation, the others need one
        joined_response = await account.client.join(room)
        joined = not isinstance(joined_response, JoinError) and await is_member(owner, room, account.user_id)
        sent = False
        if joined:
            await asyncio.sleep(0.5)
            body = f"Message de {label}"
            response = await account.client.room_send(
                room, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True)
            sent = not isinstance(response, RoomSendError) and \
                (await owner.wait_for_text(room, body, timeout=30)).sender == account.user_id
        power: bool | None = None
        if joined or label == "externe":
            power = await set_power(owner, room, account.user_id, 50) is None
        seen[label] = (invited, joined, sent, power)
    assert seen == EXPECTED[kind]


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


async def test_a_partner_agent_who_joins_an_open_internal_room_is_removed(
    federation: Federation, agents_on: AgentsOn
) -> None:
    """Remote joins have no module hook before they are accepted: the home server removes them."""
    owner = await agents_on(federation.mairie)("chef")
    partner = await agents_on(federation.agglo)("curieux")
    room = await create_room(owner, "interne", name="Ouvert aux agents", join_rule_public=True)
    await partner.client.join(room)
    deadline = time.monotonic() + 20
    while await is_member(owner, room, partner.user_id, timeout=0.5):
        assert time.monotonic() < deadline, "the partner agent was not removed"
    assert not await is_member(owner, room, partner.user_id, timeout=2)


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
