"""The estimator keeps its per-pass arrays in float32; a resumed state reproduces the uninterrupted run exactly,
and a state written before (float64 sums and smoothed losses) still loads, cast to float32."""

from __future__ import annotations

import numpy as np

from clear_core.estimate import NoiseEstimator


def _passes(n: int = 400, k: int = 3, passes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    given = rng.integers(0, k, n)
    logits = []
    for _ in range(passes):
        z = rng.normal(size=(n, k))
        z[np.arange(n), given] += rng.uniform(0, 4, n)
        logits.append(z)
    return given, logits, rng.normal(size=(passes, 50, k)), rng.integers(0, k, 50)


def _estimator(given, held_given):
    return NoiseEstimator(given, held_given=held_given, num_classes=3, loss_ema=0.5)


def test_per_pass_arrays_are_float32_and_a_resumed_state_gives_the_same_estimate():
    given, logits, held, held_given = _passes()
    full = _estimator(given, held_given)
    for epoch, z in enumerate(logits):
        full.update(z, epoch, held[epoch])
    for name in ("prob_sum", "held_prob_sum", "teacher", "_smoothed"):
        assert getattr(full, name).dtype == np.float32, name
    assert all(a.dtype == np.float32 for a in full.loss_history + full.p_clean_history + full.confidence_history)
    first = _estimator(given, held_given)
    for epoch in range(2):
        first.update(logits[epoch], epoch, held[epoch])
    resumed = _estimator(given, held_given)
    resumed.load_state_dict(first.state_dict())
    for epoch in range(2, 4):
        resumed.update(logits[epoch], epoch, held[epoch])
    assert np.array_equal(resumed.p_clean, full.p_clean) and np.array_equal(resumed.prob_sum, full.prob_sum)
    a = full.finish(logits[-1], ["a", "b", "c"], held_final_logits=held[-1])
    b = resumed.finish(logits[-1], ["a", "b", "c"], held_final_logits=held[-1])
    assert np.array_equal(a.check.label_quality, b.check.label_quality) and np.array_equal(a.check.flagged,
                                                                                           b.check.flagged)


def test_a_float64_state_of_before_loads_cast_to_float32():
    given, logits, held, held_given = _passes()
    estimator = _estimator(given, held_given)
    for epoch in range(2):
        estimator.update(logits[epoch], epoch, held[epoch])
    old = estimator.state_dict()
    for name in ("prob_sum", "held_prob_sum", "_smoothed"):  # what a checkpoint written before held
        old[name] = old[name].astype(np.float64)
    old["loss_history"] = [x.astype(np.float64) for x in old["loss_history"]]
    loaded = _estimator(given, held_given)
    loaded.load_state_dict(old)
    assert loaded.prob_sum.dtype == loaded._smoothed.dtype == loaded.loss_history[0].dtype == np.float32
    p = loaded.update(logits[2], 2, held[2])
    estimator.update(logits[2], 2, held[2])
    assert np.allclose(p, estimator.p_clean, atol=1e-6) and loaded.passes == 3
    assert np.allclose(loaded.mean_probs, estimator.mean_probs, atol=1e-7)
