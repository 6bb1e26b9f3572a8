"""The service benchmarks' scratch Postgres databases and ports (bench/scale.py, bench/service_api.py,
bench/service_ingest.py): one place for the admin connection, the migrated database and a free port."""

from __future__ import annotations

import os
import secrets
import socket

from bench.common import REPO_ROOT

PG_ADMIN = os.environ.get("CLEAR_BENCH_PG_ADMIN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL = os.environ.get("CLEAR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{name}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_database(prefix: str, *, migrate: bool = True) -> tuple[str, str]:
    """A new database ``<prefix><8 hex>``, migrated to head with the app's Alembic scripts unless ``migrate``
    is False; returns ``(name, SQLAlchemy URL)``."""
    import psycopg

    name = f"{prefix}{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_URL.format(name=name)
    if migrate:
        migrate_database(url)
    return name, url


def migrate_database(url: str) -> None:
    """``alembic upgrade head`` on ``url``."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def drop_database(name: str, url: str) -> None:
    """Drop a database made by :func:`create_database` (this process's pooled connections closed first)."""
    import psycopg

    from app.db import get_engine

    get_engine(url).dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
