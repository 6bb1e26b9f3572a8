"""scripts/demo_client.py's scoring of a noise report against the sample's ground truth, on a fake report
in the service's CSV form (every dataset row, held-out ones too, in rank order): precision, recall and the
true noise rate over all rows, the lines it prints, and the refusal of a report that misses rows."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.clients import fake_report

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    """The demo client as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("demo_client", ROOT / "scripts" / "demo_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _service_csv(train: pd.DataFrame, flagged: np.ndarray, held_out: np.ndarray) -> pd.DataFrame:
    """The report as the demo reads it back from /noise-report.csv: flagged rows first, shuffled row order."""
    frame = pd.DataFrame({"row_index": np.arange(len(train)), "flagged": flagged,
                          "split": np.where(held_out, "validation", "train")})
    frame = frame.sort_values("flagged", ascending=False, kind="stable").assign(rank=lambda f: range(1, len(f) + 1))
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


def test_the_report_is_scored_over_every_row_held_out_ones_too(demo):
    train = pd.DataFrame({"label": [0, 1, 2, 0, 1, 2, 0, 1, 2, 0], "gt": [0, 1, 0, 0, 2, 2, 1, 1, 2, 0]})
    noisy = (train["label"] != train["gt"]).to_numpy()  # rows 2, 4, 6
    flagged = np.array([False, False, True, False, True, False, False, True, False, False])  # 2 hits, 1 miss
    held_out = np.arange(10) % 5 == 4  # row 4, a hit, is a validation row
    scores = demo.report_scores(_service_csv(train, flagged, held_out), train)
    assert scores == {"rows": 10, "held_out": 2, "flagged": 3, "noisy": 3, "true_noise_rate": 0.3,
                      "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3)}
    lines = demo.report_lines(scores, fake_report.summary())
    assert lines[0] == "noise report: 3 of 10 rows flagged (8 trained on, 2 held out); 3 labels really wrong"
    assert lines[1] == "estimated noise rate 0.120 (the report's noise matrix), true noise rate 0.300 (label != gt)"
    assert lines[2] == "noise report precision 0.667, recall 0.667 (against gt, all 10 rows)"
    assert lines[3].startswith("verdict: reliable (held-out agreement 0.850")


def test_a_withheld_report_has_no_precision_and_says_why(demo):
    train = pd.DataFrame({"label": [0, 1, 1, 0], "gt": [0, 1, 0, 0]})
    scores = demo.report_scores(_service_csv(train, np.zeros(4, bool), np.array([0, 0, 0, 1], bool)), train)
    assert scores["precision"] is None and scores["recall"] == 0.0
    lines = demo.report_lines(scores, fake_report.summary(reliable=False))
    assert "noise report precision n/a (nothing flagged), recall 0.000" in lines[2]
    assert lines[3].startswith("verdict: not reliable - flags withheld")
    assert f"  try: {fake_report.ADVICE}" in lines


def test_a_report_without_every_row_is_refused(demo):
    train = pd.DataFrame({"label": [0, 1, 1], "gt": [0, 1, 0]})
    report = _service_csv(train, np.zeros(3, bool), np.zeros(3, bool)).iloc[:2]
    with pytest.raises(ValueError, match="2 rows for 3 dataset rows"):
        demo.report_scores(report, train)
