"""The Python client and the CLI on the review loop (decide, list decisions, make a version, download rows,
retrain from a job, delete), against the real app in this process (its test client is the ``httpx.Client``
under ``clearft.Client``) on the service tests' Postgres database; the finished job's results are written
directly, nothing is trained."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clearft import ApiError, Client, UsageError
from clearft.cli import main
from tests.service.conftest import api_key, auth, client, enqueued, pg_url, settings  # noqa: F401
from tests.service.fake_results import make_finished_job

N = 30


@pytest.fixture
def ft(client, api_key):  # noqa: F811
    """A ``clearft.Client`` of tenant ``tenant-a`` over the app's test client."""
    return Client(key=api_key, http=client)


@pytest.fixture
def finished(client, settings):  # noqa: F811
    """A succeeded job with a 30-row report: (job id, dataset id)."""
    job_id, _ = make_finished_job(client, settings, n=N)
    return job_id, client.get(f"/v1/jobs/{job_id}").json()["dataset_id"]


def test_the_client_decides_makes_a_version_downloads_it_retrains_and_deletes(ft, finished, tmp_path):
    job_id, dataset_id = finished
    counts = ft.jobs.decide(job_id, [{"row_index": 0, "action": "accept"},
                                     {"row_index": 1, "action": "relabel", "label": "2"}])
    assert counts == {"recorded": 2, "by_action": {"accept": 1, "keep": 0, "relabel": 1, "drop": 0}}
    assert ft.jobs.decide(job_id, rule={"given_label": "1", "flagged": False}, action="drop")["recorded"] > 0
    decisions = ft.jobs.list_decisions(job_id)
    assert [d["row_index"] for d in decisions] == sorted(d["row_index"] for d in decisions)
    assert len(ft.jobs.list_decisions(job_id, action="relabel")) == 1
    with pytest.raises(UsageError):
        ft.jobs.decide(job_id)
    with pytest.raises(ApiError) as caught:
        ft.jobs.decide(job_id, [{"row_index": 500, "action": "keep"}])
    assert caught.value.status == 422 and "500" in str(caught.value)
    report = ft.jobs.noise_report(job_id, decided=True)
    assert len(report) == len(decisions) and set(report["decision"]) == {"accept", "relabel", "drop"}

    version = ft.datasets.create_version(dataset_id, job_id, name="reviewed")
    assert version.parent_id == dataset_id and version.from_job_id == job_id and version.name == "reviewed"
    assert version.lineage["relabelled"] == 1 and version.row_count == N - version.lineage["dropped"]
    for suffix in ("csv", "jsonl", "parquet"):
        path = ft.datasets.download_rows(version.id, tmp_path / f"rows.{suffix}")
        frame = (pd.read_csv(path, dtype=str) if suffix == "csv" else
                 pd.read_json(path, lines=True, dtype=str) if suffix == "jsonl" else pd.read_parquet(path))
        assert len(frame) == version.row_count and list(frame.columns) == ["id", "text", "text_pair", "label",
                                                                           "gold_label"]
        assert frame["label"].iloc[1] == "2"
    with pytest.raises(UsageError):
        ft.datasets.download_rows(version.id, tmp_path / "rows.xlsx")

    retrain = ft.jobs.create(version.id, from_job=job_id)
    before = ft.jobs.get(job_id)
    assert retrain.from_job_id == job_id and retrain.training == before.training and retrain.routed == before.routed
    with pytest.raises(ApiError) as caught:
        ft.jobs.delete(retrain.id)
    assert caught.value.status == 409
    ft.jobs.cancel(retrain.id)
    ft.jobs.delete(retrain.id)
    with pytest.raises(ApiError) as caught:
        ft.datasets.delete(dataset_id)
    assert caught.value.status == 409 and caught.value.code == "dataset_in_use"
    ft.datasets.delete(dataset_id, cascade=True)
    for get in (lambda: ft.datasets.get(dataset_id), lambda: ft.datasets.get(version.id),
                lambda: ft.jobs.get(job_id)):
        with pytest.raises(ApiError) as caught:
            get()
        assert caught.value.status == 404


def _run(capsys, ft, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), client=ft)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_commands_of_the_review_loop(ft, finished, capsys, tmp_path):
    job_id, dataset_id = finished
    code, out, _ = _run(capsys, ft, "jobs", "decide", job_id, "--row", "4=drop", "--row", "5=relabel:1")
    assert code == 0 and out.strip() == "2 row(s) decided: relabel 1, drop 1"
    code, out, _ = _run(capsys, ft, "jobs", "decide", job_id, "--action", "accept", "--flagged",
                        "--min-confidence", "0.9")
    assert code == 0 and "accept 10" in out
    code, out, _ = _run(capsys, ft, "review", job_id, "--accept-flagged", "--min-confidence", "0.9")
    assert code == 0 and out.startswith("10 flagged row(s) decided: accept")
    with pytest.raises(SystemExit) as usage:  # argparse: no action chosen
        _run(capsys, ft, "review", job_id, "--min-confidence", "0.9")
    assert usage.value.code == 2 and "--accept-flagged" in capsys.readouterr().err
    code, _, err = _run(capsys, ft, "jobs", "decide", job_id, "--row", "3=relabel")
    assert code == 2 and "INDEX=relabel:LABEL" in err
    code, out, _ = _run(capsys, ft, "--json", "jobs", "decisions", job_id, "--action", "relabel")
    assert code == 0 and [d["row_index"] for d in json.loads(out)] == [5]
    code, out, _ = _run(capsys, ft, "jobs", "noise-report", job_id, "--undecided")
    assert code == 0 and "likeliest wrong" in out
    code, out, _ = _run(capsys, ft, "--json", "datasets", "version", dataset_id, "--from-job", job_id)
    version = json.loads(out)
    assert code == 0 and version["lineage"]["dropped"] == 1 and version["row_count"] == N - 1
    code, out, _ = _run(capsys, ft, "datasets", "get", version["id"])
    assert code == 0 and f"version of {dataset_id} from job {job_id}" in out
    code, out, _ = _run(capsys, ft, "datasets", "download", version["id"], "-o", str(tmp_path / "v.csv"))
    assert code == 0 and len(pd.read_csv(tmp_path / "v.csv")) == N - 1
    code, out, _ = _run(capsys, ft, "--json", "jobs", "create", "--dataset", version["id"], "--from-job", job_id,
                        "--epochs", "3")
    retrain = json.loads(out)
    assert code == 0 and retrain["from_job_id"] == job_id and retrain["training"]["epochs"] == 3
    code, _, err = _run(capsys, ft, "jobs", "delete", retrain["id"])
    assert code == 1 and "409" in err
    _run(capsys, ft, "jobs", "cancel", retrain["id"])
    code, out, _ = _run(capsys, ft, "jobs", "delete", retrain["id"])
    assert code == 0 and "deleted" in out
    code, _, err = _run(capsys, ft, "datasets", "delete", dataset_id)
    assert code == 1 and "cascade=true" in err
    code, out, _ = _run(capsys, ft, "datasets", "delete", dataset_id, "--cascade")
    assert code == 0 and "with its versions and jobs" in out
    code, _, err = _run(capsys, ft, "jobs", "get", job_id)
    assert code == 1 and "404" in err
