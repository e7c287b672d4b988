"""The harness itself: two agents exchange encrypted messages on a real Synapse, none missed."""

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


async def test_an_agent_back_after_a_busy_moment_sees_every_message(agents: AgentFactory) -> None:
    """More messages than a sync gives at once (10) arrive while an agent does not sync: it
    fetches the ones in between, as Element does (tests count every answer of the bots)."""
    claire = await agents("claire")
    karim = await agents("karim")
    room = await create_encrypted_room(claire, karim)
    await claire.send_text(room, "premier")
    await karim.wait_for_text(room, "premier")

    await karim.pause_syncing()
    for number in range(25):
        await claire.send_text(room, f"message {number}")
    karim.resume_syncing()
    await karim.wait_for_text(room, "message 24")

    seen = [m.body for m in karim.received if m.room_id == room and m.body.startswith("message ")]
    assert seen == [f"message {number}" for number in range(25)]
    assert karim.client.fetched_after_gaps >= 15  # 0 to 14: the sync after the pause gave 15 to 24
