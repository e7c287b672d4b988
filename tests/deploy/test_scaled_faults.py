"""The scaled profile when its PostgreSQL server restarts under it: a PostgreSQL of its own
(Debian's initdb and pg_ctl, run as the ``postgres`` account, on a free loopback port) so that
restarting it disturbs no other test — messages sent meanwhile arrive once each, and a bot
still answers afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.test_federation_launcher import _agent, _room_named
from tests.deploy.test_launcher import maillage
from tests.deploy.test_scaled_profile import scaled_stack, send_until_accepted
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


@pytest.mark.slow
async def test_postgresql_restarted_under_the_scaled_stack_loses_no_message(
        tmp_path: Path, private_postgres: tuple[int, Path]) -> None:
    port, directory = private_postgres
    data_dir = tmp_path / "departement"
    ports = scaled_stack(data_dir, "essai_redemarrage", postgresql=f'"postgresql://postgres@127.0.0.1:{port}"')
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

            since = len(claire.received)
            await claire.send_text(team, "!agenda ajoute Réunion le 3/12/2027 10h")
            answer = await claire.wait_for_text(team, lambda m: m.sender == "@agenda:localhost", since=since,
                                                timeout=120)
            assert answer.body.startswith("Ajouté : n°1 — Réunion"), answer.body
        finally:
            await claire.close()
            await thomas.close()
    finally:
        maillage(data_dir, "down")
