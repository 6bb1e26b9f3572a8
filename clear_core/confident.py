"""Flags, scores and the noise matrix by confident learning (Northcutt, Jiang & Chuang, JAIR 2021), via cleanlab.

Symbols: N rows, K classes. ``pred_probs`` ``(N, K)`` are the class probabilities the flags are
decided on (the softmax averaged over CleaR's post-warm-up passes for training rows, out-of-sample
for held-out rows). Per-class thresholds t_k = mean p_k over the rows given k
(``cleanlab.count.get_confident_thresholds``); the confident joint counts row i (given y_i) as
"confidently j" when p_j >= t_j; ``cleanlab.count.estimate_joint`` calibrates it to the given-label
counts and normalises it to the joint P(given = i, true = j) (JAIR 2021, Eq. 2-3); the flags are
``cleanlab.filter.find_label_issues`` (``filter_by`` as cleanlab's). ``label_quality`` is
``cleanlab.rank.get_label_quality_scores`` in [0, 1], lower = more likely mislabelled.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

FILTERS = ("prune_by_noise_rate", "both", "confident_learning", "prune_by_class", "predicted_neq_given")
QUALITY_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


@dataclass
class LabelCheck:
    """The confident-learning verdict on N rows.

    Attributes:
        flagged: ``(N,)`` bool; a flagged row's suggested label differs from its given one.
        candidates: ``(N,)`` bool, what the rule flagged before any withholding (== flagged unless withheld).
        suggested: ``(N,)`` int: the most probable class other than the given one for flagged rows,
            the most probable class otherwise.
        suggested_confidence: ``(N,)`` the probability of the suggested class, in [0, 1].
        label_quality: ``(N,)`` in [0, 1], lower = more likely mislabelled.
        thresholds: ``(K,)`` per-class thresholds t_k in [0, 1].
        joint: ``(K, K)`` estimated P(given = i, true = j), sums to 1.
        noise_rate: 1 - trace(joint), in [0, 1].
        noise_rate_per_class: ``(K,)`` P(true != k | given = k).
        reasons: N strings saying why each row is or is not flagged.
        withheld: True when the flags were withheld (the report is not reliable).
    """

    flagged: np.ndarray
    candidates: np.ndarray
    suggested: np.ndarray
    suggested_confidence: np.ndarray
    label_quality: np.ndarray
    thresholds: np.ndarray
    joint: np.ndarray
    noise_rate: float
    noise_rate_per_class: np.ndarray
    reasons: list[str]
    withheld: bool = False


def _validate(given: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    given, probs = np.asarray(given), np.asarray(pred_probs, dtype=np.float64)
    if probs.ndim != 2 or given.shape != (probs.shape[0],) or probs.shape[0] == 0:
        raise ValueError(f"pred_probs must be (N, K) and given (N,), got {probs.shape} and {given.shape}")
    if given.dtype.kind not in "iu" or given.min() < 0 or given.max() >= probs.shape[1]:
        raise ValueError(f"given must be integer classes in [0, K={probs.shape[1]})")
    if not np.all(np.isfinite(probs)) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("pred_probs must be finite and each row must sum to 1")
    return given.astype(np.int64), probs


def _present(given: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cleanlab needs every class to occur: restrict to the given classes and renormalise."""
    classes = np.unique(given)
    sub = probs[:, classes]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    return classes, np.searchsorted(classes, given), sub


def check_labels(
    given: np.ndarray, pred_probs: np.ndarray, label_names: Sequence[str], *,
    filter_by: str = "prune_by_noise_rate", quality: str = "self_confidence", withhold: bool = False,
    source: str = "the passes' mean probabilities",
) -> LabelCheck:
    """Confident learning on ``pred_probs`` ``(N, K)`` against ``given`` ``(N,)``.

    Args:
        given: ``(N,)`` int given labels in [0, K).
        pred_probs: ``(N, K)`` class probabilities, rows summing to 1.
        label_names: K class names (for the reasons).
        filter_by: cleanlab's rule (``FILTERS``).
        quality: cleanlab's label-quality method (``QUALITY_METHODS``).
        withhold: compute everything but flag nothing (an unreliable report); ``candidates`` keeps the rule's flags.
        source: what ``pred_probs`` are, in words for a flagged row's reason (a training report: the passes'
            mean; a prediction run: one model's probabilities).

    Raises:
        ValueError: on bad shapes, labels out of range, rows not summing to 1, or an unknown rule.
    """
    from cleanlab.count import estimate_joint, get_confident_thresholds
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if filter_by not in FILTERS or quality not in QUALITY_METHODS:
        raise ValueError(f"filter_by={filter_by!r} / quality={quality!r}: choose from {FILTERS} / {QUALITY_METHODS}")
    given, probs = _validate(given, pred_probs)
    n, k = probs.shape
    classes, local, sub = _present(given, probs)
    joint, thresholds = np.zeros((k, k)), np.ones(k)
    if len(classes) < 2:
        mask, quality_scores = np.zeros(n, bool), np.ones(n)
        joint[classes[0], classes[0]] = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # n_jobs=1: no process pool (a Celery prefork child is a daemon and may not fork one)
            mask = find_label_issues(local, sub, filter_by=filter_by, n_jobs=1)
            quality_scores = get_label_quality_scores(local, sub, method=quality)
            joint[np.ix_(classes, classes)] = estimate_joint(local, sub)
            thresholds[classes] = get_confident_thresholds(local, sub)
    rows = np.arange(n)
    other = probs.copy()
    other[rows, given] = -1.0
    other[:, np.setdiff1d(np.arange(k), classes)] = -1.0  # never suggest a class no row is given
    suggested = np.where(mask, other.argmax(axis=1), probs.argmax(axis=1))
    flagged = np.zeros(n, bool) if withhold else mask.copy()
    per_class = 1.0 - np.diag(joint) / np.clip(joint.sum(axis=1), 1e-12, None)
    per_class[joint.sum(axis=1) == 0] = 0.0
    check = LabelCheck(
        flagged=flagged, candidates=mask, suggested=suggested, suggested_confidence=probs[rows, suggested],
        label_quality=np.clip(quality_scores, 0.0, 1.0), thresholds=thresholds, joint=joint,
        noise_rate=float(1.0 - np.trace(joint)), noise_rate_per_class=per_class, reasons=[], withheld=withhold,
    )
    check.reasons = [_reason(check, probs, given, i, label_names, source) for i in rows]
    return check


def _reason(check: LabelCheck, probs: np.ndarray, given: np.ndarray, i: int, names: Sequence[str],
            source: str) -> str:
    g, s = int(given[i]), int(check.suggested[i])
    pg, ps, tg, ts = probs[i, g], probs[i, s], check.thresholds[g], check.thresholds[s]
    if check.candidates[i]:
        evidence = (f"{source} favour '{names[s]}' with {ps:.2f} (class threshold {ts:.2f}); "
                    f"given '{names[g]}' has {pg:.2f} (class threshold {tg:.2f})")
        return ("flag withheld (the report is not reliable): " + evidence) if check.withheld else evidence
    if s == g:
        return f"given label '{names[g]}' is the most likely ({pg:.2f}): kept"
    if ps < ts:
        return f"'{names[s]}' is likelier ({ps:.2f}) but below its class threshold {ts:.2f}: no other class is confident: kept"
    return (f"'{names[s]}' ({ps:.2f}) clears its class threshold {ts:.2f} but given '{names[g]}' ({pg:.2f}) is "
            "within the estimated count of clean rows: kept")
