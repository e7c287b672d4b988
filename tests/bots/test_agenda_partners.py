"""@agenda in a room shared with a partner administration: the partner's agent uses that
room's calendar and nothing else."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from maillage.deploy.services import bots_service, caldav_service
from maillage.secretstore import load_secrets
from tests.conftest import ServiceProcess
from tests.harness.federation import Federation, Homeserver
from tests.harness.matrix import Agent, AgentFactory, create_encrypted_room
from tests.harness.servers import running

pytestmark = pytest.mark.usefixtures("in_french")

AgentsOn = Callable[[Homeserver], AgentFactory]


@pytest.fixture
def mairie_agenda(federation: Federation) -> Iterator[str]:
    config = federation.mairie.config
    assert config is not None
    with running(config.data_dir, caldav_service(config, load_secrets(config.data_dir))):
        process = ServiceProcess(config, bots_service)
        process.start()
        yield federation.mairie.user_id("agenda")
        process.stop()


async def said(agent: Agent, room: str, bot: str, command: str) -> str:
    since = len(agent.received)
    await agent.send_text(room, command)
    return (await agent.wait_for_text(room, lambda m: m.sender == bot, since=since, timeout=60)).body


async def shared_room(claire: Agent, bot: str, *others: Agent, access: str, name: str) -> str:
    room = await create_encrypted_room(claire, *others, access=access, name=name)
    levels = await claire.client.room_get_state_event(room, "m.room.power_levels")
    await claire.client.room_put_state(room, "m.room.power_levels", {
        **levels.content, "users": {**levels.content["users"], bot: 50}})
    await claire.client.room_invite(room, bot)
    await claire.wait_for_members_including(room, bot)
    return room


async def test_a_partner_agent_sees_the_shared_room_s_calendar_and_nothing_else(
    federation: Federation, agents_on: AgentsOn, mairie_agenda: str
) -> None:
    claire = await agents_on(federation.mairie)("claire")
    paul = await agents_on(federation.agglo)("paul")
    internal = await shared_room(claire, mairie_agenda, access="interne", name="Urbanisme")
    assert "créé" in await said(claire, internal, mairie_agenda, "!agenda créer urbanisme-interne")
    await said(claire, internal, mairie_agenda, "!agenda ajoute Arbitrage budgétaire confidentiel le 9/3/2027 10h")

    shared = await shared_room(claire, mairie_agenda, paul, access="partenaires", name="Piste cyclable")
    await paul.wait_for_members_including(shared, mairie_agenda)
    assert "créé" in await said(claire, shared, mairie_agenda, "!agenda créer piste-cyclable")
    await said(claire, shared, mairie_agenda, "!agenda ajoute Comité de pilotage le 10/3/2027 14h")
    await paul.wait_for_text(shared, lambda m: m.body.startswith("Ajouté : n°1"), timeout=60)  # caught up

    details = await said(paul, shared, mairie_agenda, "!agenda détails 1")
    assert details.startswith("n°1 — Comité de pilotage · mercredi 10 mars 2027, 14:00–15:00")
    week = await said(paul, shared, mairie_agenda, "!agenda mois")
    assert "Arbitrage" not in week
    # Binding is for the room's admins, checked first: a partner learns nothing of other rooms' calendars.
    refused = await said(paul, shared, mairie_agenda, "!agenda lier urbanisme-interne")
    assert refused == "Seul un administrateur du salon peut lier ou délier son agenda."
    not_admin = await said(paul, shared, mairie_agenda, "!agenda délier")
    assert not_admin == "Seul un administrateur du salon peut lier ou délier son agenda."
    assert "Arbitrage" not in await said(paul, shared, mairie_agenda, "!agenda détails 2")
