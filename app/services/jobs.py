"""Jobs: create (validated, committed, then enqueued), list, get, cancel, and their event log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, func, select
from sqlalchemy.orm import Bundle, Session, aliased

from app.errors import Conflict, InvalidInput, NotFound, Unavailable, shown
from app.models import JOB_STATUSES, Dataset, Job, JobEvent, utcnow
from app.services.configs import resolve_base_model, resolve_configs
from app.services.models import check_model_method
from app.services.datasets import get_dataset
from app.services.pagination import Page, decode_cursor, encode_cursor, newest_first
from app.services.quotas import Quotas, check_job_quotas
from app.services.transitions import add_event, transition
from app.settings import Settings
from clear_core.labels import held_out_per_class  # no torch behind it

Enqueue = Callable[[str], None]
SOURCE_JOB = aliased(Job, name="source_job")  # made once: building an alias of the table costs every column


def _ready_dataset(session: Session, tenant_id: str, dataset_id: str, param: str) -> Dataset:
    # FOR SHARE (Postgres; SQLite has one writer anyway) until the job's commit: a concurrent DELETE of the dataset
    # (which takes FOR UPDATE, app/services/deletion.py) either waits for the new job and then sees it, or has
    # already deleted the dataset, which is then a plain 404 here instead of a foreign-key error
    locked = select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id).with_for_update(read=True)
    dataset = session.scalar(locked) or get_dataset(session, dataset_id, tenant_id=tenant_id, param=param)
    if dataset.status != "ready":
        raise Conflict(f"dataset {dataset_id!r} is {dataset.status}, not ready: wait until it is ready or upload "
                       "it again", param=param, code="dataset_not_ready")
    return dataset


def _check_validation(session: Session, train: Dataset, spec: dict[str, Any]) -> None:
    inner = (spec.get("training") or {}).get("validation_fraction")
    if spec.get("validation_fraction") is not None and inner is not None and inner != spec["validation_fraction"]:
        raise InvalidInput("give validation_fraction at the top level or in training, not two different values",
                           param="validation_fraction")
    if spec.get("validation_dataset_id"):
        if spec["validation_dataset_id"] == train.id:
            raise InvalidInput("validation_dataset_id names the training dataset itself: held-out scores of rows the "
                               "model trains on say nothing about new rows; give another dataset, or leave it out "
                               "and hold out validation_fraction of the rows", param="validation_dataset_id")
        held_out = _ready_dataset(session, train.tenant_id, spec["validation_dataset_id"], "validation_dataset_id")
        unknown = sorted(set(held_out.label_names) - set(train.label_names))
        if unknown:
            raise InvalidInput(f"the validation dataset has labels {unknown} that the training dataset lacks",
                               param="validation_dataset_id")


def resolve_time_limits(spec: dict[str, Any], settings: Settings) -> tuple[int, int]:
    """``(time_limit_s, soft_time_limit_s)``: the job's own within ``settings.max_job_seconds``, soft <= hard."""
    hard = spec.get("time_limit_s") or settings.max_job_seconds
    if hard > settings.max_job_seconds:
        raise InvalidInput(f"time_limit_s={hard} is over this server's maximum of {settings.max_job_seconds} s",
                           param="time_limit_s")
    soft = spec.get("soft_time_limit_s") or max(1, int(hard * 0.95))
    if soft > hard:
        raise InvalidInput(f"soft_time_limit_s={soft} must not exceed time_limit_s={hard}", param="soft_time_limit_s")
    return hard, soft


def create_job(session: Session, spec: dict[str, Any], *, tenant_id: str, settings: Settings, enqueue: Enqueue,
               quotas: Quotas | None = None) -> Job:
    """Validate ``spec`` (a ``JobCreate`` dump), store the job as ``queued`` for ``tenant_id``, commit, then
    enqueue it.

    Raises:
        NotFound: an unknown dataset (or another tenant's). Conflict: a dataset that is not ready.
        InvalidInput: a bad setting (``param`` names it). Unavailable: the broker refused the job.
        QuotaExceeded: the tenant's ``concurrent_jobs`` or ``jobs_per_hour`` quota (when ``quotas`` is given).
    """
    train = _ready_dataset(session, tenant_id, spec["dataset_id"], "dataset_id")
    _check_validation(session, train, spec)
    hard, soft = resolve_time_limits(spec, settings)
    # mid-epoch checkpoints by default, so a crashed attempt loses at most that many steps
    training = {"checkpoint_every_steps": settings.checkpoint_every_steps, **(spec.get("training") or {})}
    if spec.get("validation_fraction") is not None:
        training["validation_fraction"] = spec["validation_fraction"]
    clear, training = resolve_configs(spec["method"], spec["routed"], spec.get("clear") or {}, training)
    if training["keep"] == "best" and not spec.get("validation_dataset_id"):
        held = sum(held_out_per_class(int(n), training["validation_fraction"])
                   for n in (train.class_histogram or {}).values())
        if held == 0:
            raise InvalidInput(
                f"training.keep='best' picks the epoch with the best held-out accuracy, but validation_fraction="
                f"{training['validation_fraction']} holds no row of this dataset out: give a larger "
                "validation_fraction or a validation_dataset_id, or keep='last'", param="training.keep")
    base_model = resolve_base_model(spec.get("base_model"), settings)
    check_model_method(settings, base_model, clear["method"], clear["lora_target_modules"])
    if quotas is not None:
        check_job_quotas(session, tenant_id, quotas)  # last, after validation: locks the tenant until the commit
    job = Job(tenant_id=tenant_id, dataset_id=train.id, validation_dataset_id=spec.get("validation_dataset_id"),
              validation_fraction=training["validation_fraction"],
              base_model=base_model, method=clear["method"],
              routed=clear["routed"], clear_config=clear, training_config=training, status="queued",
              attempt=0, progress=0.0, global_step=0, time_limit_s=hard, soft_time_limit_s=soft,
              from_job_id=spec.get("from_job"))  # a retrain (app.services.retrain filled the spec in)
    session.add(job)
    session.flush()
    add_event(session, job.id, "state", message="queued: waiting for a worker", data={"status": "queued"})
    session.commit()
    return enqueue_committed(session, job, enqueue)


def enqueue_committed(session: Session, job: Job, enqueue: Enqueue, *, what: str = "job",
                      on_failure: Callable[[], None] | None = None) -> Job:
    """Hand the committed, queued ``job`` (a training job or a prediction run) to the workers and stamp
    ``enqueued_at``. When the broker refuses it, the job is taken back (its row and its event deleted, so the
    answer, a 503, leaves nothing behind: no ``failed`` job the caller never got an id for, nothing counted
    against the tenant's quotas), ``on_failure`` (if given) cleans up what the job left, and ``Unavailable``
    says to submit the ``what`` again later. A worker that still gets a message the broker half took finds no
    job and skips it."""
    try:
        enqueue(job.id)  # only after the commit: a worker must find the row
    except Exception as exc:  # the broker is down: take the job back rather than leave it queued or failed
        job_id = job.id
        session.rollback()
        session.execute(delete(Job).where(Job.id == job_id, Job.status == "queued", Job.attempt == 0))
        session.commit()  # its events go with it (ON DELETE CASCADE)
        if on_failure is not None:
            on_failure()
        raise Unavailable(f"the job queue is unavailable ({exc}); submit the {what} again later") from exc
    job.enqueued_at = utcnow()
    session.commit()
    return job


def get_job(session: Session, job_id: str, *, tenant_id: str) -> Job:
    """The tenant's (training) job with this id; raises ``NotFound`` otherwise (another tenant's id included, and a
    prediction run's: those are ``app.services.predictions``')."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id, Job.kind == "train"))
    if job is None:
        raise NotFound(f"no job with id {shown(job_id)}", param="job_id")
    return job


def list_jobs(session: Session, *, tenant_id: str, status: str | None, limit: int, cursor: str | None) -> Page:
    """The tenant's training jobs newest first (not its prediction runs), optionally only those in ``status``, in
    one statement; ``Page.related`` holds, for each succeeded retrain whose source job succeeded too, that source's
    ``(id, status, metrics, report_summary)`` (what ``app.services.retrain.comparison`` reads).

    Raises:
        InvalidInput: an unknown ``status`` or a bad cursor.
    """
    if status is not None and status not in JOB_STATUSES:
        raise InvalidInput(f"status={status!r} is not a job state: use one of {', '.join(JOB_STATUSES)}",
                           param="status")
    conditions = [Job.tenant_id == tenant_id, Job.kind == "train"] + ([Job.status == status] if status else [])
    source = SOURCE_JOB
    return newest_first(session, Job, conditions=conditions, limit=limit, cursor=cursor,
                        related=(source, _comparable(source), _source_columns(source)))


def _source_columns(source: Any) -> Bundle:
    """The columns of a retrain's source job that a comparison reads, as one bundle (attributes by name)."""
    return Bundle("source", source.id, source.status, source.metrics, source.report_summary)


def _comparable(source: Any) -> Any:
    """The join of a job to the job it retrained from, when both succeeded (what a comparison needs)."""
    return and_(source.id == Job.from_job_id, Job.status == "succeeded", source.status == "succeeded")


def request_cancel(session: Session, job: Job) -> Job:
    """Move ``job`` (a training job or a prediction run) from ``queued`` to ``cancelled`` at once, or from
    ``running`` to ``cancelling`` (its worker stops it), each with its event; any other state is left as it is.
    Returns ``job`` refreshed, so the caller sees the state it ended in."""
    if not transition(session, job.id, ("queued",), "cancelled", message="cancelled before it started"):
        transition(session, job.id, ("running",), "cancelling", message="cancel requested")
    session.refresh(job)
    return job


def cancel_job(session: Session, job_id: str, *, tenant_id: str) -> Job:
    """Cancel the tenant's job: a queued one becomes ``cancelled`` at once, a running one ``cancelling`` (the
    worker stops it).

    Raises:
        NotFound: unknown job (or another tenant's). Conflict: the job already succeeded or failed.
    """
    job = request_cancel(session, get_job(session, job_id, tenant_id=tenant_id))
    if job.status in ("succeeded", "failed"):
        raise Conflict(f"job {job_id!r} already {job.status}; it cannot be cancelled", param="job_id",
                       code="job_finished")
    return job


# built once (a statement built per call costs more than its round trip): the job, and its source's bundle
JOB_WITH_SOURCE = (select(Job, _source_columns(SOURCE_JOB)).outerjoin(SOURCE_JOB, _comparable(SOURCE_JOB))
                   .where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"), Job.kind == "train"))


def get_job_with_source(session: Session, job_id: str, *, tenant_id: str) -> tuple[Job, Any | None]:
    """The tenant's training job (as ``get_job``) and, in the same statement, the ``(id, status, metrics,
    report_summary)`` of the job it retrained from when both succeeded (what ``app.services.retrain.comparison``
    reads), else None.

    Raises:
        NotFound: unknown job, another tenant's, or a prediction run.
    """
    row = session.execute(JOB_WITH_SOURCE, {"job_id": job_id, "tenant_id": tenant_id}).first()
    if row is None:
        raise NotFound(f"no job with id {shown(job_id)}", param="job_id")
    return row[0], row[1] if row[1].id is not None else None


# built once, as JOB_WITH_SOURCE: a job's event count, and a page of its events after an id with that count
_MY_EVENTS = (JobEvent.job_id == bindparam("job_id"), JobEvent.tenant_id == bindparam("tenant_id"))
EVENT_COUNT = select(func.count()).select_from(JobEvent).where(*_MY_EVENTS)
EVENTS_PAGE = (select(JobEvent, EVENT_COUNT.scalar_subquery().label("total"))
               .where(*_MY_EVENTS, JobEvent.id > bindparam("after"),
                      exists().where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"),
                                     Job.kind == "train"))
               .order_by(JobEvent.id).limit(bindparam("limit")))


def list_events(session: Session, job_id: str, *, tenant_id: str, limit: int, cursor: str | None) -> Page:
    """The tenant's job's events oldest first, after the event id held in ``cursor``, and the count of all its events.

    One statement when the page has events (the count and the check that this is the tenant's training job ride
    along as uncorrelated subqueries); an empty page checks the job on its own (404) and counts.

    Raises:
        NotFound: unknown job, another tenant's, or a prediction run (before a bad cursor is reported).
        InvalidInput: a cursor that is not an events cursor.
    """
    try:
        after = decode_cursor(cursor, 1)[0] if cursor else 0
        if not isinstance(after, int):
            raise InvalidInput(f"cursor={shown(cursor)} is not an events cursor", param="cursor")
    except InvalidInput:
        get_job(session, job_id, tenant_id=tenant_id)  # an unknown job is a 404 whatever the cursor
        raise
    params = {"job_id": job_id, "tenant_id": tenant_id}
    rows = session.execute(EVENTS_PAGE, {**params, "after": after, "limit": limit + 1}).all()
    if rows:
        count = int(rows[0][1])
    else:
        get_job(session, job_id, tenant_id=tenant_id)
        count = int(session.scalar(EVENT_COUNT, params) or 0)
    items = [row[0] for row in rows]
    more = len(items) > limit
    items = items[:limit]
    # The cursor always points after the last event seen, so a poller can resume from it.
    last = items[-1].id if items else after
    return Page(items, count, encode_cursor([last]), has_more=more)
