"""A trainer callback that writes a job's progress and per-epoch metrics to the database and
turns a ``cancelling`` job into a stop request, between steps."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from clear_core import TrainerCallback, TrainerControl, TrainerState
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.models import Job, utcnow
from app.services.transitions import add_event

ACTIVE = ("running", "cancelling")


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
    """Reports to job ``job_id``: progress at most every ``min_interval_s`` seconds (and at every epoch
    boundary), an ``epoch`` event per evaluated epoch, and a stop request once the job is cancelling."""

    def __init__(self, factory: sessionmaker[Session], job_id: str, *, min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.factory, self.job_id = factory, job_id
        self.min_interval_s, self.clock = min_interval_s, clock
        self._last = float("-inf")

    def _write(self, state: TrainerState, control: TrainerControl, *, event: dict[str, Any] | None = None,
               **fields: Any) -> None:
        values = dict(progress=state.progress, epoch=state.epoch, global_step=state.global_step,
                      max_steps=state.max_steps, phase=state.phase, loss=state.loss, heartbeat_at=utcnow(), **fields)
        with self.factory() as session:
            row = session.execute(update(Job).where(Job.id == self.job_id, Job.status.in_(ACTIVE))
                                  .values(**values).returning(Job.status)).first()
            if event is not None:
                add_event(session, self.job_id, **event)
            session.commit()
        self._last = self.clock()
        if row is None or row.status != "running":
            control.should_training_stop = True  # cancelling, or taken away from this worker

    def on_train_begin(self, state: TrainerState, control: TrainerControl) -> None:
        """Record the step budget."""
        self._write(state, control, event={"type_": "message", "message": f"training started: {state.num_epochs} "
                                           f"epoch(s), {state.max_steps} step(s)",
                                           "data": {"max_steps": state.max_steps}})

    def on_epoch_begin(self, state: TrainerState, control: TrainerControl) -> None:
        """Record the epoch and phase (warmup, routed or plain)."""
        self._write(state, control)

    def on_step_end(self, state: TrainerState, control: TrainerControl) -> None:
        """Record progress and check for cancellation, throttled to ``min_interval_s``."""
        if self.clock() - self._last >= self.min_interval_s:
            self._write(state, control)

    def on_evaluate(self, state: TrainerState, control: TrainerControl, metrics: dict[str, Any],
                    model: Any = None) -> None:
        """Append the epoch's metrics as an ``epoch`` event and keep them as the job's latest metrics."""
        clean = json_safe(metrics)
        self._write(state, control, metrics=clean,
                    event={"type_": "epoch", "message": f"epoch {state.epoch} of {state.num_epochs}", "data": clean})
