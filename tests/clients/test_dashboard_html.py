"""The job page as HTML for a report of the issue-12 contract (written straight to the database): the
verdict banner (reliable, or not reliable with its reasons, advice and withheld flags), the learning
warnings, the class thresholds beside the label_quality histogram, the noise matrix handed to the heatmap,
the last-pass epoch metrics named as such, and the rows' reasons and splits. The browser test draws them."""

from __future__ import annotations

import html
import json
import re

from tests.clients import fake_report
from tests.service.conftest import TENANT_A, api_key, auth, client, enqueued, pg_url, settings  # noqa: F401
from tests.service.helpers import toy_frame, upload_frame


def embedded_data(page: str) -> dict:
    """The JSON the job page hands its script."""
    match = re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def section(page: str, element_id: str) -> str:
    """The text of the element with ``element_id`` up to the end of its section, tags removed."""
    part = page.split(f'id="{element_id}"', 1)[1].split("</section>", 1)[0]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", part)))


def reported_job(client, settings, *, reliable: bool):  # noqa: F811
    """A queued job of tenant-a on 60 toy rows, finished with a fabricated issue-12 report."""
    frame = toy_frame(60)
    dataset = upload_frame(client, frame)
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert",
                                           "training": {"epochs": 2}}).json()["id"]
    rows, summary = fake_report.finish_job(settings.database_url, job_id, TENANT_A,
                                           [str(v) for v in frame["label"]], reliable=reliable)
    return job_id, rows, summary


def test_a_reliable_report_shows_its_verdict_thresholds_noise_matrix_and_reasons(client, settings):  # noqa: F811
    job_id, rows, summary = reported_job(client, settings, reliable=True)
    page = client.get(f"/ui/jobs/{job_id}").text
    assert 'class="verdict reliable"' in page
    banner = section(page, "verdict")
    assert "Noise report: reliable" in banner and "estimated noise rate 12.0%" in banner
    assert f"{summary['flagged']} of 60 rows flagged" in banner and "held-out agreement" in banner
    assert 'id="verdict-reasons"' not in page and 'id="verdict-advice"' not in page
    assert '<section class="warnings" id="warnings" hidden>' in page

    thresholds = re.findall(r'<li data-label="([^"]+)" data-value="([^"]+)">', page)
    assert [(label, float(value)) for label, value in thresholds] == list(summary["class_thresholds"].items())
    data = embedded_data(page)
    assert data["stats"]["noise_matrix"]["joint"] == fake_report.JOINT
    assert data["stats"]["histogram"]["field"] == "label_quality"
    assert [t["label"] for t in data["thresholds"]] == ["0", "1", "2"] and all(t["color"] for t in data["thresholds"])
    assert 'id="noise-matrix"' in page and "off-diagonal 12.0% = estimated noise rate" in page

    table = page.split('id="flagged-table"')[1].split("</table>")[0]
    assert table.count("<tr>") - 1 == summary["flagged"]
    assert "<th>Reason</th>" in table and ">Split</th>" in table
    assert html.unescape(fake_report.reason("1", "0", flagged=True)) in html.unescape(table)
    assert 'class="split validation"' in table and 'class="split train"' in table


def test_an_unreliable_report_says_flags_are_withheld_with_reasons_advice_and_warnings(client, settings):  # noqa: F811
    job_id, rows, summary = reported_job(client, settings, reliable=False)
    page = client.get(f"/ui/jobs/{job_id}").text
    assert 'class="verdict unreliable"' in page
    banner = section(page, "verdict")
    assert "Noise report: not reliable — flags withheld" in banner and "0 of 60 rows flagged" in banner
    for reason in fake_report.UNRELIABLE_REASONS:
        assert reason in banner
    assert f"Try: {fake_report.ADVICE}" in banner

    warnings = section(page, "warnings")
    assert 'id="warnings" hidden' not in page  # shown
    assert "after warm-up: the model has not learned the task after warm-up" in warnings
    assert "end of training: the model has not learned the task at the end of training" in warnings

    flagged = section(page, "flagged")
    assert "flags withheld (the report is not reliable)" in flagged
    table = page.split('id="flagged-table"')[1].split("</table>")[0]
    assert table.count("<tr>") - 1 == 50  # the lowest label_quality rows, flagged none
    assert "flag withheld (the report is not reliable): predicted" in html.unescape(table)
    listing = client.get("/ui").text
    assert ">withheld</span>" in listing and "12.0%" in listing


def test_the_epoch_table_names_the_last_pass_metrics(client, settings):  # noqa: F811
    job_id, _, _ = reported_job(client, settings, reliable=True)
    page = client.get(f"/ui/jobs/{job_id}").text
    header = page.split('id="epoch-table"')[1].split("</thead>")[0]
    titles = re.findall(r'<th data-key="([^"]+)">([^<]+)</th>', header)
    assert ("last_pass_p_clean_mean", "last pass p_clean mean") in titles
    assert ("last_pass_p_clean_auroc", "last pass p_clean AUROC (gold)") in titles
    assert ("validation_agreement", "held-out agreement (given labels)") in titles
    assert all(key != "eval_accuracy" for key, _ in titles)  # no epoch has it: no empty column
    assert 'id="chart-last-pass"' in page and "Last pass p_clean per epoch" in page
    data = embedded_data(page)
    assert data["epoch_columns"] == [key for key, _ in titles]
    body = page.split('id="epoch-table"')[1].split("</table>")[0].split("<tbody>")[1]
    assert body.count("<tr>") == 2 and "0.620" in body


def test_a_queued_job_has_no_verdict_yet_and_every_epoch_column(client, settings):  # noqa: F811
    dataset = upload_frame(client, toy_frame(30))
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"}).json()["id"]
    page = client.get(f"/ui/jobs/{job_id}").text
    assert 'id="verdict"' not in page and 'id="noise-matrix"' not in page
    assert len(embedded_data(page)["epoch_columns"]) == 11  # rows streamed in later fill them
