"""Per-epoch metrics of a training run: loss, held-out accuracy / macro-F1, p_clean statistics.

Symbols: N training rows, M held-out rows, K classes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .metrics import classification_metrics, detection_metrics
from .noise import NoiseTracker, cross_entropy_rows


def epoch_metrics(
    epoch: int,
    losses: Sequence[float],
    *,
    phase: str,
    eval_logits: np.ndarray | None,
    eval_y: np.ndarray | None,
    tracker: NoiseTracker,
    gold: np.ndarray | None,
    given: np.ndarray,
) -> dict[str, Any]:
    """The metrics dict of one finished epoch.

    Args:
        epoch: 1-based number of the finished epoch.
        losses: the epoch's per-step training losses.
        phase: ``warmup``, ``routed`` or ``plain``.
        eval_logits: ``(M, K)`` held-out logits or None; eval_y: ``(M,)`` their labels.
        tracker: the run's dynamics (p_clean of the latest pass, if any).
        gold: ``(N,)`` true labels of the training rows, or None (scoring only).
        given: ``(N,)`` given labels.

    Returns:
        ``epoch``, ``phase``, ``train_loss``; with held-out data ``eval_loss``, ``eval_accuracy``,
        ``eval_macro_f1``; after a clean-probability pass ``p_clean_mean`` and
        ``p_clean_below_half`` (fraction of rows with p_clean < 0.5); with gold labels
        ``p_clean_auroc`` (AUROC of 1 - p_clean for the truly mislabelled rows).
    """
    out: dict[str, Any] = {"epoch": epoch, "phase": phase, "train_loss": float(np.mean(losses)) if losses else None}
    if eval_logits is not None and eval_y is not None:
        cls = classification_metrics(eval_y, eval_logits.argmax(axis=1), num_classes=eval_logits.shape[1])
        out["eval_loss"] = float(cross_entropy_rows(eval_logits.astype(np.float64), eval_y).mean())
        out["eval_accuracy"] = cls["accuracy"]
        out["eval_macro_f1"] = cls["macro_f1"]
    p = tracker.p_clean
    if p is not None:
        out["p_clean_mean"] = float(p.mean())
        out["p_clean_below_half"] = float((p < 0.5).mean())
        if gold is not None:
            det = detection_metrics(gold != given, p < 0.5, 1.0 - p)
            out["p_clean_auroc"] = det["auroc"]
    return out
