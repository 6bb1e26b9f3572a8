"""The noise report written in columns (COPY on Postgres, a bulk insert on SQLite) stores exactly the values the
row-by-row upsert of ``to_records`` stored before, replaces an earlier write of the same job instead of
duplicating it, and rolls back with its transaction."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import cast, func, select, text, Text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.db import get_engine, session_factory
from app.models import Job, NoiseRow, Tenant
from clear_core.estimate import NoiseEstimator
from clear_core.report import NoiseReport
from tests.service.conftest import run_alembic
from worker.results import COPY_CHUNK_ROWS, write_noise_report, write_noise_rows

NAMES = ["plain", 'quote"d, comma', "new\nline", "ünï"]  # labels that CSV must quote


def _report(n_train: int = 150, n_held: int = 40, *, with_ids: bool = True) -> NoiseReport:
    """A real report of random logits over three passes, rows shuffled, training and held-out rows."""
    rng = np.random.default_rng(0)
    k = len(NAMES)
    given, held = rng.integers(0, k, n_train), rng.integers(0, k, n_held)
    estimator = NoiseEstimator(given, held_given=held, num_classes=k)
    for epoch in range(3):
        logits = rng.normal(size=(n_train, k)) * 3
        logits[np.arange(n_train), given] += 2.0
        estimator.update(logits, epoch, rng.normal(size=(n_held, k)))
    estimate = estimator.finish(logits, NAMES, held_final_logits=rng.normal(size=(n_held, k)),
                                flag_when_unreliable=True)
    ids = [f"id-{i}" if i % 7 else None for i in range(n_train + n_held)] if with_ids else None
    return NoiseReport.from_estimate(estimate, NAMES, positions=rng.permutation(n_train + n_held),
                                     score="self_confidence", flag_rule="prune_by_noise_rate", ids=ids)


def _old_write(session, job_id, records, row_indices) -> None:
    """The writer of before: one dict per record, upserted in batches (the reference values)."""
    tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    rows = []
    for rec in records:
        row = dict(rec, job_id=job_id, tenant_id=tenant_id, row_id=None if rec["id"] is None else str(rec["id"]),
                   row_index=row_indices[rec["row_index"]])
        row.pop("id")
        rows.append(row)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(NoiseRow)
    updates = {c.name: statement.excluded[c.name] for c in NoiseRow.__table__.columns
               if c.name not in ("job_id", "row_index")}
    session.execute(statement.on_conflict_do_update(index_elements=["job_id", "row_index"], set_=updates), rows)


def _stored(session, job_id) -> list[dict]:
    """Every stored column of the job's rows (the JSON history also as its stored text), by row index."""
    columns = [c for c in NoiseRow.__table__.columns if c.name != "job_id"]
    query = (select(*columns, cast(NoiseRow.p_clean_history, Text).label("history_text"))
             .where(NoiseRow.job_id == job_id).order_by(NoiseRow.row_index))
    return [dict(row) for row in session.execute(query).mappings()]


def _jobs(session, *ids: str) -> None:
    session.add(Tenant(id="t-report"))
    session.flush()
    for job_id in ids:
        session.add(Job(id=job_id, tenant_id="t-report", base_model="tiny-bert", method="lora", routed=True,
                        clear_config={}, training_config={}))
    session.commit()


@pytest.mark.parametrize("with_ids", [True, False])
def test_columns_store_the_values_the_records_stored(either_database, with_ids):
    report = _report(with_ids=with_ids)
    row_indices = np.random.default_rng(1).permutation(10 * len(report))[:len(report)].tolist()
    with either_database() as session:
        _jobs(session, "job-new", "job-old")
        assert write_noise_report(session, "job-new", report, row_indices) == len(report)
        _old_write(session, "job-old", report.to_records(), row_indices)
        session.commit()
        new, old = _stored(session, "job-new"), _stored(session, "job-old")
    assert len(new) == len(report) and new == old  # floats, nulls, JSON text and strings identical
    held = [row for row in new if row["split"] == "validation"]
    assert len(held) == 40 and all(row["p_clean"] is None and row["history_text"] == "[]" for row in held)
    assert all(len(row["p_clean_history"]) == 3 for row in new if row["split"] == "train")
    assert {row["given_label"] for row in new} == set(NAMES)
    assert any(row["row_id"] is None for row in new) and (any(row["row_id"] for row in new) == with_ids)


def test_writing_again_replaces_the_rows_and_a_rollback_keeps_the_earlier_ones(either_database):
    report = _report()
    row_indices = list(range(len(report)))
    with either_database() as session:
        _jobs(session, "job-a")
        write_noise_report(session, "job-a", report, row_indices)
        session.commit()
        first = _stored(session, "job-a")
        write_noise_report(session, "job-a", report, row_indices)  # a retried finish
        session.commit()
        assert _stored(session, "job-a") == first
        write_noise_rows(session, "job-a", report.to_records()[:5], row_indices)
        session.rollback()  # the finish failed: the earlier report is intact
        assert _stored(session, "job-a") == first
        write_noise_rows(session, "job-a", report.to_records()[:5], row_indices)
        session.commit()
        count = session.scalar(select(func.count()).select_from(NoiseRow).where(NoiseRow.job_id == "job-a"))
    assert count == 5


def test_a_report_larger_than_one_copy_chunk_is_written_whole(settings, monkeypatch):
    import worker.results as results

    monkeypatch.setattr(results, "COPY_CHUNK_ROWS", 17)
    report = _report(60, 13)
    factory = session_factory(settings.database_url)
    with factory() as session:
        _jobs(session, "job-new", "job-old")
        write_noise_report(session, "job-new", report, list(range(len(report))))
        _old_write(session, "job-old", report.to_records(), list(range(len(report))))
        session.commit()
        assert _stored(session, "job-new") == _stored(session, "job-old")
        assert session.execute(text("SELECT count(*) FROM noise_rows WHERE job_id = 'job-new'")).scalar() == 73
    assert COPY_CHUNK_ROWS > 17


def test_a_job_streams_its_rows_in_chunks_as_the_orm_reads_them(client, settings, monkeypatch):
    """The worker's loader, in chunks smaller than the dataset, gives the rows the ORM gives, in row order."""
    import worker.predict as predict
    from app.models import DatasetRow, Job as JobRow
    from tests.service.helpers import toy_frame, upload_frame
    from worker.pipeline import _as_data, _rows

    frame = toy_frame(53, noise=0.2)
    frame["pair"] = [f"second {i}" for i in range(53)]
    dataset = upload_frame(client, frame, text_pair_column="pair")
    with session_factory(settings.database_url)() as session:
        columns = _rows(session, dataset["id"], chunk_rows=7)
        orm = session.scalars(select(DatasetRow).where(DatasetRow.dataset_id == dataset["id"])
                              .order_by(DatasetRow.row_index)).all()
        monkeypatch.setattr(predict, "LOAD_CHUNK_ROWS", 5)
        run = JobRow(id="run-x", dataset_id=dataset["id"], training_config={"labelled": True})
        inputs = predict.load_prediction_inputs(session, run, None, None)
    for name in ("row_index", "row_id", "text", "text_pair", "label", "gold_label"):
        assert getattr(columns, name) == [getattr(r, name) for r in orm], name
    data = _as_data(columns)
    assert list(data.texts) == list(frame["text"]) and list(data.text_pairs) == list(frame["pair"])
    assert list(data.ids) == list(frame["id"]) and list(data.gold_labels) == [str(g) for g in frame["gold"]]
    assert inputs.row_indices == list(range(53)) and inputs.texts == list(frame["text"])
    assert inputs.text_pairs == list(frame["pair"]) and inputs.labels == [str(y) for y in frame["label"]]


def test_rows_stream_in_chunks_on_sqlite_too(tmp_path):
    from app.models import Dataset, DatasetRow
    from worker.pipeline import _as_data, _rows

    url = f"sqlite:///{tmp_path / 'rows.db'}"
    run_alembic(url, "upgrade", "head")
    with session_factory(url)() as session:
        session.add(Tenant(id="t-rows"))
        session.flush()
        session.add(Dataset(id="ds-rows", tenant_id="t-rows", name="rows", format="csv", sha256="0" * 64, size_bytes=0,
                            row_count=23, label_names=["alpha", "beta"], class_histogram={},
                            columns={}))
        session.flush()
        session.add_all([DatasetRow(dataset_id="ds-rows", row_index=i, row_id=None, text=f"text {i}", text_pair=None,
                                    label=("alpha", "beta")[i % 2], gold_label=None) for i in reversed(range(23))])
        session.commit()
        columns = _rows(session, "ds-rows", chunk_rows=4)
    get_engine(url).dispose()
    assert columns.row_index == list(range(23)) and columns.text == [f"text {i}" for i in range(23)]
    data = _as_data(columns)
    assert data.text_pairs is None and data.ids is None and data.gold_labels is None
    assert data.labels == [("alpha", "beta")[i % 2] for i in range(23)]
    assert data.labels[0] is data.labels[2] and data.labels[1] is data.labels[21]  # one string per label
