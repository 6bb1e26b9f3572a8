"""Typed views of the service's answers. Unknown fields are kept (``extra="allow"``), so a newer
service does not break an older client. A ``Job`` remembers the client that fetched it, so that
``job.wait()``, ``job.cancel()`` and the downloads work on it directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

if TYPE_CHECKING:
    import pandas as pd

    from clearft.client import JobsAPI

FINAL_STATUSES = ("succeeded", "failed", "cancelled")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Dataset(_Model):
    """A dataset: status, size, labels and class histogram; a version made from a job's review decisions also
    has ``parent_id``, ``from_job_id`` and ``lineage`` (rows accepted, relabelled, kept, dropped, unchanged,
    labels_changed)."""

    id: str
    name: str
    status: str
    row_count: int
    label_names: list[str]
    class_histogram: dict[str, int]
    sha256: str
    created_at: datetime
    parent_id: str | None = None
    from_job_id: str | None = None
    lineage: dict[str, int | list[str]] | None = None


class JobError(_Model):
    """Why a job failed."""

    code: str
    message: str | None = None


class Job(_Model):
    """A fine-tuning job: resolved settings, state, progress, latest metrics and report summary."""

    id: str
    dataset_id: str
    base_model: str
    method: str
    routed: bool
    clear: dict[str, Any]
    training: dict[str, Any]
    status: str
    attempt: int
    progress: float
    epoch: int | None = None
    global_step: int = 0
    max_steps: int | None = None
    phase: str | None = None
    loss: float | None = None
    metrics: dict[str, Any] | None = None
    report_summary: dict[str, Any] | None = None
    error: JobError | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    from_job_id: str | None = None
    comparison: dict[str, Any] | None = None
    _api: "JobsAPI | None" = PrivateAttr(default=None)

    def bind(self, api: "JobsAPI") -> "Job":
        """Attach the jobs API used by the convenience methods; returns self."""
        self._api = api
        return self

    @property
    def is_final(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.status in FINAL_STATUSES

    def _jobs(self) -> "JobsAPI":
        if self._api is None:
            raise RuntimeError("this Job is not bound to a client: get it through Client.jobs")
        return self._api

    def refresh(self) -> "Job":
        """The job as the service sees it now."""
        return self._jobs().get(self.id)

    def wait(self, *, progress: bool = False, timeout: float | None = None, check: bool = False) -> "Job":
        """Block until the job is final (see ``JobsAPI.wait``); returns the final job."""
        return self._jobs().wait(self.id, progress=progress, timeout=timeout, check=check)

    def cancel(self) -> "Job":
        """Ask the service to cancel the job."""
        return self._jobs().cancel(self.id)

    def noise_report(self, **filters: Any) -> "pd.DataFrame":
        """The noise report as a DataFrame (see ``JobsAPI.noise_report``)."""
        return self._jobs().noise_report(self.id, **filters)

    def epochs(self) -> "pd.DataFrame":
        """One row of metrics per finished epoch."""
        return self._jobs().epochs(self.id)

    def download_adapter(self, directory: str | Path, *, extract: bool = True) -> Path:
        """Save the adapter under ``directory`` (see ``JobsAPI.download_adapter``)."""
        return self._jobs().download_adapter(self.id, directory, extract=extract)


class Event(_Model):
    """One entry of a job's event log: ``state``, ``epoch`` (metrics in ``data``), ``message``, or ``warning``
    (the model does not seem to learn: ``message`` gives the cause and what to try, ``data`` the ``stage``,
    ``after_warmup`` or ``end``, and the ``reliability`` evidence). ``id`` is global (a cursor), ``seq`` the
    job's own number."""

    id: int
    seq: int | None = None  # the job's own event number, 1, 2, 3 ... (servers since issue 13)
    job_id: str
    type: str
    message: str | None = None
    data: dict[str, Any] | None = None
    created_at: datetime


@dataclass
class StreamEvent:
    """One Server-Sent Event: ``event`` is a log type (with ``id``), ``progress`` or ``end``."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
