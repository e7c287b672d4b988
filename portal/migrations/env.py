"""Alembic's entry point for the portal's schema (run by ``maillage.portal.db.migrate``)."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from maillage.portal.db import Base

settings = context.config
engine = engine_from_config(settings.get_section(settings.config_ini_section, {}), prefix="sqlalchemy.",
                            poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
