"""Has the model learned the task well enough to judge labels? A verdict computed without gold labels.

Symbols: M held-out rows, K classes. Two pieces of evidence:

* **agreement** a of the model's out-of-sample predictions with the given labels of held-out rows,
  against the majority-class rate m of those rows: a one-sided exact binomial test of a > m
  (``scipy.stats.binomtest``) and the skill (a - m) / (1 - m) (Cohen-style chance correction;
  0 = no better than always predicting the majority class, 1 = perfect agreement);
* **loss**: the training rows' *median* cross-entropy against their given labels, as a fraction of
  ln K (the loss of a uniform guess); a model that has learned nothing stays near 1. The median,
  not the mean: under heavy noise a model that has learned the task has a high mean loss (its
  confident disagreement with the wrong labels), while the median row, clean, is fit well.

The report is reliable when the held-out test passes (p < ``MAX_P_VALUE`` and skill >=
``MIN_SKILL``) and the loss ratio is under ``MAX_LOSS_RATIO``. With fewer than ``MIN_HELD_OUT``
held-out rows the agreement is measured in-sample (the softmax averaged over the passes), which
memorisation inflates, and the few held-out rows there are must not contradict it (their agreement
must exceed their majority rate, see :func:`contradicted_by`); the verdict says which evidence it used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

MIN_HELD_OUT = 20
MAX_P_VALUE = 0.05
MIN_SKILL = 0.2
MAX_LOSS_RATIO = 0.9


@dataclass
class Reliability:
    """The verdict and its evidence.

    Attributes:
        reliable: the verdict.
        verdict: ``"reliable"`` or ``"not reliable"``.
        evidence: ``"held-out"`` (M >= MIN_HELD_OUT out-of-sample rows) or ``"in-sample"``.
        rows: rows the agreement was measured on.
        agreement: fraction in [0, 1] of those rows predicted as their given label.
        majority_rate: the majority class's share of those rows, in (0, 1].
        skill: (agreement - majority_rate) / (1 - majority_rate), <= 1.
        p_value: one-sided binomial p-value of agreement > majority_rate, in [0, 1].
        loss_ratio: median training loss / ln K, >= 0.
        reasons: what failed (empty when reliable).
        advice: what to try when not reliable.
    """

    reliable: bool
    verdict: str
    evidence: str
    rows: int
    agreement: float
    majority_rate: float
    skill: float
    p_value: float
    loss_ratio: float
    reasons: list[str] = field(default_factory=list)
    advice: str = ""

    def to_dict(self) -> dict:
        """JSON-safe dict (NaN -> None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


ADVICE = ("train more epochs, raise learning_rate, or give a longer max_length (texts may be cut before "
          "the words that decide the label)")


def assess(given: np.ndarray, predicted: np.ndarray, *, train_loss: float, num_classes: int,
           evidence: str) -> Reliability:
    """The verdict from held-out (or in-sample) rows' ``given`` ``(M,)`` and ``predicted`` ``(M,)`` labels.

    Args:
        given: ``(M,)`` int given labels, M >= 1.
        predicted: ``(M,)`` int predicted labels.
        train_loss: median cross-entropy of the training rows against their given labels (nats, >= 0).
        num_classes: K >= 2.
        evidence: ``"held-out"`` or ``"in-sample"`` (recorded, and in-sample is said in the reasons).

    Raises:
        ValueError: on empty or mismatched arrays, or K < 2.
    """
    from scipy.stats import binomtest

    given, predicted = np.asarray(given), np.asarray(predicted)
    if given.ndim != 1 or given.shape != predicted.shape or len(given) == 0 or num_classes < 2:
        raise ValueError(f"given and predicted must be non-empty (M,) arrays and K >= 2, got "
                         f"{given.shape}, {predicted.shape}, K={num_classes}")
    m = len(given)
    agreement = float(np.mean(given == predicted))
    majority = float(np.bincount(given).max() / m)
    skill = (agreement - majority) / (1.0 - majority) if majority < 1.0 else 0.0
    p_value = float(binomtest(int((given == predicted).sum()), m, majority, alternative="greater").pvalue) \
        if majority < 1.0 else 1.0
    loss_ratio = float(train_loss / math.log(num_classes))
    reasons = []
    if p_value >= MAX_P_VALUE or skill < MIN_SKILL:
        why = (f"skill {skill:.2f} < {MIN_SKILL}" if skill < MIN_SKILL
               else f"one-sided binomial p = {p_value:.2g} >= {MAX_P_VALUE}")
        reasons.append(f"{evidence} agreement with the given labels {agreement:.3f} on {m} rows is not clearly above "
                       f"the majority-class rate {majority:.3f} ({why})")
    if loss_ratio >= MAX_LOSS_RATIO:
        reasons.append(f"the median training loss {train_loss:.3f} is {loss_ratio:.0%} of ln K = {math.log(num_classes):.3f} "
                       "(a uniform guess)")
    reliable = not reasons
    return Reliability(reliable, "reliable" if reliable else "not reliable", evidence, m, agreement, majority,
                       skill, p_value, loss_ratio, reasons, "" if reliable else ADVICE)


def contradicted_by(verdict: Reliability, given: np.ndarray, predicted: np.ndarray) -> Reliability:
    """``verdict`` made "not reliable" when the held-out rows' ``given`` ``(M,)`` and ``predicted`` ``(M,)`` labels
    agree no more often than their majority class would (too few rows for a test, enough to contradict).

    Raises:
        ValueError: on mismatched shapes.
    """
    given, predicted = np.asarray(given), np.asarray(predicted)
    if given.shape != predicted.shape:
        raise ValueError(f"given {given.shape} and predicted {predicted.shape} differ in shape")
    if len(given) == 0:
        return verdict
    agreement = float(np.mean(given == predicted))
    majority = float(np.bincount(given).max() / len(given))
    if agreement > majority:
        return verdict
    reason = (f"the {len(given)} held-out rows agree with their given labels {agreement:.3f}, not above their "
              f"majority-class rate {majority:.3f}")
    return Reliability(False, "not reliable", verdict.evidence, verdict.rows, verdict.agreement, verdict.majority_rate,
                       verdict.skill, verdict.p_value, verdict.loss_ratio, verdict.reasons + [reason], ADVICE)
