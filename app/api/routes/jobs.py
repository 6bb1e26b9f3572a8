"""``/v1/jobs``: create, list, get, cancel, and the event log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from app.api.auth import Principal, PrincipalDep
from app.api.deps import CursorQuery, EnqueueDep, IdempotencyKeyHeader, LimitQuery, SessionDep, SettingsDep
from app.api.reads import SECURED, authenticates_inside, read_in_one_call
from app.schemas import ErrorResponse, EventPublic, EventsPublic, JobCreate, JobPublic, JobsPublic
from app.services import jobs as service
from app.services import retrain

router = APIRouter(prefix="/v1/jobs", tags=["jobs"],
                   responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})


@router.post("", status_code=201, response_model=JobPublic,
             responses={409: {"model": ErrorResponse}, 429: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
def create_job(principal: PrincipalDep, session: SessionDep, settings: SettingsDep, enqueue: EnqueueDep,
               body: JobCreate, idempotency_key: IdempotencyKeyHeader = None) -> JobPublic:
    """Submit a fine-tuning job; the answer echoes every resolved setting. Send an ``Idempotency-Key``
    to retry safely: a repeat with the same key and body gets the first answer, not a second job.
    Over the tenant's ``concurrent_jobs`` or ``jobs_per_hour`` quota: 429 naming it. With ``from_job`` the
    earlier job's settings are taken and the fields given here override them (422 when the dataset has labels
    that job's dataset lacks)."""
    spec = body.model_dump()
    if body.from_job is not None:
        spec = retrain.inherit_settings(session, body.model_dump(exclude_unset=True), tenant_id=principal.tenant_id)
    job = service.create_job(session, spec, tenant_id=principal.tenant_id, settings=settings,
                             enqueue=enqueue, quotas=principal.quotas)
    return JobPublic.from_job(job)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses={409: {"model": ErrorResponse}})
def cancel_job(principal: PrincipalDep, session: SessionDep, job_id: str,
               idempotency_key: IdempotencyKeyHeader = None) -> JobPublic:
    """Cancel a job: queued ones stop at once, running ones within a training step."""
    return JobPublic.from_job(service.cancel_job(session, job_id, tenant_id=principal.tenant_id))


def _jobs_page(session: Session, principal: Principal, status: str | None, limit: int,
               cursor: str | None) -> JobsPublic:
    """The answer of ``GET /v1/jobs`` (blocking); errors as ``service.list_jobs``."""
    page = service.list_jobs(session, tenant_id=principal.tenant_id, status=status, limit=limit, cursor=cursor)
    data = []
    for job in page.items:
        public = JobPublic.from_job(job)
        source = page.related.get(job.id)
        if source is not None:
            public.comparison = retrain.comparison(source, job)
        data.append(public)
    return JobsPublic(data=data, count=page.count, next_cursor=page.next_cursor)


def _job(session: Session, principal: Principal, job_id: str) -> JobPublic:
    """The answer of ``GET /v1/jobs/{id}`` (blocking); ``NotFound`` for another tenant's or an unknown job."""
    job, source = service.get_job_with_source(session, job_id, tenant_id=principal.tenant_id)
    public = JobPublic.from_job(job)
    if source is not None:
        public.comparison = retrain.comparison(source, job)
    return public


def _events_page(session: Session, principal: Principal, job_id: str, limit: int, cursor: str | None) -> EventsPublic:
    """The answer of ``GET /v1/jobs/{id}/events`` (blocking); errors as ``service.list_events``."""
    page = service.list_events(session, job_id, tenant_id=principal.tenant_id, limit=limit, cursor=cursor)
    return EventsPublic(data=[EventPublic.model_validate(e) for e in page.items], count=page.count,
                        next_cursor=page.next_cursor, has_more=bool(page.has_more))


# The three read routes every poller hits: authentication, query and JSON in one thread-pool call (app.api.reads).
# ``app.main`` includes this router without the ``authenticate`` dependency: ``read_in_one_call`` authenticates.
reads = APIRouter(prefix="/v1/jobs", tags=["jobs"],
                  responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})


@reads.get("", response_model=JobsPublic, openapi_extra=SECURED)
@authenticates_inside
async def list_jobs(request: Request, limit: LimitQuery = 50, cursor: CursorQuery = None,
                    status: Annotated[str | None, Query(description="Only jobs in this state.")] = None) -> Response:
    """The caller's tenant's jobs, newest first, optionally filtered by state; a retrain that succeeded (as did its
    from_job) carries its ``comparison``."""
    return await read_in_one_call(request, _jobs_page, status, limit, cursor)


@reads.get("/{job_id}", response_model=JobPublic, openapi_extra=SECURED)
@authenticates_inside
async def get_job(request: Request, job_id: str) -> Response:
    """A job: state, attempt, progress (0-1, epoch, step), latest metrics, error; for a retrain that succeeded
    (as did its from_job), the ``comparison`` of the two."""
    return await read_in_one_call(request, _job, job_id)


@reads.get("/{job_id}/events", response_model=EventsPublic, openapi_extra=SECURED)
@authenticates_inside
async def list_events(request: Request, job_id: str, limit: LimitQuery = 100, cursor: CursorQuery = None) -> Response:
    """The job's events, oldest first; pass ``next_cursor`` back to get only newer ones."""
    return await read_in_one_call(request, _events_page, job_id, limit, cursor)
