"""Database tables (SQLAlchemy 2 declarative); created only by the Alembic migrations.

Tenants and their API keys (stored as sha256 hashes only); datasets and their rows, jobs, the
append-only job event log, and the per-row noise report, each owned by a tenant.
Ids of datasets and jobs are opaque strings (``ds_...``, ``job_...``); events have an
increasing integer id that serves as their cursor.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite autoincrements only an INTEGER PRIMARY KEY; Postgres gets a BIGINT identity.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

DATASET_STATUSES = ("processing", "ready", "failed")
JOB_STATUSES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
JOB_KINDS = ("train", "predict")  # a prediction run is a job row of kind "predict" (see app.services.predictions)
REVIEW_ACTIONS = ("accept", "keep", "relabel", "drop")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    """A random opaque id such as ``job_3f2a...`` (24 hex digits after the prefix)."""
    return f"{prefix}_{secrets.token_hex(12)}"


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Tenant(Base):
    """A team sharing the deployment; owns datasets, jobs and keys. A ``max_*`` column left null takes the
    ``quota_*`` setting of the service."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    max_stored_rows: Mapped[int | None] = mapped_column(BigInteger)
    max_upload_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_jobs_per_hour: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key of a tenant: only its sha256 (``key_hash``) and its visible ``prefix`` are stored."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(20), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Dataset(Base):
    """An uploaded, validated labelled dataset."""

    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="ready")
    format: Mapped[str] = mapped_column(String(10))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(Integer)
    label_names: Mapped[list[Any]] = mapped_column(JSON)
    class_histogram: Mapped[dict[str, Any]] = mapped_column(JSON)
    columns: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # a version made from a job's review decisions (issue 10): where it came from and what changed
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", name="fk_datasets_parent_id"), index=True)
    from_job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", name="fk_datasets_from_job_id", ondelete="SET NULL", use_alter=True))
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class DatasetRow(Base):
    """One row of a dataset; ``gold_label`` only scores reports and is never trained on."""

    __tablename__ = "dataset_rows"
    # references datasets.id (rows deleted with their dataset), enforced by triggers, not by a foreign key whose
    # per-row check cost more than a COPY of the rows (migrations 0008, 0009: a dataset checked and locked once by
    # dataset_rows_trust, then its rows skip their own check)
    dataset_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    row_id: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    text_pair: Mapped[str | None] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(200))
    gold_label: Mapped[str | None] = mapped_column(String(200))


class Job(Base):
    """A fine-tuning job with its resolved configuration, state, progress and results."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    # the dataset trained on; for a prediction run the dataset predicted (None when it predicts an uploaded file)
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    validation_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    validation_fraction: Mapped[float | None] = mapped_column(Float)
    base_model: Mapped[str] = mapped_column(String(300))
    method: Mapped[str] = mapped_column(String(20))
    routed: Mapped[bool] = mapped_column(Boolean)
    clear_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    training_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    epoch: Mapped[int | None] = mapped_column(Integer)
    global_step: Mapped[int] = mapped_column(Integer, default=0)
    max_steps: Mapped[int | None] = mapped_column(Integer)
    phase: Mapped[str | None] = mapped_column(String(20))
    loss: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    report_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    adapter_uri: Mapped[str | None] = mapped_column(String(500))
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    # leases, resume and limits (issue 4): the attempt number fences every write of a worker
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    enqueued_at: Mapped[datetime | None] = mapped_column()
    checkpoint_uri: Mapped[str | None] = mapped_column(String(500))
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)
    time_limit_s: Mapped[int | None] = mapped_column(Integer)
    soft_time_limit_s: Mapped[int | None] = mapped_column(Integer)
    # a retrain (issue 10): the job whose settings this one took
    from_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", name="fk_jobs_from_job_id",
                                                                ondelete="SET NULL"))
    # prediction runs (Alembic 0006): kind "predict" uses the adapter of the job model_job_id on a dataset or on
    # an uploaded file (input_name, its validated rows at input_uri in the artifact store) of row_count rows
    kind: Mapped[str] = mapped_column(String(20), default="train", server_default="train")
    model_job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", name="fk_jobs_model_job_id", ondelete="CASCADE"), index=True)
    input_name: Mapped[str | None] = mapped_column(String(200))
    input_uri: Mapped[str | None] = mapped_column(String(500))
    row_count: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)


class JobEvent(Base):
    """One append-only event of a job: a state change, an epoch's metrics or a message."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_id_seq"),)
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, 3 ... within the job (app.services.transitions.add_event)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    type: Mapped[str] = mapped_column(String(20))
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NoiseRow(Base):
    """One row's entry in a job's noise report (low ``label_quality`` = likely wrong); ``split`` is ``train``
    or ``validation`` (held out of training, scored out-of-sample)."""

    __tablename__ = "noise_rows"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    row_id: Mapped[str | None] = mapped_column(String(200))
    given_label: Mapped[str] = mapped_column(String(200))
    predicted_label: Mapped[str] = mapped_column(String(200))
    suggested_label: Mapped[str] = mapped_column(String(200))
    suggested_confidence: Mapped[float] = mapped_column(Float)
    p_clean: Mapped[float | None] = mapped_column(Float)
    p_clean_history: Mapped[list[Any]] = mapped_column(JSON)
    label_quality: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean)
    flag_threshold: Mapped[float] = mapped_column(Float)
    flag_reason: Mapped[str | None] = mapped_column(Text)
    split: Mapped[str] = mapped_column(String(20), default="train", server_default="train")
    rank: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_noise_rows_job_quality", "job_id", "label_quality", "rank"),
                      Index("ix_noise_rows_job_rank", "job_id", "rank"))


class PredictionRow(Base):
    """One row of a prediction run (a ``jobs`` row of kind ``predict``): the predicted label and the class
    probabilities (a list in the model's class order, ``jobs.report_summary["labels"]``, summing to 1); when the
    row came with a label, the label check's verdict on it (``flagged`` ... ``flag_reason``), else those are null."""

    __tablename__ = "prediction_rows"
    run_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    row_id: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    text_pair: Mapped[str | None] = mapped_column(Text)
    given_label: Mapped[str | None] = mapped_column(String(200))
    predicted_label: Mapped[str] = mapped_column(String(200))
    probabilities: Mapped[list[Any]] = mapped_column(JSON)
    flagged: Mapped[bool | None] = mapped_column(Boolean)
    suggested_label: Mapped[str | None] = mapped_column(String(200))
    suggested_confidence: Mapped[float | None] = mapped_column(Float)
    label_quality: Mapped[float | None] = mapped_column(Float)
    flag_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_prediction_rows_run_predicted", "run_id", "predicted_label", "row_index"),)


class ReviewDecision(Base):
    """A reviewer's decision on one row of a job's noise report; the latest per row wins (it replaces the
    earlier one). ``action`` is one of ``REVIEW_ACTIONS``; ``label`` is the label the row takes in a version
    (the suggested label for ``accept``, the chosen one for ``relabel``, the given one for ``keep``, None for
    ``drop``)."""

    __tablename__ = "review_decisions"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    row_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    action: Mapped[str] = mapped_column(String(20))
    label: Mapped[str | None] = mapped_column(String(200))
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """A POST's ``Idempotency-Key`` (per tenant): the request's fingerprint and, once answered, its response."""

    __tablename__ = "idempotency_keys"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))  # in_progress | done
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    locked_until: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
