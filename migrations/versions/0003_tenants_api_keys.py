"""Tenants and API keys; every dataset, job, event and noise row belongs to a tenant (existing rows go to
the tenant ``local``); idempotency keys are scoped per tenant (the remembered keys, kept 24 h anyway,
are dropped).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-13
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

OWNED = ('datasets', 'jobs', 'job_events', 'noise_rows')
INDEXED = ('datasets', 'jobs')
LOCAL = 'local'


def _idempotency_keys(with_tenant: bool) -> None:
    tenant = [sa.Column('tenant_id', sa.String(length=100), nullable=False)] if with_tenant else []
    keys = ['tenant_id', 'key'] if with_tenant else ['key']
    fks = [sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE')] if with_tenant else []
    op.create_table('idempotency_keys',
    *tenant,
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_headers', sa.JSON(), nullable=True),
    sa.Column('response_body', sa.LargeBinary(), nullable=True),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    *fks,
    sa.PrimaryKeyConstraint(*keys)
    )
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'])


def upgrade() -> None:
    """Apply this revision."""
    tenants = op.create_table('tenants',
    sa.Column('id', sa.String(length=100), nullable=False),
    sa.Column('max_concurrent_jobs', sa.Integer(), nullable=True),
    sa.Column('max_stored_rows', sa.BigInteger(), nullable=True),
    sa.Column('max_upload_bytes', sa.BigInteger(), nullable=True),
    sa.Column('max_jobs_per_hour', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(tenants, [{'id': LOCAL, 'created_at': datetime.now(timezone.utc)}])
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=20), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash'),
    sa.UniqueConstraint('prefix')
    )
    op.create_index('ix_api_keys_tenant_id', 'api_keys', ['tenant_id'])
    for table in OWNED:
        with op.batch_alter_table(table) as batch:  # existing rows belong to the local tenant
            batch.add_column(sa.Column('tenant_id', sa.String(length=100), nullable=False, server_default=LOCAL))
        with op.batch_alter_table(table) as batch:
            batch.alter_column('tenant_id', server_default=None)
            batch.create_foreign_key(f'fk_{table}_tenant_id', 'tenants', ['tenant_id'], ['id'])
            if table in INDEXED:
                batch.create_index(f'ix_{table}_tenant_id', ['tenant_id'])
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    _idempotency_keys(with_tenant=True)


def downgrade() -> None:
    """Revert this revision (every tenant's data stays, without its owner)."""
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    _idempotency_keys(with_tenant=False)
    for table in reversed(OWNED):
        with op.batch_alter_table(table) as batch:
            if table in INDEXED:
                batch.drop_index(f'ix_{table}_tenant_id')
            batch.drop_constraint(f'fk_{table}_tenant_id', type_='foreignkey')
            batch.drop_column('tenant_id')
    op.drop_index('ix_api_keys_tenant_id', table_name='api_keys')
    op.drop_table('api_keys')
    op.drop_table('tenants')
