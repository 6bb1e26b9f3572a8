"""Noise report rows say why (``flag_reason``) and where they come from (``split``: train or validation);
the report is paged by its ``rank`` (flagged rows first).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('noise_rows') as batch:
        batch.add_column(sa.Column('flag_reason', sa.Text(), nullable=True))
        batch.add_column(sa.Column('split', sa.String(length=20), nullable=False, server_default='train'))
    op.create_index('ix_noise_rows_job_rank', 'noise_rows', ['job_id', 'rank'])


def downgrade() -> None:
    op.drop_index('ix_noise_rows_job_rank', table_name='noise_rows')
    with op.batch_alter_table('noise_rows') as batch:
        batch.drop_column('split')
        batch.drop_column('flag_reason')
