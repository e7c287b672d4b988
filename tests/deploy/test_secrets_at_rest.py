"""Secrets at rest: everything the stack writes is its owner's only (files 0600 or narrower, folders 0700).

The running stack's data directory holds access tokens (``homeserver.db`` and its
WAL, the bots' database), Synapse's signing key, the stack's passwords, logs.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import stat
from pathlib import Path

import httpx
import pytest

from maillage.deploy.provisioning import ADMIN_LOCALPART
from tests.deploy.conftest import Stack
from tests.deploy.test_launcher import init_stack, maillage

# Files that may deliberately be readable by others, with the reason. None today:
# even the local CA certificate (``tls/ca.pem``, public by nature) is kept 0600, as
# only this account's processes read it.
PUBLIC_FILES: dict[str, str] = {}


def wide_entries(data_dir: Path) -> list[str]:
    """Every entry of the tree whose mode lets another account read, write or enter it."""
    wide = []
    for root, folders, files in os.walk(data_dir):
        for path in [Path(root), *(Path(root) / name for name in files)]:
            try:
                info = path.lstat()
            except FileNotFoundError:  # a SQLite journal that came and went
                continue
            mode = stat.S_IMODE(info.st_mode)
            relative = str(path.relative_to(data_dir))
            if stat.S_ISLNK(info.st_mode):
                wide.append(f"{relative}: symbolic link")
            elif stat.S_ISDIR(info.st_mode) and mode != 0o700:
                wide.append(f"{relative}/: {oct(mode)}")
            elif not stat.S_ISDIR(info.st_mode) and mode & 0o077 and relative not in PUBLIC_FILES:
                wide.append(f"{relative}: {oct(mode)}")
        folders.sort()
    return wide


@pytest.mark.slow
def test_every_file_the_running_stack_wrote_is_private(running_stack: Stack) -> None:
    data_dir = running_stack.data_dir
    # A person logs in: their access token is now in homeserver.db (or its WAL).
    password = re.search(r'^admin_password = "(.+)"$', (data_dir / "secrets" / "secrets.toml").read_text(), re.M)
    assert password
    login = httpx.post(f"http://127.0.0.1:{running_stack.ports['port_synapse']}/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": ADMIN_LOCALPART},
        "password": password[1]}, timeout=30)
    assert login.status_code == 200, login.text
    token = login.json()["access_token"].encode()
    database = data_dir / "synapse" / "homeserver.db"
    assert any(token in path.read_bytes() for path in database.parent.glob("homeserver.db*")), \
        "the token is not where this test looks for it"
    # The bots logged in at start: their token is in their database.
    with sqlite3.connect(f"file:{data_dir / 'bots' / 'bots.db'}?mode=ro", uri=True) as bots:
        assert bots.execute("SELECT count(*) FROM maillage_bot_account WHERE access_token <> ''").fetchone()[0] >= 1

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for expected in ("synapse/homeserver.db", "bots/bots.db", "secrets/signing.key", "secrets/secrets.toml",
                     "synapse/homeserver.yaml", "acces-dav/service.json", "webdav/wsgidav.yaml", "logs/synapse.log",
                     "run/etat.json"):
        assert (data_dir / expected).exists(), expected
    assert wide_entries(data_dir) == []


def test_a_data_dir_left_wide_by_an_older_version_is_narrowed_at_start(stack_dir: Path) -> None:
    ports = init_stack(stack_dir, demo=False)
    # What an older version left: everything world-readable, tokens included.
    old_files = ["synapse/homeserver.db", "synapse/homeserver.db-wal", "synapse/homeserver.db-shm",
                 "synapse/homeserver.db-journal", "bots/bots.db", "bots/bots.db-wal", "logs/synapse.log",
                 "synapse/media/local_content/ab/cd/fichier", "webdav/fichiers/dg/compte-rendu.pdf"]
    for name in old_files:
        path = stack_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"syt_ancien_jeton")
        os.chmod(path, 0o644)
    script = stack_dir / "webdav" / "fichiers" / "outil.sh"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o755)
    for root, folders, _files in os.walk(stack_dir):
        for folder in folders:
            os.chmod(Path(root) / folder, 0o755)
    os.chmod(stack_dir, 0o755)
    os.chmod(stack_dir / "secrets", 0o700)  # the secrets folder is checked on its own, already 0700

    with socket.socket() as squatter:  # stop right after the checks: nothing starts
        squatter.bind(("127.0.0.1", ports["port_synapse"]))
        result = maillage(stack_dir, "up")
    assert result.returncode == 1
    assert "lisibles par d’autres comptes : ils ont été ramenés à 0600 (fichiers) et 0700 (dossiers)" in result.stdout
    assert wide_entries(stack_dir) == []
    assert stat.S_IMODE(script.stat().st_mode) == 0o700, "the owner's own bits are kept"
    assert stat.S_IMODE((stack_dir / "bots" / "bots.db").stat().st_mode) == 0o600
