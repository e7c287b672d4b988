"""The scaled profile (issue 14): the same collectivité config on PostgreSQL and Redis (the
servers running on this machine and CI's, 127.0.0.1:5432 and :6379) with Synapse's workers
behind nginx — the files checked by Synapse's and nginx's own checks, the servers it needs
named when they do not answer, and the end-to-end core through ``maillage up --profile
scaled``: messages, a bot command, an email, a federation exchange, workers killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
import smtplib
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg2
import pytest

from maillage.config import load_config, with_profile
from maillage.deploy.neighbour import SHARED_ROOM
from maillage.deploy.provisioning import ensure_admin_token
from maillage.deploy.scaled import redis_command
from maillage.homeserver.render import render_synapse
from maillage.homeserver.workers import routing_table, workers_of
from maillage.secretstore import ensure_secrets
from tests.bots.test_pushed import pushed_transactions
from tests.conftest import IN_CI
from tests.deploy.test_federation_launcher import _agent, _room_named
from tests.deploy.test_launcher import init_stack, maillage
from tests.harness.matrix import restore_agent
from tests.harness.servers import SERVER_LOGS, free_port, free_port_range
from tests.homeserver.test_access_rules import is_member


def _postgres_available() -> str | None:
    try:
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3).close()
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A database prefix of its own on the PostgreSQL server; its databases dropped after."""
    problem = _postgres_available()
    if problem:
        if IN_CI:
            raise AssertionError(f"CI always has PostgreSQL at 127.0.0.1:5432: {problem}")
        pytest.skip(f"PostgreSQL unavailable at 127.0.0.1:5432 ({problem}); CI runs this test")
    prefix = f"essai_{secrets.token_hex(4)}"
    yield prefix
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        for part in ("synapse", "bots", "courriel", "portail"):
            cursor.execute(f'DROP DATABASE IF EXISTS "{prefix}_{part}" WITH (FORCE)')
    connection.close()


def emptied_redis_database() -> int:
    """A Redis database (1–15) emptied for a new stack: what an earlier stack's Synapse cached
    there (a state group's joined servers, by number) would mislead this one's."""
    base = random.randint(1, 15)
    with socket.create_connection(("127.0.0.1", 6379), timeout=10) as conn:
        conn.sendall(redis_command("SELECT", str(base)) + redis_command("FLUSHDB"))
        answers = b""
        while answers.count(b"\r\n") < 2:
            answers += conn.recv(512) or b"\r\n\r\n"
    assert answers == b"+OK\r\n+OK\r\n", answers
    return base


def set_base_redis(config_file: Path, base: int) -> None:
    config_file.write_text(re.sub(r"^base_redis = .*$", f"base_redis = {base}", config_file.read_text(), count=1,
                                  flags=re.M))


def set_scaled_settings(config_file: Path, prefix: str, **deploiement: str) -> int:
    """Databases under ``prefix`` and internal ports of their own in a stack's maillage.toml
    (other ``[deploiement]`` keys as given, raw TOML values): the internal base port."""
    internal = free_port_range(32)
    base = emptied_redis_database()
    settings = {"prefixe_bases": f'"{prefix}"', "port_interne": str(internal), "base_redis": str(base),
                **deploiement}
    text = config_file.read_text()
    for key, value in settings.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    config_file.write_text(text)
    return internal


def scaled_stack(data_dir: Path, prefix: str, **deploiement: str) -> dict[str, int]:
    ports = init_stack(data_dir)
    internal = set_scaled_settings(data_dir / "maillage.toml", prefix, **deploiement)
    for name in ("synapse-evenements", "synapse-federation_envoi", "synapse-medias", "synapse-appservice_pousse",
                 "synapse-lecteur1", "synapse-lecteur_robots", "routeur"):
        SERVER_LOGS.append(data_dir / "logs" / f"{name}.log")
    return ports | {"port_interne": internal}


def test_the_rendered_files_are_what_synapse_and_nginx_accept(tmp_path: Path) -> None:
    from synapse.config.homeserver import HomeServerConfig

    data_dir = tmp_path / "pile"
    scaled_stack(data_dir, "essai_rendu")
    config = with_profile(load_config(data_dir / "maillage.toml"), "scaled")
    rendered = render_synapse(config, ensure_secrets(data_dir))
    main = HomeServerConfig.load_config("Synapse", ["--config-path", str(rendered.config_file)])
    assert main.database.databases[0].config["name"] == "psycopg2"
    assert main.database.databases[0].config["args"]["database"] == "essai_rendu_synapse"
    assert main.redis.redis_enabled and main.worker.writers.events == ["evenements"]
    assert main.redis.redis_dbid == int(re.findall(r"^base_redis = (\d+)$", (data_dir / "maillage.toml").read_text(),
                                                   re.M)[0]) > 0  # its own database
    assert main.worker.federation_shard_config.instances == ["federation_envoi"]
    assert {name: getattr(location, "host", None) for name, location in main.worker.instance_map.items()} == {
        "main": "127.0.0.1", "evenements": "127.0.0.1"}  # replication on loopback only
    for worker in workers_of(config):
        loaded = HomeServerConfig.load_config("Synapse", [
            "--config-path", str(rendered.config_file),
            "--config-path", str(rendered.directory / "workers" / f"{worker.name}.yaml")])
        assert loaded.worker.worker_name == worker.name
        # each worker with a pool of its own, small: one stack fits PostgreSQL's default 100 connections
        assert loaded.database.databases[0].config["args"]["cp_max"] <= 8
        assert all(getattr(listener, "bind_addresses", None) == ["127.0.0.1"]
                   for listener in loaded.worker.worker_listeners)

    from maillage.homeserver.workers import render_nginx

    conf = render_nginx(config, data_dir / "routeur", data_dir / "logs")
    checked = subprocess.run(["/usr/sbin/nginx", "-t", "-p", str(data_dir / "routeur"), "-c", str(conf)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    table = dict(routing_table(config))
    assert table[r"^/_matrix/client/(r0|v3)/sync$"] == "lecteurs"
    assert "lecteur_robots" not in table.values()  # agents never reach the bots' reader…
    bots_table = dict(routing_table(config, for_bots=True))
    assert bots_table[r"^/_matrix/client/(r0|v3)/sync$"] == "lecteur_robots"  # …and the bots reach only it
    assert "lecteurs" not in bots_table.values()
    assert config.bots_homeserver_url == f"http://127.0.0.1:{config.deploiement.port_robots}"
    assert table[r"^/_matrix/media/"] == "medias"
    assert oct(rendered.config_file.stat().st_mode & 0o777) == "0o600"


def test_postgresql_or_redis_not_answering_is_named_and_nothing_starts(stack_dir: Path, postgres: str) -> None:
    closed = free_port()
    scaled_stack(stack_dir, postgres, postgresql=f'"postgresql://postgres@127.0.0.1:{closed}"')
    refused = maillage(stack_dir, "up", "--profile", "scaled", "--detach")
    assert refused.returncode == 1
    assert f"PostgreSQL ne répond pas à postgresql://postgres@127.0.0.1:{closed}" in refused.stdout, refused.stdout
    assert not (stack_dir / "logs" / "synapse.log").exists()

    path = stack_dir / "maillage.toml"
    path.write_text(re.sub(r"^postgresql = .*$", 'postgresql = "postgresql://postgres@127.0.0.1:5432"',
                           path.read_text(), count=1, flags=re.M)
                    .replace('redis = "redis://127.0.0.1:6379"', f'redis = "redis://127.0.0.1:{closed}"'))
    refused = maillage(stack_dir, "up", "--profile", "scaled", "--detach")
    assert refused.returncode == 1
    assert f"Redis ne répond pas à redis://127.0.0.1:{closed}" in refused.stdout, refused.stdout

    # A Redis with fewer databases than « base_redis » names: said, not a Synapse crash.
    with small_redis(databases=2) as redis_port:
        path.write_text(path.read_text().replace(f'redis = "redis://127.0.0.1:{closed}"',
                                                 f'redis = "redis://127.0.0.1:{redis_port}"'))
        set_base_redis(path, 5)
        refused = maillage(stack_dir, "up", "--profile", "scaled", "--detach")
    assert refused.returncode == 1
    assert f"Redis (redis://127.0.0.1:{redis_port}) n’ouvre pas la base 5" in refused.stdout, refused.stdout
    set_base_redis(path, 16)
    refused = maillage(stack_dir, "up", "--profile", "scaled", "--detach")
    assert refused.returncode == 2 and "deploiement.base_redis" in refused.stdout + refused.stderr
    assert not (stack_dir / "logs" / "synapse.log").exists()

    set_base_redis(path, emptied_redis_database())
    path.write_text(path.read_text().replace(f'redis = "redis://127.0.0.1:{redis_port}"',
                                             'redis = "redis://127.0.0.1:6379"')
                    .replace('postgresql = "postgresql://postgres@127.0.0.1:5432"',
                             'postgresql = "postgresql://postgres:secret@127.0.0.1:5432"'))
    refused = maillage(stack_dir, "up", "--profile", "scaled", "--detach")
    assert refused.returncode == 2 and "deploiement.postgresql" in refused.stdout + refused.stderr
    assert "secrets/secrets.toml" in refused.stdout + refused.stderr
    assert "secret@" not in refused.stdout + refused.stderr  # the password is never repeated

    # More readers than PostgreSQL has connections for: said before anything starts, not as
    # a worker crashing on « too many clients » halfway through the start.
    path.write_text(path.read_text().replace('postgresql = "postgresql://postgres:secret@127.0.0.1:5432"',
                                             'postgresql = "postgresql://postgres@127.0.0.1:5432"')
                    .replace("lecteurs = 1", "lecteurs = 30"))
    refused = maillage(stack_dir, "up", "--profile", "scaled", "--detach")
    assert refused.returncode == 1
    assert "PostgreSQL (postgresql://postgres@127.0.0.1:5432) accepte" in refused.stdout, refused.stdout
    assert "Augmentez max_connections" in refused.stdout
    assert not (stack_dir / "logs" / "synapse.log").exists()


@contextlib.contextmanager
def small_redis(databases: int) -> Iterator[int]:
    """A Redis server of its own with ``databases`` databases, on a free loopback port."""
    if not Path("/usr/bin/redis-server").exists():
        pytest.skip("no redis-server (Debian package redis-server)")
    port = free_port()
    server = subprocess.Popen(["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--databases", str(databases), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def metric(url: str, name: str, having: str = "") -> float:
    """The sum of a Prometheus counter over its labels (those lines with ``having`` in them),
    as a worker exposes it."""
    text = httpx.get(f"{url}/_synapse/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if (line.startswith(name + "{") or line.startswith(name + " ")) and having in line)


@pytest.mark.slow
async def test_the_scaled_profile_runs_the_core_end_to_end(tmp_path: Path, postgres: str) -> None:
    data_dir = tmp_path / "departement"
    ports = scaled_stack(data_dir, postgres)
    federation_port = free_port()
    path = data_dir / "maillage.toml"
    path.write_text(re.sub(r'^nom_serveur = "localhost"$', f'nom_serveur = "localhost:{federation_port}"',
                           path.read_text(), flags=re.M).replace("port = 8448", f"port = {federation_port}"))
    server = f"localhost:{federation_port}"
    try:
        started = maillage(data_dir, "up", "--profile", "scaled", "--with-neighbour", "--detach", timeout=600)
        assert started.returncode == 0, started.stdout + started.stderr
        report = json.loads(maillage(data_dir, "status", "--json").stdout)
        states = {s["nom"]: s["etat"] for s in report["services"]}
        assert report["sain"], states
        assert {"synapse", "synapse-evenements", "synapse-federation_envoi", "synapse-medias",
                "synapse-appservice_pousse", "synapse-lecteur1", "synapse-lecteur_robots", "routeur"} <= set(states)
        config = with_profile(load_config(path), "scaled")
        workers = {w.name: w.url for w in workers_of(config)}
        homeserver = f"http://127.0.0.1:{ports['port_synapse']}"
        accounts = data_dir / "demo" / "comptes.json"
        claire = await _agent(homeserver, accounts, "claire.martin", tmp_path / "c")
        thomas = await _agent(homeserver, accounts, "thomas.bernard", tmp_path / "t")
        neighbour = load_config(data_dir / "voisin" / "maillage.toml")
        helene = await _agent(neighbour.synapse_url, data_dir / "voisin" / "demo" / "comptes.json", "helene.roux",
                              tmp_path / "h")
        try:
            # Messages, through the front door: synced by the reader, written by the persister.
            team = _room_named(claire, "Direction générale — équipe")
            await claire.send_text(team, "Point budget lundi 9 h.")
            heard = await thomas.wait_for_text(team, "Point budget lundi 9 h.", timeout=60)
            assert heard.encrypted and heard.sender == f"@claire.martin:{server}"
            assert metric(workers["lecteur1"], "synapse_http_server_requests_received_total") > 0
            assert metric(workers["evenements"], "synapse_storage_events_persisted_events_total") > 0

            # A bot command, its answer.
            since = len(claire.received)
            await claire.send_text(team, "!agenda ajoute Conseil le 3/12/2027 18h salle du conseil")
            added = await claire.wait_for_text(team, lambda m: m.sender == f"@agenda:{server}", since=since,
                                               timeout=90)
            assert added.body.startswith("Ajouté : n°1 — Conseil"), added.body
            # The bots had it pushed by the appservice sender (the scaled profile's way: a sync
            # walks every room of a bot), and sync their devices' part through their own reader.
            assert pushed_transactions(f"http://127.0.0.1:{config.bots.port_sante}") > 0, "the bots were not pushed"
            assert metric(workers["lecteur_robots"], "synapse_http_server_requests_received_total",
                          'servlet="SyncRestServlet"') > 0

            # An email to the demo mailbox, through the bridge on PostgreSQL.
            citizen = EmailMessage()
            citizen["From"], citizen["To"], citizen["Subject"] = "luc@exemple.fr", "urbanisme@localhost", "Permis"
            citizen.set_content("Où en est mon permis ?")

            def send_email() -> None:
                with smtplib.SMTP("127.0.0.1", ports["port_smtp"], timeout=60) as outside:
                    outside.sendmail("luc@exemple.fr", ["urbanisme@localhost"], citizen.as_bytes(policy=SMTP_POLICY))

            await asyncio.to_thread(send_email)
            urbanisme = _room_named(claire, "Urbanisme — équipe")
            await claire.wait_for_text(urbanisme, lambda m: "Où en est mon permis" in m.body, timeout=90)

            # Federation: both ways with the neighbour (outbound by the federation sender).
            shared = _room_named(claire, SHARED_ROOM)
            await claire.send_text(shared, "Travaux rue des Écoles mardi.")
            await helene.wait_for_text(shared, "Travaux rue des Écoles mardi.", timeout=120)
            await helene.send_text(shared, "Bien reçu, merci.")
            await claire.wait_for_text(shared, "Bien reçu, merci.", timeout=120)
            assert metric(workers["federation_envoi"], "synapse_federation_client_sent_transactions_total") > 0

            # The shared room closed to « interne »: Hélène, the neighbour's, is removed, and the
            # notice saying so is posted once (Synapse runs the access rules' on_new_event in every
            # process; one of them acts).
            admin = await ensure_admin_token(config, ensure_secrets(data_dir))
            closing = len(claire.received)
            async with httpx.AsyncClient(base_url=homeserver, timeout=60) as http:
                closed = await http.put(f"/_matrix/client/v3/rooms/{quote(shared)}/state/fr.maillage.acces/",
                                        headers={"Authorization": f"Bearer {admin}"}, json={"acces": "interne"})
            assert closed.status_code == 200, closed.text
            notice = await claire.wait_for_text(shared, lambda m: "passé en « interne »" in m.body, since=closing,
                                                timeout=60)
            assert helene.user_id in notice.body
            await asyncio.sleep(10)  # time for a second process's notice, were there one
            notices = [m.body for m in claire.received[closing:] if m.room_id == shared and "passé en" in m.body]
            assert notices == [notice.body]
            assert not await is_member(claire, shared, helene.user_id, timeout=2)

            # Workers killed (SIGKILL): started again by the launcher; nothing sent is lost.
            for name in ("synapse-lecteur1", "synapse-evenements"):
                pid = json.loads(maillage(data_dir, "status", "--json").stdout)
                victim = next(s["pid"] for s in pid["services"] if s["nom"] == name)
                os.kill(victim, signal.SIGKILL)
                sent = [f"Pendant l’arrêt de {name} — {i}" for i in range(3)]
                for body in sent:
                    await send_until_accepted(claire, team, body)
                for body in sent:
                    await thomas.wait_for_text(team, body, timeout=120)
                assert sum(m.body in sent for m in thomas.received) == len(sent)  # once each
            restarted = {s["nom"]: s for s in json.loads(maillage(data_dir, "status", "--json").stdout)["services"]}
            assert restarted["synapse-lecteur1"]["redemarrages"] >= 1
            assert restarted["synapse-evenements"]["redemarrages"] >= 1

            # Everything is in PostgreSQL: Synapse's events, the bots', the bridge's and the portal's tables.
            with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=f"{postgres}_synapse") as db, \
                    db.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM events")
                assert (cursor.fetchone() or [0])[0] > 100
            for part, table in (("bots", "maillage_handled_event"), ("courriel", "courriel_entrant"),
                                ("portail", "alembic_version")):
                with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=f"{postgres}_{part}") as db, \
                        db.cursor() as cursor:
                    cursor.execute("SELECT to_regclass(%s)", (table,))
                    assert (cursor.fetchone() or [None])[0] is not None, (part, table)
            # A backup while it runs: PostgreSQL dumped; restored on an empty machine, refused
            # while the databases still hold the running stack's tables, then replaced on request.
            backed_up = maillage(data_dir, "--profil", "scaled", "sauvegarde", "--vers", str(tmp_path / "sauv"))
            assert backed_up.returncode == 0, backed_up.stderr
            archive = next((tmp_path / "sauv").glob("maillage-*.tar"))
            with tarfile.open(archive) as tar:
                assert {f"postgresql/{p}.dump" for p in ("synapse", "bots", "courriel", "portail")} <= set(
                    tar.getnames())
        finally:
            await claire.close()
            await thomas.close()
            await helene.close()
    finally:
        maillage(data_dir, "down")
    target = tmp_path / "nouvelle-machine"
    refused = maillage(target, "restaure", str(archive))
    assert refused.returncode == 1 and "contient déjà des tables" in refused.stderr, refused.stderr
    assert not target.exists()
    restored = maillage(target, "restaure", str(archive), "--ecraser")
    assert restored.returncode == 0, restored.stderr
    assert "up --profile scaled" in restored.stdout
    try:
        again = maillage(target, "up", "--profile", "scaled", "--detach", timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        thomas = await restore_agent(homeserver, thomas, tmp_path / "t")
        history = await thomas.client.room_messages(team, start="", limit=50)
        assert "Point budget lundi 9 h." in [getattr(event, "body", None) for event in history.chunk]
    finally:
        await thomas.close()
        maillage(target, "down")
        maillage(data_dir / "voisin", "down")


async def send_until_accepted(agent: object, room: str, body: str) -> None:
    """As a client does while its server answers 5xx: the same transaction id again until the
    event is accepted (Synapse gives the same event back if the first try went through)."""
    from nio import RoomSendResponse

    client = agent.client  # type: ignore[attr-defined]
    txn = f"essai-{secrets.token_hex(8)}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            answer = await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body},
                                            tx_id=txn, ignore_unverified_devices=True)
        except Exception:
            answer = None
        if isinstance(answer, RoomSendResponse):
            return
        await asyncio.sleep(1)
    raise AssertionError(f"« {body} » never accepted")
