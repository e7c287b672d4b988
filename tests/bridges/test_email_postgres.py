"""The email bridge on PostgreSQL (production), against the real server on 127.0.0.1:5432:
a message received by SMTP, stored there before its 250, delivered to the room."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from maillage.config import load_config
from tests.bots.test_postgres import postgres_url  # noqa: F401 — the fixture
from tests.bridges.test_email_inbound import DOMAIN, JEAN, mail, room_with_mailbox, smtp_send
from tests.conftest import ServerStack, ServiceProcess
from tests.harness.matrix import AgentFactory

pytestmark = pytest.mark.usefixtures("in_french")


async def test_the_bridge_runs_on_postgresql(synapse: ServerStack, bridge: ServiceProcess, postgres_url: str,  # noqa: F811
                                             agents: AgentFactory) -> None:
    source = synapse.config.source
    variant = source.with_name("maillage-courriel-postgresql.toml")
    variant.write_text(source.read_text().replace("[courriel]", f'[courriel]\nbase_de_donnees = "{postgres_url}"'))
    bridge.stop()
    try:
        bridge.start(load_config(variant))
        address = f"pg-{uuid.uuid4().hex[:6]}"
        owner, room = await room_with_mailbox(agents, synapse, "Sur PostgreSQL", address)
        message = mail("Stocké dans PostgreSQL", "Bonjour depuis la production.", to=f"{address}@{DOMAIN}")
        await asyncio.to_thread(smtp_send, synapse, message, "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])
        shown = await owner.wait_for_text(room, lambda m: m.sender == JEAN, timeout=90)
        assert "Bonjour depuis la production." in shown.body
        connection = await asyncpg.connect(postgres_url)
        try:
            rooms = await connection.fetchval("SELECT room_id FROM courriel_adresse WHERE adresse=$1", address)
            delivered = await connection.fetchval("SELECT etat FROM courriel_entrant WHERE adresse=$1", address)
            seen = await connection.fetchval("SELECT event_id FROM courriel_message WHERE room_id=$1", room)
        finally:
            await connection.close()
        assert (rooms, delivered, seen) == (room, "livre", shown.event_id)
    finally:
        bridge.stop()
        bridge.start()
