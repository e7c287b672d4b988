"""``maillage sauvegarde`` and ``maillage restaure``: everything that matters, while the stack runs.

A backup is one tar file, ``maillage-<serveur>-<date Paris>.tar`` (0600: it holds the
secrets), holding the data directory as it must come back — the config, the secrets
(Synapse's signing key included), Synapse's media, the DAV files, every SQLite database
copied through SQLite's online backup (consistent while it is written to), and a
``pg_dump`` of each PostgreSQL database the stack uses (scaled profile, or a part configured
on PostgreSQL) — with a manifest giving each file's SHA-256. What the stack writes anew at
each start (Synapse's rendered YAML, nginx's, logs, the run state) is left out.

It is written beside its destination under a temporary name and renamed once complete:
a full disk or a crash leaves the previous backups as they were and no half archive.
Retention keeps the latest backup of each of the last N days and of each of the last M
weeks.

A restore checks the archive's structure first (the manifest, no path outside the data
directory), refuses a data directory that is not empty — or PostgreSQL databases that
already hold tables — unless told ``--ecraser``, then extracts into a temporary folder
beside the target, checking every byte against the manifest on the way: only a complete,
matching archive takes the target's place.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from maillage.config import SCALED_DATABASES, Config
from maillage.homeserver.render import pgpass_path
from maillage.homeserver.workers import database_name
from maillage.i18n import t
from maillage.secretstore import load_secrets, make_private_tree

FORMAT = 1
MANIFEST = "MANIFESTE.json"
SQLITE_MAGIC = b"SQLite format 3\0"
# Written anew at each start, or not data at all.
SKIPPED_DIRS = {"logs", "run", "routeur", "sauvegardes", "synapse/workers", "synapse/modeles"}
SKIPPED_FILES = re.compile(r"(-wal|-shm|-journal|\.pid|\.lock)$|^synapse/[^/]+\.yaml$")
NAME = re.compile(r"^maillage-(?P<server>[a-z0-9.-]+)-(?P<stamp>\d{4}-\d{2}-\d{2}_\d{2}h\d{2}m\d{2})\.tar$")
CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or a restore that cannot be done: the message says why and what to do (French)."""


@dataclass(frozen=True)
class Database:
    part: str  # synapse, bots, courriel, portail
    url: str  # postgresql://user@host:port/name


def postgresql_databases(config: Config) -> list[Database]:
    """The PostgreSQL databases the stack uses under this config."""
    found = []
    if config.deploiement.profil == "reparti":
        server = config.deploiement.postgresql
        found.append(Database("synapse", f"{server}/{database_name(config, 'synapse')}"))
    for part in SCALED_DATABASES:
        url = str(getattr(config, part).base_de_donnees)
        if url:
            found.append(Database(part, url))
    return found


def backup_name(config: Config, when: datetime.datetime) -> str:
    server = re.sub(r"[^a-z0-9.-]", "-", config.collectivite.nom_serveur.lower())
    paris = when.astimezone(ZoneInfo(config.collectivite.fuseau_horaire))
    return f"maillage-{server}-{paris:%Y-%m-%d_%Hh%Mm%S}.tar"


# --- backup ---------------------------------------------------------------------------------


def back_up(config: Config, destination: Path, *, now: datetime.datetime | None = None) -> Path:
    """One archive in ``destination`` (0700), complete or not at all; its path."""
    when = now or datetime.datetime.now(datetime.UTC)
    destination.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = destination / backup_name(config, when)
    partial = destination / f".{final.name}.{secrets.token_hex(4)}.partiel"
    try:
        with tempfile.TemporaryDirectory(prefix=".sauvegarde-", dir=destination) as staging_dir:
            staging = Path(staging_dir)
            dumps = _dump_databases(config, staging)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle, \
                    tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # what addfile copies at a time (16 KB)
                files: dict[str, dict[str, object]] = {}
                for relative, source in _data_files(config.data_dir, staging, destination):
                    files[relative] = _add(tar, f"donnees/{relative}", source)
                for part, dump in dumps.items():
                    files[f"postgresql/{part}.dump"] = _add(tar, f"postgresql/{part}.dump", dump)
                manifest = {"format": FORMAT, "cree_le": when.isoformat(), "nom_serveur":
                            config.collectivite.nom_serveur, "profil": config.deploiement.profil,
                            "postgresql": sorted(dumps), "fichiers": files}
                body = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode, info.mtime = len(body), 0o600, int(time.time())
                tar.addfile(info, io.BytesIO(body))
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(partial, final)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(t("backup.write_failed", path=destination, detail=exc.strerror or type(exc).__name__)) \
            from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final


def _data_files(data_dir: Path, staging: Path, destination: Path) -> Iterator[tuple[str, Path]]:
    """Each file to keep, relative to the data directory, and where to read it from (a SQLite
    database is first copied through the online backup API into ``staging``). The backups'
    own folder is left out wherever it is (an archive never holds the previous ones)."""
    archives = destination.resolve()
    for root, dirs, names in os.walk(data_dir):
        here = Path(root).relative_to(data_dir)
        dirs[:] = sorted(d for d in dirs if (here / d).as_posix() not in SKIPPED_DIRS
                         and (Path(root) / d).resolve() != archives)
        for name in sorted(names):
            relative = (here / name).as_posix()
            path = Path(root) / name
            if SKIPPED_FILES.search(relative) or not path.is_file() or path.is_symlink():
                continue
            if _is_sqlite(path):
                copy = staging / "sqlite" / relative
                copy.parent.mkdir(parents=True, exist_ok=True)
                _sqlite_copy(path, copy)
                yield relative, copy
            else:
                yield relative, path


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == SQLITE_MAGIC


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a database other processes keep writing (SQLite's backup API)."""
    origin = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            origin.backup(copy, pages=4096, sleep=0.01)
        finally:
            copy.close()
    finally:
        origin.close()
    os.chmod(target, 0o600)


class _Hashing:
    """A file as tarfile reads it, hashed on the way: what is hashed is what is written."""

    def __init__(self, handle: io.BufferedReader) -> None:
        self.handle, self.digest = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def _add(tar: tarfile.TarFile, name: str, source: Path) -> dict[str, object]:
    info = tarfile.TarInfo(name)
    stat = source.stat()
    info.size, info.mode, info.mtime = stat.st_size, 0o600, int(stat.st_mtime)
    with source.open("rb") as handle:
        reader = _Hashing(handle)
        try:
            tar.addfile(info, reader)
        except OSError as exc:
            if "unexpected end of data" in str(exc):  # the file shrank while read
                raise BackupError(t("backup.file_changed", path=name)) from None
            raise
    return {"sha256": reader.digest.hexdigest(), "taille": stat.st_size}


def _dump_databases(config: Config, staging: Path) -> dict[str, Path]:
    dumps = {}
    for database in postgresql_databases(config):
        target = staging / "postgresql" / f"{database.part}.dump"
        target.parent.mkdir(parents=True, exist_ok=True)
        _run_pg(config, ["pg_dump", "--format=custom", "--no-owner", f"--file={target}", "--dbname", database.url],
                database)
        dumps[database.part] = target
    return dumps


def _run_pg(config: Config, argv: list[str], database: Database) -> None:
    env = {**os.environ}
    if pgpass_path(config).exists():
        env["PGPASSFILE"] = str(pgpass_path(config))
    binary = shutil.which(argv[0])
    if binary is None:
        raise BackupError(t("backup.pg_tool_missing", tool=argv[0]))
    done = subprocess.run([binary, *argv[1:]], capture_output=True, text=True, env=env, timeout=24 * 3600)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["?"])[-1][:300]
        raise BackupError(t("backup.pg_failed", tool=argv[0], database=_hide_password(database.url), detail=detail))


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


# --- retention ------------------------------------------------------------------------------


def prune(directory: Path, *, daily: int, weekly: int) -> list[Path]:
    """Keep the latest backup of each of the last ``daily`` days and ``weekly`` ISO weeks
    that have one; the others are removed. The removed paths."""
    backups = sorted(((m["stamp"], path) for path in directory.glob("maillage-*.tar")
                      if (m := NAME.match(path.name))), reverse=True)
    keep: set[Path] = set()
    days: list[str] = []
    weeks: list[tuple[int, int]] = []
    for stamp, path in backups:
        day = datetime.datetime.strptime(stamp, "%Y-%m-%d_%Hh%Mm%S")
        if stamp[:10] not in days and len(days) < daily:
            days.append(stamp[:10])
            keep.add(path)
        week = day.isocalendar()[:2]
        if week not in weeks and len(weeks) < weekly:
            weeks.append(week)
            keep.add(path)
    removed = [path for _, path in backups if path not in keep]
    for path in removed:
        path.unlink()
    return removed


# --- restore --------------------------------------------------------------------------------


def verify(archive: Path) -> dict[str, object]:
    """The archive's manifest, once its structure is sound: every file it names present as a
    regular member at a safe place, nothing else. The bytes are checked against their SHA-256
    as a restore reads them (``restore``), before anything reaches the data directory."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = {member.name: member for member in tar.getmembers()}
            manifest_member = members.get(MANIFEST)
            if manifest_member is None:
                raise BackupError(t("backup.not_an_archive", path=archive))
            extracted = tar.extractfile(manifest_member)
            assert extracted is not None
            manifest = json.loads(extracted.read())
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise BackupError(t("backup.unreadable", path=archive, detail=type(exc).__name__)) from None
    files = manifest.get("fichiers") if isinstance(manifest, dict) else None
    if manifest.get("format") != FORMAT or not isinstance(files, dict):
        raise BackupError(t("backup.unknown_format", path=archive))
    for relative in files:
        member = members.get(_member_name(relative))
        if member is None or not member.isfile() or not _safe(relative):
            raise BackupError(t("backup.damaged", path=archive, member=relative))
    unexpected = set(members) - {MANIFEST} - {_member_name(relative) for relative in files}
    if unexpected:
        raise BackupError(t("backup.damaged", path=archive, member=sorted(unexpected)[0][:120]))
    return dict(manifest)


def _member_name(relative: str) -> str:
    return f"postgresql/{relative.split('/', 1)[1]}" if relative.startswith("postgresql/") else f"donnees/{relative}"


def _safe(relative: str) -> bool:
    path = PurePosixPath(relative)
    return not path.is_absolute() and ".." not in path.parts and relative == path.as_posix()


def restore(archive: Path, target: Path, *, overwrite: bool = False) -> dict[str, object]:
    """The archive's data directory at ``target`` (and its PostgreSQL databases); its manifest.
    Everything is checked before the target or a database is written to."""
    manifest = verify(archive)
    if (target / "run" / "etat.json").exists():
        raise BackupError(t("backup.target_running", path=target))
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise BackupError(t("backup.target_not_empty", path=target))
    config = _archived_config(archive, target, str(manifest.get("profil", "simple")))
    databases = _databases_to_restore(config, manifest)
    for database in databases:
        if not overwrite and _has_tables(config, database):
            raise BackupError(t("backup.database_not_empty", database=_hide_password(database.url)))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restauration-", dir=target.parent))
    try:
        _extract_checked(archive, manifest, staging)
        for database in databases:
            _recreate(config, database)
            _run_pg(config, ["pg_restore", "--no-owner", "--exit-on-error", "--dbname", database.url,
                             str(staging / ".postgresql" / f"{database.part}.dump")], database)
        shutil.rmtree(staging / ".postgresql", ignore_errors=True)
        if target.exists():  # --ecraser: the old directory kept aside, never deleted
            target.rename(target.with_name(f"{target.name}.avant-restauration-{int(time.time())}"))
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    make_private_tree(target)
    return manifest


def _archived_config(archive: Path, target: Path, profile: str) -> Config:
    """The archive's config as it will be read from ``target``, in the profile it was backed
    up in (``up --profile scaled`` included)."""
    from maillage.config import ConfigError, parse_config, with_profile

    with tarfile.open(archive, mode="r:") as tar:
        member = tar.extractfile("donnees/maillage.toml")
        assert member is not None
        raw = tomllib.loads(member.read().decode("utf-8"))
    try:
        config = parse_config(raw, source=target / "maillage.toml")
    except ConfigError as exc:
        raise BackupError(t("backup.config_invalid", detail=exc)) from None
    return with_profile(config, profile)


def _databases_to_restore(config: Config, manifest: dict[str, object]) -> list[Database]:
    known = {database.part: database for database in postgresql_databases(config)}
    wanted = []
    for part in manifest.get("postgresql", []):  # type: ignore[attr-defined]
        if str(part) not in known:
            raise BackupError(t("backup.database_unknown", part=part))
        wanted.append(known[str(part)])
    return wanted


def _extract_checked(archive: Path, manifest: dict[str, object], staging: Path) -> None:
    """Every member into ``staging`` (a temporary folder beside the target), hashed as it is
    read, in one pass; a byte that differs from the manifest: refused, the folder removed by
    the caller — the target is never touched."""
    files: dict[str, Any] = manifest["fichiers"]  # type: ignore[assignment]
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                relative = member.name.removeprefix("donnees/")
                path = staging / (".postgresql/" + member.name.removeprefix("postgresql/")
                                  if member.name.startswith("postgresql/") else relative)
                relative = member.name if member.name.startswith("postgresql/") else relative
                if _extract(tar, member, path) != files[relative].get("sha256"):
                    raise BackupError(t("backup.damaged", path=archive, member=relative))
    except (tarfile.TarError, EOFError) as exc:
        raise BackupError(t("backup.unreadable", path=archive, detail=type(exc).__name__)) from None


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> str:
    """The member written at ``path`` (0600); its SHA-256."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    source = tar.extractfile(member)
    assert source is not None
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            handle.write(chunk)
    if source.tell() != member.size:  # the archive ended inside this member
        raise EOFError(member.name)
    return digest.hexdigest()


def _connect(config: Config, url: str, database: str | None = None) -> Any:
    import psycopg2

    parts = urlsplit(url)
    password = load_secrets(config.data_dir).postgresql_password if (config.data_dir / "secrets").exists() else ""
    return psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                            password=parts.password or password or None,
                            dbname=database or parts.path.strip("/"), connect_timeout=10)


def _has_tables(config: Config, database: Database) -> bool:
    import psycopg2

    try:
        connection = _connect(config, database.url)
    except psycopg2.OperationalError as exc:
        if "does not exist" in str(exc):
            return False
        raise BackupError(t("backup.pg_failed", tool="psql", database=_hide_password(database.url),
                            detail=str(exc).strip().splitlines()[0][:200])) from None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            row = cursor.fetchone()
            return bool(row and row[0])
    finally:
        connection.close()


def _recreate(config: Config, database: Database) -> None:
    """The database made anew and empty (Synapse's with the C collation it requires)."""
    from psycopg2 import sql

    name = urlsplit(database.url).path.strip("/")
    connection = _connect(config, database.url, "postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            statement = sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(sql.Identifier(name))
            if database.part == "synapse":
                statement = sql.SQL("{} LC_COLLATE 'C' LC_CTYPE 'C'").format(statement)
            cursor.execute(statement)
    finally:
        connection.close()
