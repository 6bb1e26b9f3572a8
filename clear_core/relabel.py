"""Correct, not only bypass: train the rows the report would flag toward their suggested label (``ClearConfig.relabel``).

Symbols: N training rows, M held-out rows, K classes, B batch rows. At the start of every routed
epoch, after the :class:`~clear_core.estimate.NoiseEstimator` has taken its pass, the
:class:`Relabeller` decides the epoch's relabelled rows from the estimator's state alone:

1. confident learning (:func:`~clear_core.confident.check_labels`, Northcutt, Jiang & Chuang,
   JAIR 2021) with the report's own settings (``flag_rule``, ``report_score``) on the same
   probabilities the report uses: each row's softmax averaged over the post-warm-up passes
   (training rows, then the held-out rows' out-of-sample means, so the class thresholds are
   the report's). The report's reliability verdict applies too: while the model has not
   learned the task (``NoiseEstimator.learning_check`` on the passes' mean held-out
   probabilities) nothing is flagged, so nothing is relabelled, unless ``flag_when_unreliable``;
2. a flagged training row is relabelled when its suggested class (the most probable class
   other than the given one) has mean probability ``>= relabel_threshold``.

A relabelled row is trained toward its suggested label instead of its given one:

* ``"hard"``: cross-entropy on the suggested class (the flagged row's label is replaced);
* ``"soft"``: cross-entropy against the row's mean predicted distribution q (the probabilities
  the flag was decided on), i.e. the label-guessing target of SelfMix (Qiao et al., COLING 2022,
  arXiv 2210.04525, Sec. 3), which erases the label of a row its GMM calls noisy and trains it
  toward the model's own sharpened prediction Sharpen(q, T)_j = q_j^(1/T) / sum_k q_k^(1/T)
  (MixMatch, Berthelot et al., NeurIPS 2019, Eq. 7); here T = 1 (no sharpening: the threshold
  already demands ``q_suggested >= relabel_threshold``), and without SelfMix's mixup.

Its target is now believed clean, so a relabelled row is routed as a surely clean row: its
p_clean for the gates is ``P_MAX`` (g ~ Bernoulli(c * P_MAX)). Every other row trains exactly as
without relabelling. The set is recomputed every epoch; it is a deterministic function of the
estimator's state, which checkpoints store, so a resumed run relabels the same rows. The noise
report still judges the *given* labels: the estimator's losses and p_clean are never computed
against a relabelled target.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .config import RELABEL_MODES
from .confident import check_labels
from .p_clean import P_MAX


class Relabeller:
    """The relabel policy of one run: which training rows train toward which target, recomputed per pass.

    Args:
        mode: ``"off"`` (every method call is a no-op), ``"hard"`` or ``"soft"`` (see the module).
        threshold: minimum mean probability of the suggested class, in (0, 1].
        label_names: the K class names (for ``check_labels``).
        flag_rule: cleanlab's flag rule (``ClearConfig.flag_rule``).
        quality: cleanlab's label-quality method (``ClearConfig.report_score``).
        flag_when_unreliable: relabel even while the reliability verdict is "not reliable".

    Attributes:
        mask: ``(N,)`` bool, the rows relabelled this epoch; None before the first decision.
        suggested: ``(N,)`` int64 suggested class of every training row (meaningful where ``mask``).
        soft_targets: ``(N, K)`` float32 mean predicted distributions (``"soft"`` only), rows summing to 1.

    Raises:
        ValueError: on an unknown mode or a threshold outside (0, 1].
    """

    def __init__(self, mode: str, *, threshold: float, label_names: Sequence[str],
                 flag_rule: str = "prune_by_noise_rate", quality: str = "self_confidence",
                 flag_when_unreliable: bool = False) -> None:
        if mode not in RELABEL_MODES:
            raise ValueError(f"relabel={mode!r} is not supported: choose one of {', '.join(RELABEL_MODES)}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"relabel_threshold={threshold!r} is out of range: give a value in (0, 1]")
        self.mode, self.threshold, self.label_names = mode, float(threshold), list(label_names)
        self.flag_rule, self.quality, self.flag_when_unreliable = flag_rule, quality, flag_when_unreliable
        self.mask: np.ndarray | None = None
        self.suggested: np.ndarray | None = None
        self.soft_targets: np.ndarray | None = None

    @property
    def active(self) -> bool:
        """True unless the mode is ``"off"``."""
        return self.mode != "off"

    def update(self, estimator: Any) -> None:
        """Decide this epoch's relabelled rows from ``estimator`` (after its pass at the epoch's start).

        Reads only state that :meth:`NoiseEstimator.state_dict` saves (``prob_sum``,
        ``held_prob_sum``, ``summed``, ``loss_history``), so a resumed run decides the same rows.
        Before any pass after training began (``summed == 0``) no row is relabelled.

        Args:
            estimator: the run's :class:`~clear_core.estimate.NoiseEstimator`.
        """
        if not self.active:
            return
        n = len(estimator.given)
        if not estimator.summed:
            self.mask, self.suggested, self.soft_targets = np.zeros(n, bool), estimator.given.copy(), None
            return
        probs, given = estimator.mean_probs, estimator.given
        if estimator.held_given is not None:  # the report's check: training rows, then held-out out-of-sample
            probs = np.vstack([probs, estimator.held_prob_sum / estimator.summed])
            given = np.concatenate([given, estimator.held_given])
        withhold = not estimator.learning_check().reliable and not self.flag_when_unreliable
        check = check_labels(given, probs, self.label_names, filter_by=self.flag_rule, quality=self.quality,
                             withhold=withhold)
        self.mask = check.flagged[:n] & (check.suggested_confidence[:n] >= self.threshold)
        self.suggested = check.suggested[:n].astype(np.int64)
        self.soft_targets = probs[:n].astype(np.float32) if self.mode == "soft" else None

    def batch(self, idx: np.ndarray, given: torch.Tensor,
              p_clean: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training targets and routing p_clean of one batch.

        Args:
            idx: ``(B,)`` training-row indices of the batch.
            given: ``(B,)`` int64 given labels (on the training device).
            p_clean: ``(B,)`` the estimator's p_clean in (0, 1) for the gates, or None (warm-up).

        Returns:
            ``(targets, p_clean)``. Without a relabelled row in the batch (or with ``mode="off"``)
            exactly the inputs. Otherwise ``targets`` is ``(B,)`` int64 with the suggested class in
            the relabelled rows (``"hard"``) or ``(B, K)`` float class probabilities, one-hot given
            labels except the relabelled rows' mean predicted distributions (``"soft"``), for
            ``F.cross_entropy``; and ``p_clean`` is a new tensor with ``P_MAX`` in the relabelled rows.
        """
        if self.mask is None or not self.mask[idx].any():
            return given, p_clean
        rows = torch.as_tensor(self.mask[idx])
        if p_clean is not None:
            p_clean = torch.where(rows, torch.full_like(p_clean, P_MAX), p_clean)
        on = rows.to(given.device)
        if self.mode == "hard":
            return torch.where(on, torch.as_tensor(self.suggested[idx], device=given.device), given), p_clean
        onehot = torch.nn.functional.one_hot(given, num_classes=self.soft_targets.shape[1]).float()
        soft = torch.as_tensor(self.soft_targets[idx], device=given.device)
        return torch.where(on.unsqueeze(1), soft, onehot), p_clean

    def metrics(self, gold: np.ndarray | None) -> dict[str, Any]:
        """The epoch's relabel metrics; empty when off or before the first decision (warm-up).

        Args:
            gold: ``(N,)`` true labels of the training rows, or None (scoring only: gold never steers).

        Returns:
            ``relabelled_rows`` (count, >= 0) and, with gold labels, ``relabel_precision`` in [0, 1]:
            the share of relabelled rows whose suggested label is the gold label (None when no row
            is relabelled).
        """
        if not self.active or self.mask is None:
            return {}
        out: dict[str, Any] = {"relabelled_rows": int(self.mask.sum())}
        if gold is not None:
            hits = self.suggested[self.mask] == np.asarray(gold)[self.mask]
            out["relabel_precision"] = float(hits.mean()) if hits.size else None
        return out
