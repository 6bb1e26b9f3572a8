"""Clean-probability estimation (CleaR's loss GMM) and the training dynamics kept for the noise report.

Symbols: N training rows, K classes, E' post-warm-up passes so far. A row's loss is the
cross-entropy of the no-grad pass's logits against its *given* label; a 2-component
Gaussian mixture on the losses gives p_clean(i) = posterior of the low-mean component
(Arazo et al., ICML 2019; Li et al., DivideMix, ICLR 2020, Sec. 3.1; CleaR, Kim et al. 2024).
Higher p_clean = more likely clean.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

MIN_ROWS_PER_GROUP = 16


def cross_entropy_rows(logits: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy ``(N,)`` of ``logits`` ``(N, K)`` against integer labels ``given`` ``(N,)``; >= 0."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(given)), given]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax ``(N, K)`` of ``logits / temperature``."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def gmm_p_clean(losses: np.ndarray, *, groups: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """p_clean ``(N,)`` in [0, 1] from per-row losses ``(N,)``; higher = more likely clean.

    Losses are min-max normalised and fit with ``GaussianMixture(2, reg_covar=5e-4)`` as in
    DivideMix (Li et al. 2020, Sec. 3.1); the clean component is the one with the lower mean.
    The posterior's tails are clamped (below the clean mean at least the posterior at that
    mean, above the noisy mean at most the posterior there), which removes the wide
    component's spurious mass far from its mean.
    With ``groups`` (e.g. the given class), one mixture per group of at least
    ``MIN_ROWS_PER_GROUP`` rows; smaller groups use the global fit.

    Raises:
        ValueError: if ``losses`` is not 1-D and finite, or ``groups`` has another length.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or not np.all(np.isfinite(losses)):
        raise ValueError(f"losses must be a finite 1-D array, got shape {losses.shape}")
    p = _fit_one(losses, seed)
    if groups is None:
        return p
    groups = np.asarray(groups)
    if groups.shape != losses.shape:
        raise ValueError(f"groups has shape {groups.shape} but losses has {losses.shape}")
    for g in np.unique(groups):
        rows = groups == g
        if rows.sum() >= MIN_ROWS_PER_GROUP:
            p[rows] = _fit_one(losses[rows], seed)
    return p


def _fit_one(losses: np.ndarray, seed: int) -> np.ndarray:
    span = losses.max() - losses.min()
    if len(losses) < 2 or span < 1e-12:
        return np.ones_like(losses)
    x = ((losses - losses.min()) / span).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, reg_covar=5e-4, tol=1e-3, max_iter=100, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    means = gmm.means_.ravel()
    clean, noisy = int(np.argmin(means)), int(np.argmax(means))
    post = gmm.predict_proba(x)[:, clean]
    # Clamp the tails: unequal variances can give the wide component spurious mass far
    # from its mean; a row below the clean mean is at least as clean as the mean, and
    # a row above the noisy mean at most as clean as that mean.
    at_means = gmm.predict_proba(means[[clean, noisy]].reshape(-1, 1))[:, clean]
    x1 = x.ravel()
    post = np.where(x1 <= means[clean], np.maximum(post, at_means[0]), post)
    post = np.where(x1 >= means[noisy], np.minimum(post, at_means[1]), post)
    return post


class NoiseTracker:
    """Per-epoch training dynamics of N rows: losses, p_clean, given-label confidence, teacher logits.

    Args:
        given: ``(N,)`` int64 given labels.
        loss_ema: momentum m in [0, 1) of an EMA over passes, l_t = m * l_{t-1} + (1 - m) * loss_t
            (REFERENCE_CODE.md Sec. 1.2 uses m = 0.9 for the adapter); 0 = off.
        per_class: fit the GMM per given class.
        seed: seed of the GMM initialisation.
    """

    def __init__(self, given: np.ndarray, *, loss_ema: float = 0.0, per_class: bool = False, seed: int = 0) -> None:
        self.given = np.asarray(given, dtype=np.int64)
        self.loss_ema = loss_ema
        self.per_class = per_class
        self.seed = seed
        self.epochs: list[int] = []
        self.loss_history: list[np.ndarray] = []
        self.p_clean_history: list[np.ndarray] = []
        self.confidence_history: list[np.ndarray] = []
        self.prob_sum: np.ndarray | None = None
        self.teacher: np.ndarray | None = None
        self._smoothed: np.ndarray | None = None

    @property
    def p_clean(self) -> np.ndarray | None:
        """The latest ``(N,)`` p_clean, or None before the first pass."""
        return self.p_clean_history[-1] if self.p_clean_history else None

    def update(self, logits: np.ndarray, epoch: int) -> np.ndarray:
        """Record one no-grad pass's logits ``(N, K)`` taken at the start of ``epoch``; return p_clean ``(N,)``."""
        if logits.shape[0] != len(self.given):
            raise ValueError(f"logits has {logits.shape[0]} rows but the tracker has {len(self.given)}")
        losses = cross_entropy_rows(logits.astype(np.float64), self.given)
        if self.loss_ema > 0 and self._smoothed is not None:
            self._smoothed = self.loss_ema * self._smoothed + (1 - self.loss_ema) * losses
        else:
            self._smoothed = losses
        p = gmm_p_clean(self._smoothed, groups=self.given if self.per_class else None, seed=self.seed)
        probs = softmax(logits.astype(np.float64))
        self.epochs.append(epoch)
        self.loss_history.append(losses.astype(np.float32))
        self.p_clean_history.append(p.astype(np.float32))
        self.confidence_history.append(probs[np.arange(len(self.given)), self.given].astype(np.float32))
        self.prob_sum = probs if self.prob_sum is None else self.prob_sum + probs
        self.teacher = logits.astype(np.float32)
        return p

    def score(self, rule: str) -> np.ndarray:
        """label_quality ``(N,)`` in [0, 1] under ``rule`` (lower = more likely mislabelled).

        ``p_clean_mean``: p_clean averaged over passes; ``p_clean_last``: the latest p_clean;
        ``loss_mean``: exp(-mean loss), the geometric-mean probability of the given label;
        ``self_confidence_mean``: the given label's softmax probability averaged over passes
        (cleanlab's self-confidence, averaged over training; Northcutt et al., JAIR 2021).

        Raises:
            ValueError: before any pass, or on an unknown rule.
        """
        if not self.p_clean_history:
            raise ValueError("no clean-probability pass has run yet")
        if rule == "p_clean_mean":
            return np.mean(self.p_clean_history, axis=0)
        if rule == "p_clean_last":
            return self.p_clean_history[-1].copy()
        if rule == "loss_mean":
            return np.exp(-np.mean(self.loss_history, axis=0))
        if rule == "self_confidence_mean":
            return np.mean(self.confidence_history, axis=0)
        raise ValueError(f"unknown score rule {rule!r}")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the dynamics exactly (numpy arrays and ints)."""
        return {
            "epochs": list(self.epochs),
            "loss_history": list(self.loss_history),
            "p_clean_history": list(self.p_clean_history),
            "confidence_history": list(self.confidence_history),
            "prob_sum": self.prob_sum,
            "teacher": self.teacher,
            "smoothed": self._smoothed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.epochs = list(state["epochs"])
        self.loss_history = list(state["loss_history"])
        self.p_clean_history = list(state["p_clean_history"])
        self.confidence_history = list(state["confidence_history"])
        self.prob_sum = state["prob_sum"]
        self.teacher = state["teacher"]
        self._smoothed = state["smoothed"]
