"""Response bodies of the dashboard's and live clients' routes: a job's progress snapshot (sent on the
event stream) and the noise report's statistics (histogram, per-class noise, noise matrix, confusion
matrix, reliability verdict)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class JobProgressPublic(BaseModel):
    """Where a job stands, as sent by ``events/stream`` in its ``progress`` events."""

    status: str
    progress: float = Field(description="Fraction of optimizer steps done, 0-1, never lower than before (a "
                            "resumed attempt leaves it until it passes it).")
    epoch: int | None = Field(description="Current epoch, 0-based; equals num_epochs once training ended.")
    num_epochs: int | None
    global_step: int
    max_steps: int | None
    phase: str | None = Field(description="warmup, routed or plain.")
    loss: float | None = Field(description="Training loss of the last step reported.")


class HistogramPublic(BaseModel):
    """Counts of rows per bin of ``field`` over [0, 1], split into flagged and unflagged rows; ``thresholds``
    are the per-class confident-learning thresholds on that same axis (a row of given class k is a flag
    candidate when its ``label_quality`` is below ``thresholds[k]`` and another class clears its own)."""

    field: str = Field(description="label_quality: the score the flags are decided on (the given label's "
                       "probability averaged over the passes, cleanlab's self-confidence by default).")
    edges: list[float] = Field(description="bins + 1 bin edges from 0 to 1.")
    unflagged: list[int]
    flagged: list[int]
    thresholds: dict[str, float] = Field(default_factory=dict, description="Per-class thresholds, by class name.")


class ClassNoisePublic(BaseModel):
    """One given class: its rows, how many were flagged, and its estimated noise rate."""

    label: str
    rows: int
    flagged: int
    estimated_noise_rate: float = Field(description="P(true label differs | given = this class), from the "
                                        "calibrated confident joint (not the flagged fraction).")


class ConfusionPublic(BaseModel):
    """Given label (rows of ``matrix``) against the model's predicted label (columns)."""

    labels: list[str]
    matrix: list[list[int]]


class ReportStatsPublic(BaseModel):
    """What the dashboard plots about a noise report."""

    rows: int
    flagged: int
    flags_withheld: bool = Field(False, description="The report is not reliable: flags are withheld.")
    estimated_noise_rate: float | None = None
    noise_matrix: dict[str, Any] | None = Field(None, description="labels and the K x K joint P(given=i, true=j).")
    reliability: dict[str, Any] | None = None
    histogram: HistogramPublic
    per_class: list[ClassNoisePublic]
    confusion: ConfusionPublic
