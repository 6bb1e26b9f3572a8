"""The whole review loop end to end, against Postgres and a real Celery worker process (tiny BERT): upload a
labelled dataset with some flipped labels, train, read the report, decide (a bulk accept rule, one relabel,
one drop), publish a version, retrain on it from the first job (settings inherited, comparison shown),
predict an uploaded held-out file with the retrained model, and delete the dataset with ``cascade=true``:
afterwards no table row and no artifact file names any of the deleted objects, while an unrelated dataset
uploaded at the start is untouched."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.db import get_engine
from app.main import create_app
from tests.service.conftest import REDIS_URL
from tests.service.helpers import all_decisions, create_job, to_bytes, toy_frame, upload_frame
from tests.service.workers import start_worker, stop_worker, wait_for, worker_env

# plain LoRA with a high learning rate: the tiny BERT learns the toy task in a few seconds
TRAINING = {"epochs": 8, "batch_size": 8, "max_length": 16, "learning_rate": 3e-2}
N = 120
NOISE = 0.15
TERMINAL = ("succeeded", "failed", "cancelled")
INHERITED = ("method", "routed", "base_model", "clear", "training", "validation_fraction", "validation_dataset_id",
             "time_limit_s", "soft_time_limit_s")
LABEL_CHECK = ("given_label", "flagged", "suggested_label", "suggested_confidence", "label_quality", "flag_reason")


def _finished(get, path: str, what: str) -> dict:
    return wait_for(lambda: (body := get(path).json())["status"] in TERMINAL and body, 120, what, interval=0.25)


def _all_decisions(api, job_id: str, **params) -> tuple[list[dict], int]:
    return all_decisions(api, job_id, limit=7, **params)


def _schema_tables(url: str) -> list[str]:
    """Every table of the database's public schema (not only those the models know)."""
    with get_engine(url).connect() as conn:
        return list(conn.execute(text("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                      "'public' AND table_type = 'BASE TABLE' ORDER BY table_name")).scalars())


def _id_columns(url: str) -> dict[str, list[str]]:
    """{table: its columns that hold a job, run or dataset id or a tenant} of every table."""
    names = ("id", "job_id", "run_id", "dataset_id", "model_job_id", "from_job_id", "parent_id",
             "validation_dataset_id", "tenant_id")
    with get_engine(url).connect() as conn:
        rows = conn.execute(text("SELECT table_name, column_name FROM information_schema.columns WHERE "
                                 "table_schema = 'public'")).all()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        if column in names:
            out.setdefault(table, []).append(column)
    return out


def _mentions(url: str, ids: set[str]) -> list[str]:
    """Every cell of every table that contains one of ``ids``, and every row whose id-like column equals one."""
    found = []
    with get_engine(url).connect() as conn:
        for table in _schema_tables(url):
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                cells = " ".join(map(str, row))
                found += [f"{table}: {i}" for i in sorted(ids) if i in cells]
        for table, columns in _id_columns(url).items():
            for column in columns:
                n = conn.execute(text(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text = ANY(:ids)'),
                                 {"ids": sorted(ids)}).scalar_one()
                if n:
                    found.append(f"{table}.{column}: {n} row(s)")
    return found


def _redis_mentions(ids: set[str]) -> list[str]:
    """Keys of the broker's Redis database whose name or value contains one of ``ids``."""
    client = redis.Redis.from_url(REDIS_URL)
    found = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        value = {"string": lambda: client.get(key), "list": lambda: client.lrange(key, 0, -1),
                 "hash": lambda: client.hgetall(key), "set": lambda: client.smembers(key),
                 "zset": lambda: client.zrange(key, 0, -1)}.get(kind, lambda: b"")()
        found += [f"{key!r}: {i}" for i in sorted(ids) if i in f"{key!r} {value!r}"]
    return found


def _counts(url: str) -> dict[str, int]:
    with get_engine(url).connect() as conn:
        return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in _schema_tables(url)}


def _files(root: Path, skip: Path) -> list[str]:
    """Every file and folder below ``root`` (the settings' data_dir) except the worker's log folder."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if skip not in (p, *p.parents))


@pytest.mark.timeout(400)
def test_upload_train_review_version_retrain_predict_and_cascade_delete(settings, auth, tmp_path):
    started = time.monotonic()
    url, artifacts = settings.database_url, Path(settings.artifact_url)
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = worker_env(settings, REDIS_URL)
    # leases slow enough that a busy CI machine cannot make the reaper take a healthy attempt away
    env.update(CLEAR_HEARTBEAT_INTERVAL_S="1", CLEAR_LEASE_TIMEOUT_S="60", CLEAR_REAPER_INTERVAL_S="5",
               CLEAR_WORKER_TORCH_THREADS="2", OMP_NUM_THREADS="2")
    worker = start_worker(env, logs / "worker.log")
    try:
        with TestClient(create_app(settings.model_copy(update={"broker_url": REDIS_URL})), headers=auth) as api:
            _loop(api, settings, url, artifacts, logs)
    finally:
        stop_worker(worker)
    print(f"review loop end to end: {time.monotonic() - started:.1f} s")


def _loop(api, settings, url, artifacts, logs):  # one story, asserted step by step
    # --- an unrelated dataset, and the labelled one with flipped labels and gold labels -----------------------
    unrelated = upload_frame(api, toy_frame(30, seed=7))
    unrelated_rows = api.get(f"/v1/datasets/{unrelated['id']}/rows.jsonl").content
    assert len(unrelated_rows.splitlines()) == 30
    frame = toy_frame(N, noise=NOISE, seed=0)
    given = [str(v) for v in frame["label"]]
    gold = [str(v) for v in frame["gold"]]
    flipped = {i for i in range(N) if given[i] != gold[i]}
    assert len(flipped) == int(NOISE * N)
    dataset = upload_frame(api, frame)
    assert (dataset["row_count"], dataset["status"], dataset["lineage"], dataset["parent_id"]) == (N, "ready", None,
                                                                                                  None)

    # --- train ----------------------------------------------------------------------------------------------
    job_id = create_job(api, dataset["id"], TRAINING, routed=False)
    job = _finished(api.get, f"/v1/jobs/{job_id}", "the first job")
    assert job["status"] == "succeeded", job
    assert (artifacts / "tenants" / "tenant-a" / "jobs" / job_id / "adapter.tar.gz").is_file()

    # --- the report has flagged rows, mostly really flipped ones ---------------------------------------------
    report = api.get(f"/v1/jobs/{job_id}/noise-report", params={"limit": 1000}).json()
    rows = {r["row_index"]: r for r in report["data"]}
    assert report["count"] == N == len(rows) and report["summary"]["rows"] == N
    assert not report["summary"].get("flags_withheld"), report["summary"]
    flagged = sorted(i for i, r in rows.items() if r["flagged"])
    assert flagged and report["summary"]["flagged"] == len(flagged)
    assert len(set(flagged) & flipped) >= 0.5 * len(flagged), (flagged, sorted(flipped))
    assert all(rows[i]["given_label"] == given[i] and rows[i]["id"] == f"r{i}" for i in range(N))
    assert api.get(f"/v1/jobs/{job_id}/noise-report/decisions").json()["count"] == 0

    # --- decide: accept the confident flagged rows in bulk, relabel one row, drop one -----------------------
    confidences = sorted({rows[i]["suggested_confidence"] for i in flagged})
    # a threshold between two of the flagged rows' confidences, so that the rule selects and also leaves out
    threshold = (confidences[len(confidences) // 2 - 1] + confidences[len(confidences) // 2]) / 2 \
        if len(confidences) > 1 else confidences[0]
    accepted = sorted(i for i in flagged if rows[i]["suggested_confidence"] >= threshold)
    assert accepted and (len(confidences) == 1 or len(accepted) < len(flagged))
    rule = {"rule": {"flagged": True, "min_suggested_confidence": threshold}, "action": "accept"}
    decided = api.post(f"/v1/jobs/{job_id}/noise-report/decisions", json=rule)
    assert decided.status_code == 200, decided.text
    assert decided.json() == {"recorded": len(accepted), "by_action": {"accept": len(accepted), "keep": 0,
                                                                       "relabel": 0, "drop": 0}}
    rest = [i for i in range(N) if i not in accepted]
    relabelled = next((i for i in rest if i in flipped), rest[0])
    new_label = gold[relabelled] if relabelled in flipped else str((int(given[relabelled]) + 1) % 3)
    assert new_label != given[relabelled]
    dropped = next(i for i in rest if i != relabelled and not rows[i]["flagged"])
    single = api.post(f"/v1/jobs/{job_id}/noise-report/decisions", json={"decisions": [
        {"row_index": relabelled, "action": "relabel", "label": new_label},
        {"row_index": dropped, "action": "drop"}]})
    assert single.status_code == 200, single.text
    assert single.json() == {"recorded": 2, "by_action": {"accept": 0, "keep": 0, "relabel": 1, "drop": 1}}

    # --- the decisions as stored -----------------------------------------------------------------------------
    decisions, count = _all_decisions(api, job_id)
    assert count == len(accepted) + 2 == len(decisions)
    assert [d["row_index"] for d in decisions] == sorted([*accepted, relabelled, dropped])
    by_row = {d["row_index"]: d for d in decisions}
    assert all((by_row[i]["action"], by_row[i]["label"]) == ("accept", rows[i]["suggested_label"]) for i in accepted)
    assert (by_row[relabelled]["action"], by_row[relabelled]["label"]) == ("relabel", new_label)
    assert (by_row[dropped]["action"], by_row[dropped]["label"]) == ("drop", None)
    assert all(d["api_key_id"] and d["decided_at"] for d in decisions)
    for action, n in (("accept", len(accepted)), ("relabel", 1), ("drop", 1), ("keep", 0)):
        assert _all_decisions(api, job_id, action=action)[1] == n, action
    shown = api.get(f"/v1/jobs/{job_id}/noise-report", params={"decided": "true", "limit": 1000}).json()
    assert shown["count"] == len(accepted) + 2
    assert {r["row_index"]: (r["decision"], r["decision_label"]) for r in shown["data"]} == {
        i: (d["action"], d["label"]) for i, d in by_row.items()}

    # --- a version from the job's decisions ------------------------------------------------------------------
    expected = {i: (rows[i]["suggested_label"] if i in accepted else new_label if i == relabelled else given[i])
                for i in range(N) if i != dropped}
    changed = sum(1 for i, label in expected.items() if label != given[i])
    response = api.post(f"/v1/datasets/{dataset['id']}/versions", json={"from_job": job_id, "name": "reviewed"})
    assert response.status_code == 201, response.text
    version = response.json()
    assert (version["parent_id"], version["from_job_id"], version["name"], version["status"]) == (
        dataset["id"], job_id, "reviewed", "ready")
    assert version["row_count"] == N - 1 and version["label_names"] == ["0", "1", "2"]
    assert version["lineage"] == {"accepted": len(accepted), "relabelled": 1, "kept": 0, "dropped": 1,
                                  "unchanged": N - 1 - changed, "labels_changed": changed, "classes_removed": []}
    labels = list(expected.values())
    assert version["class_histogram"] == {k: labels.count(k) for k in ("0", "1", "2") if labels.count(k)}
    export = api.get(f"/v1/datasets/{version['id']}/rows.jsonl")
    assert export.status_code == 200
    lines = [json.loads(line) for line in export.text.splitlines()]
    kept = sorted(expected)
    assert [r["id"] for r in lines] == [f"r{i}" for i in kept] and f"r{dropped}" not in {r["id"] for r in lines}
    assert [r["label"] for r in lines] == [expected[i] for i in kept]
    assert [r["gold_label"] for r in lines] == [gold[i] for i in kept]
    assert [r["text"] for r in lines] == [frame["text"][i] for i in kept]
    assert {r["id"]: r["label"] for r in lines}[f"r{relabelled}"] == new_label
    assert all({r["id"]: r["label"] for r in lines}[f"r{i}"] == rows[i]["suggested_label"] for i in accepted)
    assert version["sha256"] == hashlib.sha256(export.content).hexdigest()
    assert version["size_bytes"] == len(export.content)
    assert api.get(f"/v1/datasets/{dataset['id']}").json()["row_count"] == N  # the parent is untouched

    # --- retrain on the version from the first job -----------------------------------------------------------
    response = api.post("/v1/jobs", json={"dataset_id": version["id"], "from_job": job_id})
    assert response.status_code == 201, response.text
    retrain_id = response.json()["id"]
    assert response.json()["comparison"] is None and response.json()["from_job_id"] == job_id
    retrained = _finished(api.get, f"/v1/jobs/{retrain_id}", "the retrain")
    assert retrained["status"] == "succeeded", retrained
    assert (retrained["dataset_id"], retrained["from_job_id"]) == (version["id"], job_id)
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert {k: retrained[k] for k in INHERITED} == {k: job[k] for k in INHERITED}
    assert retrained["routed"] is False and retrained["training"]["learning_rate"] == TRAINING["learning_rate"]
    assert retrained["report_summary"]["rows"] == N - 1
    comparison = retrained["comparison"]
    assert comparison and comparison["from_job_id"] == job_id
    assert comparison["before"] and comparison["after"] and comparison["difference"]
    assert comparison["difference"] == pytest.approx({k: comparison["after"][k] - comparison["before"][k]
                                                      for k in comparison["after"] if k in comparison["before"]})
    assert "estimated_noise_rate" in comparison["difference"]
    # graded against the gold labels, which the version carried: the decisions' effect on the true noise rate
    assert comparison["before"]["true_noise_rate"] == pytest.approx(len(flipped) / N)
    assert comparison["after"]["true_noise_rate"] == pytest.approx(
        sum(label != gold[i] for i, label in expected.items()) / (N - 1))
    assert (artifacts / "tenants" / "tenant-a" / "jobs" / retrain_id / "adapter.tar.gz").is_file()

    # --- predict an uploaded held-out file with the retrained model -------------------------------------------
    held_out = toy_frame(30, noise=0.1, seed=11)[["id", "text", "label"]]
    held_out["id"] = [f"h{i}" for i in range(30)]
    assert not set(held_out["text"]) & set(frame["text"])
    response = api.post(f"/v1/jobs/{retrain_id}/predictions",
                        files={"file": ("held-out.csv", to_bytes(held_out, "csv"))}, data={"id_column": "id"})
    assert response.status_code == 201, response.text
    run = response.json()
    run_id = run["id"]
    assert run_id.startswith("pred_") and (run["job_id"], run["dataset_id"], run["input_name"], run["row_count"],
                                           run["labelled"]) == (retrain_id, None, "held-out.csv", 30, True)
    run = _finished(api.get, f"/v1/predictions/{run_id}", "the prediction run")
    assert (run["status"], run["progress"], run["error"]) == ("succeeded", 1.0, None), run
    assert run["summary"]["rows"] == 30 and run["summary"]["labelled"] and run["summary"]["labels"] == ["0", "1", "2"]
    predicted = api.get(f"/v1/predictions/{run_id}/rows", params={"limit": 1000}).json()
    assert predicted["count"] == 30 and [r["row_index"] for r in predicted["data"]] == list(range(30))
    for i, row in enumerate(predicted["data"]):
        assert row["id"] == f"h{i}" and row["text"] == held_out["text"][i]
        assert set(row["probabilities"]) == {"0", "1", "2"} and abs(sum(row["probabilities"].values()) - 1) < 1e-5
        assert row["predicted_label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert row["given_label"] == str(held_out["label"][i]) and isinstance(row["flagged"], bool)
        assert row["suggested_label"] in ("0", "1", "2") and 0 <= row["label_quality"] <= 1 and row["flag_reason"]
    assert sum(r["predicted_label"] == str(g) for r, g in zip(predicted["data"], toy_frame(30, seed=11)["gold"])) \
        >= 20  # the retrained model learned the task
    table = api.get(f"/v1/predictions/{run_id}/rows.csv")
    assert table.status_code == 200
    records = list(csv.DictReader(io.StringIO(table.text)))
    assert len(records) == 30 and [r["id"] for r in records] == [f"h{i}" for i in range(30)]
    assert {"predicted_label", "confidence", "p_0", "p_1", "p_2", *LABEL_CHECK} <= set(records[0])
    assert all(abs(sum(float(r[f"p_{k}"]) for k in "012") - 1) < 1e-5 for r in records)
    assert [r["id"] for r in api.get(f"/v1/jobs/{retrain_id}/predictions").json()["data"]] == [run_id]
    run_folder = artifacts / "tenants" / "tenant-a" / "predictions" / run_id
    assert not [p for p in run_folder.rglob("*") if p.is_file()]  # the uploaded input went once the run ended

    # --- before the delete: everything is there ---------------------------------------------------------------
    gone = {dataset["id"], version["id"], job_id, retrain_id, run_id}
    before = _counts(url)
    assert before["datasets"] == 3 and before["dataset_rows"] == 30 + N + N - 1
    assert before["jobs"] == 3 and before["noise_rows"] == N + N - 1 and before["prediction_rows"] == 30
    assert before["review_decisions"] == len(accepted) + 2
    assert {m.split(":")[0] for m in _mentions(url, gone)} >= {"datasets", "dataset_rows", "jobs", "job_events",
                                                               "noise_rows", "review_decisions", "prediction_rows"}
    assert [p for p in _files(settings.data_dir, logs) if any(i in p for i in gone)]
    refused = api.delete(f"/v1/datasets/{dataset['id']}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "dataset_in_use"
    assert _counts(url) == before

    # --- delete the dataset with cascade: the version, both jobs and the run go with it --------------------------
    response = api.delete(f"/v1/datasets/{dataset['id']}", params={"cascade": "true"})
    assert response.status_code == 204, response.text
    for path in (f"/v1/datasets/{dataset['id']}", f"/v1/datasets/{version['id']}", f"/v1/jobs/{job_id}",
                 f"/v1/jobs/{retrain_id}", f"/v1/predictions/{run_id}", f"/v1/predictions/{run_id}/rows",
                 f"/v1/predictions/{run_id}/rows.csv", f"/v1/datasets/{version['id']}/rows.jsonl",
                 f"/v1/jobs/{job_id}/noise-report", f"/v1/jobs/{job_id}/noise-report/decisions",
                 f"/v1/jobs/{retrain_id}/adapter", f"/v1/jobs/{retrain_id}/predictions"):
        assert api.get(path).status_code == 404, path
    assert api.delete(f"/v1/datasets/{dataset['id']}", params={"cascade": "true"}).status_code == 404
    assert api.delete(f"/v1/predictions/{run_id}").status_code == 404
    assert _mentions(url, gone) == []
    assert [p for p in _files(settings.data_dir, logs) if any(i in p for i in gone)] == []
    for prefix in (f"tenants/tenant-a/jobs/{job_id}", f"jobs/{job_id}", f"tenants/tenant-a/jobs/{retrain_id}",
                   f"jobs/{retrain_id}", f"tenants/tenant-a/predictions/{run_id}"):
        assert not (artifacts / prefix).exists(), prefix
    after = _counts(url)
    assert after["datasets"] == 1 and after["dataset_rows"] == 30 and after["jobs"] == 0
    assert sum(after[t] for t in ("noise_rows", "job_events", "review_decisions", "prediction_rows")) == 0
    assert {t: n for t, n in after.items() if n != before[t]}.keys() <= {
        "datasets", "dataset_rows", "jobs", "job_events", "noise_rows", "review_decisions", "prediction_rows"}

    # nor does the broker, once the worker has acked the last task (acks come after the run's commit)
    wait_for(lambda: not _redis_mentions(gone), 30, "the broker to forget the deleted objects", interval=0.2)
    # --- the unrelated dataset is intact ---------------------------------------------------------------------
    assert api.get(f"/v1/datasets/{unrelated['id']}").json() == unrelated
    assert api.get(f"/v1/datasets/{unrelated['id']}/rows.jsonl").content == unrelated_rows
    assert [d["id"] for d in api.get("/v1/datasets").json()["data"]] == [unrelated["id"]]
    assert api.get("/v1/jobs").json()["data"] == []
