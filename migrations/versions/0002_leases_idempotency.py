"""Leases, resume and limits on jobs; the idempotency_keys table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

JOB_COLUMNS = (
    ('lease_owner', sa.String(length=200)),
    ('enqueued_at', sa.DateTime(timezone=True)),
    ('checkpoint_uri', sa.String(length=500)),
    ('checkpoint_step', sa.Integer()),
    ('time_limit_s', sa.Integer()),
    ('soft_time_limit_s', sa.Integer()),
)


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('jobs') as batch:
        for name, type_ in JOB_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    op.create_table('idempotency_keys',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_headers', sa.JSON(), nullable=True),
    sa.Column('response_body', sa.LargeBinary(), nullable=True),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    with op.batch_alter_table('jobs') as batch:
        for name, _ in reversed(JOB_COLUMNS):
            batch.drop_column(name)
