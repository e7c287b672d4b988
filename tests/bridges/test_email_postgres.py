"""The email bridge on PostgreSQL (production), against the real server on 127.0.0.1:5432:
a message received by SMTP, stored there before its 250, delivered to the room; a database
that refuses to store gets the sender a 451 (try again), and nothing is lost."""

from __future__ import annotations

import asyncio
import smtplib
import uuid

import asyncpg
import pytest

from maillage.config import load_config
from tests.bots.test_postgres import postgres_url  # noqa: F401 — the fixture
from tests.bridges.test_email_inbound import DOMAIN, JEAN, mail, room_with_mailbox, smtp_send
from tests.conftest import ServerStack, ServiceProcess
from tests.harness.matrix import AgentFactory

pytestmark = pytest.mark.usefixtures("in_french")


async def refuse_inserts(url: str, refuse: bool) -> None:
    """A trigger that makes every new row fail (superusers are not spared, unlike a REVOKE)."""
    connection = await asyncpg.connect(url)
    try:
        if refuse:
            await connection.execute(
                "CREATE FUNCTION refuser() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'plus de place'; END $$"
                " LANGUAGE plpgsql; CREATE TRIGGER refuser BEFORE INSERT ON courriel_entrant"
                " FOR EACH STATEMENT EXECUTE FUNCTION refuser()")
        else:
            await connection.execute("DROP TRIGGER refuser ON courriel_entrant; DROP FUNCTION refuser()")
    finally:
        await connection.close()


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

        # The database refuses to store (a full disk, a read-only standby): 451, the sending
        # server keeps the message and tries again; once stored it arrives, once.
        await refuse_inserts(postgres_url, True)
        retried = mail("Réessayé plus tard", "Envoyé pendant que la base refusait.", to=f"{address}@{DOMAIN}")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(smtp_send, synapse, retried, "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])
        assert refused.value.smtp_code == 451 and b"4.3.0" in refused.value.smtp_error
        await refuse_inserts(postgres_url, False)
        await asyncio.to_thread(smtp_send, synapse, retried, "jean.dupont@exemple.fr", [f"{address}@{DOMAIN}"])
        await owner.wait_for_text(room, lambda m: m.sender == JEAN and "pendant que la base" in m.body, timeout=90)
        await asyncio.sleep(3)  # a second copy would be here by now
        assert sum("pendant que la base" in m.body for m in owner.received if m.room_id == room) == 1
    finally:
        bridge.stop()
        bridge.start()
