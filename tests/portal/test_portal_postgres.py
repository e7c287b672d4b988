"""The portal's organisation on PostgreSQL (production): Alembic's schema, the write path, the audit."""

from __future__ import annotations

import asyncio

import asyncpg

from maillage.portal.db import Database, database_urls, latest_revision, migrate
from maillage.portal.organisation import NewAgent, Organisation
from tests.bots.test_postgres import postgres_url  # noqa: F401  (a fixture)
from tests.portal.conftest import PortalStack


async def test_the_portal_keeps_the_organisation_in_postgresql(portal: PortalStack, postgres_url: str,  # noqa: F811
                                                               admin_token: str) -> None:
    config = portal.stack.config
    variant = config.model_copy(update={"portail": config.portail.model_copy(
        update={"base_de_donnees": postgres_url})})
    async_url, sync_url = database_urls(variant)
    assert async_url.startswith("postgresql+asyncpg://")
    await asyncio.to_thread(migrate, sync_url)
    await asyncio.to_thread(migrate, sync_url)  # at the latest revision already: nothing to do, no error
    database = Database(async_url)

    async def token() -> str:
        return admin_token

    try:
        organisation = Organisation(variant, portal.stack.secrets, database, token, None)
        service = await organisation.create_service(portal.admin_email, "sports", "Sports et jeunesse")
        assert service.provisioned and service.space_id
        created = await organisation.create_agent(portal.admin_email, NewAgent(
            "marc.vidal@test-sur-loire.example", "Marc", "Vidal", "sports", "direction"))
        assert created.user_id == "@marc.vidal:localhost" and created.first_password == ""
    finally:
        await database.close()
    connection = await asyncpg.connect(postgres_url)
    try:
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == latest_revision()
        assert await connection.fetchval("SELECT count(*) FROM provisioning_step") == 8
        role = await connection.fetchval("SELECT role FROM agent WHERE user_id = '@marc.vidal:localhost'")
        assert role == "direction"
        actions = [r["action"] for r in await connection.fetch("SELECT action FROM audit ORDER BY id")]
        assert actions == ["service.creation", "agent.creation"]
    finally:
        await connection.close()
