"""``maillage sauvegarde`` and ``maillage restaure`` as an admin runs them: a backup made while
the stack runs brings everything back on an empty data directory; a damaged or truncated
archive, a directory that is not empty, a full disk are refused or reported with nothing
lost; retention keeps the right archives."""

from __future__ import annotations

import asyncio
import io
import json
import re
import resource
import smtplib
import subprocess
import sys
import tarfile
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import caldav.davclient
import pytest
from webdav3.client import Client as WebDavClient

from maillage.deploy.backup import prune
from tests.bots.test_documents import post_file
from tests.deploy.test_launcher import init_stack, maillage
from tests.deploy.test_scaled_profile import postgres, set_scaled_settings  # noqa: F401 — the fixture
from tests.harness.matrix import Received, login_agent, restore_agent


def small_data_dir(data_dir: Path) -> None:
    """A stack's data directory as ``init`` leaves it, with a SQLite database and files."""
    init_stack(data_dir, demo=False)
    import sqlite3

    (data_dir / "bots").mkdir(parents=True)
    with sqlite3.connect(data_dir / "bots" / "bots.db") as db:
        db.execute("CREATE TABLE note (texte TEXT)")
        db.execute("INSERT INTO note VALUES ('Compte rendu du conseil')")
    (data_dir / "webdav" / "fichiers" / "urbanisme").mkdir(parents=True)
    (data_dir / "webdav" / "fichiers" / "urbanisme" / "plan.pdf").write_bytes(b"%PDF-1.7 plan" * 5000)
    (data_dir / "logs").mkdir(exist_ok=True)
    (data_dir / "logs" / "synapse.log").write_text("pas à sauvegarder")


def from_sender(sender: str) -> Callable[[Received], bool]:
    return lambda message: message.sender == sender


def archives(folder: Path) -> list[Path]:
    return sorted(folder.glob("maillage-*.tar"))


def test_a_damaged_truncated_or_misplaced_restore_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = tmp_path / "mairie"
    small_data_dir(source)
    made = maillage(source, "sauvegarde", "--vers", str(tmp_path / "sauvegardes"))
    assert made.returncode == 0, made.stderr
    archive = archives(tmp_path / "sauvegardes")[0]
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "donnees/secrets/secrets.toml" in names and "donnees/bots/bots.db" in names
    assert "donnees/logs/synapse.log" not in names

    # One byte changed in the middle of the PDF: refused, nothing written.
    data = bytearray(archive.read_bytes())
    offset = data.index(b"%PDF-1.7 plan") + 20_000
    data[offset] ^= 0xFF
    damaged = tmp_path / "abimee.tar"
    damaged.write_bytes(bytes(data))
    target = tmp_path / "restauree"
    refused = maillage(target, "restaure", str(damaged))
    assert refused.returncode == 1
    assert "est abîmée (webdav/fichiers/urbanisme/plan.pdf" in refused.stderr, refused.stderr
    assert not target.exists()

    truncated = tmp_path / "tronquee.tar"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    refused = maillage(target, "restaure", str(truncated))
    assert refused.returncode == 1 and "illisible ou tronquée" in refused.stderr, refused.stderr
    assert not target.exists()

    # A member that would land outside the data directory: refused.
    evil = tmp_path / "evasion.tar"
    with tarfile.open(archive) as tar, tarfile.open(evil, "w") as out:
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            if member.name == "MANIFESTE.json":
                assert extracted is not None
                manifest = json.loads(extracted.read())
                manifest["fichiers"]["../evasion"] = {"sha256": "0" * 64, "taille": 1}
                body = json.dumps(manifest).encode()
                member.size = len(body)
                out.addfile(member, io.BytesIO(body))
            else:
                out.addfile(member, extracted)
        info = tarfile.TarInfo("donnees/../evasion")
        info.size = 1
        out.addfile(info, io.BytesIO(b"x"))
    refused = maillage(target, "restaure", str(evil))
    assert refused.returncode == 1 and "abîmée" in refused.stderr, refused.stderr
    assert not (tmp_path / "evasion").exists() and not target.exists()

    # Into a directory that is not empty: refused without --ecraser; with it, the old one kept aside.
    target.mkdir()
    (target / "important.txt").write_text("à garder")
    refused = maillage(target, "restaure", str(archive))
    assert refused.returncode == 1 and "n’est pas vide" in refused.stderr
    assert (target / "important.txt").read_text() == "à garder"
    restored = maillage(target, "restaure", str(archive), "--ecraser")
    assert restored.returncode == 0, restored.stderr
    assert (target / "webdav" / "fichiers" / "urbanisme" / "plan.pdf").read_bytes() == b"%PDF-1.7 plan" * 5000
    import sqlite3

    with sqlite3.connect(target / "bots" / "bots.db") as db:
        assert db.execute("SELECT texte FROM note").fetchall() == [("Compte rendu du conseil",)]
    kept = next(tmp_path.glob("restauree.avant-restauration-*"))
    assert (kept / "important.txt").read_text() == "à garder"
    assert oct((target / "secrets" / "secrets.toml").stat().st_mode & 0o777) == "0o600"


def test_backups_kept_inside_the_data_directory_are_not_backed_up_again(tmp_path: Path) -> None:
    source = tmp_path / "mairie"
    small_data_dir(source)
    for _ in range(2):
        assert maillage(source, "sauvegarde", "--vers", str(source / "archives")).returncode == 0
    with tarfile.open(archives(source / "archives")[-1]) as tar:
        names = tar.getnames()
    assert not [name for name in names if name.startswith("donnees/archives")], names
    assert "donnees/bots/bots.db" in names


def test_a_full_disk_during_a_backup_leaves_the_previous_ones_intact(tmp_path: Path) -> None:
    source = tmp_path / "mairie"
    small_data_dir(source)
    folder = tmp_path / "sauvegardes"
    assert maillage(source, "sauvegarde", "--vers", str(folder)).returncode == 0
    before = {path: path.read_bytes() for path in archives(folder)}
    (source / "webdav" / "fichiers" / "grand.bin").write_bytes(b"\0" * 3_000_000)

    def small_disk() -> None:  # every file this process writes stops at 1 MB, as a full disk would
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    full = subprocess.run([sys.executable, "-m", "maillage", "--data-dir", str(source), "sauvegarde", "--vers",
                           str(folder)], capture_output=True, text=True, timeout=120, preexec_fn=small_disk)
    assert full.returncode == 1
    assert "n’a pas pu être écrite" in full.stderr and "sauvegardes précédentes sont intactes" in full.stderr
    assert {path: path.read_bytes() for path in archives(folder)} == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], list(folder.iterdir())


def test_moving_a_running_stack_to_postgresql_is_refused_and_changes_nothing(
        stack_dir: Path, postgres: str) -> None:  # noqa: F811
    init_stack(stack_dir, demo=False)
    config_file = stack_dir / "maillage.toml"
    text = config_file.read_text().replace('prefixe_bases = "maillage"', f'prefixe_bases = "{postgres}"')
    config_file.write_text(text)
    before = config_file.read_text()
    started = maillage(stack_dir, "up", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    refused = maillage(stack_dir, "migre-postgresql")
    assert refused.returncode == 1
    assert "La pile tourne : arrêtez-la (maillage down)" in refused.stderr, refused.stderr
    assert config_file.read_text() == before  # still « simple », on SQLite
    assert subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc",
                           f"SELECT count(*) FROM pg_database WHERE datname LIKE '{postgres}%'"],
                          capture_output=True, text=True, timeout=30).stdout.strip() == "0"


def test_retention_keeps_the_latest_of_each_recent_day_and_week(tmp_path: Path) -> None:
    stamps = ["2026-11-02_23h00m00", "2026-11-09_23h00m00", "2026-11-16_23h00m00", "2026-11-23_02h00m00",
              "2026-11-23_23h00m00", "2026-11-30_23h00m00", "2026-12-04_23h00m00", "2026-12-05_02h00m00",
              "2026-12-05_23h00m00", "2026-12-06_02h00m00"]
    for stamp in stamps:
        (tmp_path / f"maillage-localhost-{stamp}.tar").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("pas une sauvegarde")
    removed = prune(tmp_path, daily=3, weekly=3)
    left = sorted(p.name.removeprefix("maillage-localhost-").removesuffix(".tar") for p in archives(tmp_path))
    # Days: 12-06, 12-05 (its latest), 12-04. ISO weeks: 49 (Monday 11-30 to 12-06: its latest
    # is 12-06's), 48 (11-23, its latest), 47 (11-16).
    assert left == ["2026-11-16_23h00m00", "2026-11-23_23h00m00", "2026-12-04_23h00m00", "2026-12-05_23h00m00",
                    "2026-12-06_02h00m00"]
    assert len(removed) == len(stamps) - len(left) and (tmp_path / "notes.txt").exists()


@pytest.mark.slow
async def test_a_backup_made_while_the_stack_runs_brings_everything_back_on_an_empty_machine(
        tmp_path: Path, postgres: str) -> None:  # noqa: F811
    """…then the restored commune moves from SQLite to PostgreSQL and runs the scaled profile."""
    source = tmp_path / "mairie"
    ports = init_stack(source)
    started = maillage(source, "up", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    homeserver = f"http://127.0.0.1:{ports['port_synapse']}"
    accounts = {a["user_id"]: a for a in json.loads((source / "demo" / "comptes.json").read_text())}
    claire_id = "@claire.martin:localhost"
    claire = await login_agent(homeserver, claire_id, accounts[claire_id]["password"], tmp_path / "nio-c")
    try:
        team = next(r for r, room in claire.client.rooms.items() if room.display_name == "Direction générale — équipe")
        project = next(r for r, room in claire.client.rooms.items()
                       if room.display_name == "Projet — rénovation de l’école")
        urbanisme = next(r for r, room in claire.client.rooms.items() if room.display_name == "Urbanisme — équipe")
        await claire.send_text(team, "Avant la sauvegarde : budget voté.")
        since = len(claire.received)
        pdf = b"%PDF-1.7\nbudget " * 2000
        await post_file(claire, team, pdf, "Budget 2027.pdf")
        filed = await claire.wait_for_text(team, lambda m: m.sender == "@documents:localhost" and "Rangé" in m.body,
                                           since=since, timeout=90)
        path = filed.body.split("« ", 1)[1].split(" »", 1)[0]
        for room, command, bot in ((team, "!agenda ajoute Conseil le 3/12/2027 18h", "@agenda:localhost"),
                                   (project, "!tâche ajoute Chiffrer la toiture", "@projets:localhost")):
            since = len(claire.received)
            await claire.send_text(room, command)
            await claire.wait_for_text(room, from_sender(bot), since=since, timeout=90)
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "luc@exemple.fr", "urbanisme@localhost", "Clôture"
        mail.set_content("Ma demande de clôture.")

        def send_email() -> None:
            with smtplib.SMTP("127.0.0.1", ports["port_smtp"], timeout=60) as outside:
                outside.sendmail("luc@exemple.fr", ["urbanisme@localhost"], mail.as_bytes(policy=SMTP_POLICY))

        await asyncio.to_thread(send_email)
        await claire.wait_for_text(urbanisme, lambda m: "demande de clôture" in m.body, timeout=90)

        backed_up = maillage(source, "sauvegarde")  # while everything runs
        assert backed_up.returncode == 0, backed_up.stderr
        archive = archives(source / "sauvegardes")[0]
        assert "Sauvegarde écrite" in backed_up.stdout
    finally:
        await claire.close()
    assert maillage(source, "down").returncode == 0

    # An empty machine (an empty data directory): restore, start, and find everything.
    target = tmp_path / "nouvelle-machine"
    restored = maillage(target, "restaure", str(archive))
    assert restored.returncode == 0, restored.stderr
    again = maillage(target, "up", "--detach")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Création de la collectivité de démonstration" not in again.stdout
    try:
        claire = await restore_agent(homeserver, claire, tmp_path / "nio-c")
        history = await claire.client.room_messages(team, start="", limit=50)
        bodies = [getattr(event, "body", None) for event in history.chunk]
        assert "Avant la sauvegarde : budget voté." in bodies
        mails = await claire.client.room_messages(urbanisme, start="", limit=50)
        assert any("demande de clôture" in str(getattr(event, "body", "")) for event in mails.chunk)
        since = len(claire.received)
        await claire.send_text(project, "!tâche liste")
        listing = await claire.wait_for_text(project, lambda m: m.sender == "@projets:localhost", since=since,
                                             timeout=90)
        assert "Chiffrer la toiture" in listing.body
        dav_password = re.search(r'^dav_password = "(.+)"$', (target / "secrets" / "secrets.toml").read_text(), re.M)
        assert dav_password
        dav = WebDavClient({"webdav_hostname": f"http://127.0.0.1:{ports['port_webdav']}/",
                            "webdav_login": "maillage", "webdav_password": dav_password[1]})
        stored = io.BytesIO()
        dav.download_from(stored, path)
        assert stored.getvalue() == pdf
        caldav_url = f"http://127.0.0.1:{ports['port_caldav']}/"
        calendars: Any = caldav.davclient.DAVClient(url=caldav_url, username="maillage", password=dav_password[1])
        calendar = calendars.calendar(url=f"{caldav_url}maillage/dg/")
        assert any("SUMMARY:Conseil" in item.data for item in await asyncio.to_thread(calendar.events))
    finally:
        await claire.close()
        maillage(target, "down")

    # The commune outgrows SQLite: the restored stack moves to PostgreSQL and the scaled profile.
    config_file = target / "maillage.toml"
    set_scaled_settings(config_file, postgres)
    migrated = maillage(target, "migre-postgresql", timeout=900)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "Migration terminée" in migrated.stdout and 'profil = "reparti"' in config_file.read_text()
    assert "# « simple » : SQLite" in config_file.read_text()  # the file's comments kept
    scaled = maillage(target, "up", "--detach", timeout=600)
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    try:
        status = {s["nom"]: s["etat"] for s in json.loads(maillage(target, "status", "--json").stdout)["services"]}
        assert status.get("synapse-evenements") == "ok" and status.get("routeur") == "ok", status
        claire = await restore_agent(homeserver, claire, tmp_path / "nio-c")
        history = await claire.client.room_messages(team, start="", limit=50)
        assert "Avant la sauvegarde : budget voté." in [getattr(e, "body", None) for e in history.chunk]
        mails = await claire.client.room_messages(urbanisme, start="", limit=50)
        assert any("demande de clôture" in str(getattr(event, "body", "")) for event in mails.chunk)
        since = len(claire.received)
        await claire.send_text(project, "!tâche liste")
        listing = await claire.wait_for_text(project, lambda m: m.sender == "@projets:localhost", since=since,
                                             timeout=90)
        assert "Chiffrer la toiture" in listing.body
    finally:
        await claire.close()
        maillage(target, "down")
