"""Job leases: a worker claims a queued job with a conditional UPDATE, renews its heartbeat while it
runs, and every write it makes is fenced by the attempt number it claimed. A reaper (run by every
worker, see ``worker.reaper``) puts jobs whose heartbeat went stale back in the queue with the next
attempt, up to ``max_attempts``, and fails jobs past their hard time limit. An attempt that a stopping
worker handed back (``worker.shutdown``: checkpointed, state event with reason ``worker_stopped``) is not
counted against ``max_attempts``: the limit is for jobs whose workers keep dying, and a graceful stop resumes
from its checkpoint, so restarts of workers (deploys, scaling down) never fail a job.

No torch and no Celery here: the API, the worker and the tests share these functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial

from sqlalchemy import case, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session

from app.models import IdempotencyKey, Job, JobEvent, utcnow
from app.services.transitions import add_event, transition
from app.settings import Settings

logger = logging.getLogger(__name__)
ACTIVE = ("running", "cancelling")
# where a job stands: written together, and only when they do not move it back (a resumed attempt redoing
# steps the job's progress already counts leaves them as they are until it passes them)
PROGRESS_FIELDS = ("progress", "epoch", "global_step", "phase", "loss")
WORKER_STOPPED = "worker_stopped"  # the reason in the state event of a job a stopping worker put back in the queue


def as_utc(moment: datetime | None) -> datetime | None:
    """``moment`` as an aware UTC datetime (SQLite hands back naive ones, all stored in UTC)."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def hard_deadline(job: Job) -> datetime | None:
    """When the job's hard time limit runs out: first start + ``time_limit_s`` (None if not started)."""
    started = as_utc(job.started_at)
    return started + timedelta(seconds=job.time_limit_s) if started and job.time_limit_s else None


def soft_deadline(job: Job) -> datetime | None:
    """When the worker asks the trainer to stop: first start + ``soft_time_limit_s``."""
    started = as_utc(job.started_at)
    limit = job.soft_time_limit_s or job.time_limit_s
    return started + timedelta(seconds=limit) if started and limit else None


def claim(session: Session, job_id: str, owner: str) -> Job | None:
    """Take a queued job: ``queued → running`` with ``attempt + 1`` and a fresh heartbeat, in one
    conditional UPDATE, so of two deliveries of the same task only one ever runs it.

    Returns:
        The claimed job (its ``attempt`` is the fencing token of every later write), or None.
    """
    now = utcnow()
    moved = transition(session, job_id, ("queued",), "running", message=f"a worker took the job ({owner})",
                       event_data={"worker": owner}, attempt=Job.attempt + 1, lease_owner=owner,
                       started_at=func.coalesce(Job.started_at, now), heartbeat_at=now)
    return session.get(Job, job_id, populate_existing=True) if moved else None


@dataclass(frozen=True)
class PendingEvent:
    """An event a worker made but has not written yet (buffered through a database outage): its type,
    message and data as for ``add_event``, the moment it happened, and the job columns that are set with it
    (a checkpoint record: ``checkpoint_uri`` and ``checkpoint_step``)."""

    type: str
    message: str | None
    data: dict | None = None
    created_at: datetime = field(default_factory=utcnow)
    job_fields: dict = field(default_factory=dict)


def _forward_only(fields: dict) -> dict:
    """``fields`` as UPDATE values in which the progress fields only apply when ``global_step`` does not
    go back (evaluated against the row as it was, so they move together or not at all)."""
    step = fields.get("global_step")
    if step is None:
        return dict(fields)
    ahead = Job.global_step <= step
    return {name: case((ahead, literal(value, getattr(Job, name).type)), else_=getattr(Job, name))
            if name in PROGRESS_FIELDS else value for name, value in fields.items()}


def renew(session: Session, job_id: str, attempt: int, *, events: Sequence[PendingEvent] = (), **fields) -> str | None:
    """Renew the lease of ``attempt``: heartbeat, any job ``fields`` (progress, metrics), then ``events`` in
    order with their job columns, in one transaction, committed only while ``attempt`` holds the job (else
    nothing is written). Progress never moves back: ``progress``, ``epoch``, ``global_step``, ``phase`` and
    ``loss`` are kept when ``fields['global_step']`` is below the job's.

    Returns:
        The job's status (``running`` or ``cancelling``), or None when this attempt no longer holds it.
    """
    values = _forward_only(fields)
    for event in events:
        values.update(event.job_fields)
    row = session.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt, Job.status.in_(ACTIVE))
                          .values(heartbeat_at=utcnow(), **values).returning(Job.status)).first()
    if row is None:
        session.rollback()
        return None
    for event in events:
        add_event(session, job_id, event.type, message=event.message, data=event.data, created_at=event.created_at)
    session.commit()
    return row.status


def lease_status(session: Session, job_id: str, attempt: int) -> str | None:
    """The status while ``attempt`` still holds the job, else None (a cheap read, once per step)."""
    return session.scalar(select(Job.status).where(Job.id == job_id, Job.attempt == attempt,
                                                   Job.status.in_(ACTIVE)))


def release(session: Session, job_id: str, attempt: int, reason: str) -> bool:
    """Give a job back to the queue after a transient fault (the next claim is the next attempt)."""
    return transition(session, job_id, ACTIVE, "queued", on_attempt=attempt, message=f"requeued: {reason}",
                      lease_owner=None, enqueued_at=None)


def stopped_attempts(session: Session, job_id: str) -> int:
    """How many attempts of the job a stopping worker handed back (not counted against ``max_attempts``)."""
    return session.scalar(select(func.count()).select_from(JobEvent).where(
        JobEvent.job_id == job_id, JobEvent.type == "state", JobEvent.data["reason"].as_string() == WORKER_STOPPED))


@dataclass
class ReapResult:
    """What one reaper pass did, by job id."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    redispatched: list[str] = field(default_factory=list)


def _verdict(job: Job, now: datetime, settings: Settings, stopped: Callable[[], int]
             ) -> tuple[str, dict, str] | None:
    deadline = hard_deadline(job)
    if deadline and now > deadline:
        return "failed", {"error_code": "time_limit", "error_message": f"the job ran past its time limit of "
                          f"{job.time_limit_s} s"}, "time limit reached"
    heartbeat = as_utc(job.heartbeat_at) or as_utc(job.started_at) or as_utc(job.created_at)
    if now - heartbeat < timedelta(seconds=settings.lease_timeout_s):
        return None
    lost = (f"the worker of attempt {job.attempt} stopped renewing its lease "
            f"(last heartbeat {heartbeat.isoformat(timespec='seconds')})")
    if job.status == "cancelling":
        return "cancelled", {}, f"{lost} while cancelling"
    handed_back = stopped()
    if job.attempt - handed_back >= settings.max_attempts:
        besides = f", besides {handed_back} handed back by stopping workers" if handed_back else ""
        return "failed", {"error_code": "worker_lost", "error_message": f"{lost}; gave up after "
                          f"{job.attempt - handed_back} attempt(s){besides} (CLEAR_MAX_ATTEMPTS="
                          f"{settings.max_attempts})"}, lost
    return "queued", {"lease_owner": None, "enqueued_at": None}, f"requeued for attempt {job.attempt + 1}: {lost}"


def _same(column, value):
    return column.is_(None) if value is None else column == value


def reap(session: Session, settings: Settings, enqueue: Callable[[str], None]) -> ReapResult:
    """One pass: requeue (and enqueue) jobs whose heartbeat is stale, fail those out of attempts or past
    their hard time limit, resend jobs queued longer than ``redispatch_after_s``, forget old idempotency
    keys. Every change is a conditional UPDATE on the observed attempt, so concurrent reapers and a
    late heartbeat cannot both win."""
    now, result = utcnow(), ReapResult()
    for job in session.scalars(select(Job).where(Job.status.in_(ACTIVE))).all():
        verdict = _verdict(job, now, settings, partial(stopped_attempts, session, job.id))
        if verdict is None:
            continue
        status, fields, message = verdict
        # fenced on the heartbeat we judged too: a worker that renews meanwhile keeps its job
        done = transition(session, job.id, ACTIVE, status, on_attempt=job.attempt, message=message,
                          where=(_same(Job.heartbeat_at, job.heartbeat_at),),
                          finished_at=None if status == "queued" else now, **fields)
        if done:
            getattr(result, {"queued": "requeued", "failed": "failed", "cancelled": "cancelled"}[status]).append(job.id)
    cutoff = now - timedelta(seconds=settings.redispatch_after_s)
    stale_queue = select(Job.id).where(
        Job.status == "queued", or_(Job.enqueued_at < cutoff, Job.enqueued_at.is_(None) & (Job.created_at < cutoff)))
    stale = list(session.scalars(stale_queue))
    for job_id in stale + result.requeued:
        if job_id not in result.redispatched and dispatch(session, job_id, enqueue):
            result.redispatched.append(job_id)
            if job_id in stale:  # a queued job no worker took (its message lost, e.g. by a broker restart)
                logger.warning("redispatched job %s: it was queued for over %d s without a worker taking it",
                               job_id, settings.redispatch_after_s, extra={"job_id": job_id})
    session.execute(delete(IdempotencyKey).where(
        IdempotencyKey.created_at < now - timedelta(seconds=settings.idempotency_ttl_s)))
    session.commit()
    return result


def dispatch(session: Session, job_id: str, enqueue: Callable[[str], None]) -> bool:
    """Send a queued job's task and record when; False (logged) if the broker refused it."""
    try:
        enqueue(job_id)
    except Exception:  # the broker is down: the next reaper pass tries again
        logger.warning("could not enqueue job %s; will retry", job_id, exc_info=True)
        return False
    session.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(enqueued_at=utcnow()))
    session.commit()
    return True


def record_event(session: Session, job_id: str, attempt: int, type_: str, message: str, data: dict | None = None
                 ) -> bool:
    """Append an event if ``attempt`` still holds the job; commit. Returns whether it was written."""
    if lease_status(session, job_id, attempt) is None:
        return False
    add_event(session, job_id, type_, message=message, data=data)
    session.commit()
    return True
