"""The portal's database: the organisation's truth (services, agents, roles), sessions, audit.

SQLite in the data directory by default, PostgreSQL when ``[portail] base_de_donnees`` names
one; the schema is Alembic's (``portal/migrations``), upgraded before the portal serves.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from maillage.config import Config

ROLES = ("agent", "chef", "direction", "elu", "admin")


def now_ms() -> int:
    return int(time.time() * 1000)


class Base(DeclarativeBase):
    pass


class Service(Base):
    """A department of the collectivité: its space, rooms, folder, calendar and task list."""

    __tablename__ = "service"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(40), unique=True)  # « urbanisme »: folder, calendar, task list
    name: Mapped[str] = mapped_column(String(120))
    space_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    archived: Mapped[bool] = mapped_column(default=False)
    provisioned: Mapped[bool] = mapped_column(default=False)  # every step done (else: « Reprendre »)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)


class ServiceRoom(Base):
    __tablename__ = "service_room"
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"))
    kind: Mapped[str] = mapped_column(String(40))  # « equipe », « annonces »
    name: Mapped[str] = mapped_column(String(120))
    room_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    __table_args__ = (UniqueConstraint("service_id", "kind"),)


class ProvisioningStep(Base):
    """A step of making a service that is done: provisioning resumes, never repeats."""

    __tablename__ = "provisioning_step"
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), primary_key=True)
    step: Mapped[str] = mapped_column(String(80), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class Agent(Base):
    __tablename__ = "agent"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), unique=True)  # @prenom.nom:server
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    service_id: Mapped[int | None] = mapped_column(ForeignKey("service.id"), nullable=True)
    role: Mapped[str] = mapped_column(String(20), default="agent")
    oidc_sub: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)


class AuditEntry(Base):
    """Who did what, when, with the values before and after (JSON)."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(80))
    target: Mapped[str] = mapped_column(String(320))
    before: Mapped[str] = mapped_column(Text, default="")
    after: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (Index("audit_at", "at"),)


def audit(session: AsyncSession, actor: str, action: str, target: str, before: Any = None, after: Any = None) -> None:
    session.add(AuditEntry(actor=actor, action=action, target=target,
                           before="" if before is None else json.dumps(before, ensure_ascii=False, sort_keys=True),
                           after="" if after is None else json.dumps(after, ensure_ascii=False, sort_keys=True)))


class WebSession(Base):
    """A browser's session: the cookie holds a random token, the table its hash."""

    __tablename__ = "web_session"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(default=False)
    csrf: Mapped[str] = mapped_column(String(64))
    id_token: Mapped[str] = mapped_column(Text)  # the logout's id_token_hint
    expires_at: Mapped[int] = mapped_column(BigInteger)


class LoginAttempt(Base):
    """A login under way: its state (hashed) and nonce, used once."""

    __tablename__ = "login_attempt"
    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128))
    next_page: Mapped[str] = mapped_column(String(2000), default="/")  # Synapse's authorisation request
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)


class MatrixCode(Base):
    """A code given to Synapse for an agent (hashed), exchanged once within a minute."""

    __tablename__ = "matrix_code"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id"))
    nonce: Mapped[str] = mapped_column(String(256))
    challenge: Mapped[str] = mapped_column(String(128))
    auth_time: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms, index=True)


class ExternalAccount(Base):
    """An account for someone outside the collectivité (a partner's staff, a citizen), valid
    through its last day (Paris), published to the homeserver's access rules."""

    __tablename__ = "external_account"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    organisation: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(20), default="partenaire")  # partenaire | administre
    last_day: Mapped[str] = mapped_column(String(10), default="")  # YYYY-MM-DD
    created_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)


class ShareLink(Base):
    """A document given by a link (``/partage/<token>``, the token's hash kept) until its end."""

    __tablename__ = "share_link"
    id: Mapped[int] = mapped_column(primary_key=True)
    request_key: Mapped[str] = mapped_column(String(255), unique=True)  # the command's event id
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(1000))
    name: Mapped[str] = mapped_column(String(300))
    room_id: Mapped[str] = mapped_column(String(255), index=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_by: Mapped[str] = mapped_column(String(255), default="")
    downloads: Mapped[int] = mapped_column(default=0)


class ShareDownload(Base):
    """One download through a share link: when, and from which network."""

    __tablename__ = "share_download"
    id: Mapped[int] = mapped_column(primary_key=True)
    link_id: Mapped[int] = mapped_column(ForeignKey("share_link.id"), index=True)
    at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    address: Mapped[str] = mapped_column(String(64))


def database_urls(config: Config) -> tuple[str, str]:
    """The async URL the portal uses and the sync one Alembic migrates with."""
    configured = config.portail.base_de_donnees
    if not configured:
        path = config.data_dir / "portail" / "portail.db"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}"
    rest = configured.split("://", 1)[1]
    return f"postgresql+asyncpg://{rest}", f"postgresql+psycopg2://{rest}"


def _alembic(sync_url: str = "") -> AlembicConfig:
    settings = AlembicConfig()
    settings.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    settings.set_main_option("sqlalchemy.url", sync_url.replace("%", "%%"))
    return settings


def migrate(sync_url: str) -> None:
    """The schema brought to the latest revision (nothing to do when it is there)."""
    command.upgrade(_alembic(sync_url), "head")


def latest_revision() -> str:
    return str(ScriptDirectory.from_config(_alembic()).get_current_head())


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL: readers (the pages) never wait for a writer (an import); every commit still fsynced."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        options: dict[str, Any] = {}
        if url.startswith("sqlite"):
            options["connect_args"] = {"timeout": 30}
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def close(self) -> None:
        await self.engine.dispose()


class ImportJob(Base):
    """A CSV import of agents: checked whole first, then run row by row (resumed after a crash)."""

    __tablename__ = "import_job"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    file_name: Mapped[str] = mapped_column(String(255))
    total: Mapped[int] = mapped_column()
    state: Mapped[str] = mapped_column(String(20), default="apercu")  # apercu, en_cours, termine, interrompu
    message: Mapped[str] = mapped_column(Text, default="")  # why it was interrupted


class ImportRow(Base):
    __tablename__ = "import_row"
    job_id: Mapped[int] = mapped_column(ForeignKey("import_job.id"), primary_key=True)
    line: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    given_name: Mapped[str] = mapped_column(String(200))
    usual_name: Mapped[str] = mapped_column(String(200))
    service_key: Mapped[str] = mapped_column(String(40))
    role: Mapped[str] = mapped_column(String(20))
    # a_faire → en_cours (its account may exist: taken over on resume) → fait | erreur
    state: Mapped[str] = mapped_column(String(20), default="a_faire")
    message: Mapped[str] = mapped_column(Text, default="")
    first_password: Mapped[str] = mapped_column(String(64), default="")  # dev provider only; erased once read


class ApiToken(Base):
    """A token for the HTTP API (HR or directory tools), acting for the admin who made it."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    revoked: Mapped[bool] = mapped_column(default=False)


class AppPassword(Base):
    """A password for one of the agent's DAV apps (Thunderbird, DAVx5, a file manager): made by
    the portal, shown once, kept as a digest, revoked one by one."""

    __tablename__ = "app_password"
    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id"), index=True)
    name: Mapped[str] = mapped_column(String(60))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AccessRequest(Base):
    """An agent's request for another service's room, folder or calendar: decided by the head of
    that service in Matrix, granted until an optional last day (Paris), then taken back."""

    __tablename__ = "access_request"
    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id"), index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), index=True)
    resource: Mapped[str] = mapped_column(String(20))  # salon, dossier, agenda
    right: Mapped[str] = mapped_column(String(2))  # r, rw
    reason: Mapped[str] = mapped_column(Text)
    until: Mapped[str | None] = mapped_column(String(10), nullable=True)  # last day, YYYY-MM-DD
    state: Mapped[str] = mapped_column(String(20), default="en_attente", index=True)
    announced: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    decided_by: Mapped[str] = mapped_column(String(255), default="")
    decided_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    decision_note: Mapped[str] = mapped_column(Text, default="")
