"""Noise-detection scores rebuilt from the per-epoch logits of the training rows, and their grades.

Symbols: N training rows, K classes, E epochs, W warm-up epochs. ``logits[e]`` ``(N, K)`` is the
deterministic output after epoch e + 1, which is what the trainer's clean-probability pass at
the start of epoch e + 1 sees; the passes the trainer keeps are those of epochs W..E (1-based
ends W..E), so a :class:`NoiseTracker` fed with ``logits[W-1:]`` reproduces the run's dynamics.
Every score here is oriented higher = more likely mislabelled.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from clear_core.metrics import detection_metrics
from clear_core.noise import NoiseTracker, cross_entropy_rows, gmm_p_clean

TRACKER_RULES = ("p_clean_last", "p_clean_mean", "loss_mean", "self_confidence_mean")


def rebuild_tracker(logits: Sequence[np.ndarray], given: np.ndarray, *, warmup_epochs: int,
                    loss_ema: float = 0.0, per_class: bool = False, seed: int = 0) -> NoiseTracker:
    """A :class:`NoiseTracker` fed the passes of epochs ``max(W, 1)..E`` from per-epoch logits ``[(N, K)] * E``.

    With W = 0 the trainer also has a pass before any training, which no callback sees; it is left out.
    """
    tracker = NoiseTracker(given, loss_ema=loss_ema, per_class=per_class, seed=seed)
    for e in range(max(warmup_epochs, 1), len(logits) + 1):
        tracker.update(logits[e - 1], e)
    return tracker


def grade(is_noisy: np.ndarray, score: np.ndarray, flagged: np.ndarray | None = None) -> dict[str, Any]:
    """Detection metrics of ``score`` ``(N,)`` (higher = noisier) and ``flagged`` (default: score > 0.5)."""
    flags = score > 0.5 if flagged is None else flagged
    return detection_metrics(is_noisy, flags, score)


def rule_scores(tracker: NoiseTracker, logits: Sequence[np.ndarray], given: np.ndarray,
                best_epoch: int, *, per_class: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """``1 - label_quality`` ``(N,)`` under each rule the report could use.

    ``p_clean_last``, ``p_clean_mean``, ``loss_mean``, ``self_confidence_mean``: ``NoiseTracker.score``
    over the post-warm-up passes; ``p_clean_best_epoch``: the GMM on the losses after ``best_epoch``
    (1-based, the best held-out accuracy; may lie in warm-up); ``loss_last``: 1 - exp(-loss) after the
    last epoch (the small-loss criterion, flagged where that exceeds 0.5, i.e. loss > ln 2).
    """
    out = {rule: 1.0 - np.clip(tracker.score(rule), 0.0, 1.0) for rule in TRACKER_RULES}
    best_loss = cross_entropy_rows(logits[best_epoch - 1].astype(np.float64), given)
    out["p_clean_best_epoch"] = 1.0 - gmm_p_clean(best_loss, groups=given if per_class else None, seed=seed)
    out["loss_last"] = 1.0 - np.exp(-cross_entropy_rows(logits[-1].astype(np.float64), given))
    return out


def epoch_aurocs(logits: Sequence[np.ndarray], given: np.ndarray, is_noisy: np.ndarray) -> list[float]:
    """AUROC of each epoch's loss for the mislabelled rows (equal to that of a global GMM's 1 - p_clean)."""
    return [detection_metrics(is_noisy, np.zeros_like(is_noisy),
                              cross_entropy_rows(z.astype(np.float64), given))["auroc"] for z in logits]


def small_loss(logits_last: np.ndarray, given: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The small-loss criterion: ``(score, flagged)``, score = the loss ``(N,)``, flagged = GMM p_clean < 0.5."""
    loss = cross_entropy_rows(logits_last.astype(np.float64), given)
    return loss, gmm_p_clean(loss, seed=seed) < 0.5
