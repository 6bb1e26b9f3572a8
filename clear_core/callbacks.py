"""Trainer callbacks, state and control, in the manner of transformers' ``TrainerCallback``.

The trainer knows nothing of databases or queues: a caller observes progress, per-epoch
metrics and checkpoints through callbacks, and asks the trainer to stop through
``control.should_training_stop``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainerState:
    """Where training stands.

    Attributes:
        epoch: the current epoch, 0-based (equals ``num_epochs`` once training has ended).
        num_epochs: E.
        step_in_epoch: optimizer steps done in the current epoch.
        global_step: optimizer steps done in all, 0..max_steps.
        steps_per_epoch: ceil(N / B).
        max_steps: E * steps_per_epoch.
        loss: the last step's training loss (None before the first step).
        phase: ``"warmup"``, ``"routed"`` or ``"plain"`` (unrouted PEFT / full fine-tuning).
        best_metric: best held-out accuracy so far (None without held-out data).
        best_epoch: 1-based epoch of ``best_metric``.
        log_history: the per-epoch metric dicts so far.
        epoch_losses: training losses of the current epoch's steps (kept for exact resume).
    """

    epoch: int = 0
    num_epochs: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    steps_per_epoch: int = 0
    max_steps: int = 0
    loss: float | None = None
    phase: str = "warmup"
    best_metric: float | None = None
    best_epoch: int | None = None
    log_history: list[dict[str, Any]] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)

    @property
    def progress(self) -> float:
        """Fraction of optimizer steps done, in [0, 1]."""
        return self.global_step / self.max_steps if self.max_steps else 0.0


@dataclass
class TrainerControl:
    """Requests a callback can make; the trainer reads them after every call."""

    should_training_stop: bool = False
    should_save: bool = False


class TrainerCallback:
    """Base class: override the events you need; every method does nothing by default."""

    def on_train_begin(self, state: TrainerState, control: TrainerControl) -> None:
        """Before the first step (also on resume)."""

    def on_epoch_begin(self, state: TrainerState, control: TrainerControl) -> None:
        """At the start of ``state.epoch``, after its clean-probability pass."""

    def on_step_end(self, state: TrainerState, control: TrainerControl) -> None:
        """After each optimizer step."""

    def on_evaluate(
        self, state: TrainerState, control: TrainerControl, metrics: dict[str, Any], model: Any = None
    ) -> None:
        """After each epoch with that epoch's metrics; ``model`` is the :class:`ClearModel`."""

    def on_save(self, state: TrainerState, control: TrainerControl, checkpoint_path: Path) -> None:
        """After a checkpoint was written to ``checkpoint_path``."""

    def on_warning(self, state: TrainerState, control: TrainerControl, warning: dict[str, Any]) -> None:
        """The run may not be learning: ``warning`` has ``stage`` (``after_warmup`` or ``end``), ``message``
        (the cause and what to try) and ``reliability`` (``clear_core.reliability.Reliability.to_dict()``)."""

    def on_train_end(self, state: TrainerState, control: TrainerControl) -> None:
        """After the final pass, before ``train`` returns."""


class TrainingCancelled(RuntimeError):
    """Raised by ``train`` when a callback set ``control.should_training_stop``; carries the state."""

    def __init__(self, state: TrainerState) -> None:
        super().__init__(f"training stopped on request at step {state.global_step} of {state.max_steps}")
        self.state = state


class CallbackList:
    """Calls every callback for an event and returns the shared control."""

    def __init__(self, callbacks: list[TrainerCallback]) -> None:
        self.callbacks = list(callbacks)
        self.control = TrainerControl()

    def fire(self, event: str, state: TrainerState, **kwargs: Any) -> TrainerControl:
        """Call ``event`` on every callback in order."""
        for cb in self.callbacks:
            getattr(cb, event)(state, self.control, **kwargs)
        return self.control
