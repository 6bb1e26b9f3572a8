"""Run one job end to end, with no Celery in sight: claim it, load its rows, train with
``clear_core``, write the noise report and the adapter, and finish it. Tests call this directly."""

from __future__ import annotations

import logging
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from clear_core import ClearConfig, TextClassificationData, TrainingCancelled, TrainingConfig, train
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import session_factory
from app.models import Dataset, DatasetRow, Job, utcnow
from app.services.transitions import transition
from app.settings import DEFAULT_MODEL, Settings
from app.storage import ArtifactStore
from worker.progress import JobProgress, json_safe
from worker.results import package_adapter, write_noise_rows

logger = logging.getLogger(__name__)


@dataclass
class JobInputs:
    """Everything ``train`` needs for one job, read from the database."""

    data: TextClassificationData
    row_indices: list[int]  # dataset row index of each training row
    eval_data: TextClassificationData | None
    label_names: list[str]
    clear: ClearConfig
    training: TrainingConfig
    model_path: Path | None


def _rows(session: Session, dataset_id: str) -> list[DatasetRow]:
    query = select(DatasetRow).where(DatasetRow.dataset_id == dataset_id).order_by(DatasetRow.row_index)
    return list(session.scalars(query))


def _as_data(rows: list[DatasetRow], *, gold_as_labels: bool = False) -> TextClassificationData:
    has_pair, has_gold = rows[0].text_pair is not None, rows[0].gold_label is not None
    labels = [r.gold_label if gold_as_labels and has_gold else r.label for r in rows]
    return TextClassificationData(
        texts=[r.text for r in rows], labels=labels, text_pairs=[r.text_pair for r in rows] if has_pair else None,
        ids=[r.row_id for r in rows] if rows[0].row_id is not None else None,
        gold_labels=[r.gold_label for r in rows] if has_gold and not gold_as_labels else None)


def _split(rows: list[DatasetRow], fraction: float, seed: int) -> tuple[list[DatasetRow], list[DatasetRow]]:
    order = np.random.default_rng(seed).permutation(len(rows))
    held = set(order[: max(1, round(fraction * len(rows)))].tolist())
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def load_inputs(session: Session, job: Job, settings: Settings) -> JobInputs:
    """The job's training rows (minus a held-out split), held-out rows and resolved configs."""
    training = TrainingConfig.from_dict(dict(job.training_config, **({"device": settings.worker_device}
                                                                     if settings.worker_device else {})))
    rows, held = _rows(session, job.dataset_id), []
    if job.validation_fraction:
        rows, held = _split(rows, job.validation_fraction, training.seed)
    elif job.validation_dataset_id:
        held = _rows(session, job.validation_dataset_id)
    model_path = None if job.base_model == DEFAULT_MODEL else Path(settings.model_dir or ".") / job.base_model
    # held-out rows are scored against their ground truth where the upload gave one
    return JobInputs(data=_as_data(rows), row_indices=[r.row_index for r in rows],
                     eval_data=_as_data(held, gold_as_labels=True) if held else None,
                     label_names=list(session.get(Dataset, job.dataset_id).label_names),
                     clear=ClearConfig.from_dict(job.clear_config), training=training, model_path=model_path)


def _error_code(exc: BaseException) -> str:
    text = str(exc).lower()
    if "out of memory" in text:
        return "out_of_memory"
    return "invalid_input" if isinstance(exc, ValueError) else "internal_error"


def execute_job(job_id: str, *, settings: Settings, factory: sessionmaker[Session] | None = None,
                store: ArtifactStore | None = None, progress_interval_s: float = 1.0) -> str:
    """Run job ``job_id`` if it is queued; returns its final status, or ``"skipped"`` if it was not queued."""
    factory = factory or session_factory(settings.database_url)
    store = store or ArtifactStore(settings.artifact_url)
    with factory() as session:
        claimed = transition(session, job_id, ("queued",), "running", attempt=Job.attempt + 1,
                             started_at=utcnow(), heartbeat_at=utcnow())
        if not claimed:
            return "skipped"
    try:
        with factory() as session:
            inputs = load_inputs(session, session.get(Job, job_id), settings)
        return _train_and_finish(job_id, inputs, factory, store, progress_interval_s)
    except TrainingCancelled:
        with factory() as session:
            transition(session, job_id, ("running", "cancelling"), "cancelled", message="stopped on request",
                       finished_at=utcnow())
        return "cancelled"
    except Exception as exc:  # every failure ends the job visibly; nothing is swallowed
        logger.exception("job %s failed", job_id)
        with factory() as session:
            transition(session, job_id, ("running", "cancelling"), "failed", message=str(exc)[:2000],
                       error_code=_error_code(exc), error_message=f"{type(exc).__name__}: {exc}"[:4000],
                       finished_at=utcnow())
        logger.debug("traceback: %s", traceback.format_exc())
        return "failed"


def _train_and_finish(job_id: str, inputs: JobInputs, factory: sessionmaker[Session], store: ArtifactStore,
                      progress_interval_s: float) -> str:
    with tempfile.TemporaryDirectory(prefix=f"{job_id}-") as tmp:
        result = train(inputs.data, clear=inputs.clear, training=inputs.training, model_path=inputs.model_path,
                       eval_data=inputs.eval_data, label_names=inputs.label_names,
                       callbacks=[JobProgress(factory, job_id, min_interval_s=progress_interval_s)],
                       checkpoint_dir=Path(tmp) / "checkpoints")
        key = package_adapter(result, job_id, inputs, Path(tmp), store)
        metrics = json_safe(dict(result.metrics, wall_time_s=result.wall_time_s))
        with factory() as session:
            write_noise_rows(session, job_id, result.report.to_records(), inputs.row_indices)
            done = transition(session, job_id, ("running", "cancelling"), "succeeded", progress=1.0,
                              metrics=metrics, report_summary=result.report.summary(), adapter_uri=key,
                              finished_at=utcnow(), message="adapter and noise report stored")
    return "succeeded" if done else "skipped"
