"""Service fixtures: a fresh Postgres database migrated with Alembic, a Redis broker database,
settings pointing at them, API keys, and an API client (tenant ``tenant-a``, every scope) whose enqueue
step is recorded."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from app.db import get_engine
from app.settings import Settings

PG_ADMIN = os.environ.get("CLEAR_TEST_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
REDIS_URL = os.environ.get("CLEAR_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
TABLES = ("noise_rows", "job_events", "jobs", "dataset_rows", "datasets", "idempotency_keys", "review_decisions")
AUTH_TABLES = ("api_keys", "tenants")
TENANT_A = "tenant-a"
ALL_SCOPES = "read,write,admin"


def run_alembic(url: str, *args: str) -> None:
    """``alembic upgrade head`` (or other args) against ``url``, as the scripts run it."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(Path(__file__).resolve().parents[2] / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    getattr(command, args[0])(config, *args[1:])


def create_pg_database() -> tuple[str, str]:
    """A new empty Postgres database; returns (name, SQLAlchemy URL)."""
    name = f"clear_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, PG_URL.format(name=name)


def drop_pg_database(name: str, url: str) -> None:
    """Drop a database made by ``create_pg_database`` (closing this process's pooled connections)."""
    get_engine(url).dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url():
    """A migrated Postgres database for the whole session."""
    name, url = create_pg_database()
    run_alembic(url, "upgrade", "head")
    yield url
    drop_pg_database(name, url)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_model_dir):
    """A model folder holding the tiny BERT as base model ``tiny-bert``."""
    folder = tmp_path_factory.mktemp("models")
    (folder / "tiny-bert").symlink_to(tiny_model_dir, target_is_directory=True)
    return folder


@pytest.fixture
def settings(pg_url, tmp_path, model_dir):
    """Settings on the session database (emptied after each test), Redis and a fresh artifact folder."""
    yield Settings(data_dir=tmp_path, database_url=pg_url, broker_url=REDIS_URL,
                   artifact_url=str(tmp_path / "artifacts"), model_dir=model_dir)
    with get_engine(pg_url).begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES + AUTH_TABLES)} CASCADE"))


@pytest.fixture(params=["postgres", "sqlite"])
def either_database(request, settings, tmp_path):
    """A session factory on the test Postgres database, then on a fresh SQLite file migrated to head (a test
    using it runs once on each)."""
    from app.db import session_factory

    if request.param == "postgres":
        yield session_factory(settings.database_url)
        return
    url = f"sqlite:///{tmp_path / 'either.db'}"
    run_alembic(url, "upgrade", "head")
    yield session_factory(url)
    get_engine(url).dispose()


def create_key(url: str, tenant: str, scopes: str = ALL_SCOPES) -> str:
    """A new API key of ``tenant`` (made if new) in the database at ``url``; returns the plaintext."""
    from app.db import session_factory
    from app.services.api_keys import create_key as make

    with session_factory(url)() as session:
        return make(session, tenant, scopes).key


@pytest.fixture
def api_key(settings) -> str:
    """A key of tenant ``tenant-a`` with every scope (the one ``client`` sends)."""
    return create_key(settings.database_url, TENANT_A)


@pytest.fixture
def auth(api_key) -> dict[str, str]:
    """The ``Authorization`` header of ``api_key``, for test clients made in a test."""
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def enqueued():
    """Job ids the API handed to the queue, in order."""
    return []


@pytest.fixture
def client(settings, enqueued, auth):
    """An API client of tenant ``tenant-a`` whose queue only records job ids."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings, enqueue=enqueued.append), headers=auth) as test_client:
        yield test_client


def table_counts(url: str) -> dict[str, int]:
    """Rows in every service table."""
    with get_engine(url).connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server (the one on 6379 is shared with other users of this machine)."""
    from tests.service.outages import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def api(settings, redis_server, auth):
    """An API client whose jobs go to the private Redis."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings.model_copy(update={"broker_url": redis_server.url})), headers=auth) as client:
        yield client
