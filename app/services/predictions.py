"""Prediction runs: a succeeded job's adapter predicts every row of a dataset or of an uploaded file (CSV,
JSONL or Parquet, parsed and validated as dataset uploads are, the label column optional) on a worker: the
predicted label and the class probabilities per row and, when the rows carry labels, the noise report's
label check (``clear_core.confident.check_labels``) on those probabilities, without training.

Design: a prediction run is a row of ``jobs`` of ``kind = "predict"`` (id ``pred_...``) whose
``model_job_id`` names the job it uses (ON DELETE CASCADE), not a table of its own. A run needs everything a
job has: a queue message, a lease with an attempt fence, a heartbeat, the reaper requeueing a run whose
worker died (and resending a lost message), state transitions with their events, cancel, time limits and the
tenant's ``concurrent_jobs`` quota. With its own table each of those (``app.services.leases``,
``transitions``, ``quotas``, ``worker.reaper``, the metrics) would have needed a second copy or a
table-generic rewrite; as a ``jobs`` row it gets all of them unchanged, the Celery task ``run_job`` included
(``worker.pipeline.execute_job`` hands a claimed ``predict`` row to ``worker.predict``). The price is a
filter: ``app.services.jobs.get_job`` / ``list_jobs`` see ``kind = "train"`` only, so ``/v1/jobs`` lists no
prediction runs and a ``pred_`` id is a 404 there. A run copies its model job's base model and method (the
columns are NOT NULL and describe the model it runs), stores ``{"batch_size", "labelled"}`` as its
``training_config`` and its summary in ``report_summary``; ``dataset_id`` is null for an uploaded file,
whose validated rows wait as Parquet at ``tenants/<tenant>/predictions/<run id>/input.parquet`` in the
artifact store until the run ends (the worker deletes them then).

Per-row results are ``prediction_rows`` (``app.models.PredictionRow``), written by the worker in one
transaction that also moves the run to ``succeeded`` under its attempt fence, after deleting any rows an
earlier attempt left: all rows or none. A run counts against the tenant's ``concurrent_jobs`` quota while
queued or running (and against ``jobs_per_hour``: it is a job row). No torch here: the API imports this.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from clear_core.csv_safety import csv_safe  # no torch or sklearn behind it

from app.errors import Conflict, InvalidInput, NotFound, shown, until_succeeded
from app.models import Dataset, Job, JobEvent, PredictionRow, new_id
from app.services.datasets import Limits, get_dataset
from app.services.jobs import enqueue_committed, get_job, request_cancel, resolve_time_limits
from app.services.pagination import Page, decode_cursor, encode_cursor, newest_first
from app.services.parsing import check_unique_names, detect_format, iter_chunks, parquet_schema
from app.services.quotas import Quotas, check_job_quotas
from app.services.reports import jsonl_lines as report_jsonl_lines
from app.services.streaming import csv_chunks
from app.services.transitions import add_event
from app.services.uploads import StoredUpload, check_gzip_name, safe_name
from app.services.validation import RowValidator, check_mapping, check_parquet_types
from app.settings import Settings
from app.storage import ArtifactStore

logger = logging.getLogger(__name__)
Enqueue = Callable[[str], None]
KIND = "predict"
ACTIVE = ("queued", "running", "cancelling")
DEFAULT_BATCH_SIZE = 64
INPUT_SCHEMA = pa.schema([("row_index", pa.int64()), ("row_id", pa.string()), ("text", pa.string()),
                          ("text_pair", pa.string()), ("label", pa.string())])
LABEL_CHECK_FIELDS = ("given_label", "flagged", "suggested_label", "suggested_confidence", "label_quality",
                      "flag_reason")
ROW_FIELDS = ("row_index", "id", "text", "text_pair", "predicted_label", "confidence", "probabilities",
              *LABEL_CHECK_FIELDS)


def prediction_prefix(tenant_id: str, run_id: str) -> str:
    """The artifact-store folder of a run's files: ``tenants/<tenant>/predictions/<run id>``."""
    return f"tenants/{tenant_id}/predictions/{run_id}"


def input_key(tenant_id: str, run_id: str) -> str:
    """Where the validated rows of an uploaded input wait for the worker (Parquet, ``INPUT_SCHEMA``)."""
    return f"{prediction_prefix(tenant_id, run_id)}/input.parquet"


# --- the model job and its classes ---------------------------------------------------------------------------

def model_job(session: Session, job_id: str, *, tenant_id: str) -> Job:
    """The tenant's training job whose adapter a run uses; it must have succeeded with an adapter.

    Raises:
        NotFound: unknown job (or another tenant's). Conflict: the job has not succeeded (``model_not_ready``).
    """
    job = get_job(session, job_id, tenant_id=tenant_id)
    if job.status != "succeeded" or not job.adapter_uri:
        raise Conflict(f"job {job_id!r} is {job.status}: predictions need a job that has succeeded (and stored its "
                       f"adapter); {until_succeeded(job.status)}", param="job_id", code="model_not_ready")
    return job


def model_labels(session: Session, job: Job) -> list[str]:
    """The K class names of the job's model in logit order (its training dataset's ``label_names``, which the
    worker passes to ``clear_core.train``)."""
    names = session.scalar(select(Dataset.label_names).where(Dataset.id == job.dataset_id))
    if names:
        return [str(n) for n in names]
    return [str(n) for n in ((job.report_summary or {}).get("noise_matrix") or {}).get("labels", [])]


def _unknown_labels(labels: list[str], classes: list[str], job_id: str, param: str, details=None) -> InvalidInput:
    return InvalidInput(f"labels {labels[:10]} are not classes of the model of job {job_id!r} (its classes are "
                        f"{classes[:50]}): give rows labelled with those classes, or send label_check=false to "
                        "predict without the label check", param=param, code="unknown_label", details=details)


# --- uploads -------------------------------------------------------------------------------------------------

@dataclass
class PredictionUpload:
    """An uploaded input file spooled to disk and its column mapping (roles ``text``, ``text_pair``, ``label``,
    ``id``). ``label`` None with ``label_explicit`` False: the column ``label`` is used if the file has one,
    else the rows are predicted without labels."""

    file: StoredUpload
    filename: str | None
    format: str | None
    mapping: dict[str, str | None]
    label_explicit: bool = False


@dataclass
class _InputValidator(RowValidator):
    """The dataset validator with an optional label column and no class-size rules; ``declared`` is the model's
    classes, so a label outside them is a row error (``unknown_label``)."""

    auto_label: bool = False
    decided: bool = field(default=False)

    def _select(self, frame):
        if self.auto_label and not self.decided:
            self.decided = True
            if self.mapping.get("label") not in {str(c) for c in frame.columns}:
                self.mapping = dict(self.mapping, label=None)
        return super()._select(frame)

    def _check_labels(self, rows, role, missing, unknown) -> None:
        if role == "label" and not self.mapping.get("label"):
            return
        super()._check_labels(rows, role, missing, unknown)


def validate_upload(upload: PredictionUpload, classes: list[str], limits: Limits, out: Path, *,
                    job_id: str) -> tuple[int, bool]:
    """Parse and validate ``upload`` in chunks (the dataset upload's parser and row checks, the label column
    optional) and write the valid rows to the Parquet file ``out`` (``INPUT_SCHEMA``).

    Returns:
        ``(rows, labelled)``.

    Raises:
        InvalidInput: a bad file, a missing column, failing rows (``details`` lists them), or labels that are
            not classes of the model (``unknown_label``). PayloadTooLarge: a compressed file past the cap.
    """
    fmt = detect_format(upload.filename, upload.format)
    mapping = {"text": "text", "text_pair": None, "label": None, "id": None, "gold_label": None}
    mapping.update({role: (column or None) for role, column in upload.mapping.items() if role in mapping})
    auto = not upload.label_explicit and mapping["label"] is None
    if auto:
        mapping["label"] = "label"
    check_mapping(mapping)
    check_gzip_name(upload.file.path, upload.filename)
    columns = None
    if fmt == "parquet" and (schema := parquet_schema(upload.file.path)) is not None:
        check_unique_names(schema.names, "the Parquet schema")
        if auto and "label" not in schema.names:
            mapping["label"], auto = None, False
        check_parquet_types(schema, mapping)
        columns = sorted({c for c in mapping.values() if c})
    validator = _InputValidator(mapping, list(classes), 0, limits.max_rows, limits.max_text_chars,
                                limits.max_errors, fixed_columns=fmt != "jsonl", auto_label=auto)
    with pq.ParquetWriter(str(out), INPUT_SCHEMA) as writer:
        for chunk in iter_chunks(upload.file.path, fmt, max_uncompressed=limits.max_uncompressed_bytes,
                                 columns=columns):
            rows = validator.add(chunk)
            if rows is not None and rows.num_rows:  # an Arrow table with every INPUT_SCHEMA column
                writer.write_table(rows.select(INPUT_SCHEMA.names).cast(INPUT_SCHEMA))
    labelled = bool(validator.mapping.get("label"))
    unknown = sorted(set(validator.histogram) - set(classes))
    if labelled and unknown:
        errors = [e for e in validator.errors if e["code"] == "unknown_label"]
        raise _unknown_labels(unknown, classes, job_id, "label_column", errors)
    validator.finish()
    return validator.rows, labelled


# --- create ----------------------------------------------------------------------------------------------------

def _new_run(model: Job, settings: Settings, *, run_id: str, batch_size: int, labelled: bool, dataset_id=None,
             input_name=None, input_uri=None, row_count: int) -> Job:
    hard, soft = resolve_time_limits({}, settings)
    return Job(id=run_id, kind=KIND, tenant_id=model.tenant_id, model_job_id=model.id, dataset_id=dataset_id,
               input_name=input_name, input_uri=input_uri, row_count=row_count, base_model=model.base_model,
               method=model.method, routed=model.routed, clear_config=dict(model.clear_config),
               training_config={"batch_size": batch_size, "labelled": labelled}, status="queued", attempt=0,
               progress=0.0, global_step=0, time_limit_s=hard, soft_time_limit_s=soft)


def _insert(session: Session, run: Job) -> None:
    session.add(run)
    session.flush()
    add_event(session, run.id, "state", message="queued: waiting for a worker", data={"status": "queued"})
    session.commit()


def _enqueue(session: Session, store: ArtifactStore, run: Job, enqueue: Enqueue) -> Job:
    prefix = prediction_prefix(run.tenant_id, run.id)  # read now: a refused run's row is deleted before cleanup

    def cleanup() -> None:
        try:
            store.delete_prefix(prefix)
        except (OSError, ValueError):
            logger.warning("could not delete the files under %s", prefix, exc_info=True)

    return enqueue_committed(session, run, enqueue, what="prediction", on_failure=cleanup)


def _check_batch_size(batch_size: int | None) -> int:
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= 1024:
        raise InvalidInput(f"batch_size={batch_size!r} must be an integer from 1 to 1024", param="batch_size")
    return batch_size


def create_from_dataset(session: Session, store: ArtifactStore, job_id: str, dataset_id: str, *, tenant_id: str,
                        settings: Settings, enqueue: Enqueue, quotas: Quotas | None = None,
                        batch_size: int | None = None, label_check: bool = True) -> Job:
    """Queue a run of job ``job_id``'s model on the tenant's ready dataset ``dataset_id`` (its labels checked,
    unless ``label_check`` is False: then it only predicts, and labels the model lacks are no error).

    Raises:
        NotFound: unknown job or dataset (or another tenant's). Conflict: the job has not succeeded, or the
            dataset is not ready. InvalidInput: the dataset has labels the model lacks (``unknown_label``), a
            bad ``batch_size``. QuotaExceeded: the tenant's ``concurrent_jobs``/``jobs_per_hour``. Unavailable:
            the broker refused the run (it is then taken back: nothing of it is stored).
    """
    model = model_job(session, job_id, tenant_id=tenant_id)
    size = _check_batch_size(batch_size)
    dataset = get_dataset(session, dataset_id, tenant_id=tenant_id)
    if dataset.status != "ready":
        raise Conflict(f"dataset {dataset_id!r} is {dataset.status}, not ready: wait until it is ready or upload it "
                       "again", param="dataset_id", code="dataset_not_ready")
    classes = model_labels(session, model)
    unknown = sorted(k for k, n in (dataset.class_histogram or {}).items() if n and k not in classes)
    if unknown and label_check:
        raise _unknown_labels(unknown, classes, job_id, "dataset_id")
    if quotas is not None:
        check_job_quotas(session, tenant_id, quotas)  # last: locks the tenant until the commit
    run = _new_run(model, settings, run_id=new_id("pred"), batch_size=size, labelled=label_check, dataset_id=dataset.id,
                   row_count=dataset.row_count)
    _insert(session, run)
    return _enqueue(session, store, run, enqueue)


def create_from_upload(session: Session, store: ArtifactStore, job_id: str, upload: PredictionUpload,
                       limits: Limits, *, tenant_id: str, settings: Settings, enqueue: Enqueue,
                       quotas: Quotas | None = None, batch_size: int | None = None) -> Job:
    """Validate an uploaded file and queue a run of job ``job_id``'s model on its rows; a rejected file stores
    nothing (its validated rows go to the artifact store only once every check passed).

    Raises:
        NotFound, Conflict, QuotaExceeded, Unavailable: as :func:`create_from_dataset`. InvalidInput: a bad file,
            a missing column, failing rows, labels the model lacks, a bad ``batch_size``. PayloadTooLarge: a
            compressed file that expands past the cap.
    """
    model = model_job(session, job_id, tenant_id=tenant_id)
    size = _check_batch_size(batch_size)
    classes = model_labels(session, model)
    fd, local = tempfile.mkstemp(prefix="prediction-input-", suffix=".parquet")
    os.close(fd)
    run_id = new_id("pred")
    try:
        rows, labelled = validate_upload(upload, classes, limits, Path(local), job_id=job_id)
        if quotas is not None:
            check_job_quotas(session, tenant_id, quotas)  # locks the tenant until the commit
        key = store.put_file(local, input_key(tenant_id, run_id))
    except BaseException:
        session.rollback()
        raise
    finally:
        Path(local).unlink(missing_ok=True)
    run = _new_run(model, settings, run_id=run_id, batch_size=size, labelled=labelled,
                   input_name=safe_name(upload.filename), input_uri=key, row_count=rows)
    try:
        _insert(session, run)
    except BaseException:
        session.rollback()
        delete_run_files(store, run)  # never committed: its input must not linger
        raise
    return _enqueue(session, store, run, enqueue)


# --- read --------------------------------------------------------------------------------------------------------

def get_prediction(session: Session, run_id: str, *, tenant_id: str) -> Job:
    """The tenant's prediction run with this id; ``NotFound`` otherwise (another tenant's id included)."""
    run = session.scalar(select(Job).where(Job.id == run_id, Job.tenant_id == tenant_id, Job.kind == KIND))
    if run is None:
        raise NotFound(f"no prediction run with id {shown(run_id)}", param="prediction_id")
    return run


def list_predictions(session: Session, job_id: str, *, tenant_id: str, limit: int, cursor: str | None) -> Page:
    """The prediction runs of the tenant's job ``job_id``, newest first (``NotFound`` for an unknown job)."""
    get_job(session, job_id, tenant_id=tenant_id)
    conditions = [Job.tenant_id == tenant_id, Job.kind == KIND, Job.model_job_id == job_id]
    return newest_first(session, Job, conditions=conditions, limit=limit, cursor=cursor)


def cancel_prediction(session: Session, run_id: str, *, tenant_id: str) -> Job:
    """Cancel a run: a queued one becomes ``cancelled`` at once, a running one ``cancelling`` (the worker stops
    it between batches).

    Raises:
        NotFound: unknown run (or another tenant's). Conflict: the run already succeeded or failed.
    """
    run = request_cancel(session, get_prediction(session, run_id, tenant_id=tenant_id))
    if run.status in ("succeeded", "failed"):
        raise Conflict(f"prediction run {run_id!r} already {run.status}; it cannot be cancelled",
                       param="prediction_id", code="prediction_finished")
    return run


def finished_run(session: Session, run_id: str, *, tenant_id: str) -> Job:
    """The tenant's run, which must have succeeded (its rows exist then); ``NotFound`` / ``Conflict`` otherwise."""
    run = get_prediction(session, run_id, tenant_id=tenant_id)
    if run.status != "succeeded":
        raise Conflict(f"prediction run {run_id!r} is {run.status}: its rows exist once it has succeeded; "
                       f"{until_succeeded(run.status, 'start another run (POST /v1/jobs/{job_id}/predictions)')}",
                       param="prediction_id", code="prediction_not_ready")
    return run


def _record(row: PredictionRow, labels: list[str], labelled: bool) -> dict[str, Any]:
    probs = [float(p) for p in row.probabilities]
    record = {"row_index": row.row_index, "id": row.row_id, "text": row.text, "text_pair": row.text_pair,
              "predicted_label": row.predicted_label, "confidence": max(probs) if probs else None,
              "probabilities": dict(zip(labels, probs))}
    for name in LABEL_CHECK_FIELDS:
        record[name] = getattr(row, name) if labelled else None
    return record


def rows_page(session: Session, run: Job, *, flagged: bool | None = None, predicted_label: str | None = None,
              given_label: str | None = None, limit: int, cursor: str | None) -> Page:
    """One page of a succeeded run's rows in ``row_index`` order after ``cursor``, optionally only flagged (or
    unflagged) rows and rows of one predicted or given label; records have the fields ``ROW_FIELDS``
    (``probabilities`` maps each class to its probability; the label-check fields are None without labels)."""
    conditions = [PredictionRow.run_id == run.id, PredictionRow.tenant_id == run.tenant_id]
    if flagged is not None:
        conditions.append(PredictionRow.flagged == flagged)
    if predicted_label is not None:
        conditions.append(PredictionRow.predicted_label == predicted_label)
    if given_label is not None:
        conditions.append(PredictionRow.given_label == given_label)
    after = -1
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        if not isinstance(after, int) or isinstance(after, bool):
            raise InvalidInput(f"cursor={shown(cursor)} is not a prediction-rows cursor", param="cursor")
    query = (select(PredictionRow).where(*conditions, PredictionRow.row_index > after)
             .order_by(PredictionRow.row_index).limit(limit + 1))
    rows = list(session.scalars(query))
    count = session.scalar(select(func.count()).select_from(PredictionRow).where(*conditions)) or 0
    more = len(rows) > limit
    rows = rows[:limit]
    summary = run.report_summary or {}
    labels, labelled = list(summary.get("labels") or []), bool(summary.get("labelled"))
    items = [_record(r, labels, labelled) for r in rows]
    return Page(items, count, encode_cursor([rows[-1].row_index]) if more else None)


def iter_rows(factory: sessionmaker[Session], run: Job, filters: dict[str, Any], batch: int = 2000
              ) -> Iterator[dict[str, Any]]:
    """Every matching row in ``row_index`` order, ``batch`` rows at a time, each batch in its own session (a
    streamed response outlives the request's session)."""
    cursor = None
    while True:
        with factory() as session:
            page = rows_page(session, run, limit=batch, cursor=cursor, **filters)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def csv_header(summary: dict[str, Any]) -> list[str]:
    """The CSV columns of a run: the row fields, one ``p_<class>`` column per class instead of
    ``probabilities``, and the label-check columns only for a labelled run."""
    columns = ["row_index", "id", "text", "text_pair", "predicted_label", "confidence"]
    columns += [f"p_{label}" for label in summary.get("labels") or []]
    return columns + (list(LABEL_CHECK_FIELDS) if summary.get("labelled") else [])


def csv_lines(summary: dict[str, Any], rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The rows as CSV text chunks, header first; every text cell that a spreadsheet would run as a formula is
    neutralised (``clear_core.csv_safety.csv_safe``), header cells included."""
    labelled = bool(summary.get("labelled"))

    def cells(row: dict[str, Any]) -> list[Any]:
        out = [row[name] for name in ("row_index", "id", "text", "text_pair", "predicted_label", "confidence")]
        out += list(row["probabilities"].values())
        out += [row[name] for name in LABEL_CHECK_FIELDS] if labelled else []
        return [csv_safe(c) for c in out]

    return csv_chunks([csv_safe(h) for h in csv_header(summary)], (cells(row) for row in rows))


def jsonl_lines(summary: dict[str, Any], rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The rows as JSON lines: first ``{"summary": {...}}``, then one object per row (without the label-check
    fields for an unlabelled run)."""
    if not summary.get("labelled"):
        rows = ({k: v for k, v in row.items() if k not in LABEL_CHECK_FIELDS} for row in rows)
    return report_jsonl_lines(summary, rows)


# --- deletion --------------------------------------------------------------------------------------------------

def delete_run_files(store: ArtifactStore, run: Job) -> None:
    """Remove a run's files from the artifact store (best effort, logged)."""
    try:
        store.delete_prefix(prediction_prefix(run.tenant_id, run.id))
    except (OSError, ValueError):
        logger.warning("could not delete the files of prediction run %s", run.id, exc_info=True)


def _runs_of(job_id: str | None, dataset_id: str | None):
    if job_id is None and dataset_id is None:
        raise ValueError("give job_id or dataset_id")
    clauses = []
    if job_id is not None:
        clauses.append(Job.model_job_id == job_id)
    if dataset_id is not None:
        trained_on = select(Job.id).where(Job.kind == "train", or_(Job.dataset_id == dataset_id,
                                                                   Job.validation_dataset_id == dataset_id))
        clauses += [Job.dataset_id == dataset_id, Job.model_job_id.in_(trained_on)]
    return select(Job).where(Job.kind == KIND, or_(*clauses))


def check_no_active_predictions(session: Session, *, job_id: str | None = None, dataset_id: str | None = None
                                ) -> None:
    """Refuse (``Conflict``, code ``prediction_running``) while a run using job ``job_id``'s model, or predicting
    dataset ``dataset_id`` (or using a model trained on it), is queued or running."""
    active = session.scalars(_runs_of(job_id, dataset_id).where(Job.status.in_(ACTIVE))).all()
    if active:
        what = f"job {job_id!r}" if job_id is not None else f"dataset {dataset_id!r}"
        raise Conflict(f"prediction run(s) {[r.id for r in active][:10]} using {what} are {active[0].status}: "
                       "cancel them (POST /v1/predictions/{id}/cancel) or wait until they end",
                       param="job_id" if job_id is not None else "dataset_id", code="prediction_running")


def delete_prediction_runs(session: Session, store: ArtifactStore, *, job_id: str | None = None,
                           dataset_id: str | None = None) -> list[str]:
    """Delete the prediction runs that use job ``job_id``'s model, or that predict dataset ``dataset_id`` or use a
    model trained on it, with their rows, events and artifact-store files; not committed (the caller commits
    with its own deletions). Returns the deleted run ids.

    Raises:
        Conflict: one of those runs is queued or running (``prediction_running``); nothing is deleted.
        ValueError: neither ``job_id`` nor ``dataset_id`` given.
    """
    check_no_active_predictions(session, job_id=job_id, dataset_id=dataset_id)
    runs = [(r.id, r.tenant_id) for r in session.scalars(_runs_of(job_id, dataset_id))]
    ids = [run_id for run_id, _ in runs]
    if not ids:
        return []
    session.execute(delete(PredictionRow).where(PredictionRow.run_id.in_(ids)))
    session.execute(delete(JobEvent).where(JobEvent.job_id.in_(ids)))
    session.execute(delete(Job).where(Job.id.in_(ids)).execution_options(synchronize_session=False))
    session.flush()
    for run_id, tenant_id in runs:  # a finished run's input file is already gone; this removes whatever is left
        try:
            store.delete_prefix(prediction_prefix(tenant_id, run_id))
        except (OSError, ValueError):
            logger.warning("could not delete the files of prediction run %s", run_id, exc_info=True)
    return ids


def delete_prediction(session: Session, store: ArtifactStore, run_id: str, *, tenant_id: str) -> None:
    """Delete the tenant's finished prediction run with its rows, events and files, and commit.

    Raises:
        NotFound: no such run of the tenant. Conflict: the run is queued, running or cancelling
            (``prediction_running``): cancel it first.
    """
    run = get_prediction(session, run_id, tenant_id=tenant_id)
    session.refresh(run, with_for_update=True)
    if run.status in ACTIVE:
        raise Conflict(f"prediction run {run_id!r} is {run.status}: cancel it (POST /v1/predictions/{run_id}/cancel) "
                       "and wait until it ends", param="prediction_id", code="prediction_running")
    try:
        session.execute(delete(PredictionRow).where(PredictionRow.run_id == run_id))
        session.execute(delete(JobEvent).where(JobEvent.job_id == run_id))
        session.execute(delete(Job).where(Job.id == run_id).execution_options(synchronize_session=False))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    try:
        store.delete_prefix(prediction_prefix(tenant_id, run_id))
    except (OSError, ValueError):
        logger.warning("could not delete the files of prediction run %s", run_id, exc_info=True)


def job_child_hook(session: Session, job: Job) -> list[str]:
    """``app.services.deletion``'s cleanup of a job being deleted (not committed): a prediction run's rows, or a
    training job's prediction runs (rows, events, runs; refused with ``Conflict`` ``prediction_running`` while
    one is queued or running). Returns the artifact prefixes to remove after the commit."""
    if job.kind == KIND:
        session.execute(delete(PredictionRow).where(PredictionRow.run_id == job.id))
        return [prediction_prefix(job.tenant_id, job.id)]
    check_no_active_predictions(session, job_id=job.id)
    runs = [(r.id, r.tenant_id) for r in session.scalars(_runs_of(job.id, None))]
    ids = [run_id for run_id, _ in runs]
    if ids:
        session.execute(delete(PredictionRow).where(PredictionRow.run_id.in_(ids)))
        session.execute(delete(JobEvent).where(JobEvent.job_id.in_(ids)))
        session.execute(delete(Job).where(Job.id.in_(ids)).execution_options(synchronize_session=False))
    return [prediction_prefix(tenant_id, run_id) for run_id, tenant_id in runs]


def _register_deletion_hook() -> None:
    try:
        from app.services import deletion
    except ImportError:  # no deletion service: delete_prediction_runs is the cleanup to call
        return
    hooks = getattr(deletion, "JOB_CHILD_HOOKS", None)
    if hooks is not None and job_child_hook not in hooks:
        hooks.append(job_child_hook)


_register_deletion_hook()
