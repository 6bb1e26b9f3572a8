"""Request dependencies: the database session, the settings, the artifact store and the job queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from app.db import SessionGate
from app.services.jobs import Enqueue
from app.settings import Settings
from app.storage import ArtifactStore

READ_ONLY_METHODS = ("GET", "HEAD")


async def get_db(request: Request) -> AsyncIterator[Session]:
    """The request's one database session, shared by authentication and the route (FastAPI caches it per
    request), closed as soon as the route's answer is built (before a streamed body is sent). A GET or HEAD
    request gets a session in autocommit (``app.db.read_session_factory``: it reads, it never writes, and it
    skips the BEGIN and ROLLBACK round trips); every other method a transactional one.

    A request first takes a slot of the app's ``SessionGate`` (``db_pool_size`` slots), waiting in the event
    loop, so that every request holding a session finds a pooled connection without waiting (see ``app.db``).

    Raises:
        Overloaded: no slot came free within ``db_pool_timeout_s`` (503 ``overloaded`` with ``Retry-After``).
    """
    gate: SessionGate = request.app.state.session_gate
    reads = request.method in READ_ONLY_METHODS
    await gate.acquire()
    try:
        session = (request.app.state.read_session_factory if reads else request.app.state.session_factory)()
        try:
            yield session
        finally:
            if session.in_transaction() and not reads:
                # the rollback is a round trip to the database: in a thread, under a limiter of its own so that
                # it never waits for a token of the shared pool (the same rule as FastAPI's own cleanups)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))
            else:
                session.close()  # autocommit: handing the connection back sends nothing to the database
    finally:
        gate.release()


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_store(request: Request) -> ArtifactStore:
    """The artifact store."""
    return request.app.state.store


def get_enqueue(request: Request) -> Enqueue:
    """The function that hands a committed job id to the workers."""
    return request.app.state.enqueue


SessionDep = Annotated[Session, Depends(get_db, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="Items per page.")]
CursorQuery = Annotated[str | None, Query(description="next_cursor of the previous page.")]
IdempotencyKeyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255,
    description="Makes a POST safe to retry: the same key and body return the first response (with "
                "Idempotent-Replayed: true); the same key with another body is a 409.")]
