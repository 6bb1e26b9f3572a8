"""Postgres: ``dataset_rows.dataset_id`` checked once per dataset and transaction instead of through a
statement trigger's transition table.

0008's AFTER INSERT statement trigger made Postgres copy every inserted row, texts included, into a
transition table to check their dataset ids afterwards: on a 200,000-row COPY that cost about as much as the
primary-key index (issue 13's ingest benchmark, BENCHMARKS.md section 7). Now a BEFORE INSERT row trigger
whose ``WHEN`` clause (evaluated in the executor, no function call) skips every row whose dataset id is the
one this transaction last checked, held in the transaction-local setting ``clear.dataset_rows_checked``.
Only the first row of each dataset runs the check: ``FOR KEY SHARE`` on the dataset (as a foreign key
would: a concurrent delete of it waits until this transaction ends) and ``foreign_key_violation``
(23503) when it is missing. The remembered id cannot outlive what it vouches for: the setting is
transaction-local (and reverts with a rolled-back savepoint, whose lock is released with it), and the
cascade trigger on ``datasets`` clears it when this transaction deletes datasets. An UPDATE that changes
a row's dataset id is checked the same way (dataset ids are never updated by the service).

SQLite keeps 0008's row triggers (they are cheap there). Downgrading restores 0008's triggers.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SETTING = "clear.dataset_rows_checked"

PG_UP = [
    "DROP TRIGGER IF EXISTS dataset_rows_check_datasets_insert ON dataset_rows",
    "DROP TRIGGER IF EXISTS dataset_rows_check_datasets_update ON dataset_rows",
    "DROP FUNCTION IF EXISTS dataset_rows_check_datasets()",
    f"""CREATE FUNCTION dataset_rows_check_dataset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM datasets WHERE id = NEW.dataset_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insert or update on table "dataset_rows" violates its reference to "datasets"'
            USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (dataset_id)=(%s) is not present in '
                                                                     'table "datasets".', NEW.dataset_id);
    END IF;
    PERFORM set_config('{SETTING}', NEW.dataset_id, true);
    RETURN NEW;
END $$""",
    f"""CREATE TRIGGER dataset_rows_check_dataset_insert BEFORE INSERT ON dataset_rows FOR EACH ROW
    WHEN (NEW.dataset_id IS DISTINCT FROM current_setting('{SETTING}', true))
    EXECUTE FUNCTION dataset_rows_check_dataset()""",
    """CREATE TRIGGER dataset_rows_check_dataset_update BEFORE UPDATE OF dataset_id ON dataset_rows FOR EACH ROW
    WHEN (NEW.dataset_id IS DISTINCT FROM OLD.dataset_id)
    EXECUTE FUNCTION dataset_rows_check_dataset()""",
    f"""CREATE OR REPLACE FUNCTION datasets_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('{SETTING}', '', true);
    DELETE FROM dataset_rows WHERE dataset_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$""",
]

PG_DOWN = [
    "DROP TRIGGER IF EXISTS dataset_rows_check_dataset_insert ON dataset_rows",
    "DROP TRIGGER IF EXISTS dataset_rows_check_dataset_update ON dataset_rows",
    "DROP FUNCTION IF EXISTS dataset_rows_check_dataset()",
    """CREATE OR REPLACE FUNCTION datasets_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM dataset_rows WHERE dataset_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$""",
]


def upgrade() -> None:
    """Apply this revision (Postgres only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in PG_UP:
        op.execute(statement)


def downgrade() -> None:
    """Revert this revision: 0008's statement triggers (Postgres only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in PG_DOWN:
        op.execute(statement)
    for statement in _0008_INSERT_CHECK:
        op.execute(statement)


# 0008's insert/update check, recreated on downgrade
_0008_INSERT_CHECK = [
    """CREATE FUNCTION dataset_rows_check_datasets() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    PERFORM 1 FROM datasets WHERE id IN (SELECT DISTINCT dataset_id FROM new_rows) FOR KEY SHARE;
    SELECT n.dataset_id INTO missing FROM (SELECT DISTINCT dataset_id FROM new_rows) AS n
        WHERE NOT EXISTS (SELECT 1 FROM datasets AS d WHERE d.id = n.dataset_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "dataset_rows" violates its reference to "datasets"'
            USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (dataset_id)=(%s) is not present in '
                                                                     'table "datasets".', missing);
    END IF;
    RETURN NULL;
END $$""",
    """CREATE TRIGGER dataset_rows_check_datasets_insert AFTER INSERT ON dataset_rows
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dataset_rows_check_datasets()""",
    """CREATE TRIGGER dataset_rows_check_datasets_update AFTER UPDATE ON dataset_rows
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dataset_rows_check_datasets()""",
]
