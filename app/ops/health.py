"""Readiness checks (``/readyz``): can this process reach the database and the broker right now?

Liveness (``/healthz``) uses none of them: it answers from the event loop alone, so a database or broker
outage, or a busy pool, never makes a live process look dead."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

BROKER_TIMEOUT_S = 3.0


def check_database(factory: sessionmaker[Session]) -> str | None:
    """None if ``SELECT 1`` answers, else the error as text."""
    try:
        with factory() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means not ready; the message says which
        return f"{type(exc).__name__}: {exc}"
    return None


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
