"""@documents in rooms shared with partner administrations."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
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


async def test_a_partner_agent_uses_the_bot_in_a_partners_room_until_it_becomes_internal(
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

    await claire.client.room_put_state(room, "fr.maillage.acces", {"acces": "interne"})
    await claire.wait_for_text(room, lambda m: "passé en « interne »" in m.body, timeout=60)
    refused = httpx.put(
        f"{federation.agglo.client_url}/_matrix/client/v3/rooms/{room}/send/m.room.message/apres-fermeture",
        headers={"Authorization": f"Bearer {paul.client.access_token}"},
        json={"msgtype": "m.text", "body": "!doc liste"})
    assert refused.status_code == 403  # no longer a member: the bot never sees the command


async def test_the_bot_accepts_an_invitation_from_a_partner_server(
    federation: Federation, agents_on: AgentsOn, mairie_bots: str
) -> None:
    paul = await agents_on(federation.agglo)("paul")
    room = await create_encrypted_room(paul, access="partenaires", name="Salon de l’agglo")
    await paul.client.room_invite(room, mairie_bots)
    await paul.wait_for_members_including(room, mairie_bots, timeout=60)
