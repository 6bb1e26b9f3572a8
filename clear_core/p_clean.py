"""p_clean for routing: a loss mixture per given class that keeps one component when there is no noise.

Symbols: N training rows, K classes. A row's loss is the cross-entropy of a no-grad pass against
its *given* label. Per class, Gaussian mixtures of 1 and 2 components are fit on the min-max
normalised losses (scikit-learn ``GaussianMixture``; DivideMix, Li et al., ICLR 2020, Sec. 3.1;
CleaR, Kim et al., ACL 2024). The 2-component model is kept only when the data support it:

* its BIC is lower than the 1-component model's (Schwarz, Ann. Stat. 1978), and
* its components are clearly apart: Ashman's D = sqrt(2) |mu_1 - mu_2| / sqrt(s_1^2 + s_2^2) > 2
  (Ashman, Bird & Zepf, AJ 1994: D > 2 is needed for a clean separation of two Gaussians; a
  skewed but unimodal loss distribution, which BIC alone splits, stays under it), and
* the high-loss component holds at least ``MIN_NOISY_WEIGHT`` of the class.

Otherwise the class is one component and every row's p_clean is ``P_MAX`` (a clean class keeps its
PEFT path on). A class of fewer than ``MIN_ROWS_PER_GROUP`` rows borrows strength: it is scored by
one mixture fit on every row's loss *minus its own class's median* (so a rare, slowly learned class
is judged against its own centre, not against other classes' loss level). Posteriors are kept in
[``P_MIN``, ``P_MAX``], never exactly 0 or 1. Higher p_clean = more likely clean.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

MIN_ROWS_PER_GROUP = 16
MIN_NOISY_WEIGHT = 0.02
MIN_ASHMAN_D = 2.0
P_MIN, P_MAX = 0.005, 0.995


@dataclass
class MixtureFit:
    """The selected loss model of one group of rows.

    Attributes:
        components: 1 or 2.
        noisy_weight: mixture weight of the high-loss component in [0, 1] (0 for one component).
        ashman_d: separation D of the 2-component fit (>= 0), NaN when it could not be fit.
        bic_gain: BIC(1) - BIC(2); > 0 favours two components.
        rows: rows in the group.
        borrowed: True when the group was scored by the pooled residual fit (a small class).
    """

    components: int
    noisy_weight: float
    ashman_d: float
    bic_gain: float
    rows: int
    borrowed: bool = False

    def to_dict(self) -> dict:
        """JSON-safe dict of the fields (NaN -> None)."""
        d = dict(self.__dict__)
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def _gmm(n: int, seed: int) -> GaussianMixture:
    return GaussianMixture(n_components=n, reg_covar=5e-4, tol=1e-3, max_iter=100, random_state=seed)


def fit_mixture(losses: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, MixtureFit]:
    """p_clean ``(n,)`` in [P_MIN, P_MAX] for one group's losses ``(n,)`` (>= 0), and the model chosen.

    Raises:
        ValueError: if ``losses`` is not a finite 1-D array.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or not np.all(np.isfinite(losses)):
        raise ValueError(f"losses must be a finite 1-D array, got shape {losses.shape}")
    n = len(losses)
    span = float(np.ptp(losses)) if n else 0.0
    one = MixtureFit(1, 0.0, float("nan"), 0.0, n)
    if n < 4 or span < 1e-12:
        return np.full(n, P_MAX), one
    x = ((losses - losses.min()) / span).reshape(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g1, g2 = _gmm(1, seed).fit(x), _gmm(2, seed).fit(x)
    means, sds = g2.means_.ravel(), np.sqrt(g2.covariances_.ravel())
    clean, noisy = int(np.argmin(means)), int(np.argmax(means))
    d = float(np.sqrt(2.0) * abs(means[1] - means[0]) / np.sqrt(sds[0] ** 2 + sds[1] ** 2))
    gain = float(g1.bic(x) - g2.bic(x))
    fit = MixtureFit(1, 0.0, d, gain, n)
    if gain <= 0 or d <= MIN_ASHMAN_D or g2.weights_[noisy] < MIN_NOISY_WEIGHT:
        return np.full(n, P_MAX), fit
    post = g2.predict_proba(x)[:, clean]
    # Unequal variances can give the wide component spurious mass far from its mean: a row
    # below the clean mean is at least as clean as that mean, one above the noisy mean at most.
    at_means = g2.predict_proba(means[[clean, noisy]].reshape(-1, 1))[:, clean]
    x1 = x.ravel()
    post = np.where(x1 <= means[clean], np.maximum(post, at_means[0]), post)
    post = np.where(x1 >= means[noisy], np.minimum(post, at_means[1]), post)
    fit.components, fit.noisy_weight = 2, float(g2.weights_[noisy])
    return np.clip(post, P_MIN, P_MAX), fit


def gmm_p_clean(losses: np.ndarray, *, groups: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """p_clean ``(N,)`` in [P_MIN, P_MAX] from per-row losses ``(N,)``; see :func:`p_clean_by_class`."""
    return p_clean_by_class(losses, groups=groups, seed=seed)[0]


def p_clean_by_class(
    losses: np.ndarray, *, groups: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, dict[int, MixtureFit]]:
    """p_clean ``(N,)`` and the chosen model per group (key -1 = the single global group).

    Args:
        losses: ``(N,)`` finite losses >= 0.
        groups: ``(N,)`` integer group per row (the given class), or None for one global fit.
        seed: seed of the mixture initialisation.

    Raises:
        ValueError: if ``losses`` is not finite 1-D, or ``groups`` has another shape.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or not np.all(np.isfinite(losses)):
        raise ValueError(f"losses must be a finite 1-D array, got shape {losses.shape}")
    if groups is None:
        p, fit = fit_mixture(losses, seed=seed)
        return p, {-1: fit}
    groups = np.asarray(groups)
    if groups.shape != losses.shape:
        raise ValueError(f"groups has shape {groups.shape} but losses has {losses.shape}")
    p = np.full(len(losses), P_MAX)
    fits: dict[int, MixtureFit] = {}
    small = []
    for g in np.unique(groups):
        rows = groups == g
        if rows.sum() >= MIN_ROWS_PER_GROUP:
            p[rows], fits[int(g)] = fit_mixture(losses[rows], seed=seed)
        else:
            small.append(g)
    if small:
        # Small classes borrow the pooled shape: every row's loss minus its class median.
        medians = {g: np.median(losses[groups == g]) for g in np.unique(groups)}
        residual = losses - np.array([medians[g] for g in groups])
        pooled, pooled_fit = fit_mixture(residual - residual.min(), seed=seed)
        for g in small:
            rows = groups == g
            p[rows] = pooled[rows]
            fits[int(g)] = MixtureFit(pooled_fit.components, pooled_fit.noisy_weight, pooled_fit.ashman_d,
                                      pooled_fit.bic_gain, int(rows.sum()), borrowed=True)
    return p, fits
