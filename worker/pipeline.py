"""Run one job attempt end to end, with no Celery in sight: claim it (a lease), load its rows, train
with ``clear_core`` (resuming from the previous attempt's checkpoint), write the noise report and the
adapter, and finish it. Tests call this directly.

Outcomes: ``succeeded``; ``failed`` (bad input, out of memory, time limit: never retried);
``cancelled``; ``skipped`` (another delivery or attempt holds the job); ``lost`` (the reaper took
the job away mid-run: nothing written); ``stopped`` (the worker is stopping: the job was checkpointed and is
queued again, for the Celery task to send to the next worker, see ``worker.shutdown``); a transient
database/store fault gives the job back to the queue and raises ``TransientJobError`` for the Celery task to
retry with backoff. Each attempt works in its own folder under ``Settings.scratch("attempts")``
(``worker.scratch``), removed however the attempt ends."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path

from clear_core import ClearConfig, TextClassificationData, TrainingCancelled, TrainingConfig, train
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import session_factory
from app.faults import TransientJobError, is_transient, retry_transient
from app.models import Dataset, DatasetRow, Job, utcnow
from app.services.leases import WORKER_STOPPED, claim, hard_deadline, record_event, release, soft_deadline
from app.services.transitions import transition
from app.settings import Settings
from app.storage import ArtifactStore
from worker.checkpoints import CheckpointSync, delete_checkpoints, restore
from worker.lease import Lease, worker_identity
from worker.progress import JobProgress, json_safe
from worker.results import package_adapter, write_noise_report
from worker.scratch import attempt_folder
from worker.shutdown import StopAtCheckpoint, WorkerStopping, stop_requested

logger = logging.getLogger(__name__)
STOP_DB_WAIT_S = 20.0  # how long a stopping worker retries putting its job back while the database is down


@dataclass
class JobInputs:
    """Everything ``train`` needs for one job, read from the database."""

    data: TextClassificationData
    row_indices: list[int]  # dataset row index of each row (clear_core holds out validation_fraction of them)
    eval_data: TextClassificationData | None
    label_names: list[str]
    clear: ClearConfig
    training: TrainingConfig
    model_path: Path | None


LOAD_CHUNK_ROWS = 20_000  # rows fetched per round trip when a job's rows stream in


@dataclass
class _Columns:
    """A dataset's rows as columns, in row order (None where a row has no value)."""

    row_index: list[int]
    row_id: list[str | None]
    text: list[str]
    text_pair: list[str | None]
    label: list[str]
    gold_label: list[str | None]


def _rows(session: Session, dataset_id: str, *, chunk_rows: int = LOAD_CHUNK_ROWS) -> _Columns:
    """The dataset's rows streamed in chunks of ``chunk_rows`` (a server-side cursor on Postgres), only the
    columns a job needs, straight into column lists: no ORM object or row tuple is kept per row, and each
    distinct label is one shared string."""
    names = tuple(_Columns.__dataclass_fields__)
    query = (select(*(getattr(DatasetRow, name) for name in names)).where(DatasetRow.dataset_id == dataset_id)
             .order_by(DatasetRow.row_index).execution_options(yield_per=chunk_rows))
    columns = _Columns(*([] for _ in names))
    parts = [getattr(columns, name) for name in names]
    shared: dict[str, str] = {}  # labels repeat: one string object per distinct label, not one per row
    label_parts = {id(columns.label), id(columns.gold_label)}
    for chunk in session.execute(query).partitions():
        for part, values in zip(parts, zip(*chunk)):
            part.extend(map(shared.setdefault, values, values) if id(part) in label_parts else values)
    return columns


def _as_data(rows: _Columns, *, gold_as_labels: bool = False) -> TextClassificationData:
    """The rows as ``clear_core`` data; the first row decides which optional columns the dataset has.

    Raises:
        ValueError: no rows (``TextClassificationData``'s message), or a row missing a column the first has.
    """
    first = (lambda column: column[0] if column else None)
    has_pair, has_gold = first(rows.text_pair) is not None, first(rows.gold_label) is not None
    return TextClassificationData(
        texts=rows.text, labels=rows.gold_label if gold_as_labels and has_gold else rows.label,
        text_pairs=rows.text_pair if has_pair else None, ids=rows.row_id if first(rows.row_id) is not None else None,
        gold_labels=rows.gold_label if has_gold and not gold_as_labels else None)


def load_inputs(session: Session, job: Job, settings: Settings) -> JobInputs:
    """The job's rows (``clear_core`` holds out the stratified ``validation_fraction`` of them and scores them
    out-of-sample, so every row gets a report row), the validation dataset's rows and the resolved configs.
    Rows stream from the database in chunks (:func:`_rows`)."""
    training = TrainingConfig.from_dict(dict(job.training_config, **({"device": settings.worker_device}
                                                                     if settings.worker_device else {})))
    rows = _rows(session, job.dataset_id)
    held = _rows(session, job.validation_dataset_id) if job.validation_dataset_id else None
    model_path = settings.base_model_path(job.base_model)
    # held-out rows are scored against their ground truth where the upload gave one
    return JobInputs(data=_as_data(rows), row_indices=rows.row_index,
                     eval_data=_as_data(held, gold_as_labels=True) if held is not None and held.text else None,
                     label_names=list(session.get(Dataset, job.dataset_id).label_names),
                     clear=ClearConfig.from_dict(job.clear_config), training=training, model_path=model_path)


def error_code(exc: BaseException) -> str:
    """The job's error code for a non-transient failure: out_of_memory, invalid_input or internal_error."""
    if "out of memory" in str(exc).lower():
        return "out_of_memory"
    return "invalid_input" if isinstance(exc, ValueError) else "internal_error"


def execute_job(job_id: str, *, settings: Settings, factory: sessionmaker[Session] | None = None,
                store: ArtifactStore | None = None, progress_interval_s: float | None = None) -> str:
    """Run one attempt of job ``job_id`` if it is queued (a prediction run, kind ``predict``, goes to
    ``worker.predict``); returns the outcome (see the module docstring).

    Raises:
        TransientJobError: the database or the store failed for a while; the job is queued again.
    """
    factory = factory or session_factory(settings.database_url)
    try:
        with factory() as session:
            job = claim(session, job_id, worker_identity())
    except Exception as exc:
        if is_transient(exc):
            raise TransientJobError(f"could not claim job {job_id}: {exc}") from exc
        raise
    if job is None:
        return "skipped"
    interval = settings.progress_interval_s if progress_interval_s is None else progress_interval_s
    kind = Attempt
    if job.kind == "predict":  # a prediction run is a jobs row too: same claim, lease and outcomes
        from worker.predict import PredictionAttempt as kind
    with Lease(factory, job_id, job.attempt, interval_s=settings.heartbeat_interval_s) as lease:
        attempt = kind(job, lease, settings, store or ArtifactStore(settings.artifact_url), interval)
        try:
            return attempt.run()
        finally:
            del attempt
            _free_device()


def _free_device() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Attempt:
    """One claimed attempt of a job: trains, then ends the job (every write fenced by the attempt)."""

    def __init__(self, job: Job, lease: Lease, settings: Settings, store: ArtifactStore, interval_s: float) -> None:
        self.job, self.lease, self.settings, self.store = job, lease, settings, store
        self.factory, self.id, self.number = lease.factory, job.id, job.attempt
        self.progress = JobProgress(lease, min_interval_s=interval_s, soft_deadline=soft_deadline(job))
        self.sync = CheckpointSync(lease, store)

    def run(self) -> str:
        """Train and finish; map every way out of training to the job's end state."""
        deadline = hard_deadline(self.job)
        if deadline and utcnow() > deadline:
            return self._fail("time_limit", f"the job passed its time limit of {self.job.time_limit_s} s "
                              "before this attempt started")
        try:
            if stop_requested():  # taken just as the worker began to stop
                raise WorkerStopping(None)
            return self._train_and_finish()
        except WorkerStopping as stop:
            return self._requeue_stopped(stop.step)
        except TrainingCancelled as stop:
            return self._stopped(stop.state.global_step)
        except Exception as exc:  # every failure ends the job visibly; nothing is swallowed
            if is_transient(exc):
                return self._release(exc)
            logger.exception("job %s failed", self.id)
            return self._fail(error_code(exc), f"{type(exc).__name__}: {exc}")

    def _train_and_finish(self) -> str:
        with self.factory() as session:
            inputs = load_inputs(session, self.job, self.settings)
        with attempt_folder(self.settings.scratch("attempts"), self.id) as tmp:
            result = self._train(inputs, tmp)
            if self.lease.lost.is_set():
                return self._lost()
            key = package_adapter(result, self.id, inputs, tmp, self.store, tenant_id=self.job.tenant_id)
            metrics = json_safe(dict(result.metrics, wall_time_s=result.wall_time_s,
                                     warnings=[w["message"] for w in result.warnings]))
            report, summary = result.report, result.report.summary()
        del result
        done = retry_transient(lambda: self._succeed(report, inputs.row_indices, metrics, summary, key))
        if not done:
            return self._lost()
        delete_checkpoints(self.store, self.id)
        return "succeeded"

    def _train(self, inputs: JobInputs, tmp: Path):
        resume = self._resume_from(tmp / "resume")
        run = dict(clear=inputs.clear, training=inputs.training, model_path=inputs.model_path,
                   eval_data=inputs.eval_data, label_names=inputs.label_names, checkpoint_dir=tmp / "checkpoints")

        def callbacks(resumed_step: int | None) -> list:  # the stop comes last: after the checkpoint is stored
            return [self.progress, self.sync, StopAtCheckpoint(self.sync, resumed_step)]

        try:
            return train(inputs.data, resume_from=resume, callbacks=callbacks(
                self.job.checkpoint_step if resume else None), **run)
        except ValueError as exc:
            # a checkpoint this worker cannot take (other settings, e.g. CLEAR_WORKER_DEVICE): redo, do not fail
            if resume is None or "checkpoint" not in str(exc):
                raise
            with self.factory() as session:
                record_event(session, self.id, self.number, "message",
                             f"the stored checkpoint cannot be resumed here ({exc}); attempt {self.number} starts over")
            return train(inputs.data, resume_from=None, callbacks=callbacks(None), **run)

    def _resume_from(self, directory: Path) -> Path | None:
        if not self.job.checkpoint_uri or self.job.checkpoint_step is None:
            return None
        # the ``resumed`` event is JobProgress's, once the trainer has restored the checkpoint
        return restore(self.store, self.job.checkpoint_uri, self.job.checkpoint_step, directory)

    def _succeed(self, report, row_indices, metrics, summary, key) -> bool:
        if not self.lease.flush():  # the buffered events and checkpoint records first, in order
            return False
        with self.factory() as session:
            write_noise_report(session, self.id, report, row_indices)
            return transition(session, self.id, ("running", "cancelling"), "succeeded", on_attempt=self.number,
                              progress=1.0, metrics=metrics, report_summary=summary, adapter_uri=key,
                              finished_at=utcnow(), lease_owner=None, message="adapter and noise report stored")

    def _stopped(self, step: int) -> str:
        reason = self.progress.stop_reason
        if reason == "lost" or self.lease.lost.is_set():
            return self._lost()
        if reason == "time_limit":
            limit = self.job.soft_time_limit_s or self.job.time_limit_s
            return self._fail("time_limit", f"the job passed its soft time limit of {limit} s; stopped at step {step}")
        done = retry_transient(lambda: self._end("cancelled", "stopped on request", {"global_step": step}))
        delete_checkpoints(self.store, self.id)
        return "cancelled" if done else self._lost()

    def _requeue_stopped(self, step: int | None) -> str:
        """The worker is stopping: back to ``queued`` (event "worker stopped"), to resume from the newest stored
        checkpoint. Not a failed attempt: the reaper's ``max_attempts`` does not count it. A job being cancelled
        ends ``cancelled`` instead."""
        where = f"at step {step}" if step is not None else "before training"
        said = [""]

        def requeue() -> bool:
            # the buffered events and checkpoint records first, in order: the next attempt resumes from the
            # newest recorded checkpoint, and the job's log keeps every event before "worker stopped"
            if not self.lease.flush():
                return False
            resume = self.sync.stored_step if self.sync.stored_step is not None else self.job.checkpoint_step
            then = f"resumes from the checkpoint at step {resume}" if resume else "starts over"
            said[0] = message = f"worker stopped {where} of attempt {self.number}; queued again, the next attempt {then}"
            data = {"reason": WORKER_STOPPED, "attempt": self.number, "global_step": step, "checkpoint_step": resume}
            with self.factory() as session:
                return transition(session, self.id, ("running",), "queued", on_attempt=self.number, message=message,
                                  event_data=data, lease_owner=None, enqueued_at=None)

        try:
            moved = retry_transient(requeue, max_delay_s=STOP_DB_WAIT_S)
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("job %s: the worker is stopping and the database is unreachable (%s); the reaper "
                           "requeues the job once its lease runs out", self.id, exc)
            return "stopped"
        if moved:
            logger.warning("job %s: %s", self.id, said[0])
            return "stopped"
        if self.lease.check() == "cancelling":  # a cancel came first: end the job as the cancel asked
            return self._stopped(step or 0)
        return self._lost()

    def _end(self, status: str, message: str, event_data: dict | None = None, **fields) -> bool:
        if not self.lease.flush():
            return False
        with self.factory() as session:
            return transition(session, self.id, ("running", "cancelling"), status, on_attempt=self.number,
                              message=message[:2000], event_data=event_data, finished_at=utcnow(),
                              lease_owner=None, **fields)

    def _fail(self, code: str, message: str) -> str:
        done = retry_transient(lambda: self._end("failed", message, error_code=code, error_message=message[:4000]))
        delete_checkpoints(self.store, self.id)
        return "failed" if done else self._lost()

    def _release(self, exc: BaseException) -> str:
        logger.warning("job %s: transient fault (%s); giving it back to the queue", self.id, exc)
        try:
            self.lease.flush()
            with self.factory() as session:
                release(session, self.id, self.number, f"transient fault in attempt {self.number}: {exc}"[:500])
        except Exception:  # still down: the reaper requeues it once the heartbeat is stale
            logger.warning("could not requeue job %s; the reaper will", self.id, exc_info=True)
        raise TransientJobError(f"job {self.id} attempt {self.number}: {exc}") from exc

    def _lost(self) -> str:
        logger.warning("job %s: attempt %s lost its lease; wrote nothing more", self.id, self.number)
        return "lost"
