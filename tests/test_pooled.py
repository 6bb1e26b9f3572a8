"""The pooled-row last block (clear_core.pooled): on [CLS]-pooled classifiers the last block computes only
token 0, with the logits and the gradients of every trained parameter of the full block, for every PEFT
method, routed gates and padded rows; elsewhere the model is left as it is."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clear_core import ClearConfig, ClearModel
from clear_core.data import TokenizedTexts
from clear_core.pooled import pool_last_layer, unpool_last_layer
from clear_core.routing import find_layer_stack
from clear_core.testing import build_tiny_backbone

from .conftest import TOPIC_WORDS, toy_texts

POOLED = ("bert", "roberta", "electra")
FULL = ("distilbert", "deberta-v2", "modernbert", "llama")


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("pooled")
    corpus = [" ".join(words) for words in TOPIC_WORDS.values()] * 4
    return {arch: build_tiny_backbone(root / arch, arch, corpus=corpus, num_layers=3) for arch in POOLED + FULL}


def _batch(model: ClearModel) -> dict[str, torch.Tensor]:
    texts, _ = toy_texts(6, seed=5, words_per_text=4)
    texts[2] += " market market market goal"  # rows of different lengths: the padding mask is exercised
    return TokenizedTexts(model.tokenizer, texts, None, 16).batch(range(6))


def _logits_and_grads(model: ClearModel, batch, gates: torch.Tensor):
    model.eval()  # no dropout: both blocks must give the same numbers
    model.zero_grad(set_to_none=True)
    model.controller.set_gates(gates)
    logits = model(batch)
    F.cross_entropy(logits, torch.tensor([0, 1, 0, 1, 1, 0])).backward()
    grads = {n: p.grad.clone() for n, p in model.model.named_parameters() if p.requires_grad and p.grad is not None}
    return logits.detach(), grads


@pytest.mark.parametrize("method", ["lora", "adapter", "bitfit", "prefix"])
@pytest.mark.parametrize("arch", POOLED)
def test_the_pooled_block_gives_the_full_blocks_logits_and_gradients(backbones, arch, method):
    torch.manual_seed(0)
    model = ClearModel.build(backbones[arch], ClearConfig(method=method), ["0", "1"], 16)
    assert model.pooled_last_layer
    with torch.no_grad():  # a non-zero PEFT delta, so the adapters' paths count in both results
        for p in model.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    batch = _batch(model)
    gates = (torch.rand(6, model.num_layers, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    pooled_logits, pooled_grads = _logits_and_grads(model, batch, gates)
    unpool_last_layer(model.model)
    full_logits, full_grads = _logits_and_grads(model, batch, gates)
    torch.testing.assert_close(pooled_logits, full_logits, atol=1e-5, rtol=1e-4)
    assert set(pooled_grads) == set(full_grads) and len(full_grads) > 2
    for name, grad in full_grads.items():
        torch.testing.assert_close(pooled_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # the trainer's helpers still see one stack of blocks and the same parameter names
    pool_last_layer(model.model)
    _, stack = find_layer_stack(model.model)
    assert len(stack) == model.num_layers == 3


def test_the_block_computes_one_row_and_keeps_its_names(backbones):
    model = ClearModel.build(backbones["bert"], ClearConfig(method="lora"), ["0", "1"], 16)
    keys = list(model.model.state_dict())
    _, stack = find_layer_stack(model.model)
    seen = []
    handle = stack[-1].register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    model.eval()
    with torch.no_grad():
        model(_batch(model))
    handle.remove()
    assert seen == [(6, 1, 32)]  # (B, 1, H): token 0 only
    unpool_last_layer(model.model)
    assert list(model.model.state_dict()) == keys  # nothing renamed: adapters save and load as before
    off = ClearModel.build(backbones["bert"], ClearConfig(method="lora"), ["0", "1"], 16, pooled_last_layer=False)
    assert not off.pooled_last_layer and type(find_layer_stack(off.model)[1][-1]).__name__ == "BertLayer"


@pytest.mark.parametrize("arch", FULL)
def test_other_architectures_keep_their_full_last_block(backbones, arch):
    model = ClearModel.build(backbones[arch], ClearConfig(method="lora"), ["0", "1"], 16)
    _, stack = find_layer_stack(model.model)
    assert not model.pooled_last_layer and not type(stack[-1]).__name__.startswith("PooledRow")


def test_the_eager_kernel_gives_the_same_and_flash_attention_falls_back(backbones):
    model = ClearModel.build(backbones["bert"], ClearConfig(method="lora"), ["0", "1"], 16)
    batch = _batch(model)
    model.eval()
    with torch.no_grad():
        sdpa = model(batch)
        config = find_layer_stack(model.model)[1][-1].attention.self.config
        config._attn_implementation = "eager"  # the additive float mask instead of sdpa's boolean one
        eager = model(batch)
        unpool_last_layer(model.model)
        full = model(batch)
    torch.testing.assert_close(eager, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sdpa, full, atol=1e-5, rtol=1e-4)
    from clear_core.pooled import _masks_by_query

    pool_last_layer(model.model)
    config._attn_implementation = "flash_attention_2"
    assert not _masks_by_query(find_layer_stack(model.model)[1][-1])  # so its forward runs the full block
