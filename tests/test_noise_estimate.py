"""The noise estimate tells the truth: calibrated flags, a noise matrix, a verdict, p_clean that knows clean classes."""

from __future__ import annotations

import numpy as np
import pytest

from clear_core import ClearConfig, TextClassificationData, TrainerCallback, TrainingConfig, train
from clear_core.confident import check_labels
from clear_core.data import stratified_holdout
from clear_core.p_clean import P_MAX, P_MIN, fit_mixture, p_clean_by_class
from clear_core.reliability import assess
from clear_core.synthetic import symmetric_noise

from .conftest import toy_texts

# off-diagonal mass of the noise matrix vs the flagged fraction: prune_by_noise_rate removes the
# joint's off-diagonal counts, less cleanlab's rule that never flags a row whose argmax is its given label
MATRIX_FLAG_TOLERANCE = 0.05


class _Warnings(TrainerCallback):
    def __init__(self):
        self.seen = []

    def on_warning(self, state, control, warning):
        self.seen.append(warning)


def _train(labels, texts, gold, tiny_model_dir, callbacks=()):
    return train(TextClassificationData(texts, [str(y) for y in labels], gold_labels=[str(y) for y in gold]),
                 clear=ClearConfig(warmup_epochs=2),
                 training=TrainingConfig(epochs=4, batch_size=16, learning_rate=3e-2, max_length=32, seed=0),
                 model_path=tiny_model_dir, callbacks=list(callbacks))


@pytest.fixture(scope="module")
def clean_run(tiny_model_dir):
    texts, clean = toy_texts(240, seed=0)
    return _train(clean, texts, clean, tiny_model_dir)


@pytest.fixture(scope="module")
def noisy_run(tiny_model_dir):
    texts, clean = toy_texts(240, seed=0)
    noisy, flipped = symmetric_noise(clean, num_classes=2, rate=0.3, seed=0)
    return _train(noisy, texts, clean, tiny_model_dir), flipped


def test_a_clean_set_flags_at_most_three_percent(clean_run):
    summary = clean_run.report.summary()
    assert summary["flagged_fraction"] <= 0.03, summary["flagged_fraction"]
    assert summary["estimated_noise_rate"] <= 0.04
    assert summary["reliability"]["verdict"] == "reliable"
    # a clean class keeps one loss component, so its PEFT path stays on
    assert all(fit["components"] == 1 for fit in summary["p_clean_fits"].values())
    train_rows = np.array([s == "train" for s in clean_run.report.split])
    assert np.all(clean_run.report.p_clean[train_rows] > 0.9)


def test_known_flips_are_flagged_with_a_suggestion_and_a_reason(noisy_run):
    result, flipped = noisy_run
    report = result.report
    assert result.metrics["noise_recall"] >= 0.8 and result.metrics["noise_precision"] >= 0.8
    assert result.metrics["noise_auroc"] >= 0.95
    flagged = report.flagged
    assert flagged.any() and np.all(report.suggested[flagged] != report.given[flagged])
    assert all(reason for reason in report.flag_reason)
    for i in np.flatnonzero(flagged):
        assert report.flag_reason[i].startswith(
            f"the passes' mean probabilities favour '{report.label_names[report.suggested[i]]}'")
    kept = [r for r, f in zip(report.flag_reason, flagged) if not f]
    assert all(r.endswith(": kept") for r in kept)
    np.testing.assert_allclose(report.suggested_confidence,
                               report.estimate.probs[np.argsort(np.concatenate(
                                   [np.flatnonzero(np.array(report.split) == "train"),
                                    np.flatnonzero(np.array(report.split) == "validation")]))][
                                   np.arange(len(report)), report.suggested], atol=1e-9)


def test_noise_matrix_sums_to_one_and_agrees_with_the_flags(noisy_run):
    result, flipped = noisy_run
    summary = result.report.summary()
    joint = np.array(summary["noise_matrix"]["joint"])
    assert joint.shape == (2, 2) and abs(joint.sum() - 1.0) < 1e-9 and (joint >= 0).all()
    off_diagonal = 1.0 - np.trace(joint)
    assert summary["estimated_noise_rate"] == pytest.approx(off_diagonal)
    assert abs(off_diagonal - summary["flagged_fraction"]) <= MATRIX_FLAG_TOLERANCE
    assert abs(off_diagonal - flipped.mean()) <= 0.05  # a calibrated estimate, not the flagged fraction
    assert summary["flagged"] == int(result.report.flagged.sum())


def test_held_out_rows_are_in_the_report_and_scored(noisy_run):
    result, _ = noisy_run
    records = result.report.to_records()
    assert len(records) == 240 and sorted(r["row_index"] for r in records) == list(range(240))
    held = [r for r in records if r["split"] == "validation"]
    assert len(held) == 24 and all(r["p_clean"] is None and r["p_clean_history"] == [] for r in held)
    assert all(0.0 <= r["label_quality"] <= 1.0 and r["flag_reason"] for r in held)
    assert sorted(r["rank"] for r in records) == list(range(1, 241))


def test_shuffled_labels_give_not_reliable_no_flags_and_a_warning(tiny_model_dir):
    texts, clean = toy_texts(240, seed=0)
    shuffled = np.random.default_rng(5).permutation(clean)
    warnings = _Warnings()
    result = _train(shuffled, texts, clean, tiny_model_dir, [warnings])
    summary = result.report.summary()
    assert summary["reliability"]["verdict"] == "not reliable" and summary["reliability"]["reasons"]
    assert summary["flagged"] == 0 and summary["flags_withheld"] and summary["candidates"] > 0
    assert np.isfinite(result.report.label_quality).all()  # rows keep their scores
    assert [w["stage"] for w in warnings.seen] == ["after_warmup", "end"] == [w["stage"] for w in result.warnings]
    assert "learning_rate" in warnings.seen[0]["message"] and "majority-class rate" in warnings.seen[0]["message"]
    assert all(r.startswith("flag withheld") or r.endswith(": kept") for r in result.report.flag_reason)


def test_flags_can_be_asked_for_anyway(tiny_model_dir):
    texts, clean = toy_texts(240, seed=0)
    shuffled = np.random.default_rng(5).permutation(clean)
    result = train(TextClassificationData(texts, [str(y) for y in shuffled]),
                   clear=ClearConfig(warmup_epochs=2, flag_when_unreliable=True),
                   training=TrainingConfig(epochs=4, batch_size=16, learning_rate=3e-2, max_length=32, seed=0),
                   model_path=tiny_model_dir)
    summary = result.report.summary()
    assert summary["reliability"]["verdict"] == "not reliable" and summary["flagged"] > 0
    assert not summary["flags_withheld"]


def test_unimodal_losses_keep_one_component_and_bimodal_get_two():
    rng = np.random.default_rng(0)
    skewed = rng.gamma(1.0, 0.2, size=600)  # clean rows: one skewed mode that BIC alone would split
    p, fit = fit_mixture(skewed)
    assert fit.components == 1 and np.all(p == P_MAX)
    bimodal = np.concatenate([rng.gamma(2.0, 0.1, 500), 3.0 + rng.gamma(2.0, 0.2, 120)])
    p, fit = fit_mixture(bimodal)
    assert fit.components == 2 and fit.ashman_d > 2 and 0.1 < fit.noisy_weight < 0.3
    assert p[:500].mean() > 0.95 and p[500:].mean() < 0.05
    assert P_MIN <= p.min() and p.max() <= P_MAX and 0.0 < p.min() and p.max() < 1.0  # never exactly 0 or 1


def test_a_class_of_five_rows_is_not_collapsed():
    rng = np.random.default_rng(2)
    big = np.concatenate([rng.gamma(2.0, 0.05, 300), 3.0 + rng.gamma(2.0, 0.2, 60)])
    rare = 2.2 + rng.normal(0.0, 0.05, 5)  # slowly learned, clean: high losses, all alike
    losses = np.concatenate([big, rare])
    groups = np.array([0] * 360 + [1] * 5)
    p, fits = p_clean_by_class(losses, groups=groups)
    assert fits[1].borrowed and fits[1].rows == 5
    assert p[-5:].min() > 0.5, p[-5:]  # judged against its own median, not class 0's loss level
    assert p[300:360].mean() < 0.1 and p[:300].mean() > 0.9


def test_the_holdout_is_stratified_and_keeps_every_class_in_training():
    given = np.array([0] * 90 + [1] * 9 + [2] * 1)
    train_idx, held_idx = stratified_holdout(given, 0.1, seed=0)
    assert sorted(np.concatenate([train_idx, held_idx]).tolist()) == list(range(100))
    assert np.bincount(given[held_idx], minlength=3).tolist() == [9, 1, 0]
    assert set(given[train_idx]) == {0, 1, 2}
    with pytest.raises(ValueError, match="validation_fraction=0.7"):
        stratified_holdout(given, 0.7, seed=0)


def test_check_labels_validates_its_input_and_explains_rows():
    probs = np.array([[0.9, 0.1], [0.05, 0.95], [0.2, 0.8], [0.9, 0.1]])
    with pytest.raises(ValueError, match="sum to 1"):
        check_labels(np.array([0, 1, 1, 0]), probs * 2, ["a", "b"])
    with pytest.raises(ValueError, match="integer classes"):
        check_labels(np.array([0, 1, 2, 0]), probs, ["a", "b"])
    check = check_labels(np.array([0, 1, 1, 0]), probs, ["a", "b"])
    assert check.reasons[0] == "given label 'a' is the most likely (0.90): kept"
    assert abs(check.joint.sum() - 1) < 1e-9


def test_verdict_needs_agreement_clearly_above_the_majority_rate():
    given = np.array([0] * 60 + [1] * 40)
    assert not assess(given, np.zeros(100, int), train_loss=0.2, num_classes=2, evidence="held-out").reliable
    good = assess(given, given.copy(), train_loss=0.2, num_classes=2, evidence="held-out")
    assert good.reliable and good.skill == pytest.approx(1.0)
    flat = assess(given, given.copy(), train_loss=0.69, num_classes=2, evidence="held-out")
    assert not flat.reliable and "ln K" in flat.reasons[0]


def test_no_warm_up_means_no_false_warning(tiny_model_dir):
    texts, clean = toy_texts(240, seed=0)
    result = train(TextClassificationData(texts, [str(y) for y in clean]), clear=ClearConfig(warmup_epochs=0),
                   training=TrainingConfig(epochs=4, batch_size=16, learning_rate=3e-2, max_length=32, seed=0),
                   model_path=tiny_model_dir)
    assert result.warnings == [] and result.report.summary()["reliability"]["reliable"]
    assert result.dynamics.epochs[0] == 0 and result.dynamics.summed == result.dynamics.passes - 1


def test_a_resumed_run_keeps_its_warnings_and_does_not_repeat_them(tiny_model_dir, tmp_path):
    texts, clean = toy_texts(240, seed=0)
    data = TextClassificationData(texts, [str(y) for y in np.random.default_rng(5).permutation(clean)])
    clear = ClearConfig(warmup_epochs=2)
    training = TrainingConfig(epochs=4, batch_size=16, learning_rate=3e-2, max_length=32, seed=0,
                              checkpoint_every_steps=5)

    class StopInEpoch4(TrainerCallback):
        def on_step_end(self, state, control):
            if state.epoch == 3 and state.step_in_epoch == 7:
                control.should_training_stop = True

    from clear_core import TrainingCancelled

    with pytest.raises(TrainingCancelled):
        train(data, clear=clear, training=training, model_path=tiny_model_dir, checkpoint_dir=tmp_path,
              callbacks=[StopInEpoch4()])
    seen = _Warnings()
    resumed = train(data, clear=clear, training=training, model_path=tiny_model_dir, checkpoint_dir=tmp_path,
                    resume_from=tmp_path, callbacks=[seen])
    assert [w["stage"] for w in resumed.warnings] == ["after_warmup", "end"]
    assert [w["stage"] for w in seen.seen] == ["end"]  # the warm-up warning was announced before the stop


def test_few_held_out_rows_can_still_contradict_an_in_sample_verdict():
    from clear_core.reliability import contradicted_by

    given = np.array([0, 1] * 30)
    in_sample = assess(given, given.copy(), train_loss=0.1, num_classes=2, evidence="in-sample")
    assert in_sample.reliable
    held = np.array([0, 1, 0, 1, 0, 1])
    assert contradicted_by(in_sample, held, held.copy()).reliable
    verdict = contradicted_by(in_sample, held, np.zeros(6, int))
    assert not verdict.reliable and "6 held-out rows" in verdict.reasons[-1]


def test_a_class_with_no_rows_is_never_suggested():
    probs = np.array([[0.2, 0.1, 0.7]] * 3 + [[0.1, 0.2, 0.7]] * 3)
    check = check_labels(np.array([0, 1, 0, 1, 0, 1]), probs, ["a", "b", "unused"])
    assert not np.any(check.suggested[check.flagged] == 2)


def test_holdout_rounds_half_up_and_never_takes_over_half_a_class():
    given = np.array([0] * 3 + [1] * 5 + [2] * 15 + [3] * 25)
    _, held = stratified_holdout(given, 0.5, seed=0)
    assert np.bincount(given[held]).tolist() == [1, 2, 7, 12]
    _, held = stratified_holdout(given, 0.1, seed=0)
    assert np.bincount(given[held], minlength=4).tolist() == [0, 1, 2, 3]
