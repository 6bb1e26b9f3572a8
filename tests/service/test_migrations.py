"""Alembic: ``upgrade head`` on an empty Postgres creates every table; ``downgrade base`` removes them;
rows from before tenants existed (revision 0002) go to the tenant ``local``, on Postgres and SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from app.db import get_engine
from app.models import Base
from tests.service.conftest import create_pg_database, drop_pg_database, run_alembic


def _tables(url: str) -> set[str]:
    engine = get_engine(url)
    engine.dispose()  # see the schema as it is now
    return set(inspect(engine).get_table_names())


def test_upgrade_creates_every_table_and_downgrade_removes_them():
    name, url = create_pg_database()
    try:
        assert _tables(url) == set()
        run_alembic(url, "upgrade", "head")
        assert _tables(url) == set(Base.metadata.tables) | {"alembic_version"}
        run_alembic(url, "check")  # the models and the migrations agree
        run_alembic(url, "downgrade", "base")
        assert _tables(url) == {"alembic_version"}
    finally:
        drop_pg_database(name, url)


def test_the_embedded_sqlite_database_migrates_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'clear.db'}"
    run_alembic(url, "upgrade", "head")
    assert _tables(url) == set(Base.metadata.tables) | {"alembic_version"}
    run_alembic(url, "downgrade", "base")
    assert _tables(url) == {"alembic_version"}


ROWS_0002 = ("INSERT INTO datasets VALUES ('ds_1', 'n', 'ready', 'csv', 'x', 1, 1, '[]', '{}', '{}', "
             "'2026-01-01 00:00:00+00')",
             "INSERT INTO jobs (id, dataset_id, base_model, method, routed, clear_config, training_config, status, "
             "attempt, progress, global_step, created_at) VALUES ('job_1', 'ds_1', 'm', 'lora', true, '{}', '{}', "
             "'succeeded', 1, 1, 0, '2026-01-01 00:00:00+00')",
             "INSERT INTO job_events (job_id, type, created_at) VALUES ('job_1', 'state', '2026-01-01 00:00:00+00')",
             "INSERT INTO job_events (job_id, type, created_at) VALUES ('job_1', 'epoch', '2026-01-01 00:01:00+00')")


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_rows_from_before_tenants_go_to_the_local_tenant(backend, tmp_path):
    name, url = create_pg_database() if backend == "postgres" else (None, f"sqlite:///{tmp_path / 'clear.db'}")
    try:
        run_alembic(url, "upgrade", "0002")
        with get_engine(url).begin() as conn:  # SQLite: foreign keys on, as the service runs it
            for statement in ROWS_0002:
                conn.execute(text(statement))
        run_alembic(url, "upgrade", "head")
        with get_engine(url).connect() as conn:
            owners = {t: conn.execute(text(f"SELECT tenant_id FROM {t}")).scalars().all()
                      for t in ("datasets", "jobs", "job_events")}
            assert owners == {"datasets": ["local"], "jobs": ["local"], "job_events": ["local", "local"]}
            assert conn.execute(text("SELECT seq FROM job_events ORDER BY id")).scalars().all() == [1, 2]  # 0007
            assert conn.execute(text("SELECT id FROM tenants")).scalars().all() == ["local"]
        run_alembic(url, "downgrade", "0002")
        with get_engine(url).connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM job_events")).scalar() == 2
    finally:
        if name:
            drop_pg_database(name, url)
