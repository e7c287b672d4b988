"""The scaled profile when its PostgreSQL server restarts under it: a PostgreSQL of its own
(Debian's initdb and pg_ctl, run as the ``postgres`` account, on a free loopback port) so that
restarting it disturbs no other test — messages sent meanwhile arrive once each, and a bot
still answers afterwards, also when the appservice sender's connections are cut just before."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from tests.deploy.test_federation_launcher import _agent, _room_named
from tests.deploy.test_launcher import maillage
from tests.deploy.test_scaled_profile import scaled_stack, send_until_accepted
from tests.harness.matrix import Agent, MatrixTimeout
from tests.harness.servers import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
    runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*runner, *argv], capture_output=True, text=True, timeout=120)


@pytest.fixture
def private_postgres() -> Iterator[tuple[int, Path]]:
    if not (BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {BIN}")
    # Outside pytest's temporary folders (private to root): the postgres account must reach it.
    directory = Path(tempfile.mkdtemp(prefix="maillage-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    made = as_postgres(str(BIN / "initdb"), "-D", str(directory), "-A", "trust", "-U", "postgres", "-E", "UTF8")
    assert made.returncode == 0, made.stderr
    port = free_port()
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
    started = as_postgres(str(BIN / "pg_ctl"), "-D", str(directory), "-o", options, "-l",
                          str(directory / "journal"), "-w", "start")
    assert started.returncode == 0, started.stderr + (directory / "journal").read_text()
    yield port, directory
    as_postgres(str(BIN / "pg_ctl"), "-D", str(directory), "-m", "immediate", "-w", "stop")
    shutil.rmtree(directory, ignore_errors=True)


CUT_ROUNDS = 4
# A trigger's way to make its statement meet a dead connection, as after a restart.
CUT_OWN_CONNECTION = "PERFORM pg_terminate_backend(pg_backend_pid());"


@dataclass(frozen=True)
class Stack:
    """What a failing round reports: where the command stopped on its way to the bot."""

    port: int
    data_dir: Path
    prefix: str  # its databases' (« <prefix>_synapse », « <prefix>_bots »…)

    async def answered(self, agent: Agent, room: str, command: str, expected: str) -> None:
        since = len(agent.received)
        await agent.send_text(room, command)
        try:
            answer = await agent.wait_for_text(room, lambda m: m.sender == "@agenda:localhost", since=since,
                                               timeout=120)
        except MatrixTimeout as timeout:
            raise AssertionError(f"« {command} » not answered; {self.diagnosis()}") from timeout
        assert answer.body.startswith(expected), answer.body

    def fail_once(self, part: str, table: str, failure: str) -> None:
        """The next write into ``table`` of the stack's ``part`` database fails with ``failure``,
        the ones after pass (a sequence counts: it is not undone with the failed write)."""
        name = f"essai_echec_{table}"
        with psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                              dbname=f"{self.prefix}_{part}") as db, db.cursor() as cursor:
            cursor.execute(f"""
                DROP TRIGGER IF EXISTS {name} ON {table};
                DROP SEQUENCE IF EXISTS {name};
                CREATE SEQUENCE {name};
                CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$
                BEGIN
                    IF nextval('{name}') = 1 THEN {failure} END IF;
                    RETURN NEW;
                END $$ LANGUAGE plpgsql;
                CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table}
                    FOR EACH ROW EXECUTE FUNCTION {name}();""")

    def diagnosis(self) -> str:
        with psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                              dbname=f"{self.prefix}_synapse") as db, db.cursor() as cursor:
            cursor.execute("SELECT (SELECT stream_ordering FROM appservice_stream_position),"
                           " (SELECT MAX(stream_ordering) FROM events),"
                           " (SELECT string_agg(as_id || '=' || state, ',') FROM application_services_state),"
                           " (SELECT COUNT(*) FROM application_services_txns)")
            handed, newest, states, stored = cursor.fetchone() or (None, None, None, None)
        log = (self.data_dir / "logs" / "synapse-appservice_pousse.log").read_text(errors="replace")
        seen = {line: log.count(line) for line in (
            "Error creating appservice transaction", "Error starting AS recoverer", "AS request failed",
            "Scheduling retries", "were not handed", "never sent", "trying again in", "is still at event")}
        bots = (self.data_dir / "logs" / "bots.log").read_text(errors="replace")
        return (f"appservice position {handed} of {newest}, states {states}, {stored} transactions stored;"
                f" sender's log: {seen}; bots' log: {bots.count('not stored')} refused,"
                f" {bots.count('not handed out')} not handed out")


def cut_connections(port: int, database: str, application: str) -> int:
    """Ends the server side of a process's connections, as PostgreSQL does on a failover."""
    with psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres") as db, \
            db.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                       " WHERE datname = %s AND application_name = %s", (database, application))
        return int((cursor.fetchone() or [0])[0])


@pytest.mark.slow
async def test_postgresql_restarted_under_the_scaled_stack_loses_no_message(
        tmp_path: Path, private_postgres: tuple[int, Path]) -> None:
    port, directory = private_postgres
    data_dir = tmp_path / "departement"
    stack = Stack(port, data_dir, prefix="essai_redemarrage")
    ports = scaled_stack(data_dir, stack.prefix, postgresql=f'"postgresql://postgres@127.0.0.1:{port}"')
    try:
        started = maillage(data_dir, "up", "--profile", "scaled", "--detach", timeout=600)
        assert started.returncode == 0, started.stdout + started.stderr
        homeserver = f"http://127.0.0.1:{ports['port_synapse']}"
        accounts = data_dir / "demo" / "comptes.json"
        claire = await _agent(homeserver, accounts, "claire.martin", tmp_path / "c")
        thomas = await _agent(homeserver, accounts, "thomas.bernard", tmp_path / "t")
        try:
            team = _room_named(claire, "Direction générale — équipe")
            await claire.send_text(team, "Avant le redémarrage.")
            await thomas.wait_for_text(team, "Avant le redémarrage.", timeout=60)

            restarted = as_postgres(str(BIN / "pg_ctl"), "-D", str(directory), "-m", "fast", "-w", "restart",
                                    "-l", str(directory / "journal"),  # else the server keeps our pipe open
                                    "-o", f"-p {port} -k {directory} -c listen_addresses=127.0.0.1")
            assert restarted.returncode == 0, restarted.stderr
            sent = [f"Après le redémarrage — {i}" for i in range(3)]
            for body in sent:
                await send_until_accepted(claire, team, body)
            for body in sent:
                await thomas.wait_for_text(team, body, timeout=120)
            assert sum(m.body in sent for m in thomas.received) == len(sent)

            await stack.answered(claire, team, "!agenda ajoute Réunion le 3/12/2027 10h", "Ajouté : n°1 — Réunion")

            # The appservice sender's connections cut under it (a failover, an idle-connection
            # killer), then one command and silence. Where the dead connection is met decides what
            # Synapse alone would lose: the hand-out (tried again only at the next event), the
            # transaction's storing (its events dropped), the service marked down (a stored
            # transaction never sent). Several rounds meet several of them; each is answered.
            for number in range(2, 2 + CUT_ROUNDS):
                cut = cut_connections(port, f"{stack.prefix}_synapse", "synapse-appservice_pousse")
                assert cut > 0, "the appservice sender holds no connection"
                await stack.answered(claire, team, f"!agenda ajoute Commission {number} le {number}/12/2027 14h",
                                     f"Ajouté : n°{number} — Commission {number}")

            # The two steps where Synapse alone drops or strands the events, met for certain:
            # its connection dies while it stores the transaction…
            number = 2 + CUT_ROUNDS
            stack.fail_once("synapse", "application_services_txns", CUT_OWN_CONNECTION)
            await stack.answered(claire, team, f"!agenda ajoute Bureau le {number}/12/2027 9h",
                                 f"Ajouté : n°{number} — Bureau")
            # …the bots refuse a transaction (their database away) and marking them down fails.
            stack.fail_once("bots", "maillage_appservice_inbox", "RAISE EXCEPTION 'essai : base indisponible';")
            stack.fail_once("synapse", "application_services_state", "RAISE EXCEPTION 'essai : état non écrit';")
            await stack.answered(claire, team, f"!agenda ajoute Conseil le {number + 1}/12/2027 18h",
                                 f"Ajouté : n°{number + 1} — Conseil")
        finally:
            await claire.close()
            await thomas.close()
    finally:
        maillage(data_dir, "down")
