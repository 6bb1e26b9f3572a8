"""Evaluation metrics: classification quality on held-out rows and noise-detection quality on training rows.

Symbols used in the docstrings: N rows, K classes. A noise-detection ``score`` is oriented so
that HIGHER = more likely mislabelled (pass ``1 - label_quality`` or ``-p_clean``, not
``label_quality`` itself).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score


def _validate(
    arrays: dict[str, object], *, kinds: dict[str, str], num_classes: int | None = None
) -> dict[str, np.ndarray]:
    """Check that every array is non-empty, 1-D, of the same length N and of its kind.

    ``kinds`` maps each name to ``"label"`` (integers, in ``[0, K)`` when K is given),
    ``"bool"`` (bool or 0/1) or ``"score"`` (finite floats). Returns the converted arrays.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) != num_classes
                                    or num_classes < 2):
        raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2 or None")
    out = {name: np.asarray(a) for name, a in arrays.items()}
    shapes = {name: a.shape for name, a in out.items()}
    if any(len(s) != 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) != 1:
        raise ValueError(f"inputs must be 1-D arrays of the same length N, got shapes {shapes}")
    if next(iter(shapes.values()))[0] == 0:
        raise ValueError(f"inputs are empty (N=0): shapes {shapes}")
    for name, a in out.items():
        kind = kinds[name]
        if kind == "score":
            if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite numbers, got dtype {a.dtype} or NaN/inf values")
            out[name] = a.astype(np.float64)
        elif kind == "bool":
            if a.dtype != bool and not np.isin(a, (0, 1)).all():
                raise ValueError(f"{name} must be bool or 0/1, got values {np.unique(a)[:5]}...")
            out[name] = a.astype(bool)
        else:
            if a.dtype.kind not in "iu":
                raise ValueError(f"{name} must be integer class indices, got dtype {a.dtype}")
            if num_classes is not None and (a.min() < 0 or a.max() >= num_classes):
                raise ValueError(
                    f"{name} must lie in [0, num_classes={num_classes}), got values in [{a.min()}, {a.max()}]"
                )
            out[name] = a.astype(np.int64)
    return out


def classification_metrics(y_true, y_pred, *, num_classes: int | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 of predicted classes.

    Macro-F1 is scikit-learn's ``f1_score(average="macro", zero_division=0)``: the unweighted
    mean over classes of per-class F1. With ``num_classes`` given the mean runs over all K
    classes (a class absent from both arrays counts as F1 = 0); without it, over the classes
    present in either array.

    Args:
        y_true: true classes, shape ``(N,)``, integers.
        y_pred: predicted classes, shape ``(N,)``, integers.
        num_classes: K >= 2, or None; when given, both arrays must lie in ``[0, K)``.

    Returns:
        ``{"accuracy": float in [0, 1], "macro_f1": float in [0, 1]}``; higher is better.

    Raises:
        ValueError: if the arrays are empty, not 1-D integers of the same length, or out of
            ``[0, K)``; the message gives the shapes or value range.
    """
    a = _validate({"y_true": y_true, "y_pred": y_pred}, kinds={"y_true": "label", "y_pred": "label"},
                  num_classes=num_classes)
    labels = list(range(num_classes)) if num_classes is not None else None
    return {
        "accuracy": float(np.mean(a["y_true"] == a["y_pred"])),
        "macro_f1": float(f1_score(a["y_true"], a["y_pred"], labels=labels, average="macro", zero_division=0)),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def detection_metrics(is_noisy, flagged, score, *, k: int | None = None) -> dict[str, float | int]:
    """How well flags and a score find the truly mislabelled rows.

    ``precision``, ``recall`` and ``f1`` grade the hard ``flagged`` decisions against
    ``is_noisy`` (noisy = positive class); a zero denominator gives 0.0. ``auroc``
    (``roc_auc_score``) and ``average_precision`` (``average_precision_score``) grade the
    ranking by ``score``, higher = more likely noisy; both are NaN when ``is_noisy`` is all
    True or all False. ``recall_at_k`` is the fraction of the top-k rows by ``score`` that are
    truly noisy, with k defaulting to the number of noisy rows (at that k precision@k equals
    recall@k, the "R-precision" of information retrieval); ties in ``score`` are broken by row
    order; 0.0 when k is 0.

    Args:
        is_noisy: ground truth, shape ``(N,)``, bool (True = the given label is wrong).
        flagged: the detector's decisions, shape ``(N,)``, bool (True = flagged as noisy).
        score: shape ``(N,)``, finite floats, higher = more likely noisy.
        k: rows to take from the top of the ranking, in ``[1, N]``; None = number of noisy rows.

    Returns:
        dict with ``precision``, ``recall``, ``f1``, ``recall_at_k`` (floats in [0, 1]),
        ``auroc``, ``average_precision`` (floats in [0, 1] or NaN), ``n_noisy``,
        ``n_flagged`` and ``k`` (ints).

    Raises:
        ValueError: if the arrays are empty, not 1-D of the same length, not bool/finite, or
            if k is outside ``[1, N]``; the message gives the shapes or value.
    """
    a = _validate({"is_noisy": is_noisy, "flagged": flagged, "score": score},
                  kinds={"is_noisy": "bool", "flagged": "bool", "score": "score"})
    truth, flags, s = a["is_noisy"], a["flagged"], a["score"]
    n = truth.shape[0]
    n_noisy, n_flagged = int(truth.sum()), int(flags.sum())
    if k is not None and (isinstance(k, bool) or int(k) != k or not 1 <= k <= n):
        raise ValueError(f"k={k!r} is out of range: give an integer in [1, N={n}] or None")
    top_k = n_noisy if k is None else int(k)
    true_positives = int((truth & flags).sum())
    precision, recall = _ratio(true_positives, n_flagged), _ratio(true_positives, n_noisy)
    both_classes = 0 < n_noisy < n
    top = np.argsort(-s, kind="stable")[:top_k]
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "auroc": float(roc_auc_score(truth, s)) if both_classes else math.nan,
        "average_precision": float(average_precision_score(truth, s)) if both_classes else math.nan,
        "recall_at_k": _ratio(truth[top].sum(), top_k),
        "n_noisy": n_noisy,
        "n_flagged": n_flagged,
        "k": top_k,
    }
