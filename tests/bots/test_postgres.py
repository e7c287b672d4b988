"""The same bot code on PostgreSQL (production), against the real server on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import asyncpg
import pytest

from maillage.config import load_config
from tests.bots.test_runtime import _bot_answer, _room_with_bot, documents_id
from tests.conftest import IN_CI, BotProcess, ServerStack
from tests.harness.matrix import AgentFactory

POSTGRES = os.environ.get("MAILLAGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"maillage_bots_{secrets.token_hex(4)}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if IN_CI:
            raise  # CI always has PostgreSQL: a failure here is a failure
        pytest.skip(f"PostgreSQL unavailable at {POSTGRES} ({exc}); CI runs this test")
    yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_the_bots_run_on_postgresql(
    synapse: ServerStack, bot_process: BotProcess, postgres_url: str, agents: AgentFactory
) -> None:
    source = synapse.config.source
    variant = source.with_name("maillage-postgresql.toml")
    variant.write_text(source.read_text().replace("[bots]", f'[bots]\nbase_de_donnees = "{postgres_url}"'))
    bot_process.stop()
    try:
        bot_process.start(load_config(variant))
        owner, room = await _room_with_bot(agents, synapse, "Sur PostgreSQL")
        answer = await _bot_answer(owner, room, synapse, "!aide")
        assert "!doc lier <dossier>" in answer

        connection = await asyncpg.connect(postgres_url)
        try:
            handled = await connection.fetchval(
                "SELECT count(*) FROM maillage_handled_event WHERE user_id=$1", documents_id(synapse))
            versions = await connection.fetchval("SELECT max(version) FROM maillage_bots_version")
        finally:
            await connection.close()
        assert handled >= 1 and versions >= 3

        bot_process.stop()  # restarted on PostgreSQL: the device and its keys are kept
        bot_process.start(load_config(variant))
        assert "!doc lier <dossier>" in await _bot_answer(owner, room, synapse, "!help")
    finally:
        bot_process.stop()
        variant.unlink(missing_ok=True)
