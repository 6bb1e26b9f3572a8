"""The dashboard's pages as HTML (the browser test in tests/clients draws them in Chromium)."""

from __future__ import annotations

import json
import re

from tests.service.fake_results import make_finished_job
from tests.service.helpers import toy_frame, upload_frame


def embedded_data(html: str) -> dict:
    """The JSON the job page hands its script."""
    match = re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def test_the_job_list_shows_every_job_with_its_state(client, settings):
    done, _ = make_finished_job(client, settings)
    dataset = upload_frame(client, toy_frame(30))
    queued = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"}).json()["id"]
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"/ui/jobs/{done}" in page.text and f"/ui/jobs/{queued}" in page.text
    assert 'class="state succeeded"' in page.text and 'class="state queued"' in page.text
    assert 'http-equiv="refresh"' in page.text  # a job is still active
    only = client.get("/ui", params={"status": "succeeded"}).text
    assert done in only and queued not in only


def test_the_job_page_has_plots_flagged_rows_and_downloads(client, settings):
    job_id, rows = make_finished_job(client, settings)
    page = client.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200
    for canvas in ("chart-loss", "chart-accuracy", "chart-pclean", "chart-noise", "chart-confusion"):
        assert f'id="{canvas}"' in page.text
    assert f'href="/v1/jobs/{job_id}/adapter"' in page.text and f'href="/v1/jobs/{job_id}/noise-report.csv"' in page.text
    table = page.text.split('id="flagged-table"')[1].split("</table>")[0]
    assert table.count("<tr>") - 1 == sum(r["flagged"] for r in rows)  # minus the header row
    data = embedded_data(page.text)
    assert data["final"] and [e["epoch"] for e in data["epochs"]] == [1, 2]
    assert data["stats"]["rows"] == len(rows)
    assert "/ui/static/vendor/chart.umd.min.js" in page.text


def test_a_queued_job_page_has_no_report_yet(client, settings):
    dataset = upload_frame(client, toy_frame(30))
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"}).json()["id"]
    page = client.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200 and 'id="flagged-table"' not in page.text
    assert 'class="button disabled" id="download-adapter"' in page.text
    assert embedded_data(page.text)["stream_url"] == f"/v1/jobs/{job_id}/events/stream"


def test_unknown_jobs_and_static_files(client):
    missing = client.get("/ui/jobs/job_nope")
    assert missing.status_code == 404 and "no job with id" in missing.text
    script = client.get("/ui/static/vendor/chart.umd.min.js")
    assert script.status_code == 200 and "Chart.js v4" in script.text[:200]
    assert client.get("/ui/static/job.js").status_code == 200
