"""@documents in rooms shared with partner administrations."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from maillage.deploy.services import bots_service
from tests.conftest import ServiceProcess
from tests.harness.federation import Federation, Homeserver
from tests.harness.matrix import AgentFactory, create_encrypted_room

AgentsOn = Callable[[Homeserver], AgentFactory]


@pytest.fixture
def mairie_bots(federation: Federation) -> Iterator[str]:
    assert federation.mairie.config is not None
    process = ServiceProcess(federation.mairie.config, bots_service)
    process.start()
    yield federation.mairie.user_id("documents")
    process.stop()


async def test_a_partner_agent_uses_the_bot_in_a_partners_room(
    federation: Federation, agents_on: AgentsOn, mairie_bots: str
) -> None:
    claire = await agents_on(federation.mairie)("claire")
    paul = await agents_on(federation.agglo)("paul")
    room = await create_encrypted_room(claire, paul, access="partenaires", name="Projet commun")
    await claire.client.room_invite(room, mairie_bots)
    await paul.wait_for_members_including(room, mairie_bots)

    await paul.send_text(room, "!aide")
    answer = await paul.wait_for_text(room, lambda m: m.sender == mairie_bots, timeout=60)
    assert answer.encrypted and "!doc lier <dossier>" in answer.body


async def test_the_bot_accepts_an_invitation_from_a_partner_server(
    federation: Federation, agents_on: AgentsOn, mairie_bots: str
) -> None:
    paul = await agents_on(federation.agglo)("paul")
    room = await create_encrypted_room(paul, access="partenaires", name="Salon de l’agglo")
    await paul.client.room_invite(room, mairie_bots)
    await paul.wait_for_members_including(room, mairie_bots, timeout=60)
