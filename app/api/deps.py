"""Request dependencies: the database session, the settings, the artifact store and the job queue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from app.db import iter_session
from app.services.jobs import Enqueue
from app.settings import Settings
from app.storage import ArtifactStore


def get_db(request: Request) -> Iterator[Session]:
    """A session for this request, closed afterwards."""
    yield from iter_session(request.app.state.session_factory)


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_store(request: Request) -> ArtifactStore:
    """The artifact store."""
    return request.app.state.store


def get_enqueue(request: Request) -> Enqueue:
    """The function that hands a committed job id to the workers."""
    return request.app.state.enqueue


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="Items per page.")]
CursorQuery = Annotated[str | None, Query(description="next_cursor of the previous page.")]
IdempotencyKeyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255,
    description="Makes a POST safe to retry: the same key and body return the first response (with "
                "Idempotent-Replayed: true); the same key with another body is a 409.")]
