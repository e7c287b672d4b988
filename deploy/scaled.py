"""The servers the scaled profile stands on — PostgreSQL and Redis, already running (the
collectivité's or the hosting platform's) — checked before anything starts, and the stack's
databases made on first start: Synapse's with the C collation it requires, then the bots',
the bridge's and the portal's."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import psycopg2
from psycopg2 import sql

from maillage.config import SCALED_DATABASES, Config
from maillage.homeserver.workers import database_name, synapse_connections
from maillage.i18n import t
from maillage.secretstore import Secrets

TIMEOUT = 5.0
# The most connections the bots, the bridge and the portal open (their pools: 10, 10, 5 + 10
# overflow, and the portal's migrations), beside Synapse's.
MAILLAGE_CONNECTIONS = 40


def postgres_connection(config: Config, secrets: Secrets, database: str = "postgres") -> psycopg2.extensions.connection:
    server = urlsplit(config.deploiement.postgresql)
    return psycopg2.connect(host=server.hostname, port=server.port or 5432, user=server.username or "postgres",
                            password=secrets.postgresql_password or None, dbname=database,
                            connect_timeout=int(TIMEOUT))


def scaled_servers_problem(config: Config, secrets: Secrets) -> str | None:
    """None when PostgreSQL and Redis both answer; else what is wrong, naming which (French)."""
    try:
        connection = postgres_connection(config, secrets)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('max_connections')::int"
                               " - current_setting('superuser_reserved_connections')::int")
                row = cursor.fetchone()
        finally:
            connection.close()
    except psycopg2.Error as exc:
        return t("scaled.postgresql_unreachable", url=config.deploiement.postgresql,
                 detail=_first_line(str(exc)))
    needed = synapse_connections(config) + MAILLAGE_CONNECTIONS
    if row is not None and row[0] < needed:
        return t("scaled.postgresql_too_few_connections", url=config.deploiement.postgresql, accepted=row[0],
                 needed=needed)
    detail = _redis_problem(config.deploiement.redis, secrets.redis_password)
    if detail:
        return t("scaled.redis_unreachable", url=config.deploiement.redis, detail=detail)
    refused = _redis_problem(config.deploiement.redis, secrets.redis_password, base=config.deploiement.base_redis)
    if refused:
        return t("scaled.redis_base_refused", url=config.deploiement.redis, base=config.deploiement.base_redis,
                 detail=refused)
    return None


def _redis_problem(url: str, password: str, base: int | None = None) -> str | None:
    """Why Redis does not answer a PING (or, given ``base``, does not open that database)."""
    server = urlsplit(url)
    try:
        with socket.create_connection((server.hostname or "127.0.0.1", server.port or 6379), timeout=TIMEOUT) as conn:
            if password:
                conn.sendall(redis_command("AUTH", password))
                if not conn.recv(512).startswith(b"+OK"):
                    return t("scaled.redis_password_refused")
            conn.sendall(redis_command("PING") if base is None else redis_command("SELECT", str(base)))
            answer = conn.recv(512)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if answer.startswith(b"-NOAUTH"):
        return t("scaled.redis_password_needed")
    return None if answer.startswith((b"+PONG", b"+OK")) else answer.decode(errors="replace").strip()[:120]


def redis_command(*words: str) -> bytes:
    """A command in Redis's wire protocol (RESP)."""
    encoded = [word.encode() for word in words]
    return f"*{len(encoded)}\r\n".encode() + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "?"


def ensure_databases(config: Config, secrets: Secrets) -> list[str]:
    """The stack's databases, made when missing (Synapse's in UTF-8 with the C collation, as
    it requires); the names made."""
    wanted = [database_name(config, "synapse")]
    wanted += [database_name(config, part) for part in SCALED_DATABASES
               if getattr(config, part).base_de_donnees.endswith(f"/{database_name(config, part)}")]
    made = []
    connection = postgres_connection(config, secrets)
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            for name in wanted:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone():
                    continue
                statement = sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(name))
                if name.endswith("_synapse"):
                    statement = sql.SQL("{} LC_COLLATE 'C' LC_CTYPE 'C'").format(statement)
                cursor.execute(statement)
                made.append(name)
    finally:
        connection.close()
    return made
