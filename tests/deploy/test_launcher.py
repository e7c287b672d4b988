"""`maillage up / status / down` as an admin runs them: through the real command."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import smtplib
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import caldav.davclient
import pytest
from webdav3.client import Client as WebDavClient

from maillage.deploy.provisioning import DEMO_AGENTS
from tests.bots.test_documents import post_file
from tests.harness.matrix import Received, login_agent, restore_agent
from tests.harness.office import pdf_with_text
from tests.harness.servers import SERVER_LOGS, free_port


def maillage(data_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maillage", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "MAILLAGE_LANG": "fr"},
    )


def init_stack(data_dir: Path, *, demo: bool = True) -> dict[str, int]:
    """`maillage init`, then the generated file's ports moved to free ones."""
    result = maillage(data_dir, "init", *(["--demo"] if demo else []))
    assert result.returncode == 0, result.stderr
    ports = {"port_synapse": free_port(), "port_caldav": free_port(), "port_webdav": free_port(),
             "port_sante": free_port(), "port": free_port(), "port_oidc_dev": free_port(),
             "port_smtp": free_port(), "port_lmtp": free_port()}
    path = data_dir / "maillage.toml"
    text = path.read_text()
    for key, port in ports.items():  # « port » alone is the portal's (8100); smtp's and federation's stay
        value = "8100" if key == "port" else r"\d+"
        text = re.sub(rf"^{key} = {value}$", f"{key} = {port}", text, count=1, flags=re.M)  # the first: [bots]'s
    ports["courriel_sante"] = free_port()
    head, _, mail = text.partition("[courriel]")
    text = head + "[courriel]" + re.sub(r"^port_sante = \d+$", f"port_sante = {ports['courriel_sante']}", mail,
                                        count=1, flags=re.M)
    path.write_text(text)
    for name in ("synapse", "caldav", "webdav", "bots", "courriel", "portail", "idp-dev", "maillage"):
        SERVER_LOGS.append(data_dir / "logs" / f"{name}.log")
    return ports


@pytest.mark.slow
async def test_quick_start_two_demo_agents_exchange_an_encrypted_message(stack_dir: Path) -> None:
    ports = init_stack(stack_dir)

    started = maillage(stack_dir, "up", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "Maillage est prêt" in started.stdout
    assert f"http://localhost:{ports['port_synapse']}/" in started.stdout
    assert "Nom du serveur Matrix : localhost" in started.stdout
    accounts = {a["user_id"]: a for a in json.loads((stack_dir / "demo" / "comptes.json").read_text())}
    assert len(accounts) == len(DEMO_AGENTS)
    for account in accounts.values():  # the passwords are shown to the person who started it
        assert account["password"] in started.stdout
    assert not any(a["password"] in (stack_dir / "logs" / "maillage.log").read_text()
                   for a in accounts.values()), "a demo password leaked into the log"
    # The portal, and its administrator's first password at the development provider.
    assert f"Portail d’administration : http://localhost:{ports['port']}/" in started.stdout
    admins = json.loads((stack_dir / "oidc-dev" / "administrateurs.json").read_text())
    assert admins["dsi@bourg-vallon.example"] in started.stdout
    assert oct((stack_dir / "oidc-dev" / "administrateurs.json").stat().st_mode & 0o777) == "0o600"
    assert admins["dsi@bourg-vallon.example"] not in (stack_dir / "logs" / "maillage.log").read_text()

    again = maillage(stack_dir, "up", "--detach")
    assert again.returncode == 3
    assert "tourne déjà" in again.stdout

    status = maillage(stack_dir, "status", "--json")
    report = json.loads(status.stdout)
    assert status.returncode == 0 and report["sain"]
    assert {s["nom"]: s["etat"] for s in report["services"]} == {
        "idp-dev": "ok", "synapse": "ok", "caldav": "ok", "webdav": "ok", "bots": "ok", "courriel": "ok",
        "portail": "ok"}

    homeserver = f"http://127.0.0.1:{ports['port_synapse']}"
    claire_id, thomas_id = "@claire.martin:localhost", "@thomas.bernard:localhost"
    claire = await login_agent(homeserver, claire_id, accounts[claire_id]["password"], stack_dir / "nio-c")
    thomas = await login_agent(homeserver, thomas_id, accounts[thomas_id]["password"], stack_dir / "nio-t")
    try:
        team = next(room_id for room_id, room in claire.client.rooms.items()
                    if room.display_name == "Direction générale — équipe")
        assert team in thomas.client.rooms
        await claire.send_text(team, "Réunion de direction jeudi à 14 h, salle du conseil.")
        message = await thomas.wait_for_text(team, "Réunion de direction jeudi à 14 h, salle du conseil.")
        assert message.encrypted and message.sender == claire_id

        # The demo's mailbox: an email to urbanisme@localhost arrives in Urbanisme's team room.
        urbanisme = next(room_id for room_id, room in claire.client.rooms.items()
                         if room.display_name == "Urbanisme — équipe")
        citizen = EmailMessage()
        citizen["From"], citizen["To"], citizen["Subject"] = "Luc Perrin <luc@exemple.fr>", "urbanisme@localhost", \
            "Demande de rendez-vous"
        citizen.set_content("Bonjour, je souhaite un rendez-vous pour mon permis.")

        def send_email() -> None:
            with smtplib.SMTP("127.0.0.1", ports["port_smtp"], timeout=60) as outside:
                outside.sendmail("luc@exemple.fr", ["urbanisme@localhost"], citizen.as_bytes(policy=SMTP_POLICY))

        await asyncio.to_thread(send_email)
        arrived = await claire.wait_for_text(urbanisme, lambda m: "rendez-vous pour mon permis" in m.body, timeout=90)
        assert arrived.sender == "@_mail_luc=40exemple.fr:localhost" and arrived.encrypted

        # A newcomer posts a PDF in a demo room and finds it in the WebDAV folder.
        pdf = b"%PDF-1.7\n" + os.urandom(10_000)
        since = len(claire.received)
        await post_file(claire, team, pdf, "Compte rendu CODIR.pdf")
        filed_note = await claire.wait_for_text(
            team, lambda m: m.sender == "@documents:localhost" and "Rangé dans" in m.body, since=since, timeout=90)
        path = filed_note.body.split("« ", 1)[1].split(" »", 1)[0]
        assert path.startswith("dg/equipe/") and path.endswith("_dg_compte-rendu-codir.pdf")
        secrets_text = (stack_dir / "secrets" / "secrets.toml").read_text()
        dav_password = re.search(r'^dav_password = "(.+)"$', secrets_text, re.M)
        assert dav_password
        dav = WebDavClient({"webdav_hostname": f"http://127.0.0.1:{ports['port_webdav']}/",
                            "webdav_login": "maillage", "webdav_password": dav_password[1]})
        stored = io.BytesIO()
        dav.download_from(stored, path)
        assert stored.getvalue() == pdf

        # The service's calendar is bound to its team room: an event added there is on the
        # CalDAV server, where Thunderbird or DAVx5 would read it.
        since = len(claire.received)
        await claire.send_text(team, "!agenda ajoute CODIR le 3/12/2027 10h salle du conseil")
        added = await claire.wait_for_text(
            team, lambda m: m.sender == "@agenda:localhost", since=since, timeout=90)
        assert added.body == "Ajouté : n°1 — CODIR · vendredi 3 décembre 2027, 10:00–11:00 · salle du conseil"
        caldav_url = f"http://127.0.0.1:{ports['port_caldav']}/"
        calendars: Any = caldav.davclient.DAVClient(url=caldav_url, username="maillage", password=dav_password[1])
        calendar = calendars.calendar(url=f"{caldav_url}maillage/dg/")
        assert ["SUMMARY:CODIR" in item.data for item in await asyncio.to_thread(calendar.events)] == [True]

        # The cross-service project comes with its task list: the tasks of three services.
        project = next(room_id for room_id, room in claire.client.rooms.items()
                       if room.display_name == "Projet — rénovation de l’école")
        since = len(claire.received)
        await claire.send_text(project, "!tâche liste")
        listing = await claire.wait_for_text(
            project, lambda m: m.sender == "@projets:localhost", since=since, timeout=90)
        assert listing.body.splitlines()[0] == "Tâches ouvertes (4) :"
        assert "n°1 — Valider le programme des travaux · @claire.martin:localhost" in listing.body
        assert "@karim.benali:localhost" in listing.body and "@julien.moreau:localhost" in listing.body

        # The usual circuit of an urbanism order, from its model: the head of service's visa,
        # the DGS's signature, then the archive with its receipt and the seal.
        karim_id = "@karim.benali:localhost"
        karim = await login_agent(homeserver, karim_id, accounts[karim_id]["password"], stack_dir / "nio-k")
        try:
            permits = next(room_id for room_id, room in karim.client.rooms.items()
                           if room.display_name == "Urbanisme — permis de construire")
            assert permits in claire.client.rooms
            since = len(karim.received)
            await post_file(karim, permits, pdf_with_text("Arrêté de permis de construire n°12"), "Arrêté PC 12.pdf")
            filed_pdf = await karim.wait_for_text(
                permits, lambda m: m.sender == "@documents:localhost" and "Rangé dans" in m.body, since=since,
                timeout=90)
            name = filed_pdf.body.split("« ", 1)[1].split(" »", 1)[0].rpartition("/")[2]
            for agent, command, expected in ((karim, f"!circuit lance {name} modèle: arrêté", "lancé"),
                                             (karim, "!circuit vise 1", "Visa enregistré"),
                                             (claire, "!circuit signe 1", "est validé")):
                since = len(agent.received)
                sent = await agent.send_text(permits, command)
                told = await agent.wait_for_text(permits, _reply_to(sent), since=since, timeout=90)
                assert expected in told.body, told.body
            await claire.wait_for_text(permits, lambda m: m.body.startswith("✅ Circuit n°1 "), timeout=90)
            sealed = io.BytesIO()
            dav.download_from(sealed, f"Archives/{datetime.now().year}/urbanisme/{name}")
            assert b"/ByteRange" in sealed.getvalue() and b"/ETSI.CAdES.detached" in sealed.getvalue()
        finally:
            await karim.close()
    finally:
        await claire.close()
        await thomas.close()

    stopped = maillage(stack_dir, "down")
    assert stopped.returncode == 0 and "arrêté" in stopped.stdout
    after = maillage(stack_dir, "status")
    assert after.returncode == 1 and "n’est pas démarré" in after.stdout

    # A second start keeps everything: accounts, passwords, rooms, history; no new demo.
    restarted = maillage(stack_dir, "up", "--detach")
    assert restarted.returncode == 0, restarted.stdout
    assert "Création de la collectivité de démonstration" not in restarted.stdout
    # Thomas's client reopens with its device and keys: the history is still there and readable.
    thomas = await restore_agent(homeserver, thomas, stack_dir / "nio-t")
    try:
        history = await thomas.client.room_messages(team, start="", limit=20)
        bodies = [getattr(event, "body", None) for event in history.chunk]
        assert "Réunion de direction jeudi à 14 h, salle du conseil." in bodies
    finally:
        await thomas.close()


def _reply_to(event_id: str) -> Callable[[Received], bool]:
    return lambda message: message.reply_to == event_id


def test_a_port_in_use_is_named_and_nothing_starts(stack_dir: Path) -> None:
    ports = init_stack(stack_dir, demo=False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["port_webdav"]))
        squatter.listen()
        result = maillage(stack_dir, "up")
    assert result.returncode == 1
    assert f"Le port {ports['port_webdav']} (Documents (WsgiDAV)) est déjà utilisé" in result.stdout
    assert "reseau.port_webdav" in result.stdout
    assert not (stack_dir / "logs" / "synapse.log").exists(), "nothing may start"


def test_synapse_failing_to_start_shows_its_own_message(stack_dir: Path) -> None:
    init_stack(stack_dir, demo=False)
    assert maillage(stack_dir, "status").returncode == 1  # secrets exist, stack not running
    (stack_dir / "secrets" / "signing.key").write_text("ed25519 a_abcd pas-une-clé\n")
    result = maillage(stack_dir, "up")
    assert result.returncode == 1
    assert "Synapse s’est arrêté de façon inattendue" in result.stdout
    assert "Dernières lignes du journal de synapse" in result.stdout
    assert "Error reading signing_key" in result.stdout  # Synapse's own words
    assert not (stack_dir / "logs" / "caldav.log").exists(), "later services must not start"
    assert maillage(stack_dir, "status").returncode == 1


def test_secret_files_with_wide_permissions_are_fixed_and_reported(stack_dir: Path) -> None:
    ports = init_stack(stack_dir, demo=False)
    secret = stack_dir / "secrets" / "secrets.toml"
    os.chmod(secret, 0o644)
    with socket.socket() as squatter:  # stop right after the checks
        squatter.bind(("127.0.0.1", ports["port_synapse"]))
        result = maillage(stack_dir, "up")
    assert "ramenés à 0600" in result.stdout
    assert oct(secret.stat().st_mode & 0o777) == "0o600"


def test_an_invalid_config_stops_everything_with_the_key_named(stack_dir: Path) -> None:
    init_stack(stack_dir, demo=False)
    path = stack_dir / "maillage.toml"
    path.write_text(path.read_text().replace('nom_serveur = "localhost"', 'nom_serveur = "Mairie de X"'))
    result = maillage(stack_dir, "up")
    assert result.returncode == 2
    assert 'collectivite.nom_serveur = "Mairie de X"' in result.stderr
    assert not (stack_dir / "logs").exists()


def test_an_explicit_config_that_does_not_exist_is_not_created(tmp_path: Path) -> None:
    result = maillage(tmp_path / "absente", "up")
    assert result.returncode == 2
    assert "maillage init" in result.stderr
    assert not (tmp_path / "absente").exists()


@pytest.mark.parametrize(("args", "french", "english"), [
    (("nimportequoi",), "choix impossible : 'nimportequoi' (choisissez parmi 'init'", "invalid choice: 'nimportequoi'"),
    (("restaure",), "maillage restaure : il manque : archive", "the following arguments are required: archive"),
    (("up", "--profile", "bidon"), "argument --profil/--profile : choix impossible : 'bidon'",
     "invalid choice: 'bidon'"),
    (("status", "--en-trop"), "arguments inconnus : --en-trop", "unrecognized arguments: --en-trop"),
])
def test_a_mistyped_command_is_told_in_the_users_language_with_what_to_do(
        tmp_path: Path, args: tuple[str, ...], french: str, english: str) -> None:
    result = maillage(tmp_path / "pile", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert french in result.stderr and "utilisation : maillage" in result.stderr, result.stderr
    assert "Voyez « maillage" in result.stderr and "--help »." in result.stderr
    assert "error" not in result.stderr and "usage:" not in result.stderr
    in_english = subprocess.run([sys.executable, "-m", "maillage", "--data-dir", str(tmp_path / "pile"), *args],
                                capture_output=True, text=True, timeout=60, env={**os.environ, "MAILLAGE_LANG": "en"})
    assert in_english.returncode == 2 and english in in_english.stderr, in_english.stderr
    assert not (tmp_path / "pile").exists()  # nothing made by a command that was not understood


def test_init_refuses_to_overwrite_and_never_prints_a_secret(stack_dir: Path) -> None:
    init_stack(stack_dir, demo=False)
    secrets_text = (stack_dir / "secrets" / "secrets.toml").read_text()
    result = maillage(stack_dir, "init")
    assert result.returncode == 1 and "existe déjà" in result.stderr
    values = re.findall(r'= "([^"]{16,})"', secrets_text)
    assert values and not any(v in result.stdout + result.stderr for v in values)


def test_down_when_nothing_runs_says_so(stack_dir: Path) -> None:
    init_stack(stack_dir, demo=False)
    result = maillage(stack_dir, "down")
    assert result.returncode == 0 and "rien à arrêter" in result.stdout


def test_ctrl_c_stops_a_foreground_stack_cleanly(stack_dir: Path) -> None:
    import signal
    import time

    import psutil

    init_stack(stack_dir, demo=False)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "maillage", "--data-dir", str(stack_dir), "up"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert supervisor.stdout is not None
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = supervisor.stdout.readline()
        lines.append(line)
        if "Maillage est prêt" in line or not line:
            break
    assert "Maillage est prêt" in "".join(lines), "".join(lines)
    children = psutil.Process(supervisor.pid).children(recursive=True)
    assert len({child.pid for child in children if child.ppid() == supervisor.pid}) == 7  # portal, provider, bridge…
    supervisor.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    rest, _ = supervisor.communicate(timeout=90)
    assert supervisor.returncode == 0
    assert "Maillage est arrêté." in rest
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
    assert maillage(stack_dir, "status").returncode == 1
