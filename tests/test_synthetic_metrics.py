"""Synthetic label noise (rates, targets, seeding, validation) and the evaluation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clear_core.metrics import classification_metrics, detection_metrics
from clear_core.synthetic import (
    asymmetric_noise,
    instance_dependent_noise,
    symmetric_noise,
    text_features,
)

N, K = 20_000, 4


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.random.default_rng(123).integers(0, K, size=N)


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((N, 16))


def _check_output(noisy, flipped, labels):
    assert noisy.shape == (N,) and noisy.dtype == np.int64
    assert flipped.shape == (N,) and flipped.dtype == bool
    assert noisy.min() >= 0 and noisy.max() < K
    np.testing.assert_array_equal(flipped, noisy != labels)


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_symmetric_excluding_true_class_flips_at_rate(labels, rate):
    noisy, flipped = symmetric_noise(labels, num_classes=K, rate=rate, seed=0)
    _check_output(noisy, flipped, labels)
    assert abs(flipped.mean() - rate) < 0.015
    # flips spread evenly over the K - 1 other classes
    offsets = (noisy[flipped] - labels[flipped]) % K
    counts = np.bincount(offsets, minlength=K)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / flipped.sum() - 1 / (K - 1)) < 0.03)


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_symmetric_including_true_class_flips_at_reduced_rate(labels, rate):
    noisy, flipped = symmetric_noise(labels, num_classes=K, rate=rate, seed=0, include_true_class=True)
    _check_output(noisy, flipped, labels)
    assert abs(flipped.mean() - rate * (K - 1) / K) < 0.015


def test_asymmetric_goes_to_next_class_only(labels):
    noisy, flipped = asymmetric_noise(labels, num_classes=K, rate=0.3, seed=0)
    _check_output(noisy, flipped, labels)
    assert abs(flipped.mean() - 0.3) < 0.015
    np.testing.assert_array_equal(noisy[flipped], (labels[flipped] + 1) % K)
    for c in range(K):
        assert abs(flipped[labels == c].mean() - 0.3) < 0.03


def test_asymmetric_explicit_mapping(labels):
    noisy, flipped = asymmetric_noise(labels, num_classes=K, rate=0.3, seed=0, mapping={0: 2, 3: 1})
    _check_output(noisy, flipped, labels)
    assert not flipped[(labels == 1) | (labels == 2)].any()
    assert np.all(noisy[flipped & (labels == 0)] == 2)
    assert np.all(noisy[flipped & (labels == 3)] == 1)
    assert abs(flipped[labels == 0].mean() - 0.3) < 0.03


@pytest.mark.parametrize("rate", [0.3, 0.4])
def test_instance_dependent_rate_and_targets(labels, features, rate):
    noisy, flipped = instance_dependent_noise(labels, features, num_classes=K, rate=rate, seed=0)
    _check_output(noisy, flipped, labels)
    assert abs(flipped.mean() - rate) < 0.015
    assert np.all(noisy[flipped] != labels[flipped])
    pairs = np.bincount(labels[flipped] * K + noisy[flipped], minlength=K * K).reshape(K, K)
    assert pairs.sum() == flipped.sum()
    assert np.all(np.diag(pairs) == 0)


def test_instance_dependent_depends_on_features(labels):
    # Identical features give every row of a class the same softmax over the other classes,
    # a random one, so its flips concentrate on some target instead of spreading uniformly.
    x = np.ones((N, 3))
    noisy, flipped = instance_dependent_noise(labels, x, num_classes=K, rate=0.4, seed=3)
    for c in range(K):
        targets = np.bincount(noisy[flipped & (labels == c)], minlength=K)
        assert targets.max() / targets.sum() > 1 / (K - 1) + 0.1


def test_instance_dependent_zero_rate_is_clean(labels, features):
    noisy, flipped = instance_dependent_noise(labels, features, num_classes=K, rate=0.0, seed=0)
    assert not flipped.any()
    np.testing.assert_array_equal(noisy, labels)


@pytest.mark.parametrize(
    "fn",
    [
        lambda y, x, s: symmetric_noise(y, num_classes=K, rate=0.3, seed=s),
        lambda y, x, s: symmetric_noise(y, num_classes=K, rate=0.3, seed=s, include_true_class=True),
        lambda y, x, s: asymmetric_noise(y, num_classes=K, rate=0.3, seed=s),
        lambda y, x, s: instance_dependent_noise(y, x, num_classes=K, rate=0.3, seed=s),
    ],
    ids=["symmetric", "symmetric_incl", "asymmetric", "instance"],
)
def test_seeded_reproducibility(labels, features, fn):
    a, fa = fn(labels, features, 5)
    b, fb = fn(labels, features, 5)
    c, _ = fn(labels, features, 6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fa, fb)
    assert (a != c).mean() > 0.05


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: symmetric_noise([0, 1, 4], num_classes=4, rate=0.1, seed=0), r"\[0, 4\]"),
        (lambda: symmetric_noise([0, -1], num_classes=4, rate=0.1, seed=0), r"num_classes=4"),
        (lambda: symmetric_noise([0, 1], num_classes=1, rate=0.1, seed=0), r"num_classes=1"),
        (lambda: symmetric_noise([0, 1], num_classes=2, rate=1.0, seed=0), r"rate=1.0"),
        (lambda: symmetric_noise([0, 1], num_classes=2, rate=-0.1, seed=0), r"rate=-0.1"),
        (lambda: symmetric_noise([0.5, 1], num_classes=2, rate=0.1, seed=0), r"integers"),
        (lambda: symmetric_noise([[0, 1]], num_classes=2, rate=0.1, seed=0), r"\(1, 2\)"),
        (lambda: symmetric_noise([], num_classes=2, rate=0.1, seed=0), r"non-empty"),
        (lambda: asymmetric_noise([0, 1], num_classes=2, rate=0.1, seed=0, mapping={0: 5}), r"\{0: 5\}"),
        (lambda: instance_dependent_noise([0, 1, 1], np.ones((2, 3)), num_classes=2, rate=0.1, seed=0),
         r"\(3, D >= 1\).*\(2, 3\)"),
        (lambda: instance_dependent_noise([0, 1], np.array([[1.0], [np.nan]]), num_classes=2, rate=0.1,
                                          seed=0), r"NaN"),
        (lambda: text_features([], dim=4), r"0 item"),
        (lambda: text_features(["a b"], dim=0), r"dim=0"),
    ],
)
def test_bad_noise_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_text_features_shape_and_seed():
    texts = [f"word{i % 7} common token{i % 3} extra{i}" for i in range(40)]
    a = text_features(texts, dim=8, seed=1)
    assert a.shape == (40, 8) and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, text_features(texts, dim=8, seed=1))
    tiny = text_features(["alpha beta", "beta gamma"], dim=16)
    assert tiny.shape == (2, 16)
    labels = np.arange(40) % 2
    noisy, flipped = instance_dependent_noise(labels, a, num_classes=2, rate=0.4, seed=0)
    assert flipped.shape == (40,)


# ---------------------------------------------------------------- metrics


def test_classification_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, num_classes=3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class F1: 0 -> P 1/2 R 1/2 F 1/2; 1 -> P 2/3 R 1 F 0.8; 2 -> P 1 R 1/2 F 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_classification_metrics_absent_class_counts_zero_with_k():
    y = np.array([0, 1, 0, 1])
    assert classification_metrics(y, y)["macro_f1"] == pytest.approx(1.0)
    assert classification_metrics(y, y, num_classes=4)["macro_f1"] == pytest.approx(0.5)


def test_detection_metrics_by_hand():
    is_noisy = np.array([True, True, False, False, False])
    flagged = np.array([True, False, True, False, False])
    score = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
    m = detection_metrics(is_noisy, flagged, score)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["auroc"] == pytest.approx(1.0)
    assert m["average_precision"] == pytest.approx(1.0)
    assert m["recall_at_k"] == pytest.approx(1.0) and m["k"] == 2
    assert (m["n_noisy"], m["n_flagged"]) == (2, 2)
    reversed_ = detection_metrics(is_noisy, flagged, -score)
    assert reversed_["auroc"] == pytest.approx(0.0)
    assert reversed_["recall_at_k"] == pytest.approx(0.0)
    assert detection_metrics(is_noisy, flagged, score, k=4)["recall_at_k"] == pytest.approx(0.5)


def test_detection_metrics_partial_ranking():
    is_noisy = np.array([1, 0, 1, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.1, 0.2])
    m = detection_metrics(is_noisy, np.zeros(4, dtype=bool), score)
    # positive pairs ranked correctly: (0,1), (0,3) of 4 -> 0.5
    assert m["auroc"] == pytest.approx(0.5)
    assert m["recall_at_k"] == pytest.approx(0.5)
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_detection_metrics_all_clean_is_nan_and_zero():
    m = detection_metrics(np.zeros(4, dtype=bool), np.array([1, 0, 0, 0]), np.arange(4.0))
    assert math.isnan(m["auroc"]) and math.isnan(m["average_precision"])
    assert (m["precision"], m["recall"], m["f1"], m["recall_at_k"]) == (0.0, 0.0, 0.0, 0.0)
    assert m["n_noisy"] == 0 and m["n_flagged"] == 1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: detection_metrics([True, False], [True], [0.1, 0.2]), r"'flagged': \(1,\)"),
        (lambda: detection_metrics([True, False], [True, False], [0.1, np.nan]), r"score"),
        (lambda: detection_metrics([2, 0], [True, False], [0.1, 0.2]), r"is_noisy"),
        (lambda: detection_metrics([True, False], [True, False], [0.1, 0.2], k=3), r"k=3.*N=2"),
        (lambda: detection_metrics([], [], []), r"N=0"),
        (lambda: classification_metrics([0, 1], [0, 1, 1]), r"\(3,\)"),
        (lambda: classification_metrics([0, 1], [0, 3], num_classes=3), r"y_pred.*\[0, 3\]"),
        (lambda: classification_metrics([0.0, 1.0], [0, 1]), r"y_true.*float"),
    ],
)
def test_bad_metric_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
