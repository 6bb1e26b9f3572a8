"""One benchmark training run: per-epoch test scores and training-row logits from a callback, and its summary.

Symbols: N training rows, T test rows, K classes, E epochs. The held-out split (given labels)
picks the best epoch; the test set is only reported. The callback's own passes are timed
and subtracted from the run's wall time (``train_time_s``), so costs compare like with like.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from clear_core import ClearConfig, TextClassificationData, TrainerCallback, TrainingConfig, train
from clear_core.data import TokenizedTexts
from clear_core.metrics import classification_metrics
from clear_core.config import resolve_configs


class EpochRecorder(TrainerCallback):
    """After every epoch: test accuracy / macro-F1 and, optionally, the training rows' logits.

    Args:
        test_texts: T test texts, or None; test_y: ``(T,)`` int class indices.
        train_texts: N training texts whose deterministic logits ``(N, K)`` to keep per epoch,
            or None. These equal the logits of the trainer's clean-probability pass at the
            start of the next epoch (same weights, dropout off, inference gates).

    Attributes:
        test_scores: per epoch ``{"test_accuracy", "test_macro_f1"}``.
        train_logits: per epoch ``(N, K)`` float32 arrays.
        overhead_s: seconds spent in this callback (not training).
    """

    def __init__(self, test_texts: Sequence[str] | None = None, test_y: np.ndarray | None = None,
                 train_texts: Sequence[str] | None = None, *, batch_size: int = 128) -> None:
        self.test_texts, self.test_y, self.train_texts = test_texts, test_y, train_texts
        self.batch_size = batch_size
        self.test_scores: list[dict[str, float]] = []
        self.train_logits: list[np.ndarray] = []
        self.overhead_s = 0.0
        self._tokens: dict[str, TokenizedTexts] = {}

    def _logits(self, model: Any, key: str, texts: Sequence[str]) -> np.ndarray:
        if key not in self._tokens:
            self._tokens[key] = TokenizedTexts(model.tokenizer, texts, None, model.max_length)
        autocast = model.device.type == "cuda"
        return model.logits_for(self._tokens[key], batch_size=self.batch_size, autocast=autocast)

    def on_evaluate(self, state, control, metrics, model=None) -> None:
        """Score the test rows and keep the training rows' logits (timed as overhead)."""
        start = time.perf_counter()
        if self.test_texts is not None:
            logits = self._logits(model, "test", self.test_texts)
            k = logits.shape[1]
            scores = classification_metrics(self.test_y, logits.argmax(axis=1), num_classes=k)
            self.test_scores.append({"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"]})
        if self.train_texts is not None:
            self.train_logits.append(self._logits(model, "train", self.train_texts))
        self.overhead_s += time.perf_counter() - start


CURVE_KEYS = ("epoch", "phase", "train_loss", "eval_accuracy", "eval_macro_f1", "last_pass_p_clean_auroc",
              "last_pass_p_clean_below_half", "relabelled_rows", "relabel_precision")


def run(
    train_data: TextClassificationData,
    heldout: TextClassificationData | None,
    *,
    clear: ClearConfig,
    training: TrainingConfig,
    model_path: str | None,
    label_names: Sequence[str],
    recorder: EpochRecorder | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train once and summarise: ``(TrainResult, summary)``.

    ``summary`` holds ``curves`` (per epoch: loss, held-out ``eval_*``, ``test_*``, p_clean AUROC),
    ``last`` and ``best`` (the epoch with the highest held-out accuracy, first on ties),
    ``report`` (the noise report's detection scores against the gold labels), ``wall_time_s``
    (the trainer's, model loading excluded) and ``train_time_s`` (minus the recorder's passes).
    """
    recorder = recorder or EpochRecorder()
    result = train(train_data, clear=clear, training=training, model_path=model_path, eval_data=heldout,
                   label_names=list(label_names), callbacks=[recorder])
    curves = []
    for i, h in enumerate(result.history):
        row = {k: h.get(k) for k in CURVE_KEYS}
        if i < len(recorder.test_scores):
            row.update(recorder.test_scores[i])
        curves.append(row)
    held = [c["eval_accuracy"] for c in curves]
    best = int(np.argmax(held)) if held and held[0] is not None else len(curves) - 1
    summary = {
        "curves": curves,
        "last": curves[-1],
        "best": curves[best],
        "report": {k[len("noise_"):]: v for k, v in result.metrics.items() if k.startswith("noise_")},
        "wall_time_s": result.wall_time_s,
        "train_time_s": result.wall_time_s - recorder.overhead_s,
    }
    return result, summary


def run_configs(method: str, arm: str, overrides: dict[str, Any], *, epochs: int,
                training: dict[str, Any]) -> tuple[ClearConfig, TrainingConfig]:
    """The configs of one arm: ``plain`` (unrouted PEFT), ``routed`` (CleaR), ``full`` or ``ceiling``.

    Unrouted arms get ``warmup_epochs = epochs``, which skips the clean-probability passes they
    do not use (only the final pass for the report remains), so their cost is plain PEFT's; they
    drop the routed-only overrides (``inference``, ``relabel``, ``relabel_threshold``).
    The ceiling is plain PEFT (trained on true labels by the caller). Both configs come back
    resolved (``resolve_configs``): the warm-up and learning rate the run will use.
    """
    routed = arm == "routed"
    fields = dict(overrides)
    if not routed:
        fields["warmup_epochs"] = epochs
    fields.update(method="full" if arm == "full" else method, routed=routed)
    if not routed:  # settings of routed training only (relabel needs the routed passes)
        for key in ("inference", "relabel", "relabel_threshold"):
            fields.pop(key, None)
    # the benchmarks hold out their own split (``heldout``), so the trainer holds out nothing more
    training = {"validation_fraction": 0.0, **training}
    return resolve_configs(ClearConfig(**fields), TrainingConfig(epochs=epochs, **training))
