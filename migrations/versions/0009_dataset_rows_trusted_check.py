"""Postgres: inserted ``dataset_rows`` are checked against ``datasets`` row by row again, but only rows whose
dataset the transaction has not already checked and locked, so a COPY of one dataset's rows costs one
check and keeps no copy of its rows. 0008's AFTER INSERT statement trigger read a transition table, which
made Postgres keep every inserted row a second time (a 50 MB upload spilled ~50 MB to temporary files);
measured on issue 13's ingest benchmark, that capture cost about as much as the check itself.

- ``dataset_rows_trust(id)``: takes ``FOR KEY SHARE`` on dataset ``id`` (as a foreign key would: a concurrent
  delete of it waits), raises ``foreign_key_violation`` (23503) if it is missing, and records ``id`` in the
  transaction-local setting ``clear.dataset_rows_checked``. The service calls it before it stores a
  dataset's rows (``app.services.datasets``, ``app.services.versions``).
- An AFTER INSERT row trigger, with ``WHEN (NEW.dataset_id IS DISTINCT FROM current_setting(...))``: a row
  of another dataset (or any row when nothing was trusted) is checked on its own, with the same lock and
  error. A row trigger that is AFTER (not BEFORE) keeps COPY's batched inserts, and a false ``WHEN`` queues
  nothing.
- The setting is transaction-local (``set_config(..., true)``): it ends with the transaction and is undone
  when the savepoint that set it is rolled back; the cascade trigger on ``datasets`` (0008's) now also
  clears it, so a dataset deleted after it was trusted is not trusted for later rows.
- Updates of ``dataset_rows`` keep 0008's statement trigger. A dataset's id cannot change while rows name it
  (as a foreign key's default ``ON UPDATE NO ACTION`` refused it, which 0008 had lost): an update of
  ``datasets.id`` raises ``foreign_key_violation``, and ends any trust, on both databases. The service never
  changes dataset ids.

The setting is a guard against the service's own mistakes, not against a database user: a role that can
insert into ``dataset_rows`` and set the setting by hand can store rows of a missing dataset (they stay
invisible, as every read goes through ``datasets``). SQLite keeps 0008's row triggers (cheap there) and gets
the id guard. Downgrading restores 0008's insert trigger.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

SETTING = "clear.dataset_rows_checked"

PG_UP = [
    "DROP TRIGGER dataset_rows_check_datasets_insert ON dataset_rows",
    f"""CREATE FUNCTION dataset_rows_trust(dataset text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM datasets WHERE id = dataset FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insert or update on table "dataset_rows" violates its reference to "datasets"'
            USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (dataset_id)=(%s) is not present in '
                                                                     'table "datasets".', dataset);
    END IF;
    PERFORM set_config('{SETTING}', dataset, true);
END $$""",
    """CREATE FUNCTION dataset_rows_check_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dataset_rows_trust(NEW.dataset_id);
    RETURN NULL;
END $$""",
    f"""CREATE TRIGGER dataset_rows_check_row AFTER INSERT ON dataset_rows FOR EACH ROW
    WHEN (NEW.dataset_id IS DISTINCT FROM current_setting('{SETTING}', true))
    EXECUTE FUNCTION dataset_rows_check_row()""",
    f"""CREATE FUNCTION datasets_keep_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('{SETTING}', '', true);
    IF EXISTS (SELECT 1 FROM dataset_rows WHERE dataset_id = OLD.id) THEN
        RAISE EXCEPTION 'update on table "datasets" violates its reference from "dataset_rows"'
            USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (id)=(%s) is still referenced from '
                                                                     'table "dataset_rows".', OLD.id);
    END IF;
    RETURN NULL;
END $$""",
    """CREATE TRIGGER datasets_keep_id AFTER UPDATE OF id ON datasets FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION datasets_keep_id()""",
    f"""CREATE OR REPLACE FUNCTION datasets_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('{SETTING}', '', true);
    DELETE FROM dataset_rows WHERE dataset_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$""",
]
PG_DOWN = [
    "DROP TRIGGER IF EXISTS datasets_keep_id ON datasets",
    "DROP FUNCTION IF EXISTS datasets_keep_id()",
    "DROP TRIGGER IF EXISTS dataset_rows_check_row ON dataset_rows",
    "DROP FUNCTION IF EXISTS dataset_rows_check_row()",
    "DROP FUNCTION IF EXISTS dataset_rows_trust(text)",
    """CREATE OR REPLACE FUNCTION datasets_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM dataset_rows WHERE dataset_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$""",
    """CREATE TRIGGER dataset_rows_check_datasets_insert AFTER INSERT ON dataset_rows
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dataset_rows_check_datasets()""",
]


SQLITE_UP = ["""CREATE TRIGGER datasets_keep_id BEFORE UPDATE OF id ON datasets
    WHEN OLD.id IS NOT NEW.id AND EXISTS (SELECT 1 FROM dataset_rows WHERE dataset_id = OLD.id)
    BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed'); END"""]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS datasets_keep_id"]


def upgrade() -> None:
    """Apply this revision (on SQLite only the guard of a dataset's id)."""
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in PG_UP if postgres else SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    """Revert this revision."""
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in PG_DOWN if postgres else SQLITE_DOWN:
        op.execute(statement)
