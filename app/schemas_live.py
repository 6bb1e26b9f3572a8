"""Response bodies of the dashboard's and live clients' routes: a job's progress snapshot (sent on the
event stream) and the noise report's statistics (histogram, per-class noise, confusion matrix)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class JobProgressPublic(BaseModel):
    """Where a job stands, as sent by ``events/stream`` in its ``progress`` events."""

    status: str
    progress: float = Field(description="Fraction of optimizer steps done, 0-1.")
    epoch: int | None = Field(description="Current epoch, 0-based; equals num_epochs once training ended.")
    num_epochs: int | None
    global_step: int
    max_steps: int | None
    phase: str | None = Field(description="warmup, routed or plain.")
    loss: float | None = Field(description="Training loss of the last step reported.")


class HistogramPublic(BaseModel):
    """Counts of rows per bin of ``field`` over [0, 1], split into flagged and unflagged rows."""

    field: str = Field(description="p_clean, or label_quality when the job has no p_clean (unrouted runs).")
    edges: list[float] = Field(description="bins + 1 bin edges from 0 to 1.")
    unflagged: list[int]
    flagged: list[int]


class ClassNoisePublic(BaseModel):
    """One given class: its rows, how many were flagged, and the estimated noise rate (flagged / rows)."""

    label: str
    rows: int
    flagged: int
    estimated_noise_rate: float


class ConfusionPublic(BaseModel):
    """Given label (rows of ``matrix``) against the model's predicted label (columns)."""

    labels: list[str]
    matrix: list[list[int]]


class ReportStatsPublic(BaseModel):
    """What the dashboard plots about a noise report."""

    rows: int
    flagged: int
    flag_threshold: float | None
    histogram: HistogramPublic
    per_class: list[ClassNoisePublic]
    confusion: ConfusionPublic
