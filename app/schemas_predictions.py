"""Request and response bodies of prediction runs (``/v1/jobs/{id}/predictions``, ``/v1/predictions``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.schemas import NO_NUL, JobError, UtcDatetime


class PredictionCreate(BaseModel):
    """A run on one of the tenant's datasets (JSON body); to predict a file, send it as multipart instead."""

    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Field(min_length=1, max_length=100, pattern=NO_NUL,
                            description="A ready dataset; its labels are checked.")
    batch_size: int | None = Field(None, ge=1, le=1024, description="Rows per forward pass (default 64).")
    label_check: StrictBool = Field(True, description="Check the dataset's labels against the predictions (flags, "
                              "suggested labels); false predicts only, e.g. on labels the model does not know.")


class PredictionPublic(BaseModel):
    """A prediction run: its state, progress (0-1), input and, once it has succeeded, its summary.

    ``summary`` holds ``rows``, ``labels`` (the model's classes, the order of ``probabilities``), ``labelled``,
    ``predicted_histogram`` and ``mean_confidence``; with labels also ``given_histogram``, ``agreement`` (the
    fraction predicted as given), the label check's ``flagged`` count, ``flagged_fraction``,
    ``flagged_per_class``, ``class_thresholds``, the estimated ``noise_matrix`` (joint P(given, true), rows
    given, columns true) and ``estimated_noise_rate`` (per class too)."""

    id: str
    job_id: str
    dataset_id: str | None
    input_name: str | None = Field(None, description="The uploaded file's name (runs on an upload).")
    labelled: bool = Field(description="Whether the rows carry labels (then each row gets the label check).")
    row_count: int | None
    batch_size: int
    status: str
    attempt: int
    progress: float
    summary: dict[str, Any] | None
    error: JobError | None = None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None

    @classmethod
    def from_run(cls, run: Any) -> "PredictionPublic":
        """Build from a ``jobs`` row of kind ``predict``."""
        config = run.training_config or {}
        return cls(id=run.id, job_id=run.model_job_id, dataset_id=run.dataset_id, input_name=run.input_name,
                   labelled=bool(config.get("labelled")), row_count=run.row_count,
                   batch_size=int(config.get("batch_size") or 64), status=run.status, attempt=run.attempt,
                   progress=run.progress, summary=run.report_summary,
                   error=JobError(code=run.error_code, message=run.error_message) if run.error_code else None,
                   created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at)


class PredictionsPublic(BaseModel):
    """A page of a job's prediction runs, newest first."""

    data: list[PredictionPublic]
    count: int
    next_cursor: str | None = None


class PredictionRowPublic(BaseModel):
    """One predicted row: the predicted label, its probability (``confidence``) and every class's. With a label,
    the label check: ``flagged`` (the label is likely wrong), ``suggested_label`` and its probability,
    ``label_quality`` in [0, 1] (lower = likelier wrong) and ``flag_reason``; without one those are null."""

    row_index: int
    id: str | None
    text: str
    text_pair: str | None
    predicted_label: str
    confidence: float | None
    probabilities: dict[str, float]
    given_label: str | None
    flagged: bool | None
    suggested_label: str | None
    suggested_confidence: float | None
    label_quality: float | None
    flag_reason: str | None


class PredictionRowsPublic(BaseModel):
    """A page of a run's rows in ``row_index`` order, with the run's summary."""

    data: list[PredictionRowPublic]
    count: int
    next_cursor: str | None = None
    summary: dict[str, Any]
