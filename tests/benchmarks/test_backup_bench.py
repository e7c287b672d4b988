"""Backup and restore time per GB (issue 14), ``./maillage bench -k backup -s``.

A data directory of about 1 GB as a commune's looks after some years — Synapse's media
(150 files of 5 MB), the DAV files (2,000 documents of 50 KB), a SQLite database of 150 MB
— backed up by ``maillage sauvegarde`` and restored by ``maillage restaure`` into an empty
directory, alternated with the floor: GNU tar archiving the same directory (``tar -cf``) and
extracting it (``tar -xf``), which is the least any backup of these files does. Our path also
reads every SQLite database through SQLite's online backup, hashes every byte (SHA-256) into
the manifest, and checks the whole archive before a restore writes anything.
Figures: seconds per GB of each, and the ratios. Goal (ours): ≤ 1.5× the floor both ways.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.benchmarks.report import judge, machine, record

pytestmark = pytest.mark.benchmark
ROUNDS = 3
GOAL = 1.5


def make_data_dir(data_dir: Path) -> int:
    done = subprocess.run([sys.executable, "-m", "maillage", "--data-dir", str(data_dir), "init"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    media = data_dir / "synapse" / "media" / "local_content"
    for index in range(150):
        folder = media / f"{index:02x}"[:2] / f"{index:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "fichier").write_bytes(os.urandom(5 * 2**20))
    documents = data_dir / "webdav" / "fichiers"
    for index in range(2000):
        folder = documents / f"service-{index % 20}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:05d}.pdf").write_bytes(os.urandom(50 * 1024))
    (data_dir / "synapse").mkdir(exist_ok=True)
    with sqlite3.connect(data_dir / "synapse" / "homeserver.db") as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, json BLOB)")
        db.executemany("INSERT INTO events (json) VALUES (?)", ((os.urandom(4096),) for _ in range(37_000)))
    return sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())


def timed(argv: list[str], cwd: Path | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, cwd=cwd)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stdout + done.stderr
    return elapsed


def test_backup_and_restore_time_per_gb_against_tar(tmp_path: Path) -> None:
    data_dir = tmp_path / "donnees"
    size = make_data_dir(data_dir)
    gib = size / 2**30
    maillage = [sys.executable, "-m", "maillage", "--data-dir"]
    ours_backup, ours_restore, tar_backup, tar_restore, order = [], [], [], [], []
    for index in range(ROUNDS):
        out = tmp_path / f"sauvegardes-{index}"
        target, plain_target = tmp_path / f"restauree-{index}", tmp_path / f"tar-{index}"
        plain = tmp_path / f"tar-{index}.tar"
        plain_target.mkdir()
        for side in (("maillage", "tar") if index % 2 == 0 else ("tar", "maillage")):
            if side == "maillage":
                ours_backup.append(timed([*maillage, str(data_dir), "sauvegarde", "--vers", str(out)]))
                archive = next(out.glob("maillage-*.tar"))
                ours_restore.append(timed([*maillage, str(target), "restaure", str(archive)]))
            else:
                tar_backup.append(timed(["tar", "-cf", str(plain), "-C", str(data_dir), "."]))
                tar_restore.append(timed(["tar", "-xf", str(plain), "-C", str(plain_target)]))
        order.append("maillage, tar" if index % 2 == 0 else "tar, maillage")
        for folder in (out, target, plain_target):
            shutil.rmtree(folder, ignore_errors=True)
        plain.unlink(missing_ok=True)
    backup_ratio = statistics.median(ours_backup) / statistics.median(tar_backup)
    restore_ratio = statistics.median(ours_restore) / statistics.median(tar_restore)
    record("backup", {
        "goal": "maillage sauvegarde / restaure ≤ 1.5× GNU tar -cf / -xf of the same data directory",
        "data_gib": gib, "rounds": ROUNDS, "order": order, "machine": machine(),
        "backup_seconds": ours_backup, "tar_cf_seconds": tar_backup,
        "restore_seconds": ours_restore, "tar_xf_seconds": tar_restore,
        "backup_seconds_per_gib": statistics.median(ours_backup) / gib,
        "restore_seconds_per_gib": statistics.median(ours_restore) / gib,
        "tar_cf_seconds_per_gib": statistics.median(tar_backup) / gib,
        "tar_xf_seconds_per_gib": statistics.median(tar_restore) / gib,
        "backup_ratio": backup_ratio, "restore_ratio": restore_ratio,
    }, judge("backup ÷ tar -cf", backup_ratio, GOAL), judge("restore ÷ tar -xf", restore_ratio, GOAL))
