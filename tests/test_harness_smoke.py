"""The harness itself: two agents exchange an encrypted message on a real Synapse."""

from __future__ import annotations

from tests.harness.matrix import AgentFactory, create_encrypted_room


async def test_two_agents_exchange_an_encrypted_message(agents: AgentFactory) -> None:
    claire = await agents("claire")
    karim = await agents("karim")
    room = await create_encrypted_room(claire, karim)

    await claire.send_text(room, "Bonjour Karim, le dossier Dupont est complet.")
    message = await karim.wait_for_text(room, "Bonjour Karim, le dossier Dupont est complet.")

    assert message.sender == claire.user_id
    assert message.encrypted, "a private room must be end-to-end encrypted by default"
