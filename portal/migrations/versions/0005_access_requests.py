"""Access requests: an agent asks for another service's room, folder or calendar.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('access_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('resource', sa.String(length=20), nullable=False),
    sa.Column('right', sa.String(length=2), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('until', sa.String(length=10), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('announced', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('decided_by', sa.String(length=255), nullable=False),
    sa.Column('decided_at', sa.BigInteger(), nullable=True),
    sa.Column('decision_note', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agent.id'], ),
    sa.ForeignKeyConstraint(['service_id'], ['service.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_access_request_agent_id'), 'access_request', ['agent_id'], unique=False)
    op.create_index(op.f('ix_access_request_service_id'), 'access_request', ['service_id'], unique=False)
    op.create_index(op.f('ix_access_request_state'), 'access_request', ['state'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_access_request_state'), table_name='access_request')
    op.drop_index(op.f('ix_access_request_service_id'), table_name='access_request')
    op.drop_index(op.f('ix_access_request_agent_id'), table_name='access_request')
    op.drop_table('access_request')
