"""A trainer callback that writes a job's progress and per-epoch metrics to the database (through the
lease's outbox, so a database outage delays them and loses nothing) and asks the trainer to stop, between
steps, when the job is cancelling, past its soft time limit, or no longer this attempt's (its lease was
lost). Every write is fenced by the attempt number."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any, Callable

from clear_core import TrainerCallback, TrainerControl, TrainerState
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.models import JobEvent, utcnow
from worker.lease import Lease


def json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as JSON values: numpy scalars unwrapped, NaN/inf as None, anything else as text."""
    out = {}
    for key, value in metrics.items():
        value = value.item() if hasattr(value, "item") else value
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value if isinstance(value, (int, float, str, bool, list, dict, type(None))) else str(value)
    return out


class JobProgress(TrainerCallback):
    """Reports to the job held by ``lease``: progress at most every ``min_interval_s`` seconds (and at every
    epoch boundary), an ``epoch`` event per evaluated epoch, a ``resumed`` event where a resumed attempt
    starts; after every step it reads the job's status (one primary-key query) so a cancel stops training
    within one step. Everything goes through the lease's outbox: a database outage delays it, never drops it,
    and the job's progress never moves back (a resumed attempt leaves it until it passes it).

    ``stop_reason`` says why it stopped training: ``"cancel"``, ``"lost"`` or ``"time_limit"``.
    """

    def __init__(self, lease: Lease, *, min_interval_s: float = 1.0, soft_deadline: datetime | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lease, self.min_interval_s, self.clock = lease, min_interval_s, clock
        self.soft_deadline = soft_deadline
        self.stop_reason: str | None = None
        self._last = float("-inf")
        self._written_step: int | None = None  # the global step of the last progress written
        self._announced: set[str] = set()  # warning stages the job's log already has

    def _progress(self, state: TrainerState, **fields: Any) -> dict[str, Any]:
        return dict(progress=state.progress, epoch=state.epoch, global_step=state.global_step,
                    max_steps=state.max_steps, phase=state.phase, loss=state.loss, **fields)

    def _decide(self, status: str | None, control: TrainerControl) -> None:
        if status is None:
            self.stop_reason = "lost"
        elif status == "cancelling":
            self.stop_reason = "cancel"
        elif self.soft_deadline is not None and utcnow() >= self.soft_deadline:
            self.stop_reason = "time_limit"
        if self.stop_reason:
            control.should_training_stop = True

    def _write(self, state: TrainerState, control: TrainerControl, **fields: Any) -> None:
        self._decide(self.lease.renew(**self._progress(state, **fields)), control)
        self._last, self._written_step = self.clock(), state.global_step

    def on_train_begin(self, state: TrainerState, control: TrainerControl) -> None:
        """Record the step budget, or, for a resumed attempt, where it resumes (a ``resumed`` event: the job's
        progress stays at the highest step reached until the attempt passes it)."""
        attempt = self.lease.attempt
        if state.global_step:
            self._announced = self._announced_stages()
            self.lease.post("resumed", f"attempt {attempt} resumes from the checkpoint at step {state.global_step}",
                            {"attempt": attempt, "global_step": state.global_step, "epoch": state.epoch,
                             "max_steps": state.max_steps, "progress": state.progress})
        else:
            self.lease.post("message", f"training started: {state.num_epochs} epoch(s), {state.max_steps} step(s)",
                            {"max_steps": state.max_steps, "global_step": 0, "attempt": attempt})
        self._write(state, control)

    def on_epoch_begin(self, state: TrainerState, control: TrainerControl) -> None:
        """Record the epoch and phase (warmup, routed or plain)."""
        self._write(state, control)

    def on_step_end(self, state: TrainerState, control: TrainerControl) -> None:
        """Write progress (throttled) or just read the status; stop if cancelling, lost or out of time."""
        if self.clock() - self._last >= self.min_interval_s:
            self._write(state, control)
        else:
            self._decide(self.lease.check(), control)

    def on_save(self, state: TrainerState, control: TrainerControl, checkpoint_path: Any) -> None:
        """Write progress at every checkpoint, throttle or not: a worker that stops here hands the job back at this
        step, and the job's row then shows the step the next attempt resumes from (not the last throttled one).
        Nothing is written when this step's progress already was (the epoch-end checkpoint follows ``on_evaluate``)."""
        if state.global_step != self._written_step:
            self._write(state, control)

    def _announced_stages(self) -> set[str]:
        """The stages of the ``warning`` events the job already has (an earlier attempt may have posted one after
        the checkpoint this attempt resumes from); empty if the database cannot be read now."""
        try:
            with self.lease.factory() as session:
                data = session.scalars(select(JobEvent.data).where(JobEvent.job_id == self.lease.job_id,
                                                                   JobEvent.type == "warning"))
                return {(d or {}).get("stage") for d in data}
        except SQLAlchemyError:
            return set()  # the database is down: rather a warning twice than a wait

    def on_warning(self, state: TrainerState, control: TrainerControl, warning: dict[str, Any]) -> None:
        """The model does not seem to learn: a ``warning`` event with the cause and what to try (once per stage and
        job: a resumed attempt that redoes the stage posts nothing when an earlier attempt posted it)."""
        if warning["stage"] in self._announced:
            return
        self._announced.add(warning["stage"])
        self.lease.post("warning", warning["message"], json_safe({"stage": warning["stage"],
                                                                  "reliability": warning["reliability"]}))

    def on_evaluate(self, state: TrainerState, control: TrainerControl, metrics: dict[str, Any],
                    model: Any = None) -> None:
        """Append the epoch's metrics as an ``epoch`` event and keep them as the job's latest metrics."""
        clean = json_safe(metrics)
        self.lease.post("epoch", f"epoch {state.epoch} of {state.num_epochs}", clean)
        self._write(state, control, metrics=clean)
