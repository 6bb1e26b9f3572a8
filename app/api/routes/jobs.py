"""``/v1/jobs``: create, list, get, cancel, and the event log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.auth import PrincipalDep
from app.api.deps import CursorQuery, EnqueueDep, IdempotencyKeyHeader, LimitQuery, SessionDep, SettingsDep
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


def _with_comparisons(session, jobs) -> list[JobPublic]:
    """``JobPublic`` of each job, with ``comparison`` filled in for retrains whose both jobs succeeded."""
    found = retrain.comparisons(session, list(jobs))
    return [JobPublic.from_job(j).model_copy(update={"comparison": found.get(j.id)}) for j in jobs]


@router.get("", response_model=JobsPublic)
def list_jobs(principal: PrincipalDep, session: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None,
              status: Annotated[str | None, Query(description="Only jobs in this state.")] = None) -> JobsPublic:
    """The caller's tenant's jobs, newest first, optionally filtered by state."""
    page = service.list_jobs(session, tenant_id=principal.tenant_id, status=status, limit=limit, cursor=cursor)
    return JobsPublic(data=_with_comparisons(session, page.items), count=page.count,
                      next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(principal: PrincipalDep, session: SessionDep, job_id: str) -> JobPublic:
    """A job: state, attempt, progress (0-1, epoch, step), latest metrics, error; for a retrain that succeeded
    (as did its from_job), the ``comparison`` of the two."""
    return _with_comparisons(session, [service.get_job(session, job_id, tenant_id=principal.tenant_id)])[0]


@router.post("/{job_id}/cancel", response_model=JobPublic, responses={409: {"model": ErrorResponse}})
def cancel_job(principal: PrincipalDep, session: SessionDep, job_id: str,
               idempotency_key: IdempotencyKeyHeader = None) -> JobPublic:
    """Cancel a job: queued ones stop at once, running ones within a training step."""
    return JobPublic.from_job(service.cancel_job(session, job_id, tenant_id=principal.tenant_id))


@router.get("/{job_id}/events", response_model=EventsPublic)
def list_events(principal: PrincipalDep, session: SessionDep, job_id: str, limit: LimitQuery = 100,
                cursor: CursorQuery = None) -> EventsPublic:
    """The job's events, oldest first; pass ``next_cursor`` back to get only newer ones."""
    page = service.list_events(session, job_id, tenant_id=principal.tenant_id, limit=limit, cursor=cursor)
    return EventsPublic(data=[EventPublic.model_validate(e) for e in page.items], count=page.count,
                        next_cursor=page.next_cursor, has_more=bool(page.has_more))
