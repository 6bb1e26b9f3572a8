"""Readiness checks (``/readyz``): can this process reach the database and the broker right now?

Liveness (``/healthz``) uses none of them: it answers from the event loop alone, so a database or broker
outage, or a busy pool, never makes a live process look dead."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

BROKER_TIMEOUT_S = 3.0


MIGRATE = "run `python -m app.cli migrate` (alembic upgrade head) with this CLEAR_DATABASE_URL"


@lru_cache(maxsize=1)
def schema_head() -> str | None:
    """The newest migration's revision (``migrations/``, read once), or None where the scripts are not on disk."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    ini = Path(__file__).resolve().parents[2] / "alembic.ini"
    if not ini.is_file():
        return None
    return ScriptDirectory.from_config(Config(str(ini))).get_current_head()


def schema_problem(session: Session) -> str | None:
    """None if the database's schema is the code's (``alembic_version`` at ``schema_head``), else what is wrong
    and how to fix it: a database nobody migrated answered ``SELECT 1`` (ready) while every route was a 500."""
    head = schema_head()
    try:
        version = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # no such table: never migrated
        session.rollback()
        return f"the database has no schema (no alembic_version table): {MIGRATE}"
    if head is not None and version != head:
        return f"the database's schema is at revision {version}, this code needs {head}: {MIGRATE}"
    return None


def check_database(factory: sessionmaker[Session]) -> str | None:
    """None if ``SELECT 1`` answers and the schema is the code's (``schema_problem``), else the error as text."""
    try:
        with factory() as session:
            session.execute(text("SELECT 1"))
            return schema_problem(session)
    except Exception as exc:  # any failure means not ready; the message says which
        return f"{type(exc).__name__}: {exc}"


def check_broker(url: str, timeout: float = BROKER_TIMEOUT_S) -> str | None:
    """None if a connection to the Celery broker at ``url`` opens within ``timeout`` seconds, else the error."""
    from kombu import Connection  # celery's transport library; no worker code behind it

    try:
        with Connection(url, connect_timeout=timeout, transport_options={"max_retries": 0}) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def readiness(factory: sessionmaker[Session], broker_url: str) -> dict[str, Any]:
    """``{"database": "ok" | error, "broker": "ok" | error}``."""
    return {name: error or "ok" for name, error in (("database", check_database(factory)),
                                                    ("broker", check_broker(broker_url)))}
