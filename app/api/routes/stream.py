"""``GET /v1/jobs/{id}/events/stream``: the job's events as Server-Sent Events, resuming after
``Last-Event-ID``, with ``progress`` snapshots in between; the stream ends once the job is final."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.api.auth import PrincipalDep
from app.api.deps import SessionDep
from app.schemas import ErrorResponse, EventPublic
from app.services.jobs import get_job
from app.services.live import parse_last_event_id, poll_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"],
                   responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
POLL_S = 0.5
HEARTBEAT_S = 15.0
RETRY_MS = 2000
STREAM_DOC = """Each job event is sent as ``id: <event id>``, ``event: <type>`` (state, epoch, message, warning) and
``data: <the event as in /events>``. Between them, ``event: progress`` (no id) carries a
``JobProgressPublic`` whenever the job's progress changes. When the job is final and every event has
been sent, ``event: end`` with ``{"status": ...}`` closes the stream. A reconnecting client sends
``Last-Event-ID`` (browsers' ``EventSource`` does) or ``?last_event_id=`` and gets only newer events."""


def sse(data: Any, *, event: str, event_id: int | None = None) -> str:
    """One Server-Sent Event: optional id, the event name and one JSON data line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


async def event_stream(factory: sessionmaker[Session], job_id: str, after: int, *, tenant_id: str,
                       poll_s: float = POLL_S, heartbeat_s: float = HEARTBEAT_S) -> AsyncIterator[str]:
    """Poll the tenant's job and its events until it is final; yield them as SSE text, heartbeats while idle."""
    yield f"retry: {RETRY_MS}\n\n"
    last_snapshot, idle = None, 0.0
    while True:
        poll = await run_in_threadpool(lambda: poll_job(factory, job_id, after, tenant_id=tenant_id))
        for event in poll.events:
            yield sse(EventPublic.model_validate(event).model_dump(mode="json"), event=event.type,
                      event_id=event.id)
            after = event.id
        if poll.snapshot != last_snapshot:
            yield sse(poll.snapshot, event="progress")
            last_snapshot, idle = poll.snapshot, 0.0
        if poll.final:
            yield sse({"status": poll.snapshot["status"]}, event="end")
            return
        if poll.events:
            idle = 0.0
            continue  # a full batch: read the rest before waiting
        await asyncio.sleep(poll_s)
        idle += poll_s
        if idle >= heartbeat_s:
            yield ": keep-alive\n\n"  # a comment: keeps proxies from closing an idle stream
            idle = 0.0


@router.get("/{job_id}/events/stream", response_class=StreamingResponse, description=STREAM_DOC,
            responses={200: {"content": {"text/event-stream": {}}, "description": "An event stream."}})
async def stream_events(
    request: Request, principal: PrincipalDep, session: SessionDep, job_id: str,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id",
                                                     description="Resume after this event id.")] = None,
) -> StreamingResponse:
    """The job's events and progress, live, as Server-Sent Events."""
    factory = request.app.state.session_factory
    after = parse_last_event_id(last_event_id if last_event_id is not None else last_event_id_query)

    # 404 before the stream starts; the request's session is closed before the stream begins (each poll
    # then takes a short session of its own)
    await run_in_threadpool(get_job, session, job_id, tenant_id=principal.tenant_id)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(event_stream(factory, job_id, after, tenant_id=principal.tenant_id),
                             media_type="text/event-stream", headers=headers)
