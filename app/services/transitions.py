"""Job state changes: a conditional UPDATE plus an event row, in one transaction.

Shared by the API (create, cancel) and the worker (claim, progress, finish) so that every
transition is atomic, race-free (it only happens from the expected states) and logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from app.models import Job, JobEvent, utcnow


def add_event(session: Session, job_id: str, type_: str, *, message: str | None = None,
              data: dict[str, Any] | None = None, created_at: datetime | None = None) -> None:
    """Append one event to the job's log (not committed); it belongs to the job's tenant and gets the job's next
    ``seq`` (1, 2, 3 ...). The job's row is locked first (``FOR UPDATE`` on Postgres; SQLite writes one at a time),
    so two writers of the same job (a worker's epoch event, the API's cancel) never take the same number.
    ``created_at`` is when it happened (default now; a worker's buffered event keeps the time it was made)."""
    tenant = session.scalar(select(Job.tenant_id).where(Job.id == job_id).with_for_update())
    seq = select(func.coalesce(func.max(JobEvent.seq), 0) + 1).where(JobEvent.job_id == job_id).scalar_subquery()
    session.execute(insert(JobEvent).values(job_id=job_id, tenant_id=tenant, seq=seq, type=type_, message=message,
                                            data=data, created_at=created_at or utcnow()))


def transition(session: Session, job_id: str, from_statuses: tuple[str, ...], to_status: str, *,
               message: str | None = None, on_attempt: int | None = None, event_data: dict[str, Any] | None = None,
               where: tuple[Any, ...] = (), **fields: Any) -> bool:
    """Move the job to ``to_status`` if it is in one of ``from_statuses`` (and, when ``on_attempt`` is given,
    still on that attempt: a worker whose lease was taken away writes nothing, and every extra ``where``
    condition holds), log a ``state`` event (with ``event_data`` added), commit.

    Returns:
        True if the job moved; False (nothing written, the session rolled back) otherwise.
    """
    values = {"status": to_status, **fields}
    conditions = [Job.id == job_id, Job.status.in_(from_statuses), *where]
    if on_attempt is not None:
        conditions.append(Job.attempt == on_attempt)
    result = session.execute(update(Job).where(*conditions).values(**values).returning(Job.status))
    if result.first() is None:
        session.rollback()
        return False
    add_event(session, job_id, "state", message=message, data={"status": to_status, **(event_data or {})})
    session.commit()
    return True
