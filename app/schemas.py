"""Request and response bodies: ``XCreate`` in, ``XPublic`` out, ``XsPublic{data, count, next_cursor}`` for lists."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

# SQLite hands back naive datetimes: every stored time is UTC, so say so.
UtcDatetime = Annotated[datetime, AfterValidator(lambda d: d if d.tzinfo else d.replace(tzinfo=timezone.utc))]


NO_NUL = r"^[^\x00]*$"  # text without a NUL character: Postgres text cannot hold one (a 500 before)


class ErrorBody(BaseModel):
    """The content of the error envelope."""

    code: str
    message: str
    param: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """``{"error": {...}}``: every 4xx and 5xx answer."""

    error: ErrorBody


class DatasetPublic(BaseModel):
    """A stored dataset: its status, size, label names and class histogram."""

    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    status: str
    format: str
    sha256: str
    size_bytes: int
    row_count: int
    label_names: list[str]
    class_histogram: dict[str, int]
    columns: dict[str, str]
    created_at: UtcDatetime
    parent_id: str | None = Field(None, description="The dataset a version was made from (null for an upload).")
    from_job_id: str | None = Field(None, description="The job whose review decisions made this version (null "
                                    "for an upload, or once that job was deleted).")
    lineage: dict[str, int | list[str]] | None = Field(
        None, description="A version's row counts: accepted, relabelled, kept, dropped (decisions applied), unchanged "
        "and labels_changed (rows of the version whose label is / is not the parent's); classes_removed: the "
        "parent's classes no row of the version has any more.")


class DatasetsPublic(BaseModel):
    """A page of datasets, newest first."""

    data: list[DatasetPublic]
    count: int
    next_cursor: str | None = None


class JobCreate(BaseModel):
    """What a job trains on and how; omitted settings take ``clear_core``'s defaults, echoed back."""

    model_config = ConfigDict(extra="forbid")
    dataset_id: str = Field(pattern=NO_NUL, description="The dataset to train on (an id from "
                            "POST /v1/datasets).")
    validation_dataset_id: str | None = Field(None, min_length=1, pattern=NO_NUL,
                                              description="A held-out dataset scored each "
                                              "epoch; leave it out (or null) for none.")
    validation_fraction: float | None = Field(None, ge=0, le=0.5, allow_inf_nan=False,
                                              description="Fraction of the rows held out of training (stratified by "
                                              "label) and scored out-of-sample; the noise report's reliability "
                                              "verdict rests on them. Default: training.validation_fraction (0.1); "
                                              "0 = none.")
    base_model: str | None = Field(None, min_length=1, description="A model name from the server's model list; "
                                   "leave it out (or null) for the server's default.")
    method: Literal["lora", "adapter", "prefix", "bitfit", "full"] = "lora"
    routed: StrictBool = Field(True, description="CleaR routing (true) or plain PEFT (false); JSON true or false "
                               "only.")
    clear: dict[str, Any] = Field(default_factory=dict, description="ClearConfig fields, e.g. routing_cap.")
    training: dict[str, Any] = Field(default_factory=dict, description="TrainingConfig fields, e.g. epochs.")
    time_limit_s: int | None = Field(None, ge=1, le=10**9, description="Hard limit in seconds from the first start "
                                     "(default and maximum: the server's CLEAR_MAX_JOB_SECONDS); past it the job "
                                     "fails with code time_limit.")
    soft_time_limit_s: int | None = Field(None, ge=1, le=10**9,
                                          description="Past this the trainer stops between steps and the job fails "
                                          "with code time_limit (default: 95% of time_limit_s).")
    from_job: str | None = Field(None, max_length=40, pattern=NO_NUL,
                                 description="Retrain: take this earlier job's method, routed, base_model, clear and "
                                 "training settings, validation dataset and fraction and time limits; fields given "
                                 "here override them (clear and training merged key by key). The dataset's labels "
                                 "must be a subset of that job's dataset's labels.")


class JobError(BaseModel):
    """Why a job failed."""

    code: str
    message: str | None = None


class JobPublic(BaseModel):
    """A job with every resolved setting, its state, progress and latest metrics."""

    model_config = ConfigDict(from_attributes=True)
    id: str
    dataset_id: str
    validation_dataset_id: str | None
    validation_fraction: float | None
    base_model: str
    method: str
    routed: bool
    clear: dict[str, Any] = Field(validation_alias="clear_config")
    training: dict[str, Any] = Field(validation_alias="training_config")
    time_limit_s: int | None = None
    soft_time_limit_s: int | None = None
    status: str
    attempt: int
    progress: float = Field(description="Fraction of optimizer steps done, 0-1, never lower than before: an attempt "
                            "resumed from an earlier checkpoint leaves progress, epoch, global_step, phase and loss "
                            "as they were until it passes them (its ``resumed`` event says where it resumed).")
    epoch: int | None
    global_step: int
    max_steps: int | None
    phase: str | None
    loss: float | None = Field(None, description="Training loss of the last step reported.")
    metrics: dict[str, Any] | None
    report_summary: dict[str, Any] | None
    error: JobError | None = None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    from_job_id: str | None = Field(None, description="The job this one retrained from (null once it was deleted).")
    comparison: dict[str, Any] | None = Field(None, description="When both this job and from_job succeeded: "
                                              "{from_job_id, before, after, difference} over the accuracy-like "
                                              "metrics and the estimated noise rate (difference = after - before).")

    @classmethod
    def from_job(cls, job: Any) -> "JobPublic":
        """Build from a ``Job`` row (the error fields become one ``error`` object)."""
        public = cls.model_validate(job)
        if job.error_code:
            public.error = JobError(code=job.error_code, message=job.error_message)
        return public


class JobsPublic(BaseModel):
    """A page of jobs, newest first."""

    data: list[JobPublic]
    count: int
    next_cursor: str | None = None


class EventPublic(BaseModel):
    """One entry of a job's append-only log: ``state``, ``epoch`` (metrics), ``message``, ``warning`` (the
    model does not seem to learn: the cause and what to try), ``checkpoint`` (one was stored: a later attempt can
    resume from ``data.global_step``) or ``resumed`` (an attempt resumed from a checkpoint: ``data`` has its
    ``attempt``, ``global_step``, ``epoch``, ``max_steps`` and ``progress``)."""

    model_config = ConfigDict(from_attributes=True)
    id: int = Field(description="Global event id (the SSE id; resume a stream with Last-Event-ID).")
    seq: int = Field(description="The event's number within its job: 1, 2, 3 ... without gaps.")
    job_id: str
    type: str
    message: str | None
    data: dict[str, Any] | None
    created_at: UtcDatetime = Field(description="When it happened: an event a worker held back through a database "
                                    "outage keeps its own time, so it may be earlier than an event before it.")


class EventsPublic(BaseModel):
    """Events oldest first; ``next_cursor`` resumes after the last one returned."""

    data: list[EventPublic]
    count: int
    next_cursor: str | None = None
    has_more: bool = False


class NoiseRowPublic(BaseModel):
    """One row of the noise report (low ``label_quality`` = label likely wrong; ``rank`` 1 first: flagged rows,
    then ascending ``label_quality``). ``flag_threshold`` is the confident-learning threshold of the row's given
    class; ``flag_reason`` says why it is or is not flagged; ``split`` is ``train`` or ``validation`` (held out
    of training and scored out-of-sample; such rows have no ``p_clean``)."""

    rank: int
    row_index: int
    id: str | None
    text: str
    text_pair: str | None
    given_label: str
    predicted_label: str
    suggested_label: str
    suggested_confidence: float
    p_clean: float | None
    p_clean_history: list[float]
    label_quality: float
    flagged: bool
    flag_threshold: float
    flag_reason: str | None
    split: str
    decision: str | None = Field(None, description="The row's latest review decision (accept, keep, relabel, drop), "
                                 "null when undecided.")
    decision_label: str | None = Field(None, description="The label the decision gives the row (null when undecided "
                                       "or dropped).")


class NoiseReportPublic(BaseModel):
    """A page of the noise report plus its summary: rows and flagged counts, the estimated noise matrix
    P(given, true) and noise rates, the class thresholds, and the reliability verdict (when it is "not
    reliable", flags are withheld)."""

    data: list[NoiseRowPublic]
    count: int
    next_cursor: str | None = None
    summary: dict[str, Any]
