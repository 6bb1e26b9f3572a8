"""The review loop on a finished job (results written directly, no training): decisions on report rows (one by
one, or a bulk rule in SQL; the latest per row wins; a bad request stores nothing; other tenants see nothing),
the report showing them, dataset versions made from them, and every dataset's rows exported as CSV, JSON lines
and Parquet (a CSV export uploads again as the same rows)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from app.db import get_engine, session_factory
from app.main import create_app
from app.models import ApiKey, NoiseRow
from tests.service.conftest import TENANT_A, create_key, table_counts
from tests.service.fake_results import make_finished_job
from tests.service.helpers import all_decisions, toy_frame, upload, upload_frame

N = 30


@pytest.fixture
def finished(client, settings):
    """A succeeded job on toy_frame(30): its id, report rows, dataset id and the dataset's labels by row."""
    job_id, rows = make_finished_job(client, settings, n=N)
    dataset_id = client.get(f"/v1/jobs/{job_id}").json()["dataset_id"]
    labels = [str(v) for v in toy_frame(N)["label"]]
    return {"job": job_id, "rows": rows, "dataset": dataset_id, "labels": labels}


@pytest.fixture
def tenant_b(settings, enqueued):
    """A client of another tenant, every scope."""
    key = create_key(settings.database_url, "tenant-b")
    with TestClient(create_app(settings, enqueue=enqueued.append), headers={"Authorization": f"Bearer {key}"}) as c:
        yield c


def _decide(client, job_id, body, status=200):
    response = client.post(f"/v1/jobs/{job_id}/noise-report/decisions", json=body)
    assert response.status_code == status, response.text
    return response.json()


def _decisions(client, job_id, **params):
    """All decisions of the job and their count."""
    return all_decisions(client, job_id, **params)


def _key_id(settings) -> str:
    with session_factory(settings.database_url)() as session:
        return session.scalar(select(ApiKey.id).where(ApiKey.tenant_id == TENANT_A))


def test_decisions_are_stored_with_their_labels_key_and_time_and_listed_in_row_order(client, settings, finished):
    job, labels = finished["job"], finished["labels"]
    body = {"decisions": [{"row_index": 3, "action": "drop"}, {"row_index": 0, "action": "accept"},
                          {"row_index": 1, "action": "relabel", "label": "2"}, {"row_index": 2, "action": "keep"}]}
    assert _decide(client, job, body) == {"recorded": 4, "by_action": {"accept": 1, "keep": 1, "relabel": 1,
                                                                       "drop": 1}}
    stored, count = _decisions(client, job, limit=3)
    assert count == 4 and [d["row_index"] for d in stored] == [0, 1, 2, 3]
    assert [(d["action"], d["label"]) for d in stored] == [("accept", "0"), ("relabel", "2"), ("keep", labels[2]),
                                                          ("drop", None)]
    assert {d["api_key_id"] for d in stored} == {_key_id(settings)} and all(d["decided_at"] for d in stored)
    only, n = _decisions(client, job, action="relabel")
    assert n == 1 and only[0]["row_index"] == 1
    assert client.get(f"/v1/jobs/{job}/noise-report/decisions", params={"action": "nope"}).status_code == 422
    # the report shows them, and filters on them
    report = client.get(f"/v1/jobs/{job}/noise-report", params={"limit": 1000}).json()["data"]
    by_row = {r["row_index"]: (r["decision"], r["decision_label"]) for r in report}
    assert by_row[1] == ("relabel", "2") and by_row[3] == ("drop", None) and by_row[4] == (None, None)
    decided = client.get(f"/v1/jobs/{job}/noise-report", params={"decided": "true"}).json()
    assert decided["count"] == 4 and {r["row_index"] for r in decided["data"]} == {0, 1, 2, 3}
    assert client.get(f"/v1/jobs/{job}/noise-report", params={"decided": "false"}).json()["count"] == N - 4
    rows = list(csv.DictReader(io.StringIO(client.get(f"/v1/jobs/{job}/noise-report.csv").text)))
    assert {r["row_index"]: (r["decision"], r["decision_label"]) for r in rows}["1"] == ("relabel", "2")
    lines = client.get(f"/v1/jobs/{job}/noise-report.jsonl", params={"decided": "true"}).text.splitlines()
    assert sorted(json.loads(line)["decision"] for line in lines[1:]) == ["accept", "drop", "keep", "relabel"]


def test_the_latest_decision_per_row_wins(client, finished):
    job = finished["job"]
    _decide(client, job, {"decisions": [{"row_index": 5, "action": "drop"}]})
    _decide(client, job, {"decisions": [{"row_index": 5, "action": "relabel", "label": "1"},
                                        {"row_index": 6, "action": "drop"}, {"row_index": 6, "action": "keep"}]})
    stored, count = _decisions(client, job)
    assert count == 2 and [(d["row_index"], d["action"], d["label"]) for d in stored] == [
        (5, "relabel", "1"), (6, "keep", finished["labels"][6])]


def test_a_bulk_rule_is_one_upsert_over_the_matching_rows(client, settings, finished):
    job = finished["job"]
    with session_factory(settings.database_url)() as session:  # two flagged rows the model is less sure of
        session.execute(update(NoiseRow).where(NoiseRow.job_id == job, NoiseRow.row_index.in_([3, 6]))
                        .values(suggested_confidence=0.6))
        session.commit()
    _decide(client, job, {"decisions": [{"row_index": 0, "action": "drop"}, {"row_index": 1, "action": "drop"}]})
    body = {"rule": {"flagged": True, "min_suggested_confidence": 0.9}, "action": "accept"}
    flagged_sure = [r["row_index"] for r in finished["rows"] if r["flagged"] and r["row_index"] not in (3, 6)]
    assert _decide(client, job, body) == {"recorded": len(flagged_sure),
                                          "by_action": {"accept": len(flagged_sure), "keep": 0, "relabel": 0,
                                                        "drop": 0}}
    stored = {d["row_index"]: d for d in _decisions(client, job)[0]}
    assert set(stored) == set(flagged_sure) | {1}  # row 0 (flagged) was replaced by the rule; row 1 untouched
    assert stored[0]["action"] == "accept" and stored[0]["label"] == "0" and stored[1]["action"] == "drop"
    given = {"rule": {"given_label": "1", "split": "train"}, "action": "keep"}
    expected = [i for i, label in enumerate(finished["labels"]) if label == "1"]
    assert _decide(client, job, given)["recorded"] == len(expected)
    assert _decide(client, job, {"rule": {"suggested_label": "2", "flagged": False}, "action": "drop"})["recorded"] \
        == sum(1 for r in finished["rows"] if r["suggested_label"] == "2" and not r["flagged"])
    assert _decide(client, job, {"rule": {"split": "validation"}, "action": "drop"}) == {
        "recorded": 0, "by_action": {"accept": 0, "keep": 0, "relabel": 0, "drop": 0}}


BAD = {
    "unknown_row": ({"decisions": [{"row_index": 0, "action": "accept"}, {"row_index": 999, "action": "drop"}]},
                    "decisions", "999"),
    "relabel_to_unknown_class": ({"decisions": [{"row_index": 0, "action": "accept"},
                                                {"row_index": 1, "action": "relabel", "label": "7"}]},
                                 "decisions.1.label", "'7'"),
    "relabel_without_label": ({"decisions": [{"row_index": 1, "action": "relabel"}]}, "decisions.0", "label"),
    "label_without_relabel": ({"decisions": [{"row_index": 1, "action": "keep", "label": "1"}]}, "decisions.0",
                              "relabel"),
    "unknown_action": ({"decisions": [{"row_index": 1, "action": "flip"}]}, "decisions.0.action", "accept"),
    "negative_row": ({"decisions": [{"row_index": -1, "action": "keep"}]}, "decisions.0.row_index", ""),
    "both_forms": ({"decisions": [{"row_index": 1, "action": "keep"}], "rule": {"flagged": True}, "action": "keep"},
                   None,
                   "not both"),
    "rule_without_action": ({"rule": {"flagged": True}}, None, "action"),
    # a rule without a condition decided every row (a slip no request takes back): only with all_rows
    "empty_rule": ({"rule": {}, "action": "drop"}, "rule", "all_rows"),
    "all_rows_and_a_condition": ({"rule": {"all_rows": True, "flagged": True}, "action": "drop"}, "rule",
                                 "without conditions"),
    "rule_relabel": ({"rule": {"flagged": True}, "action": "relabel"}, "action", ""),
    "rule_unknown_label": ({"rule": {"given_label": "9"}, "action": "drop"}, "rule.given_label", "'9'"),
    "rule_bad_confidence": ({"rule": {"min_suggested_confidence": 1.5}, "action": "drop"},
                            "rule.min_suggested_confidence", ""),
    "empty": ({}, None, "decisions"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_says_what_to_fix_and_stores_nothing(client, settings, finished, case):
    body, param, words = BAD[case]
    error = _decide(client, finished["job"], body, 422)["error"]
    assert error["param"] == param and words in error["message"], error
    assert table_counts(settings.database_url)["review_decisions"] == 0


def test_decisions_need_a_finished_report_and_stay_within_the_tenant(client, tenant_b, settings, finished):
    queued = client.post("/v1/jobs", json={"dataset_id": finished["dataset"], "base_model": "tiny-bert"}).json()["id"]
    body = {"decisions": [{"row_index": 0, "action": "keep"}]}
    assert _decide(client, queued, body, 409)["error"]["code"] == "report_not_ready"
    assert client.get(f"/v1/jobs/{queued}/noise-report/decisions").status_code == 409
    _decide(client, finished["job"], body)
    assert _decide(tenant_b, finished["job"], body, 404)["error"]["code"] == "not_found"
    assert tenant_b.get(f"/v1/jobs/{finished['job']}/noise-report/decisions").status_code == 404
    assert tenant_b.post(f"/v1/datasets/{finished['dataset']}/versions",
                         json={"from_job": finished["job"]}).status_code == 404
    own = upload_frame(tenant_b, toy_frame(N))
    foreign = tenant_b.post(f"/v1/datasets/{own['id']}/versions", json={"from_job": finished["job"]})
    assert foreign.status_code == 422 and foreign.json()["error"]["code"] == "unknown_job"
    assert _decisions(client, finished["job"])[1] == 1


def _jsonl_rows(client, dataset_id):
    response = client.get(f"/v1/datasets/{dataset_id}/rows.jsonl")
    assert response.status_code == 200, response.text
    return response, [json.loads(line) for line in response.text.splitlines()]


def test_a_version_applies_the_decisions_and_records_its_lineage(client, settings, finished):
    job, labels, parent = finished["job"], finished["labels"], finished["dataset"]
    frame = toy_frame(N)
    same = next(i for i in range(4, N) if labels[i] == "1")
    _decide(client, job, {"decisions": [
        {"row_index": 0, "action": "accept"},                  # suggested "0"
        {"row_index": 1, "action": "relabel", "label": "2"},
        {"row_index": 2, "action": "keep"},
        {"row_index": 3, "action": "drop"},
        {"row_index": same, "action": "relabel", "label": "1"}]})  # a relabel to the label it had
    before = table_counts(settings.database_url)
    response = client.post(f"/v1/datasets/{parent}/versions", json={"from_job": job, "name": "cleaned"})
    assert response.status_code == 201, response.text
    version = response.json()
    expected = [("0" if i == 0 else "2" if i == 1 else labels[i]) for i in range(N) if i != 3]
    changed = sum(1 for i in (0, 1) if expected[i] != labels[i])
    assert version["parent_id"] == parent and version["from_job_id"] == job and version["format"] == "version"
    assert version["name"] == "cleaned" and version["row_count"] == N - 1 and version["status"] == "ready"
    assert version["lineage"] == {"accepted": 1, "relabelled": 2, "kept": 1, "dropped": 1,
                                  "unchanged": N - 1 - changed, "labels_changed": changed, "classes_removed": []}
    assert version["class_histogram"] == {k: expected.count(k) for k in ("0", "1", "2")}
    assert version["label_names"] == ["0", "1", "2"]
    assert table_counts(settings.database_url)["dataset_rows"] == before["dataset_rows"] + N - 1
    response, rows = _jsonl_rows(client, version["id"])
    assert [r["label"] for r in rows] == expected
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(N) if i != 3]
    assert [r["gold_label"] for r in rows] == [str(frame["gold"][i]) for i in range(N) if i != 3]
    assert [r["text"] for r in rows] == [frame["text"][i] for i in range(N) if i != 3]
    assert version["sha256"] == hashlib.sha256(response.content).hexdigest()
    assert version["size_bytes"] == len(response.content)
    with get_engine(settings.database_url).connect() as conn:
        indices = conn.execute(text("SELECT row_index FROM dataset_rows WHERE dataset_id = :d ORDER BY row_index"),
                               {"d": version["id"]}).scalars().all()
    assert indices == list(range(N - 1))
    assert client.get(f"/v1/datasets/{version['id']}").json() == version
    assert client.get(f"/v1/datasets/{parent}").json()["lineage"] is None


def test_a_version_that_would_leave_a_class_too_small_stores_nothing(client, settings, finished):
    job, labels = finished["job"], finished["labels"]
    zeros = [i for i, label in enumerate(labels) if label == "0"]
    _decide(client, job, {"decisions": [{"row_index": i, "action": "drop"} for i in zeros[1:]]})
    before = table_counts(settings.database_url)
    response = client.post(f"/v1/datasets/{finished['dataset']}/versions", json={"from_job": job})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_rows" and [d["code"] for d in error["details"]] == ["class_too_small"]
    assert "'0'" in error["details"][0]["message"]
    assert table_counts(settings.database_url) == before
    _decide(client, job, {"rule": {"all_rows": True}, "action": "drop"})
    before = table_counts(settings.database_url)
    response = client.post(f"/v1/datasets/{finished['dataset']}/versions", json={"from_job": job})
    assert {d["code"] for d in response.json()["error"]["details"]} == {"too_few_classes", "no_rows"}
    assert table_counts(settings.database_url) == before


def test_a_version_needs_a_succeeded_job_of_this_dataset_and_replays_with_its_key(client, settings, finished):
    parent, job = finished["dataset"], finished["job"]
    other = upload_frame(client, toy_frame(N, seed=4))
    wrong = client.post(f"/v1/datasets/{other['id']}/versions", json={"from_job": job})
    assert wrong.status_code == 422 and wrong.json()["error"]["param"] == "from_job"
    queued = client.post("/v1/jobs", json={"dataset_id": parent, "base_model": "tiny-bert"}).json()["id"]
    assert client.post(f"/v1/datasets/{parent}/versions", json={"from_job": queued}).status_code == 409
    assert client.post(f"/v1/datasets/{parent}/versions", json={"from_job": "job_nope"}).status_code == 422
    assert client.post("/v1/datasets/ds_nope/versions", json={"from_job": job}).status_code == 404
    key = {"Idempotency-Key": "version-1"}
    first = client.post(f"/v1/datasets/{parent}/versions", json={"from_job": job}, headers=key)
    again = client.post(f"/v1/datasets/{parent}/versions", json={"from_job": job}, headers=key)
    assert first.status_code == again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == again.json()["id"] and first.json()["lineage"]["unchanged"] == N
    assert first.json()["name"] == f"{client.get(f'/v1/datasets/{parent}').json()['name']} (reviewed)"
    assert client.get("/v1/datasets").json()["count"] == 3


def test_a_version_counts_against_the_stored_rows_quota(client, settings, finished):
    from app.db import session_factory as factory
    from app.models import Tenant

    with factory(settings.database_url)() as session:
        session.execute(update(Tenant).where(Tenant.id == TENANT_A).values(max_stored_rows=N + 5))
        session.commit()
    before = table_counts(settings.database_url)
    response = client.post(f"/v1/datasets/{finished['dataset']}/versions", json={"from_job": finished["job"]})
    assert response.status_code == 429 and response.json()["error"]["quota"] == "stored_rows"
    assert table_counts(settings.database_url) == before


def test_exports_hold_every_row_in_order_in_three_formats(client, settings):
    frame = toy_frame(N).assign(text=lambda f: f["text"].where(f.index != 2, "=cmd()"))
    dataset = upload_frame(client, frame)
    response = client.get(f"/v1/datasets/{dataset['id']}/rows.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert f"{dataset['id']}-rows.csv" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["id", "text", "text_pair", "label", "gold_label"]
    assert [r["id"] for r in rows] == list(frame["id"]) and rows[2]["text"] == "=cmd()"  # exact: data, not a report
    safe = list(csv.DictReader(io.StringIO(client.get(f"/v1/datasets/{dataset['id']}/rows.csv",
                                                      params={"formula_safe": "true"}).text)))
    assert safe[2]["text"] == "'=cmd()" and safe[3]["text"] == rows[3]["text"]
    assert [r["label"] for r in rows] == [str(v) for v in frame["label"]] and rows[0]["text_pair"] == ""
    _, lines = _jsonl_rows(client, dataset["id"])
    assert [r["text"] for r in lines] == list(frame["text"]) and lines[0]["text_pair"] is None
    assert [r["gold_label"] for r in lines] == [str(v) for v in frame["gold"]]
    temporary = set(Path(tempfile.gettempdir()).glob("export-*.parquet"))
    parquet = client.get(f"/v1/datasets/{dataset['id']}/rows.parquet")
    assert parquet.status_code == 200 and parquet.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.column_names == ["id", "text", "text_pair", "label", "gold_label"]
    assert table.to_pylist() == lines
    assert set(Path(tempfile.gettempdir()).glob("export-*.parquet")) <= temporary  # the temporary file is gone
    assert client.get("/v1/datasets/ds_nope/rows.parquet").status_code == 404


def test_exports_read_in_batches_and_parquet_in_row_groups(client, settings):
    from app.services import exports

    dataset = upload_frame(client, toy_frame(N))
    factory = session_factory(settings.database_url)
    rows = list(exports.iter_rows(factory, dataset["id"], batch=7))
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(N)]
    path = exports.write_parquet(factory, dataset["id"], batch=7, directory=str(settings.data_dir))
    try:
        assert pq.ParquetFile(path).metadata.num_row_groups == 5
    finally:
        os.unlink(path)


def test_a_csv_export_of_a_version_uploads_again_as_the_same_rows(client, settings, finished):
    job = finished["job"]
    _decide(client, job, {"decisions": [{"row_index": 0, "action": "relabel", "label": "2"},
                                        {"row_index": 4, "action": "drop"}]})
    version = client.post(f"/v1/datasets/{finished['dataset']}/versions", json={"from_job": job}).json()
    exported = client.get(f"/v1/datasets/{version['id']}/rows.csv").content
    again = upload(client, exported, "again.csv", id_column="id", gold_label_column="gold_label")
    assert again.status_code == 201, again.text
    copy = again.json()
    assert copy["row_count"] == version["row_count"] and copy["class_histogram"] == version["class_histogram"]
    assert _jsonl_rows(client, copy["id"])[1] == _jsonl_rows(client, version["id"])[1]


def test_a_csv_export_keeps_formula_like_texts_and_labels_exactly_through_a_round_trip(client):
    frame = pd.DataFrame({"text": ["-5 degrees in Moscow", "+1 for this", "@user hi", "=SUM(A1)", "\tindented",
                                   "'quoted", "plain one", "plain two"] * 2,
                          "label": ["-1", "1"] * 8})
    dataset = upload_frame(client, frame)
    exported = client.get(f"/v1/datasets/{dataset['id']}/rows.csv").content
    again = upload(client, exported, "again.csv")
    assert again.status_code == 201, again.text
    assert again.json()["class_histogram"] == dataset["class_histogram"] == {"-1": 8, "1": 8}
    assert _jsonl_rows(client, again.json()["id"])[1] == _jsonl_rows(client, dataset["id"])[1]


def test_a_version_that_drops_every_row_of_a_class_names_it(client, settings, finished):
    job, labels = finished["job"], finished["labels"]
    _decide(client, job, {"rule": {"given_label": "2"}, "action": "drop"})
    response = client.post(f"/v1/datasets/{finished['dataset']}/versions", json={"from_job": job})
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["label_names"] == ["0", "1"] and version["lineage"]["classes_removed"] == ["2"]
    assert version["row_count"] == len(labels) - labels.count("2")
