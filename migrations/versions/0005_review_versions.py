"""Close the loop (issue 10): review decisions per report row, dataset versions with their lineage, and
jobs that retrain from an earlier job.

- ``review_decisions``: one row per (job, report row), the latest decision winning (an upsert), with the
  tenant, the API key and the time it was made.
- ``datasets.parent_id`` / ``from_job_id`` / ``lineage``: a version made from a job's decisions names the
  dataset and job it came from and counts the rows accepted, relabelled, kept and dropped.
- ``jobs.from_job_id``: the job whose settings a retrain took.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table('review_decisions',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('row_index', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('api_key_id', sa.String(length=40), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
    sa.PrimaryKeyConstraint('job_id', 'row_index')
    )
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('parent_id', sa.String(length=40), nullable=True))
        batch.add_column(sa.Column('from_job_id', sa.String(length=40), nullable=True))
        batch.add_column(sa.Column('lineage', sa.JSON(), nullable=True))
        batch.create_foreign_key('fk_datasets_parent_id', 'datasets', ['parent_id'], ['id'])
        batch.create_foreign_key('fk_datasets_from_job_id', 'jobs', ['from_job_id'], ['id'], ondelete='SET NULL')
        batch.create_index('ix_datasets_parent_id', ['parent_id'])
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('from_job_id', sa.String(length=40), nullable=True))
        batch.create_foreign_key('fk_jobs_from_job_id', 'jobs', ['from_job_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table('jobs') as batch:
        batch.drop_constraint('fk_jobs_from_job_id', type_='foreignkey')
        batch.drop_column('from_job_id')
    with op.batch_alter_table('datasets') as batch:
        batch.drop_index('ix_datasets_parent_id')
        batch.drop_constraint('fk_datasets_from_job_id', type_='foreignkey')
        batch.drop_constraint('fk_datasets_parent_id', type_='foreignkey')
        batch.drop_column('lineage')
        batch.drop_column('from_job_id')
        batch.drop_column('parent_id')
    op.drop_table('review_decisions')
