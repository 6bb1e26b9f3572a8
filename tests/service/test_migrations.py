"""Alembic: ``upgrade head`` on an empty Postgres creates every table; ``downgrade base`` removes them."""

from __future__ import annotations

from sqlalchemy import inspect

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
