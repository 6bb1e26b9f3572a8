"""Row-wise numerics shared by the estimator, the metrics and the benchmarks: softmax and cross-entropy.

Symbols: N rows, K classes. The loss mixture is in ``clear_core.p_clean``, the per-pass dynamics
and the estimate in ``clear_core.estimate``.
"""

from __future__ import annotations

import numpy as np


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

