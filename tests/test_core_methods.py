"""The method matrix: 4 PEFT methods x {routed, plain} on a tiny config-built BERT.

Checks: finite outputs; only PEFT (and head) parameters change; a gate of 0 reproduces the
frozen backbone exactly and a gate of 1 the full PEFT model, row by row; deterministic
inference; save -> load (stock peft for LoRA and prefix) reproduces the logits.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from clear_core import ClearConfig, ClearModel, TextClassificationData, TrainingConfig, load_adapter, train
from clear_core.data import TokenizedTexts
from clear_core.model import load_backbone

from .conftest import toy_texts

METHODS = ["lora", "adapter", "prefix", "bitfit"]
MATRIX = [(m, r) for m in METHODS for r in (True, False)]
TRAINABLE = {
    "lora": r"lora_[AB]|classifier",
    "adapter": r"\.adapter\.|classifier",
    "prefix": r"prompt_encoder|classifier",
    "bitfit": r"bias_delta|classifier",
}
NAMES = ["0", "1"]


def _build(tiny_model_dir, method, routed, seed=0, inference="full") -> ClearModel:
    torch.manual_seed(seed)
    cfg = ClearConfig(method=method, routed=routed, inference=inference)
    return ClearModel.build(tiny_model_dir, cfg, NAMES, max_length=32)


def _perturb(model: ClearModel, seed: int = 1) -> None:
    """Give every trainable parameter random non-zero values, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)


def _batch(model: ClearModel, n: int = 4):
    texts, _ = toy_texts(n, seed=3)
    return TokenizedTexts(model.tokenizer, texts, None, 32).batch(range(n))


@pytest.mark.parametrize("method,routed", MATRIX)
def test_training_changes_only_peft_and_head(tiny_model_dir, method, routed):
    texts, labels = toy_texts(48, seed=1)
    before = _build(tiny_model_dir, method, routed)
    frozen_before = {n: p.detach().clone() for n, p in before.model.named_parameters() if not p.requires_grad}
    result = train(
        TextClassificationData(texts, labels.tolist()),
        clear=ClearConfig(method=method, routed=routed, warmup_epochs=1),
        training=TrainingConfig(epochs=2, batch_size=8, learning_rate=3e-2, max_length=32, seed=0),
        model_path=tiny_model_dir,
    )
    after = dict(result.model.model.named_parameters())
    assert frozen_before, "a PEFT method must leave backbone parameters frozen"
    for name, value in frozen_before.items():
        assert torch.equal(after[name].detach(), value), f"frozen parameter {name} changed"
    trainable = [n for n, p in after.items() if p.requires_grad]
    assert trainable and all(re.search(TRAINABLE[method], n) for n in trainable), trainable
    before_trainable = dict(before.model.named_parameters())
    changed = [n for n in trainable if not torch.equal(after[n].detach(), before_trainable[n].detach())]
    assert any(not re.search("classifier", n) for n in changed), f"no PEFT parameter was updated: {changed}"
    logits = result.model.predict_logits(texts[:8])
    assert logits.shape == (8, 2) and np.isfinite(logits).all()
    assert len(result.report) == 48 and np.isfinite(result.report.label_quality).all()


@pytest.mark.parametrize("method", METHODS)
def test_gate_zero_is_frozen_backbone_and_gate_one_full_peft(tiny_model_dir, method):
    model = _build(tiny_model_dir, method, True)
    _perturb(model)
    model.eval()
    batch = _batch(model)
    n, layers = batch["input_ids"].shape[0], model.num_layers
    with torch.no_grad():
        model.controller.set_gates(torch.zeros(n, layers))
        off = model(batch)
        model.controller.set_gates(torch.ones(n, layers))
        on = model(batch)
        mixed = torch.tensor([[0.0] * layers, [1.0] * layers] * (n // 2))
        model.controller.set_gates(mixed)
        mix = model(batch)
    # gate 0: exactly the frozen backbone with the same head
    base, _, _ = load_backbone(tiny_model_dir, NAMES)
    head = model.model.get_base_model().classifier if method in ("lora", "prefix") else model.model.classifier
    head = getattr(head, "modules_to_save", {"default": head})["default"]
    base.classifier.load_state_dict(head.state_dict())
    base.eval()
    with torch.no_grad():
        ref_off = base(**batch).logits
    torch.testing.assert_close(off, ref_off, rtol=0, atol=1e-6)
    assert not torch.allclose(on, off, atol=1e-4), "the perturbed PEFT delta had no effect"
    torch.testing.assert_close(on, _full_peft_reference(model, base, batch), rtol=1e-5, atol=1e-5)
    # per-row routing: each row sees only its own gates
    torch.testing.assert_close(mix[0::2], off[0::2], rtol=0, atol=1e-6)
    torch.testing.assert_close(mix[1::2], on[1::2], rtol=1e-5, atol=1e-5)


def _full_peft_reference(model: ClearModel, base, batch) -> torch.Tensor:
    """Logits of the PEFT model computed without our gating code."""
    method = model.clear_config.method
    model.controller.set_constant(1.0)  # our hooks then leave the computation untouched
    with torch.no_grad():
        if method == "lora":
            merged = copy.deepcopy(model.model).merge_and_unload()
            return merged(**batch).logits
        if method == "prefix":
            pm = model.model
            b = batch["input_ids"].shape[0]
            p = pm.peft_config["default"].num_virtual_tokens
            mask = torch.cat([torch.ones(b, p, dtype=torch.long), batch["attention_mask"]], dim=1)
            pos = torch.arange(batch["input_ids"].shape[1]).unsqueeze(0)
            out = pm.base_model.bert(input_ids=batch["input_ids"], attention_mask=mask, position_ids=pos,
                                     past_key_values=pm.get_prompt(b))
            return base.classifier(out.pooler_output)
        ref = copy.deepcopy(base)
        if method == "bitfit":
            deltas = {n[: -len(".bias_delta")]: p for n, p in model.model.named_parameters()
                      if n.endswith("bias_delta")}
            for name, delta in deltas.items():
                ref.get_submodule(name).bias.add_(delta)
            return ref(**batch).logits
        adapters = {n: m for n, m in model.model.named_modules() if type(m).__name__ == "AdaptedLinear"}
        for name, wrapped in adapters.items():
            lin = ref.get_submodule(name)
            lin.register_forward_hook(lambda _m, _i, out, a=wrapped.adapter: out + a(out))
        return ref(**batch).logits


@pytest.mark.parametrize("method,routed", MATRIX)
def test_inference_is_deterministic_and_save_load_roundtrips(tiny_model_dir, tmp_path, method, routed):
    model = _build(tiny_model_dir, method, routed, inference="expected" if routed and method != "prefix" else "full")
    _perturb(model)
    texts, _ = toy_texts(10, seed=5)
    first = model.predict_logits(texts)
    model.train()  # predict_logits must switch dropout off by itself
    second = model.predict_logits(texts)
    np.testing.assert_array_equal(first, second)
    assert model.model.training, "predict_logits must restore the training mode"
    model.save(tmp_path / "adapter")
    reloaded = load_adapter(tmp_path / "adapter", model_path=tiny_model_dir)
    np.testing.assert_allclose(reloaded.predict_logits(texts), first, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method,inference", [("lora", "full"), ("lora", "expected"), ("prefix", "full")])
def test_stock_peft_loads_the_adapter_with_the_same_logits(tiny_model_dir, tmp_path, method, inference):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = _build(tiny_model_dir, method, True, inference=inference)
    _perturb(model)
    texts, _ = toy_texts(6, seed=7)
    ours = model.predict_logits(texts)
    model.save(tmp_path / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2, ignore_mismatched_sizes=True)
    stock = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    batch = TokenizedTexts(model.tokenizer, texts, None, 32).batch(range(len(texts)))
    with torch.no_grad():
        if method == "lora":
            logits = stock(**batch).logits
        else:
            # peft 0.21's own prefix forward refuses transformers-5 BERT (it looks for a
            # `past_key_values` argument BERT renamed to `cache`); this is that forward, inlined,
            # with token positions 0..T-1 as clear_core numbers them.
            b, p = len(texts), stock.peft_config["default"].num_virtual_tokens
            mask = torch.cat([torch.ones(b, p, dtype=torch.long), batch["attention_mask"]], dim=1)
            pos = torch.arange(batch["input_ids"].shape[1]).unsqueeze(0)
            out = stock.base_model.bert(input_ids=batch["input_ids"], attention_mask=mask, position_ids=pos,
                                        past_key_values=stock.get_prompt(b))
            logits = stock.base_model.classifier(stock.base_model.dropout(out.pooler_output))
    np.testing.assert_allclose(logits.numpy(), ours, atol=1e-5, rtol=0)


def test_expected_gate_scales_the_lora_delta(tiny_model_dir):
    model = _build(tiny_model_dir, "lora", True, inference="expected")
    _perturb(model)
    batch = _batch(model)
    n, layers = batch["input_ids"].shape[0], model.num_layers
    model.eval()
    assert model.clear_config.inference == "expected"
    with torch.no_grad():
        model.use_inference_gates()
        expected = model(batch)
        model.controller.set_gates(torch.full((n, layers), model.clear_config.routing_cap))
        manual = model(batch)
    torch.testing.assert_close(expected, manual)


def test_head_routing_stops_the_head_gradient_of_gated_off_rows(tiny_model_dir):
    torch.manual_seed(0)
    model = ClearModel.build(tiny_model_dir, ClearConfig(method="bitfit", route_head=True), NAMES, max_length=32)
    batch = _batch(model)
    n, layers = batch["input_ids"].shape[0], model.num_layers
    head = model.model.classifier
    grads = {}
    for gate in (0.0, 1.0):
        model.zero_grad()
        model.controller.set_gates(torch.ones(n, layers))
        model.controller.head_gates = torch.full((n,), gate)
        logits = model(batch)
        logits.sum().backward()
        grads[gate] = head.weight.grad.abs().sum().item() if head.weight.grad is not None else 0.0
        model.controller.head_gates = None
        with torch.no_grad():
            torch.testing.assert_close(logits, model(batch))  # forward values never change
    assert grads[0.0] == 0.0 and grads[1.0] > 0.0
