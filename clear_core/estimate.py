"""The noise estimate behind one interface: the trainer feeds it each no-grad pass, the report reads its result.

Symbols: N training rows, M held-out rows, K classes, E' passes. Two uses of the same dynamics:

* **routing** (:meth:`NoiseEstimator.update`): p_clean per training row from the pass's losses
  (``clear_core.p_clean``: per-class 1-or-2-component mixtures, never exactly 0 or 1). Routing
  needs a score that stays near 1 where a class shows no sign of noise, so that clean classes
  keep their PEFT path on.
* **the report** (:meth:`NoiseEstimator.finish`): confident learning (``clear_core.confident``)
  on the softmax averaged over the passes (training rows; held-out rows out-of-sample), which gives
  calibrated flags, a suggested label, a continuous ``label_quality`` and the noise matrix, and a
  reliability verdict (``clear_core.reliability``) that withholds the flags when the model has not
  learned the task. p_clean is a posterior of a loss model fit to possibly memorised losses; the
  averaged probabilities rank better (BENCHMARKS.md, scoring rules), so the report does not use it
  for flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .confident import LabelCheck, check_labels
from .noise import cross_entropy_rows, softmax
from .p_clean import MixtureFit, p_clean_by_class
from .reliability import MIN_HELD_OUT, Reliability, assess, contradicted_by


@dataclass
class NoiseEstimate:
    """What the report reads: the label check of all N + M rows (training first, then held-out).

    Attributes:
        given: ``(N + M,)`` the given labels.
        check: the :class:`~clear_core.confident.LabelCheck` of the N + M rows.
        reliability: the verdict.
        probs: ``(N + M, K)`` the probabilities the flags were decided on.
        predicted: ``(N + M,)`` the final model's predicted class.
        p_clean: ``(N,)`` the last pass's p_clean of the training rows.
        p_clean_history: ``(E', N)``.
        fits: the last pass's mixture per class (see ``clear_core.p_clean``).
        pass_epochs: E' epochs (0-based) at whose start each pass ran; E = after training.
    """

    given: np.ndarray
    check: LabelCheck
    reliability: Reliability
    probs: np.ndarray
    predicted: np.ndarray
    p_clean: np.ndarray
    p_clean_history: np.ndarray
    fits: dict[int, MixtureFit]
    pass_epochs: list[int]


class NoiseEstimator:
    """Per-pass dynamics of N training (and M held-out) rows, p_clean for routing, and the final estimate.

    Args:
        given: ``(N,)`` int64 given labels of the training rows.
        held_given: ``(M,)`` given labels of held-out rows (scored out-of-sample), or None.
        num_classes: K >= 2.
        loss_ema: momentum in [0, 1) of an EMA of each row's loss over passes before the mixture; 0 = off.
        per_class: fit the mixture per given class (else one global fit).
        seed: mixture initialisation seed.
    """

    def __init__(self, given: np.ndarray, *, held_given: np.ndarray | None = None, num_classes: int,
                 loss_ema: float = 0.0, per_class: bool = True, seed: int = 0) -> None:
        self.given = np.asarray(given, dtype=np.int64)
        self.held_given = None if held_given is None or len(held_given) == 0 else np.asarray(held_given, np.int64)
        self.num_classes, self.loss_ema, self.per_class, self.seed = num_classes, loss_ema, per_class, seed
        self.epochs: list[int] = []
        self.loss_history: list[np.ndarray] = []
        self.p_clean_history: list[np.ndarray] = []
        self.confidence_history: list[np.ndarray] = []
        self.prob_sum: np.ndarray | None = None
        self.held_prob_sum: np.ndarray | None = None
        self.summed = 0  # passes in prob_sum: all but a pass before any training (epoch 0)
        self.teacher: np.ndarray | None = None
        self.fits: dict[int, MixtureFit] = {}
        self._smoothed: np.ndarray | None = None

    @property
    def p_clean(self) -> np.ndarray | None:
        """The latest ``(N,)`` p_clean, or None before the first pass."""
        return self.p_clean_history[-1] if self.p_clean_history else None

    @property
    def passes(self) -> int:
        """E', the number of passes recorded."""
        return len(self.epochs)

    @property
    def mean_probs(self) -> np.ndarray:
        """``(N, K)`` the training rows' softmax averaged over the passes after some training.

        Raises:
            ValueError: before such a pass.
        """
        if not self.summed:
            raise ValueError("no pass after training has run yet")
        return self.prob_sum / self.summed

    def update(self, logits: np.ndarray, epoch: int, held_logits: np.ndarray | None = None) -> np.ndarray:
        """Record one pass: training logits ``(N, K)`` (and held-out ``(M, K)``) at the start of ``epoch``.

        Returns:
            p_clean ``(N,)`` in (0, 1) for routing the coming epoch.

        Raises:
            ValueError: if the row counts do not match the estimator's.
        """
        if logits.shape[0] != len(self.given):
            raise ValueError(f"logits has {logits.shape[0]} rows but the estimator has {len(self.given)}")
        if (held_logits is None) != (self.held_given is None) or (
                held_logits is not None and held_logits.shape[0] != len(self.held_given)):
            raise ValueError("give held_logits for exactly the held-out rows the estimator was built with")
        # the softmax and the losses are computed in float64 and kept in float32; the mixture is fit to the
        # float32 values kept, so a run resumed from its state_dict reproduces the uninterrupted one
        logits64 = logits.astype(np.float64)
        losses = cross_entropy_rows(logits64, self.given).astype(np.float32)
        smooth = self.loss_ema > 0 and self._smoothed is not None
        self._smoothed = (self.loss_ema * self._smoothed + (1 - self.loss_ema) * losses).astype(np.float32) \
            if smooth else losses
        p, self.fits = p_clean_by_class(self._smoothed, groups=self.given if self.per_class else None, seed=self.seed)
        probs = softmax(logits64).astype(np.float32)
        del logits64
        self.epochs.append(epoch)
        self.loss_history.append(losses)
        self.p_clean_history.append(p.astype(np.float32))
        self.confidence_history.append(probs[np.arange(len(self.given)), self.given])
        if epoch > 0:  # a pass before any training step (warmup_epochs=0) says nothing about the labels
            self.summed += 1
            self.prob_sum = probs if self.prob_sum is None else self.prob_sum + probs
            if held_logits is not None:
                held = softmax(held_logits.astype(np.float64)).astype(np.float32)
                self.held_prob_sum = held if self.held_prob_sum is None else self.held_prob_sum + held
        self.teacher = np.asarray(logits, dtype=np.float32)
        return p

    def learning_check(self, held_logits: np.ndarray | None = None) -> Reliability:
        """Has the model learned? Held-out agreement vs the majority rate, and the last pass's median loss vs ln K.

        ``held_logits`` ``(M, K)`` (logits or probabilities: only the argmax is used) default to the
        passes' summed held-out probabilities; with fewer than ``MIN_HELD_OUT`` held-out rows the
        training rows' mean softmax over the passes is used in-sample.

        Raises:
            ValueError: before any pass.
        """
        if not self.summed:
            raise ValueError("no pass after training has run yet")
        train_loss = float(np.median(self.loss_history[-1]))
        held = held_logits if held_logits is not None else self.held_prob_sum
        if self.held_given is not None and len(self.held_given) >= MIN_HELD_OUT:
            return assess(self.held_given, held.argmax(axis=1), train_loss=train_loss,
                          num_classes=self.num_classes, evidence="held-out")
        # too few held-out rows: the passes' mean softmax in-sample (inflated by memorisation; said so),
        # and the few held-out rows there are must not contradict it
        verdict = assess(self.given, self.prob_sum.argmax(axis=1), train_loss=train_loss,
                         num_classes=self.num_classes, evidence="in-sample")
        if self.held_given is not None:
            verdict = contradicted_by(verdict, self.held_given, held.argmax(axis=1))
        return verdict

    def finish(self, final_logits: np.ndarray, label_names: Sequence[str], *, held_final_logits: np.ndarray | None = None,
               filter_by: str = "prune_by_noise_rate", quality: str = "self_confidence",
               flag_when_unreliable: bool = False) -> NoiseEstimate:
        """The final estimate, after the last pass (``final_logits`` ``(N, K)``, already recorded by :meth:`update`).

        Args:
            final_logits: ``(N, K)`` the final model's logits of the training rows.
            label_names: K names.
            held_final_logits: ``(M, K)`` the final model's held-out logits (when there are held-out rows).
            filter_by, quality: cleanlab's flag rule and label-quality method.
            flag_when_unreliable: keep the flags even when the verdict is "not reliable".

        Raises:
            ValueError: before any pass, or on mismatched shapes.
        """
        probs = self.mean_probs
        predicted = final_logits.argmax(axis=1)
        given = self.given
        if self.held_given is not None:
            probs = np.vstack([probs, self.held_prob_sum / self.summed])
            predicted = np.concatenate([predicted, held_final_logits.argmax(axis=1)])
            given = np.concatenate([given, self.held_given])
        reliability = self.learning_check(held_final_logits)
        withhold = not reliability.reliable and not flag_when_unreliable
        check = check_labels(given, probs, label_names, filter_by=filter_by, quality=quality, withhold=withhold)
        return NoiseEstimate(given, check, reliability, probs, predicted, self.p_clean_history[-1].copy(),
                             np.stack(self.p_clean_history), dict(self.fits), list(self.epochs))

    def score(self, rule: str) -> np.ndarray:
        """A training-row score ``(N,)`` in [0, 1] (lower = likelier wrong) for comparing rules in benchmarks.

        ``p_clean_mean`` / ``p_clean_last``; ``loss_mean`` = exp(-mean loss); ``self_confidence_mean``
        = the given label's softmax averaged over passes (cleanlab's self-confidence, JAIR 2021).

        Raises:
            ValueError: before any pass, or on an unknown rule.
        """
        if not self.passes:
            raise ValueError("no clean-probability pass has run yet")
        rules = {
            "p_clean_mean": lambda: np.mean(self.p_clean_history, axis=0),
            "p_clean_last": lambda: self.p_clean_history[-1].copy(),
            "loss_mean": lambda: np.exp(-np.mean(self.loss_history, axis=0)),
            "self_confidence_mean": lambda: np.mean(self.confidence_history, axis=0),
        }
        if rule not in rules:
            raise ValueError(f"unknown score rule {rule!r}: choose one of {', '.join(rules)}")
        return rules[rule]()

    _STATE = ("epochs", "loss_history", "p_clean_history", "confidence_history", "prob_sum", "held_prob_sum", "summed",
              "teacher", "_smoothed", "fits")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the dynamics exactly (numpy arrays, lists, ints)."""
        state = {name: getattr(self, name) for name in self._STATE}
        state["fits"] = {k: v.to_dict() for k, v in self.fits.items()}
        return state

    _FLOAT32 = ("prob_sum", "held_prob_sum", "teacher", "_smoothed")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; arrays of a state written before they were kept in float32
        (float64 ``prob_sum``, ``_smoothed`` ...) are cast to float32 as they load."""
        for name in self._STATE:
            setattr(self, name, state.get(name))
        for name in self._FLOAT32:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=np.float32))
        self.fits = {int(k): MixtureFit(**{f: (math.nan if v is None else v) for f, v in fit.items()})
                     for k, fit in (state.get("fits") or {}).items()}
        self.epochs = list(self.epochs or [])
        for name in ("loss_history", "p_clean_history", "confidence_history"):
            setattr(self, name, [np.asarray(x, dtype=np.float32) for x in getattr(self, name) or []])
