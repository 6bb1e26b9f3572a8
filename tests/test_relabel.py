"""ClearConfig.relabel: flagged rows with a confident suggestion train toward it, routed on; off changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clear_core import ClearConfig, TextClassificationData, TrainerCallback, TrainingCancelled, TrainingConfig, train
from clear_core.p_clean import P_MAX
from clear_core.relabel import Relabeller
from clear_core.synthetic import symmetric_noise

from .conftest import toy_texts

# 216 training rows, 14 steps an epoch; the suggestions' mean probability passes 0.7 from epoch 4 on
TRAINING = dict(epochs=5, batch_size=16, learning_rate=3e-2, max_length=32, seed=0)


def _noisy_data(n=240, rate=0.3, seed=0):
    texts, clean = toy_texts(n, seed=seed)
    noisy, flipped = symmetric_noise(clean, num_classes=2, rate=rate, seed=seed)
    return TextClassificationData(texts, noisy.tolist(), gold_labels=clean.tolist()), texts, flipped


def _run(data, tiny_model_dir, **clear):
    return train(data, clear=ClearConfig(warmup_epochs=2, **clear), training=TrainingConfig(**TRAINING),
                 model_path=tiny_model_dir)


@pytest.fixture(scope="module")
def noisy(tiny_model_dir):
    return _noisy_data()


@pytest.fixture(scope="module")
def hard_run(noisy, tiny_model_dir):
    return _run(noisy[0], tiny_model_dir, relabel="hard", relabel_threshold=0.7)


def test_off_trains_exactly_as_before_relabel_existed(tiny_model_dir):
    """Same seed, relabel='off': the losses and logits of the code before relabel (commit 4010eff).

    The numbers were recorded with that code on this tiny seeded model; the tolerance only
    absorbs float differences between CPUs (on the recording machine they are bit-identical). That code
    drew random batches and ran unmerged fp32 passes, so length bucketing, the merged pass, CPU bf16 and the int8
    routing pass are off here, and so is the pooled-row last block (its attention dropout draws another mask).
    """
    texts, clean = toy_texts(120, seed=0)
    noisy, _ = symmetric_noise(clean, num_classes=2, rate=0.3, seed=0)
    data = TextClassificationData(texts, noisy.tolist(), gold_labels=clean.tolist())
    result = train(data, clear=ClearConfig(warmup_epochs=1, relabel="off"),
                   training=TrainingConfig(epochs=3, batch_size=16, learning_rate=3e-2, max_length=32, seed=1,
                                           length_bucketing=False, merge_for_pass=False, precision="fp32",
                                           pass_precision="same", pooled_last_layer=False),
                   model_path=tiny_model_dir)
    np.testing.assert_allclose([h["train_loss"] for h in result.history], [0.69291527, 0.68344506, 0.64640032],
                               rtol=1e-4)
    assert not any(k.startswith("relabel") for h in result.history for k in h)


def test_off_equals_a_relabel_that_selects_no_row(noisy, tiny_model_dir):
    """The relabel machinery itself (passes, cleanlab, batch hook) perturbs nothing when it selects no row."""
    data, texts, _ = noisy
    off = _run(data, tiny_model_dir)
    none = _run(data, tiny_model_dir, relabel="hard", relabel_threshold=1.0)
    assert [h["relabelled_rows"] for h in none.history if h["phase"] == "routed"] == [0, 0, 0]
    assert [h["train_loss"] for h in none.history] == [h["train_loss"] for h in off.history]
    np.testing.assert_array_equal(none.model.predict_logits(texts), off.model.predict_logits(texts))
    np.testing.assert_array_equal(none.report.label_quality, off.report.label_quality)


def test_hard_relabel_corrects_the_flipped_rows_after_warm_up(hard_run, noisy):
    _, _, flipped = noisy
    history = hard_run.history
    assert all("relabelled_rows" not in h for h in history[:2])  # warm-up: no decision yet
    routed = history[2:]
    assert all(h["relabelled_rows"] >= 0 for h in routed)
    last = routed[-1]
    train_flipped = int(flipped[np.array(hard_run.report.split) == "train"].sum())  # report rows: caller's order
    assert last["relabelled_rows"] >= 0.6 * train_flipped, (last, train_flipped)
    assert last["relabel_precision"] >= 0.9
    assert hard_run.metrics["relabel_precision"] == last["relabel_precision"]
    assert hard_run.metrics["train_gold_accuracy"] >= 0.95
    # the report still judges the given labels: the relabelled (flipped) rows stay flagged
    assert hard_run.metrics["noise_recall"] >= 0.8 and hard_run.metrics["noise_precision"] >= 0.8


def test_soft_relabel_trains_toward_the_mean_prediction(noisy, tiny_model_dir):
    result = _run(noisy[0], tiny_model_dir, relabel="soft", relabel_threshold=0.7)
    last = result.history[-1]
    assert last["relabelled_rows"] > 0 and last["relabel_precision"] >= 0.9
    assert np.isfinite([h["train_loss"] for h in result.history]).all()
    assert result.metrics["train_gold_accuracy"] >= 0.95


class _StopAt(TrainerCallback):
    def __init__(self, epoch, step):
        self.epoch, self.step = epoch, step

    def on_step_end(self, state, control):
        if state.epoch == self.epoch and state.step_in_epoch == self.step:
            control.should_training_stop = True


def test_resume_mid_epoch_with_relabel_matches_an_uninterrupted_run(noisy, hard_run, tiny_model_dir, tmp_path):
    data, texts, _ = noisy
    clear = ClearConfig(warmup_epochs=2, relabel="hard", relabel_threshold=0.7)
    training = TrainingConfig(**TRAINING, checkpoint_every_steps=5)
    with pytest.raises(TrainingCancelled):  # epoch 5 (index 4) starts at step 56; last checkpoint: step 60
        train(data, clear=clear, training=training, model_path=tiny_model_dir, checkpoint_dir=tmp_path,
              callbacks=[_StopAt(4, 7)])
    resumed = train(data, clear=clear, training=training, model_path=tiny_model_dir, checkpoint_dir=tmp_path,
                    resume_from=tmp_path)
    assert resumed.history[-1]["relabelled_rows"] > 0  # the resumed epoch relabels
    for key in ("train_loss", "relabelled_rows", "relabel_precision"):
        assert [h.get(key) for h in resumed.history] == pytest.approx([h.get(key) for h in hard_run.history]), key
    np.testing.assert_allclose(resumed.model.predict_logits(texts), hard_run.model.predict_logits(texts), atol=1e-6)
    np.testing.assert_array_equal(resumed.report.flagged, hard_run.report.flagged)


def _estimator(probs, given, *, reliable=True):
    probs, given = np.asarray(probs, float), np.asarray(given)
    return SimpleNamespace(given=given, held_given=None, summed=1, mean_probs=probs, held_prob_sum=None,
                           learning_check=lambda: SimpleNamespace(reliable=reliable))


# rows 0-3 given 0, rows 4-7 given 1; row 3 is confidently class 1, row 2 only weakly
PROBS = [[0.9, 0.1], [0.95, 0.05], [0.4, 0.6], [0.05, 0.95], [0.1, 0.9], [0.2, 0.8], [0.05, 0.95], [0.1, 0.9]]
GIVEN = [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_a_batch_swaps_only_the_relabelled_rows_targets_and_routes_them_on(mode):
    policy = Relabeller(mode, threshold=0.9, label_names=["a", "b"])
    policy.update(_estimator(PROBS, GIVEN))
    assert policy.mask.tolist() == [False, False, False, True, False, False, False, False]
    idx = np.array([3, 0, 2])
    y, p = torch.tensor([0, 0, 0]), torch.tensor([0.01, 0.9, 0.2])
    targets, routed = policy.batch(idx, y, p)
    assert routed.tolist() == pytest.approx([P_MAX, 0.9, 0.2]) and p.tolist() == pytest.approx([0.01, 0.9, 0.2])
    if mode == "hard":
        assert targets.tolist() == [1, 0, 0]
    else:
        np.testing.assert_allclose(targets.numpy(), [[0.05, 0.95], [1.0, 0.0], [1.0, 0.0]], atol=1e-7)
    untouched = policy.batch(np.array([0, 1]), y[:2], p[:2])
    assert untouched[0] is y[:2] or torch.equal(untouched[0], y[:2])
    assert policy.metrics(np.array([0, 0, 1, 1, 1, 1, 1, 1])) == {"relabelled_rows": 1, "relabel_precision": 1.0}
    assert policy.metrics(None) == {"relabelled_rows": 1}


def test_no_relabel_while_the_model_has_not_learned_unless_asked():
    withheld = Relabeller("hard", threshold=0.9, label_names=["a", "b"])
    withheld.update(_estimator(PROBS, GIVEN, reliable=False))
    assert not withheld.mask.any() and withheld.metrics(None) == {"relabelled_rows": 0}
    anyway = Relabeller("hard", threshold=0.9, label_names=["a", "b"], flag_when_unreliable=True)
    anyway.update(_estimator(PROBS, GIVEN, reliable=False))
    assert anyway.mask.sum() == 1
    off = Relabeller("off", threshold=0.9, label_names=["a", "b"])
    off.update(_estimator(PROBS, GIVEN))
    y = torch.tensor([0, 0])
    assert off.mask is None and off.batch(np.array([3, 0]), y, None)[0] is y and off.metrics(np.zeros(8)) == {}


@pytest.mark.parametrize("make, match", [
    (lambda: ClearConfig(relabel="maybe"), "relabel='maybe' is not supported"),
    (lambda: ClearConfig(relabel=True), "relabel=True must be a string"),
    (lambda: ClearConfig(relabel_threshold=0.0), r"relabel_threshold=0.0 is out of range: give a value in \(0.0, 1.0\]"),
    (lambda: ClearConfig(relabel_threshold=1.5), "relabel_threshold=1.5 is out of range"),
    (lambda: ClearConfig(relabel_threshold="0.9"), "relabel_threshold='0.9' must be a finite number"),
    (lambda: ClearConfig(relabel="hard", routed=False), "relabel='hard' needs routed=true"),
    (lambda: ClearConfig(relabel="soft", method="full"), "relabel='soft' needs routed=true"),
    (lambda: Relabeller("maybe", threshold=0.9, label_names=["a"]), "relabel='maybe'"),
])
def test_relabel_settings_are_validated(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_relabel_settings_round_trip_and_bench_overrides_type_them():
    from bench.common import parse_overrides, variant_name
    from bench.runs import run_configs

    overrides = parse_overrides(["relabel=soft", "relabel_threshold=0.8"])
    assert overrides == {"relabel": "soft", "relabel_threshold": 0.8}
    assert variant_name(overrides) == "relabel=soft,relabel_threshold=0.8"
    clear = ClearConfig(**overrides)
    assert ClearConfig.from_dict(clear.to_dict()) == clear
    routed, _ = run_configs("lora", "routed", overrides, epochs=3, training={})
    plain, _ = run_configs("lora", "plain", overrides, epochs=3, training={})
    assert routed.relabel == "soft" and plain.relabel == "off" and not plain.routed
    # a checkpoint or adapter written before relabel existed still loads, with relabel off
    old = {k: v for k, v in ClearConfig().to_dict().items() if not k.startswith("relabel")}
    assert ClearConfig.from_dict(old).relabel == "off"


def test_the_robustness_benchmark_runs_and_labels_a_relabel_arm(tiny_model_dir, tmp_path, capsys):
    """``--variant relabel=hard`` is one more routed arm; ``--clear relabel=...`` leaves the plain arm plain."""
    import json

    import pandas as pd

    from bench import robustness

    texts, gt = toy_texts(72, num_classes=3, seed=0)
    label = gt.copy()
    label[::7] = (label[::7] + 1) % 3
    pd.DataFrame({"label": label, "gt": gt, "text": texts}).to_csv(tmp_path / "train.csv", index=False)
    test_texts, test_gt = toy_texts(24, num_classes=3, seed=1)
    pd.DataFrame({"label": test_gt, "gt": test_gt, "text": test_texts}).to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "robustness.json"
    threads = torch.get_num_threads()
    try:
        robustness.main(["--data", str(tmp_path), "--model", str(tiny_model_dir), "--out", str(out),
                         "--max-length", "16", "--batch-size", "32", "--learning-rate", "1e-2", "--threads", "1",
                         "--methods", "lora", "--noise", "sym40", "--seeds", "0", "--epochs", "2",
                         "--clear", "warmup_epochs=1", "--clear", "relabel_threshold=0.5",
                         "--variant", "relabel=hard", "--no-ceiling", "--no-full"])
    finally:
        torch.set_num_threads(threads)
    runs = {(r["arm"], r["variant"]): r for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == {("plain", "-"), ("routed", "default"), ("routed", "relabel=hard")}
    assert runs[("plain", "-")]["clear"]["relabel"] == "off"
    assert runs[("routed", "relabel=hard")]["clear"]["relabel"] == "hard"
    assert "relabelled_rows" in runs[("routed", "relabel=hard")]["curves"][-1]
    assert runs[("routed", "relabel=hard")]["curves"][-1]["relabelled_rows"] is not None
    assert runs[("routed", "default")]["curves"][-1]["relabelled_rows"] is None
    assert "| relabel=hard |" in capsys.readouterr().out
