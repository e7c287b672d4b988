from __future__ import annotations

from collections.abc import Callable

from tests.harness.federation import Federation, Homeserver
from tests.harness.matrix import AgentFactory, create_encrypted_room


async def test_smoke(federation: Federation, agents_on: Callable[[Homeserver], AgentFactory]) -> None:
    claire = await agents_on(federation.mairie)("claire")
    paul = await agents_on(federation.agglo)("paul")
    room = await create_encrypted_room(claire, paul, access="partenaires")
    await claire.send_text(room, "Bonjour l'agglo")
    message = await paul.wait_for_text(room, "Bonjour l'agglo")
    assert message.encrypted
