"""A terminal progress bar fed by a job's event stream: epoch, step, loss and ETA (tqdm's estimate
from the step rate), with one line per state change, per finished epoch, per learning warning and where
an attempt resumed."""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

from clearft.models import StreamEvent

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| step {n_fmt}/{total_fmt} [{elapsed}, ETA {remaining}{postfix}]"
# The epoch metrics printed, by their names in the job's metrics. The p_clean ones describe the clean-probability
# pass run at the start of the epoch (the last pass so far), not the epoch's training; their names say so.
EPOCH_KEYS = ("train_loss", "eval_loss", "eval_accuracy", "eval_macro_f1", "validation_agreement",
              "validation_majority_rate", "last_pass_p_clean_mean", "last_pass_p_clean_below_half",
              "last_pass_p_clean_auroc")


def describe_epoch(metrics: dict[str, Any], num_epochs: int | None) -> str:
    """``epoch 2/3 (routed): train_loss 0.512, eval_accuracy 0.830, last_pass_p_clean_mean 0.741``."""
    values = ", ".join(f"{k} {metrics[k]:.3f}" for k in EPOCH_KEYS if isinstance(metrics.get(k), (int, float)))
    total = f"/{num_epochs}" if num_epochs else ""
    return f"epoch {metrics.get('epoch')}{total} ({metrics.get('phase', '')}): {values}"


def describe_warning(message: str | None) -> str:
    """``WARNING: the model has not learned the task after warm-up: ... Try: ...``."""
    return f"WARNING: {message or 'the model does not seem to learn'}"


class ProgressBar:
    """Consumes ``StreamEvent``s of one job and draws them on ``file`` (stderr by default)."""

    def __init__(self, job_id: str, *, file: IO[str] | None = None) -> None:
        self.job_id, self.file = job_id, file or sys.stderr
        self.bar: tqdm | None = None
        self.num_epochs: int | None = None

    def _write(self, text: str) -> None:
        tqdm.write(text, file=self.file)

    def feed(self, event: StreamEvent) -> None:
        """Update the bar from a ``progress`` event; print ``state``, ``epoch``, ``warning`` and ``resumed`` events
        as lines."""
        if event.event == "progress":
            self._progress(event.data)
        elif event.event == "state":
            data = event.data.get("data") or {}
            message = f" ({event.data['message']})" if event.data.get("message") else ""
            self._write(f"{self.job_id}: {data.get('status', '?')}{message}")
        elif event.event == "epoch":
            self._write(describe_epoch(event.data.get("data") or {}, self.num_epochs))
        elif event.event == "warning":
            self._write(describe_warning(event.data.get("message")))
        elif event.event == "resumed":  # the job's progress stays where it was until the attempt passes it
            self._write(f"{self.job_id}: {event.data.get('message') or 'resumed'}")

    def _progress(self, p: dict[str, Any]) -> None:
        self.num_epochs = p.get("num_epochs") or self.num_epochs
        if not p.get("max_steps"):
            return
        if self.bar is None:
            self.bar = tqdm(total=p["max_steps"], unit="step", file=self.file, bar_format=BAR_FORMAT,
                            dynamic_ncols=True, desc=self.job_id)
        bar = self.bar
        bar.total = p["max_steps"]
        step = p.get("global_step") or 0
        if step >= bar.n:
            bar.update(step - bar.n)
        else:  # the service never lowers a job's progress; an older one's snapshot may still arrive
            bar.n = step
        epoch = min((p.get("epoch") or 0) + 1, self.num_epochs or 1 << 30)
        loss = f" loss {p['loss']:.4f}" if p.get("loss") is not None else ""
        bar.set_postfix_str(f"epoch {epoch}/{self.num_epochs or '?'} {p.get('phase') or ''}{loss}", refresh=True)

    def close(self) -> None:
        """Finish the bar (leaves it on screen)."""
        if self.bar is not None:
            self.bar.close()
