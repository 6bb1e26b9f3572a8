"""``dataset_rows.dataset_id`` checked once per statement, not once per row: the foreign key to ``datasets``
(ON DELETE CASCADE) is replaced by triggers that do the same work set-wise. Postgres ran the foreign key's
check (an index probe and a row lock) for every one of a COPY's rows, which cost more than the COPY itself
(measured: 200,000 rows, ~1.4 s with the key against ~0.45 s without; issue 13's ingest benchmark).

Postgres: an AFTER INSERT / AFTER UPDATE statement trigger reads the statement's new rows (a transition
table), takes ``FOR KEY SHARE`` on their datasets (as the foreign key would: a concurrent delete of the
dataset waits) and raises ``foreign_key_violation`` (23503) naming a missing one; an AFTER DELETE
statement trigger on ``datasets`` deletes their rows (the cascade). SQLite: the same as row triggers
(SQLite has no statement triggers; its row triggers are cheap). Dataset ids are never updated.
Downgrading restores the foreign key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

FK = "dataset_rows_dataset_id_fkey"  # Postgres' name for 0001's unnamed key
SQLITE_FK = "fk_dataset_rows_dataset_id_datasets"
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}

PG_UP = [
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
    """CREATE FUNCTION datasets_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM dataset_rows WHERE dataset_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$""",
    """CREATE TRIGGER datasets_delete_rows AFTER DELETE ON datasets
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION datasets_delete_rows()""",
]
PG_DOWN = ["DROP TRIGGER IF EXISTS datasets_delete_rows ON datasets", "DROP FUNCTION IF EXISTS datasets_delete_rows()",
           "DROP TRIGGER IF EXISTS dataset_rows_check_datasets_update ON dataset_rows",
           "DROP TRIGGER IF EXISTS dataset_rows_check_datasets_insert ON dataset_rows",
           "DROP FUNCTION IF EXISTS dataset_rows_check_datasets()"]
SQLITE_UP = [
    """CREATE TRIGGER dataset_rows_check_datasets_insert BEFORE INSERT ON dataset_rows
    WHEN NOT EXISTS (SELECT 1 FROM datasets WHERE id = NEW.dataset_id)
    BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed'); END""",
    """CREATE TRIGGER dataset_rows_check_datasets_update BEFORE UPDATE OF dataset_id ON dataset_rows
    WHEN NOT EXISTS (SELECT 1 FROM datasets WHERE id = NEW.dataset_id)
    BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed'); END""",
    """CREATE TRIGGER datasets_delete_rows AFTER DELETE ON datasets
    BEGIN DELETE FROM dataset_rows WHERE dataset_id = OLD.id; END""",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS datasets_delete_rows",
               "DROP TRIGGER IF EXISTS dataset_rows_check_datasets_update",
               "DROP TRIGGER IF EXISTS dataset_rows_check_datasets_insert"]


def upgrade() -> None:
    """Apply this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(FK, "dataset_rows", type_="foreignkey")
        for statement in PG_UP:
            op.execute(statement)
        return
    with op.batch_alter_table("dataset_rows", naming_convention=NAMING) as batch:
        batch.drop_constraint(SQLITE_FK, type_="foreignkey")
    for statement in SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "postgresql":
        for statement in PG_DOWN:
            op.execute(statement)
        op.create_foreign_key(FK, "dataset_rows", "datasets", ["dataset_id"], ["id"], ondelete="CASCADE")
        return
    for statement in SQLITE_DOWN:
        op.execute(statement)
    with op.batch_alter_table("dataset_rows") as batch:
        batch.create_foreign_key(SQLITE_FK, "datasets", ["dataset_id"], ["id"], ondelete="CASCADE")
