"""Prediction runs: a trained job's adapter used on a dataset or an uploaded file.

- ``jobs.kind`` (``train`` | ``predict``, default ``train``): a prediction run is a job row, so leases, the
  reaper, transitions, events, cancel and quotas apply to it unchanged; ``jobs.model_job_id`` names the
  job whose adapter it uses (ON DELETE CASCADE: deleting that job deletes its runs); ``input_name``,
  ``input_uri`` and ``row_count`` describe an uploaded input. ``jobs.dataset_id`` becomes nullable (a run on
  an uploaded file has no dataset).
- ``prediction_rows``: per row of a run, the predicted label, the class probabilities and, for labelled
  rows, the label check's verdict.

Downgrading deletes every prediction run (their rows go with them) before ``dataset_id`` is NOT NULL again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=20), nullable=False, server_default='train'))
        batch.add_column(sa.Column('model_job_id', sa.String(length=40), nullable=True))
        batch.add_column(sa.Column('input_name', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('input_uri', sa.String(length=500), nullable=True))
        batch.add_column(sa.Column('row_count', sa.Integer(), nullable=True))
        batch.alter_column('dataset_id', existing_type=sa.String(length=40), nullable=True)
        batch.create_foreign_key('fk_jobs_model_job_id', 'jobs', ['model_job_id'], ['id'], ondelete='CASCADE')
        batch.create_index('ix_jobs_model_job_id', ['model_job_id'])
    op.create_table('prediction_rows',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('row_index', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=100), nullable=False),
    sa.Column('row_id', sa.String(length=200), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('text_pair', sa.Text(), nullable=True),
    sa.Column('given_label', sa.String(length=200), nullable=True),
    sa.Column('predicted_label', sa.String(length=200), nullable=False),
    sa.Column('probabilities', sa.JSON(), nullable=False),
    sa.Column('flagged', sa.Boolean(), nullable=True),
    sa.Column('suggested_label', sa.String(length=200), nullable=True),
    sa.Column('suggested_confidence', sa.Float(), nullable=True),
    sa.Column('label_quality', sa.Float(), nullable=True),
    sa.Column('flag_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id']),
    sa.PrimaryKeyConstraint('run_id', 'row_index')
    )
    op.create_index('ix_prediction_rows_run_predicted', 'prediction_rows', ['run_id', 'predicted_label', 'row_index'])


def downgrade() -> None:
    """Revert this revision (prediction runs, their rows and events are deleted)."""
    op.drop_index('ix_prediction_rows_run_predicted', table_name='prediction_rows')
    op.drop_table('prediction_rows')
    op.execute("DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE kind = 'predict')")
    op.execute("DELETE FROM jobs WHERE kind = 'predict'")
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_model_job_id')
        batch.drop_constraint('fk_jobs_model_job_id', type_='foreignkey')
        batch.alter_column('dataset_id', existing_type=sa.String(length=40), nullable=False)
        batch.drop_column('row_count')
        batch.drop_column('input_uri')
        batch.drop_column('input_name')
        batch.drop_column('model_job_id')
        batch.drop_column('kind')
