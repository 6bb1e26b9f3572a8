"""Per-epoch metrics of a training run: loss, held-out accuracy / macro-F1, p_clean statistics.

Symbols: N training rows, M held-out rows, K classes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .metrics import classification_metrics, detection_metrics
from .noise import cross_entropy_rows


def epoch_metrics(
    epoch: int,
    losses: Sequence[float],
    *,
    phase: str,
    eval_logits: np.ndarray | None,
    eval_y: np.ndarray | None,
    estimator: Any,
    gold: np.ndarray | None,
    held_logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """The metrics dict of one finished epoch.

    Args:
        epoch: 1-based number of the finished epoch.
        losses: the epoch's per-step training losses.
        phase: ``warmup``, ``routed`` or ``plain``.
        eval_logits: ``(M, K)`` held-out logits or None; eval_y: ``(M,)`` their labels.
        estimator: the run's :class:`~clear_core.estimate.NoiseEstimator` (its latest pass, if any).
        gold: ``(N,)`` true labels of the training rows, or None (scoring only).
        held_logits: ``(M, K)`` logits of the rows held out of training (against their given labels).

    Returns:
        ``epoch``, ``phase``, ``train_loss``; with held-out data ``eval_loss``, ``eval_accuracy``,
        ``eval_macro_f1``; with held-out rows ``validation_agreement`` (share predicted as their
        given label) and ``validation_majority_rate``; after a clean-probability pass (the
        *last pass's* scores, named so) ``last_pass_p_clean_mean``, ``last_pass_p_clean_below_half``
        and ``last_pass_mean_loss``; with gold labels ``last_pass_p_clean_auroc`` (AUROC of
        1 - p_clean for the truly mislabelled rows).
    """
    out: dict[str, Any] = {"epoch": epoch, "phase": phase, "train_loss": float(np.mean(losses)) if losses else None}
    if eval_logits is not None and eval_y is not None:
        cls = classification_metrics(eval_y, eval_logits.argmax(axis=1), num_classes=eval_logits.shape[1])
        out["eval_loss"] = float(cross_entropy_rows(eval_logits.astype(np.float64), eval_y).mean())
        out["eval_accuracy"] = cls["accuracy"]
        out["eval_macro_f1"] = cls["macro_f1"]
    held_given = estimator.held_given
    if held_logits is not None and held_given is not None:
        out["validation_agreement"] = float(np.mean(held_logits.argmax(axis=1) == held_given))
        out["validation_majority_rate"] = float(np.bincount(held_given).max() / len(held_given))
    p = estimator.p_clean
    if p is not None:
        out["last_pass_p_clean_mean"] = float(p.mean())
        out["last_pass_p_clean_below_half"] = float((p < 0.5).mean())
        out["last_pass_mean_loss"] = float(np.mean(estimator.loss_history[-1]))
        if gold is not None:
            det = detection_metrics(gold != estimator.given, p < 0.5, 1.0 - p)
            out["last_pass_p_clean_auroc"] = det["auroc"]
    return out
