"""Noise report paging, sorting, filters and downloads, on a job whose results are written directly
(the pipeline tests produce real ones); the adapter archive streams from the artifact store."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import pytest
from sqlalchemy import insert

from app.db import session_factory
from app.models import NoiseRow
from app.services.transitions import transition
from app.storage import ArtifactStore, adapter_key
from tests.service.conftest import TENANT_A
from tests.service.helpers import toy_frame, upload_frame

N = 30


@pytest.fixture
def finished_job(client, settings, tmp_path):
    """A succeeded job with a fabricated 30-row report (every third row flagged) and adapter archive."""
    frame = toy_frame(N).assign(text=lambda f: f["text"].where(f.index != 0, "=HYPERLINK(\"x\")"))
    dataset = upload_frame(client, frame)
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"}).json()["id"]
    rows = [dict(job_id=job_id, tenant_id=TENANT_A, row_index=i, row_id=f"r{i}", given_label=str(frame["label"][i]),
                 predicted_label=str((i % 3)), suggested_label=str(i % 3), suggested_confidence=0.9,
                 p_clean=(i * 7 % N) / N, p_clean_history=[0.5, (i * 7 % N) / N], label_quality=(i * 7 % N) / N,
                 flagged=i % 3 == 0, flag_threshold=0.5, rank=0) for i in range(N)]
    for rank, row in enumerate(sorted(rows, key=lambda r: (r["label_quality"], r["row_index"])), start=1):
        row["rank"] = rank
    archive = tmp_path / "adapter.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("clear_config.json")
        payload = b'{"method": "lora"}'
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    key = ArtifactStore(settings.artifact_url).put_file(str(archive), adapter_key(TENANT_A, job_id))
    summary = {"rows": N, "flagged": sum(r["flagged"] for r in rows), "flag_threshold": 0.5,
               "estimated_noise_rate_per_class": {"0": 0.3, "1": 0.3, "2": 0.4}}
    with session_factory(settings.database_url)() as session:
        session.execute(insert(NoiseRow), rows)
        transition(session, job_id, ("queued",), "succeeded", report_summary=summary, adapter_uri=key, progress=1.0)
    return job_id


def _all_pages(client, job_id, **params):
    out, cursor = [], None
    while True:
        page = client.get(f"/v1/jobs/{job_id}/noise-report",
                          params={**params, **({"cursor": cursor} if cursor else {})}).json()
        out += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out, page


def test_pages_are_sorted_by_label_quality_and_complete(client, finished_job):
    rows, last = _all_pages(client, finished_job, limit=7)
    assert len(rows) == N == last["count"] and len({r["row_index"] for r in rows}) == N
    qualities = [r["label_quality"] for r in rows]
    assert qualities == sorted(qualities) and [r["rank"] for r in rows] == list(range(1, N + 1))
    assert last["summary"]["rows"] == N and rows[0]["text"] and rows[0]["id"].startswith("r")


def test_filters_and_summary_flagged_count(client, finished_job):
    flagged, page = _all_pages(client, finished_job, flagged="true", limit=4)
    assert {r["row_index"] % 3 for r in flagged} == {0} and page["count"] == len(flagged)
    assert page["summary"]["flagged"] == len(flagged)
    given = client.get(f"/v1/jobs/{finished_job}/noise-report", params={"given_label": "1"}).json()
    assert given["count"] > 0 and {r["given_label"] for r in given["data"]} == {"1"}
    predicted = client.get(f"/v1/jobs/{finished_job}/noise-report", params={"predicted_label": "2"}).json()
    assert predicted["count"] == 10 and {r["predicted_label"] for r in predicted["data"]} == {"2"}
    assert client.get(f"/v1/jobs/{finished_job}/noise-report", params={"cursor": "x"}).status_code == 422


def test_csv_download_streams_every_row_with_summary_header(client, finished_job):
    response = client.get(f"/v1/jobs/{finished_job}/noise-report.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    summary = json.loads(response.headers["x-noise-report-summary"])
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == N == summary["rows"]
    assert sum(r["flagged"] == "True" for r in rows) == summary["flagged"]
    formula = next(r for r in rows if r["row_index"] == "0")
    assert formula["text"].startswith("'=")  # a spreadsheet will not run it
    flagged_only = client.get(f"/v1/jobs/{finished_job}/noise-report.csv", params={"flagged": "true"})
    assert len(list(csv.DictReader(io.StringIO(flagged_only.text)))) == summary["flagged"]


def test_jsonl_download_starts_with_the_summary(client, finished_job):
    lines = client.get(f"/v1/jobs/{finished_job}/noise-report.jsonl").text.splitlines()
    head, rows = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    assert head["summary"]["rows"] == N == len(rows)
    assert [r["label_quality"] for r in rows] == sorted(r["label_quality"] for r in rows)


def test_adapter_downloads_as_tar_gz(client, finished_job):
    response = client.get(f"/v1/jobs/{finished_job}/adapter")
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        assert tar.getnames() == ["clear_config.json"]
