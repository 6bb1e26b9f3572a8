"""What live views of a job read: a progress snapshot plus the events after a cursor (one poll of the
event stream), and the epochs' metrics from the event log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.errors import InvalidInput
from app.models import TERMINAL_STATUSES, Job, JobEvent
from app.services.jobs import get_job

POLL_BATCH = 500


@dataclass
class StreamPoll:
    """One look at a job: its progress, its events after the cursor, and whether the stream may end
    (the job is final and every event up to that state has been read)."""

    snapshot: dict[str, Any]
    events: list[JobEvent]
    final: bool


def progress_snapshot(job: Job) -> dict[str, Any]:
    """The job's state and progress fields (a ``JobProgressPublic``)."""
    return {"status": job.status, "progress": job.progress, "epoch": job.epoch,
            "num_epochs": (job.training_config or {}).get("epochs"), "global_step": job.global_step,
            "max_steps": job.max_steps, "phase": job.phase, "loss": job.loss}


def parse_last_event_id(value: str | None) -> int:
    """The event id a client resumes after (0: from the start); ``InvalidInput`` if it is not one."""
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit() and len(value) <= 18):  # '²' is a digit to isdigit(); 64-bit ids
        raise InvalidInput(f"Last-Event-ID={value!r} is not an event id: send the id of the last event received",
                           param="Last-Event-ID")
    return int(value)


def poll_job(factory: sessionmaker[Session], job_id: str, after: int, *, tenant_id: str,
             limit: int = POLL_BATCH) -> StreamPoll:
    """Read the tenant's job, then its events with id > ``after`` (in that order: a job read as final has
    already written its last event, so the events read next include it); ``NotFound`` for another's job."""
    with factory() as session:
        job = get_job(session, job_id, tenant_id=tenant_id)
        snapshot = progress_snapshot(job)
        query = (select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.tenant_id == tenant_id, JobEvent.id > after)
                 .order_by(JobEvent.id))
        events = list(session.scalars(query.limit(limit)))
    return StreamPoll(snapshot, events, final=snapshot["status"] in TERMINAL_STATUSES and len(events) < limit)


def epoch_metrics(session: Session, job_id: str, *, tenant_id: str) -> list[dict[str, Any]]:
    """The metrics of each finished epoch, oldest first (the data of the tenant's job's ``epoch`` events)."""
    query = (select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.tenant_id == tenant_id,
                                         JobEvent.type == "epoch").order_by(JobEvent.id))
    return [dict(data) for data in session.scalars(query) if data]
