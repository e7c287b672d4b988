"""Synapse signs agents in through the portal: the codes it is given, and room for its
authorisation request as the page a login comes back to.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('matrix_code',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('nonce', sa.String(length=256), nullable=False),
    sa.Column('challenge', sa.String(length=128), nullable=False),
    sa.Column('auth_time', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agent.id'], ),
    sa.PrimaryKeyConstraint('code_hash')
    )
    op.create_index(op.f('ix_matrix_code_created_at'), 'matrix_code', ['created_at'], unique=False)
    with op.batch_alter_table('login_attempt') as batch:
        batch.alter_column('next_page', type_=sa.String(length=2000), existing_type=sa.String(length=500),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('login_attempt') as batch:
        batch.alter_column('next_page', type_=sa.String(length=500), existing_type=sa.String(length=2000),
                           existing_nullable=False)
    op.drop_index(op.f('ix_matrix_code_created_at'), table_name='matrix_code')
    op.drop_table('matrix_code')
