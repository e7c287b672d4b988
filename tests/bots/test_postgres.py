"""The same bot code on PostgreSQL (production), against the real server on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import pytest

from maillage.config import Config, load_config
from tests.bots.test_runtime import _bot_answer, _room_with_bot, documents_id
from tests.conftest import IN_CI, BotProcess, ServerStack
from tests.harness.matrix import Agent, AgentFactory, Received

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


@pytest.fixture
def bots_on_postgresql(synapse: ServerStack, bot_process: BotProcess, postgres_url: str) -> Iterator[Config]:
    """The bots restarted on a database of their own in PostgreSQL; their configuration."""
    source = synapse.config.source
    variant = source.with_name(f"maillage-{postgres_url.rsplit('/', 1)[1]}.toml")
    variant.write_text(source.read_text().replace("[bots]", f'[bots]\nbase_de_donnees = "{postgres_url}"'))
    bot_process.stop()
    try:
        config = load_config(variant)
        bot_process.start(config)
        yield config
    finally:
        bot_process.stop()
        variant.unlink(missing_ok=True)


async def test_the_bots_run_on_postgresql(
    synapse: ServerStack, bot_process: BotProcess, bots_on_postgresql: Config, postgres_url: str,
    agents: AgentFactory
) -> None:
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
    bot_process.start(bots_on_postgresql)
    assert "!doc lier <dossier>" in await _bot_answer(owner, room, synapse, "!help")


def _restart_postgresql() -> None:
    """The server on 127.0.0.1:5432 restarted as an administrator would (fast: connections cut)."""
    import shutil
    import subprocess

    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not clusters or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        if IN_CI:
            raise AssertionError("CI must be able to restart PostgreSQL (pg_ctlcluster as root)")
        pytest.skip("PostgreSQL cannot be restarted here (pg_ctlcluster as root); CI runs this test")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1], "main", "restart", "-m", "fast"],
                   check=True, capture_output=True, timeout=120)


async def test_postgresql_restarted_under_the_bots_loses_no_command(
    synapse: ServerStack, bots_on_postgresql: Config, postgres_url: str, agents: AgentFactory
) -> None:
    owner, room = await _room_with_bot(agents, synapse, "PostgreSQL redémarré")
    await _bot_answer(owner, room, synapse, "!aide")
    words = [f"pg-{index:02d}" for index in range(30)]

    async def send() -> None:
        for word in words:
            await owner.send_text(room, f"!doc {word}")
            await asyncio.sleep(0.2)

    sending = asyncio.create_task(send())
    await asyncio.sleep(1.5)
    await asyncio.to_thread(_restart_postgresql)
    await sending
    for word in words:
        await owner.wait_for_text(room, answer_about(documents_id(synapse), word), timeout=120)
    await asyncio.sleep(5)
    replies = [m.body for m in owner.received if m.room_id == room and m.sender == documents_id(synapse)]
    assert all(sum(f"« {word} »" in body for body in replies) == 1 for word in words), replies


def answer_about(bot: str, word: str) -> Callable[[Received], bool]:
    """The bot's answer quoting ``word``."""
    return lambda message: message.sender == bot and f"« {word} »" in message.body


async def test_a_validation_circuit_runs_on_postgresql(
    synapse: ServerStack, webdav: str, bots_on_postgresql: Config, postgres_url: str, agents: AgentFactory
) -> None:
    from tests.bots.test_circuits import answer, circuit_room, filed_pdf, number_of

    owner, room, people = await circuit_room(agents, synapse, "pg/arretes", "chef", "maire")
    chef, maire = people.values()
    path, _, _ = await filed_pdf(owner, room, synapse, "Arrêté sur PostgreSQL")
    number = number_of(await answer(owner, room, synapse, f"!circuit lance {path.rpartition('/')[2]} "
                                                          f"visa: {chef.user_id}, signature: {maire.user_id}"))
    assert "Visa enregistré" in await answer(chef, room, synapse, f"!circuit vise {number}")
    assert "est validé" in await answer(maire, room, synapse, f"!circuit signe {number}")
    await owner.wait_for_text(room, lambda m: m.body.startswith(f"✅ Circuit n°{number} "), timeout=60)
    connection = await asyncpg.connect(postgres_url)
    try:
        actions = [row["action"] for row in await connection.fetch(
            "SELECT action FROM circuit_transition WHERE circuit_id=$1 ORDER BY seq", number)]
        state = await connection.fetchval("SELECT state FROM circuit WHERE id=$1", number)
    finally:
        await connection.close()
    assert actions == ["lance", "vise", "signe"] and state == "termine"


# The connection that stores a room's key is cut in the middle of the INSERT, once: the
# server itself ends the backend (as a PostgreSQL restart does), and answers again at once.
CUT_THE_KEY_INSERT = """
CREATE SEQUENCE essai_coupure;
CREATE FUNCTION essai_couper_une_fois() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.room_id = '{room}' AND nextval('essai_coupure') = 1 THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(5);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER essai_coupure BEFORE INSERT ON crypto_megolm_inbound_session
    FOR EACH ROW EXECUTE FUNCTION essai_couper_une_fois();
"""


async def test_a_room_key_whose_storing_is_cut_is_stored_when_read_again(
    synapse: ServerStack, bots_on_postgresql: Config, postgres_url: str, agents: AgentFactory
) -> None:
    """The key of a room arrives as PostgreSQL restarts: the bot still reads the room.

    The cut comes after the key's Olm message was decrypted (the Olm session has moved on) and
    before the key is stored: unless every change the message made is undone together and the
    message read again, the key is lost and the bot never reads that agent's messages.
    """
    owner, room = await _room_with_bot(agents, synapse, "Clé coupée")
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(CUT_THE_KEY_INSERT.replace("{room}", room))
        assert "!doc lier <dossier>" in await _bot_answer(owner, room, synapse, "!aide")
        assert await connection.fetchval("SELECT last_value FROM essai_coupure") >= 2  # cut, then stored
    finally:
        await connection.close()


# From the moment it is armed, every write of a crypto account fails, as if the process had
# died at that very write; the sequence tells the test it happened.
REFUSE_ACCOUNT_WRITES = """
CREATE SEQUENCE essai_compte;
CREATE FUNCTION essai_refuser_compte() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('essai_compte');
    RAISE EXCEPTION 'essai : le processus meurt ici';
END $$;
CREATE TRIGGER essai_compte BEFORE INSERT OR UPDATE ON crypto_account
    FOR EACH ROW EXECUTE FUNCTION essai_refuser_compte();
"""


async def _claim_every_key(agent: Agent, user_id: str, device_id: str) -> int:
    """Take every one-time key the homeserver holds for that device, as that many agents
    opening an Olm session with it would; how many there were."""
    claimed = 0
    async with httpx.AsyncClient(base_url=agent.client.homeserver, timeout=30,
                                 headers={"Authorization": f"Bearer {agent.client.access_token}"}) as http:
        while claimed < 500:
            answer = await http.post("/_matrix/client/v3/keys/claim", json={
                "one_time_keys": {user_id: {device_id: "signed_curve25519"}}})
            keys = answer.raise_for_status().json()["one_time_keys"].get(user_id, {}).get(device_id, {})
            if not keys or any(key.get("fallback") for key in keys.values()):
                return claimed
            claimed += 1
    raise AssertionError(f"{user_id}/{device_id} still has one-time keys after {claimed} claims")


async def test_one_time_keys_uploaded_just_before_a_crash_still_open_sessions(
    synapse: ServerStack, bot_process: BotProcess, bots_on_postgresql: Config, postgres_url: str,
    agents: AgentFactory
) -> None:
    """The bot, out of one-time keys, makes new ones and dies before its account is written.

    If the keys were uploaded before the account holding their private halves was stored, the
    homeserver would hand them to the next agents, whose room keys the bot could never read:
    that agent's messages would go unanswered for good."""
    bot = documents_id(synapse)
    connection = await asyncpg.connect(postgres_url)
    try:
        device = await connection.fetchval("SELECT device_id FROM maillage_bot_account WHERE user_id=$1", bot)
        taker = await agents("preneur")
        assert await _claim_every_key(taker, bot, device) > 0
        await connection.execute(REFUSE_ACCOUNT_WRITES)
        deadline = time.monotonic() + 90  # the bot hears of its empty stock at its next sync
        while not await connection.fetchval("SELECT is_called FROM essai_compte"):
            assert time.monotonic() < deadline, "the bot never made new one-time keys"
            await asyncio.sleep(0.2)
        bot_process.kill()
        await connection.execute("DROP TRIGGER essai_compte ON crypto_account")
    finally:
        await connection.close()
    bot_process.start(bots_on_postgresql)

    owner, room = await _room_with_bot(agents, synapse, "Clés neuves")  # claims one of its keys
    assert "!doc lier <dossier>" in await _bot_answer(owner, room, synapse, "!aide")
