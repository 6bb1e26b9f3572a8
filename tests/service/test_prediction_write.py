"""Prediction rows written in columns (COPY on Postgres, bulk inserts on SQLite) store exactly what one ORM insert
per row stored before: floats, the probabilities' JSON text, nulls and strings, with and without labels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import Text, cast, insert, select

import worker.predict as predict_module
from app.models import Job, PredictionRow, Tenant
from worker.predict import PredictionInputs, prediction_columns, withhold_if_unreliable, write_rows

LABELS = ["neg", "pos", "mixed"]


def _inputs(n: int, labelled: bool) -> PredictionInputs:
    rng = np.random.default_rng(3)
    texts = [f"row {i}, with \"quotes\"\nand a new line" if i % 7 == 0 else "" if i % 11 == 0 else f"text {i}"
             for i in range(n)]
    return PredictionInputs(list(range(100, 100 + n)), [None if i % 5 == 0 else f"id-{i}" for i in range(n)], texts,
                            [None if i % 3 else f"pair {i}" for i in range(n)],
                            [LABELS[k] for k in rng.integers(0, 3, n)] if labelled else None)


def _check(n: int):
    rng = np.random.default_rng(4)
    return SimpleNamespace(flagged=rng.random(n) < 0.3, suggested=rng.integers(0, 3, n),
                           suggested_confidence=rng.random(n), label_quality=rng.random(n) / 3,
                           reasons=[f"reason {i}" for i in range(n)])


def _one_dict_per_row(run_id: str, columns) -> list[dict]:
    """The reference: the values the writer of before put in one dict per row."""
    out = []
    for i in range(len(columns)):
        record = {"run_id": run_id, "row_index": int(columns.row_index[i]), "tenant_id": "t-pred",
                  "row_id": columns.row_id[i], "text": columns.text[i],
                  "text_pair": columns.text_pair[i] if columns.text_pair is not None else None,
                  "given_label": None, "predicted_label": LABELS[int(columns.predicted[i])],
                  "probabilities": [float(p) for p in columns.probabilities[i]], "flagged": None,
                  "suggested_label": None, "suggested_confidence": None, "label_quality": None, "flag_reason": None}
        if columns.given_label is not None:
            record.update(given_label=columns.given_label[i], flagged=bool(columns.flagged[i]),
                          suggested_label=LABELS[int(columns.suggested[i])],
                          suggested_confidence=float(columns.suggested_confidence[i]),
                          label_quality=float(columns.label_quality[i]), flag_reason=columns.flag_reason[i])
        out.append(record)
    return out


def _stored(session, run_id: str) -> list[dict]:
    names = [c for c in PredictionRow.__table__.columns if c.name != "run_id"]
    query = (select(*names, cast(PredictionRow.probabilities, Text).label("probabilities_text"))
             .where(PredictionRow.run_id == run_id).order_by(PredictionRow.row_index))
    return [dict(row) for row in session.execute(query).mappings()]


@pytest.mark.parametrize("labelled", [True, False])
def test_columns_store_what_one_insert_per_row_stored(either_database, labelled, monkeypatch):
    monkeypatch.setattr(predict_module, "COPY_CHUNK_ROWS", 16)  # several chunks on Postgres
    monkeypatch.setattr(predict_module, "INSERT_BATCH", 16)  # and on SQLite
    n = 60
    probs = np.random.default_rng(5).dirichlet(np.ones(3), n).astype(np.float32)
    columns = prediction_columns(_inputs(n, labelled), LABELS, probs, _check(n) if labelled else None)
    with either_database() as session:
        session.add(Tenant(id="t-pred"))
        session.flush()
        for run_id in ("run-new", "run-old"):
            session.add(Job(id=run_id, tenant_id="t-pred", kind="predict", base_model="tiny-bert", method="lora",
                            routed=True, clear_config={}, training_config={}, status="running", attempt=1))
        session.commit()
        session.execute(insert(PredictionRow), _one_dict_per_row("run-old", columns))
        session.commit()
        assert write_rows(session, "run-new", 1, columns, {"rows": n})
        new, old = _stored(session, "run-new"), _stored(session, "run-old")
    assert len(new) == n and new == old
    assert new[0]["text"].startswith("row 0, with \"quotes\"\nand") and new[11]["text"] == ""
    assert new[0]["row_id"] is None and new[1]["row_id"] == "id-1" and new[1]["text_pair"] is None
    assert all(abs(sum(row["probabilities"]) - 1) < 1e-5 for row in new)
    assert all((row["flagged"] is None) != labelled for row in new)


def test_withheld_flags_are_cleared_in_the_columns_with_the_reason():
    n = 20
    check = _check(n)
    columns = prediction_columns(_inputs(n, True), LABELS, np.full((n, 3), 1 / 3), check)
    summary = {"flagged": int(check.flagged.sum()), "flagged_fraction": 0.3, "flagged_per_class": {"neg": 2}}
    verdict = {"reliability": {"verdict": "not reliable", "reasons": ["accuracy at chance"]}}
    assert withhold_if_unreliable(summary, columns, verdict, {})
    assert not columns.flagged.any() and check.flagged.any()  # the check's own array is left as it was
    assert columns.flag_reason == [columns.flag_reason[0]] * n and "accuracy at chance" in columns.flag_reason[0]
    assert summary["flagged"] == 0 and summary["candidates"] == int(check.flagged.sum())
