"""Share links and their downloads.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('share_link',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_key', sa.String(length=255), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('room_id', sa.String(length=255), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('revoked_at', sa.BigInteger(), nullable=True),
    sa.Column('revoked_by', sa.String(length=255), nullable=False),
    sa.Column('downloads', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('request_key'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_share_link_room_id'), 'share_link', ['room_id'], unique=False)
    op.create_table('share_download',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('link_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['link_id'], ['share_link.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_share_download_link_id'), 'share_download', ['link_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_share_download_link_id'), table_name='share_download')
    op.drop_table('share_download')
    op.drop_index(op.f('ix_share_link_room_id'), table_name='share_link')
    op.drop_table('share_link')
