"""Per-job event numbers: ``job_events.seq`` is 1, 2, 3, ... within each job (beside the global ``id``), so a
job's log shows no gaps where other jobs' events took ids. Existing events are numbered in ``id`` order;
``(job_id, seq)`` is unique. Downgrading drops the column.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.add_column('job_events', sa.Column('seq', sa.Integer(), nullable=True))
    # a correlated count, which Postgres and SQLite both run (no UPDATE ... FROM on old SQLite)
    op.execute("UPDATE job_events SET seq = (SELECT count(*) FROM job_events AS e "
               "WHERE e.job_id = job_events.job_id AND e.id <= job_events.id)")
    with op.batch_alter_table('job_events') as batch:
        batch.alter_column('seq', existing_type=sa.Integer(), nullable=False)
        batch.create_unique_constraint('uq_job_events_job_id_seq', ['job_id', 'seq'])


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('job_events') as batch:
        batch.drop_constraint('uq_job_events_job_id_seq', type_='unique')
        batch.drop_column('seq')
