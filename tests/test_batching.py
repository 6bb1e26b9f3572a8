"""Issue 13, training that wastes nothing: length-bucketed batches, reused pass batches, merged deltas.

Checks: bucketed batches cover every row once, carry less padding than random ones, change every epoch and
are a pure function of the seed; a bucketed run resumed from a mid-epoch checkpoint ends exactly where an
uninterrupted one does; bucketing off keeps the historical random order; reused pass batches give the same
logits as fresh ones; a pass with LoRA / BitFit merged gives the unmerged logits and leaves every weight
bit-identical afterwards (also when the pass fails); pass_every_epochs=k runs the in-training pass every k-th
routed epoch only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clear_core import ClearConfig, TextClassificationData, TrainingConfig, train
from clear_core.batching import PassBatches, bucketed_batches, padded_tokens, random_batches
from clear_core.data import TokenizedTexts
from clear_core.merge import merged_deltas

from .conftest import toy_texts
from .test_core_methods import _build, _perturb


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(3.5, 0.6, n).astype(int), 5, 128)


def test_bucketed_batches_cover_every_row_once_with_less_padding():
    lengths = _lengths(5000)
    bucketed = bucketed_batches(lengths, 32, seed=7)
    assert len(bucketed) == -(-5000 // 32)
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(5000))
    assert sum(len(b) != 32 for b in bucketed) <= 1
    random = random_batches(5000, 32, seed=7)
    real = int(lengths.sum())
    assert padded_tokens(lengths, random) / real > 1.3  # what random batches waste on this mix
    assert padded_tokens(lengths, bucketed) / real < 1.05


def test_bucketed_order_is_seeded_and_changes_every_epoch():
    lengths = _lengths(3000)
    a, b = bucketed_batches(lengths, 16, seed=1), bucketed_batches(lengths, 16, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = bucketed_batches(lengths, 16, seed=2)
    assert [x.tolist() for x in a] != [x.tolist() for x in c]
    first_a = {frozenset(x.tolist()) for x in a}
    first_c = {frozenset(x.tolist()) for x in c}
    assert len(first_a & first_c) < len(first_a) // 10  # which rows share a batch changes across epochs


def test_random_batches_keep_the_historical_order():
    order = torch.randperm(100, generator=torch.Generator().manual_seed(5)).numpy()
    batches = random_batches(100, 32, seed=5)
    assert [b.tolist() for b in batches] == [order[i:i + 32].tolist() for i in range(0, 100, 32)]


@pytest.mark.parametrize("bad", [dict(lengths=np.array([], dtype=int)), dict(batch_size=0), dict(bucket_batches=0)])
def test_bucketed_batches_reject_bad_arguments(bad):
    args = dict(lengths=np.array([3, 4]), batch_size=2, bucket_batches=50) | bad
    with pytest.raises(ValueError):
        bucketed_batches(args["lengths"], args["batch_size"], seed=0, bucket_batches=args["bucket_batches"])


def _toy(n=96, seed=0):
    texts, labels = toy_texts(n, seed=seed)
    # a length mix: some rows repeated to several times their length
    texts = [t if i % 3 else " ".join([t] * (1 + i % 4)) for i, t in enumerate(texts)]
    return TextClassificationData(texts, labels)


def test_bucketed_resumed_run_equals_uninterrupted(tiny_model_dir, tmp_path):
    data = _toy()
    clear = ClearConfig(method="lora", warmup_epochs=1)
    kwargs = dict(epochs=3, batch_size=8, max_length=32, checkpoint_every_steps=5, length_bucketing=True)
    full = train(data, clear=clear, training=TrainingConfig(**kwargs), model_path=tiny_model_dir,
                 checkpoint_dir=tmp_path / "full")

    from clear_core import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, state, control):
            if state.global_step == 17:  # mid-epoch 2, past a mid-epoch checkpoint at step 15
                control.should_training_stop = True

    from clear_core.callbacks import TrainingCancelled

    with pytest.raises(TrainingCancelled):
        train(data, clear=clear, training=TrainingConfig(**kwargs), model_path=tiny_model_dir,
              checkpoint_dir=tmp_path / "cut", callbacks=[StopAt()])
    resumed = train(data, clear=clear, training=TrainingConfig(**kwargs), model_path=tiny_model_dir,
                    checkpoint_dir=tmp_path / "cut", resume_from=tmp_path / "cut")
    assert resumed.state.global_step == full.state.global_step
    np.testing.assert_array_equal(resumed.report.label_quality, full.report.label_quality)
    np.testing.assert_array_equal(resumed.report.flagged, full.report.flagged)
    for k, v in full.model.trainable_state_dict().items():
        torch.testing.assert_close(resumed.model.trainable_state_dict()[k], v, rtol=0, atol=0)


def test_pass_batches_reused_give_the_same_logits(tiny_model_dir):
    model = _build(tiny_model_dir, "lora", True)
    _perturb(model)
    texts, _ = toy_texts(70, seed=4)
    tokens = TokenizedTexts(model.tokenizer, texts, None, 32)
    fresh = model.logits_for(tokens, batch_size=16)
    cached = PassBatches(tokens, 16, max_cached_tokens=10**6)
    assert cached.cached
    first, second = model.logits_for(cached), model.logits_for(cached)
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(second, fresh)
    assert not PassBatches(tokens, 16, max_cached_tokens=10).cached  # over budget: rebuilt every pass


@pytest.mark.parametrize("method", ["lora", "bitfit", "adapter", "prefix"])
@pytest.mark.parametrize("inference", ["full", "expected"])
def test_merged_pass_matches_unmerged_and_restores_weights(tiny_model_dir, method, inference):
    if method == "prefix" and inference == "expected":
        pytest.skip("prefix tuning has one inference mode here")
    model = _build(tiny_model_dir, method, True, inference=inference)
    _perturb(model)
    before = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
    texts, _ = toy_texts(40, seed=2)
    tokens = TokenizedTexts(model.tokenizer, texts, None, 32)
    unmerged = model.logits_for(tokens, merge=False)
    merged = model.logits_for(tokens, merge=True)
    np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-5)
    after = model.model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k  # restored from the copy, bit for bit
    model.use_inference_gates()
    with torch.no_grad(), merged_deltas(model.model, model.controller.constant) as count:
        assert count > 0 if method in ("lora", "bitfit") else count == 0


def test_merge_restores_weights_when_the_pass_fails(tiny_model_dir):
    model = _build(tiny_model_dir, "lora", True)
    _perturb(model)
    before = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        with torch.no_grad(), merged_deltas(model.model, 1.0):
            raise RuntimeError("boom")
    for k, v in model.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # and the unmerged branch is on again: a training forward still sees the LoRA delta
    batch = TokenizedTexts(model.tokenizer, ["the market rose"], None, 32).batch([0])
    model.use_inference_gates()
    with torch.no_grad():
        on = model(batch)
        model.controller.set_constant(0.0)
        off = model(batch)
    assert not torch.allclose(on, off)


def test_no_merge_with_per_row_gates(tiny_model_dir):
    model = _build(tiny_model_dir, "lora", True)
    with torch.no_grad(), merged_deltas(model.model, None) as count:
        assert count == 0


def test_pass_cadence_skips_the_passes_between(tiny_model_dir):
    data = _toy(80)
    every = train(data, clear=ClearConfig(method="lora", warmup_epochs=1),
                  training=TrainingConfig(epochs=5, batch_size=8, max_length=32), model_path=tiny_model_dir)
    second = train(data, clear=ClearConfig(method="lora", warmup_epochs=1, pass_every_epochs=2),
                   training=TrainingConfig(epochs=5, batch_size=8, max_length=32), model_path=tiny_model_dir)
    assert every.dynamics.epochs == [1, 2, 3, 4, 5]
    assert second.dynamics.epochs == [1, 3, 5]  # passes before epochs 2 and 4 (0-based 1, 3) and the final one
    assert len(second.report.label_quality) == len(data)
    with pytest.raises(ValueError, match="pass_every_epochs"):
        ClearConfig(pass_every_epochs=0)
    with pytest.raises(ValueError, match="needs routed=true"):
        ClearConfig(pass_every_epochs=2, routed=False)


@pytest.mark.parametrize("method", ["lora", "bitfit", "adapter", "prefix", "full"])
@pytest.mark.parametrize("merge", [True, False])
def test_the_int8_pass_is_close_to_full_precision_and_leaves_the_model_alone(tiny_model_dir, method, merge):
    # clear_core.int8: a dynamic int8 copy of the (merged) network runs the pass; the model's own weights stay
    model = _build(tiny_model_dir, method, True)
    _perturb(model)
    before = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
    texts, _ = toy_texts(60, seed=3)
    batches = PassBatches(TokenizedTexts(model.tokenizer, texts, None, 32), 16, max_cached_tokens=10**6)
    exact, int8 = model.logits_for(batches, merge=merge), model.logits_for(batches, merge=merge, int8=True)
    assert not np.array_equal(int8, exact)  # it did run quantised
    scale = np.abs(exact).max()
    np.testing.assert_allclose(int8, exact, atol=0.15 * scale)  # a tiny model (hidden 32) with random weights
    assert np.mean(int8.argmax(1) == exact.argmax(1)) >= 0.9
    for k, v in model.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    np.testing.assert_array_equal(model.logits_for(batches, merge=merge), exact)


def test_without_dynamic_quantisation_the_int8_pass_is_the_full_precision_one(tiny_model_dir, monkeypatch, caplog):
    model = _build(tiny_model_dir, "lora", True)
    _perturb(model)
    texts, _ = toy_texts(30, seed=3)
    batches = PassBatches(TokenizedTexts(model.tokenizer, texts, None, 32), 16, max_cached_tokens=10**6)
    exact = model.logits_for(batches)
    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    monkeypatch.setattr("clear_core.int8._warned", [])
    with caplog.at_level("WARNING", logger="clear_core.int8"):
        np.testing.assert_array_equal(model.logits_for(batches, int8=True), exact)
    assert "runs in full precision" in caplog.text
    texts, labels = toy_texts(32, seed=5)  # and a run says its routing pass ran in full precision
    result = train(TextClassificationData(texts, labels.tolist()), clear=ClearConfig(warmup_epochs=1),
                   training=TrainingConfig(epochs=2, batch_size=16, max_length=32, precision="fp32",
                                           pass_precision="int8"), model_path=tiny_model_dir)
    assert result.metrics["routing_pass_precision"] == "fp32"


@pytest.mark.parametrize("pass_precision, copies", [("int8", 2), ("same", 0)])
def test_only_the_routing_passes_run_int8(tiny_model_dir, monkeypatch, pass_precision, copies):
    # epochs 3, warm-up 1: a routing pass before epochs 2 and 3; the final pass (the report) is never quantised
    import clear_core.int8 as int8

    made = []
    real = int8.int8_copy
    monkeypatch.setattr(int8, "int8_copy", lambda model: made.append(1) or real(model))
    texts, labels = toy_texts(48, seed=5)
    result = train(TextClassificationData(texts, labels.tolist()), clear=ClearConfig(warmup_epochs=1),
                   training=TrainingConfig(epochs=3, batch_size=16, max_length=32, seed=0, precision="fp32",
                                           pass_precision=pass_precision),
                   model_path=tiny_model_dir)
    assert len(made) == copies and result.report is not None
    assert result.metrics["routing_pass_precision"] == ("int8" if copies else "fp32")
    with pytest.raises(ValueError, match="pass_precision"):
        TrainingConfig(pass_precision="int4")
