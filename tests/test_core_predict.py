"""``clear_core.predict_proba``: (N, K) float32 probabilities in the order given, rows summing to 1, equal to
the softmax of the model's deterministic logits whatever the batch size; bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest

from clear_core import ClearConfig, ClearModel, predict_proba
from clear_core.noise import softmax


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return ClearModel.build(tiny_model_dir, ClearConfig(), ["a", "b", "c"], max_length=16)


def test_probabilities_are_the_softmax_of_the_logits_in_row_order(model):
    texts = ["market stocks bank", "team match goal coach players", "software", "oil prices shares trading"]
    mode = model.model.training
    probs = predict_proba(model, texts, batch_size=3)
    assert probs.shape == (4, 3) and probs.dtype == np.float32 and model.model.training == mode  # mode restored
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, softmax(model.predict_logits(texts).astype(np.float64)), atol=1e-6)
    np.testing.assert_allclose(predict_proba(model, texts, batch_size=1), probs, atol=1e-6)
    pairs = predict_proba(model, texts[:2], ["team", "bank"])
    assert pairs.shape == (2, 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"texts": []}, "no texts"), ({"texts": ["ok", " "]}, "empty"), ({"texts": ["ok"], "batch_size": 0}, "batch_size"),
    ({"texts": ["ok"], "text_pairs": ["a", "b"]}, "one per text")])
def test_bad_input_is_refused(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_proba(model, **kwargs)
