"""The benchmark scripts run end to end on a tiny model and tiny data, so they cannot rot.

Each script's ``main`` trains for one or two epochs of a few steps, prints its markdown
tables and writes its JSON; the tests check the JSON's keys and the tables, not the numbers
(timing and quality belong to the benchmarks themselves).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from .conftest import toy_texts


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    """A folder with train.csv (3 classes, about 15 % flipped labels) and test.csv."""
    folder = tmp_path_factory.mktemp("bench-data")
    texts, gt = toy_texts(72, num_classes=3, seed=0)
    label = gt.copy()
    label[::7] = (label[::7] + 1) % 3
    pd.DataFrame({"label": label, "gt": gt, "text": texts}).to_csv(folder / "train.csv", index=False)
    test_texts, test_gt = toy_texts(24, num_classes=3, seed=1)
    pd.DataFrame({"label": test_gt, "gt": test_gt, "text": test_texts}).to_csv(folder / "test.csv", index=False)
    return folder


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: a tiny model's steps are dominated by thread sync on a busy CPU; restored after."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _common(bench_data, tiny_model_dir, out):
    return ["--data", str(bench_data), "--model", str(tiny_model_dir), "--out", str(out), "--max-length", "16",
            "--batch-size", "32", "--learning-rate", "1e-2", "--heldout-frac", "0.2", "--threads", "1"]


def _is_table(text: str) -> bool:
    return "| --- |" in text


def test_robustness_grid_writes_curves_and_tables(bench_data, tiny_model_dir, tmp_path, capsys):
    from bench import robustness

    out = tmp_path / "robustness.json"
    robustness.main(_common(bench_data, tiny_model_dir, out) + [
        "--methods", "lora", "--noise", "sym40", "--seeds", "0", "--epochs", "2", "--clear", "warmup_epochs=1",
        "--variant", "gmm_per_class=true"])
    payload = json.loads(out.read_text())
    assert {"settings", "data", "environment", "runs", "tables", "wall_time_s"} <= set(payload)
    arms = {(r["noise"], r["arm"], r["variant"]) for r in payload["runs"]}
    assert ("gt", "ceiling", "-") in arms and ("sym40", "full", "-") in arms
    assert ("sym40", "routed", "gmm_per_class=True") in arms and ("sym40", "plain", "-") in arms
    run = payload["runs"][0]
    assert {"curves", "last", "best", "report", "train_time_s", "clear", "training"} <= set(run)
    assert len(run["curves"]) == 2 and {"test_accuracy", "eval_accuracy"} <= set(run["curves"][0])
    printed = capsys.readouterr().out
    assert _is_table(printed) and payload["tables"]["results"] in printed and "routed − plain" in printed


def test_detection_grades_cases_detectors_and_scoring_rules(bench_data, tiny_model_dir, tmp_path, capsys):
    from bench import detection

    out = tmp_path / "detection"
    tables = detection.main(["--quick", "--data", str(bench_data / "train.csv"), "--model", str(tiny_model_dir),
                             "--cases", "real,shuffled", "--seeds", "0", "--rows", "72", "--epochs", "2",
                             "--warmup", "1", "--max-length", "16", "--batch-size", "32", "--learning-rate", "1e-2",
                             "--cleanlab", "--folds", "2", "--out-dir", str(out)])
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == sorted(["quick_real_clear_seed0.json", "quick_real_cleanlab_seed0.json",
                            "quick_shuffled_clear_seed0.json", "quick_shuffled_cleanlab_seed0.json"])
    run = json.loads((out / "quick_real_clear_seed0.json").read_text())
    assert {"flagged_fraction", "estimated_noise_rate", "true_noise_rate", "auroc", "f1", "verdict",
            "noise_matrix", "rules_auroc_train_rows", "wall_time_s"} <= set(run)
    assert run["rows"] == 72 and abs(sum(map(sum, run["noise_matrix"]["joint"])) - 1) < 1e-6
    assert "self_confidence (mean of passes)" in run["rules_auroc_train_rows"]
    printed = capsys.readouterr().out
    assert _is_table(printed) and tables["detection"] in printed and "| shuffled | clear |" in tables["detection"]
    again = detection.main(["--table", "--quick", "--out-dir", str(out)])  # aggregation alone trains nothing
    assert again["detection"] == tables["detection"]


def test_cost_measures_every_variant_in_one_process(bench_data, tiny_model_dir, tmp_path, capsys):
    from bench import cost

    out = tmp_path / "cost.json"
    cost.main(_common(bench_data, tiny_model_dir, out) + ["--methods", "lora,prefix", "--rows", "40", "--steps", "1",
                                                          "--repeats", "2", "--device", "cpu"])
    payload = json.loads(out.read_text())
    assert {"steps", "clean_pass", "memory_measure", "tables", "environment"} <= set(payload)
    variants = {(r["method"], r["variant"]) for r in payload["steps"]}
    assert {("lora", "unrouted"), ("lora", "stock peft"), ("lora", "routed"), ("lora", "frozen copy (reference)"),
            ("prefix", "routed warm-up")} <= variants
    assert all(r["rows_per_s"] > 0 and np.isfinite(r["step_ratio"]) for r in payload["steps"])
    assert {r["variant"] for r in payload["clean_pass"]} == {"routed", "frozen copy (reference)"}
    assert _is_table(capsys.readouterr().out)


def test_robustness_keeps_finished_runs_and_runs_one_arm(bench_data, tiny_model_dir, tmp_path):
    """--no-plain --no-ceiling --no-full runs the routed arm alone; the JSON is written after every run."""
    from bench import robustness

    out = tmp_path / "routed.json"
    robustness.main(_common(bench_data, tiny_model_dir, out) + [
        "--methods", "lora", "--noise", "sym40,real", "--seeds", "0", "--epochs", "2", "--no-plain", "--no-ceiling",
        "--no-full"])
    payload = json.loads(out.read_text())
    assert [(r["noise"], r["arm"]) for r in payload["runs"]] == [("sym40", "routed"), ("real", "routed")]
    assert payload["runs_planned"] == 2 and "| --- |" in payload["tables"]["results"]


def test_pass_batch_size_times_each_size_with_the_same_logits(bench_data, tiny_model_dir, tmp_path, capsys):
    from bench import pass_batch_size

    out = tmp_path / "pass.json"
    assert pass_batch_size.main(["--data", str(bench_data / "train.csv"), "--model", str(tiny_model_dir),
                                 "--rows", "40", "--lengths", "16", "--batch-sizes", "8,32", "--repeats", "2",
                                 "--threads", "1", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    result = payload["results"]["16"]
    assert set(result["seconds"]) == {"8", "32"} and all(len(v) == 2 for v in result["seconds"].values())
    assert result["fastest"] in (8, 32) and _is_table(capsys.readouterr().out)
