"""The job page as HTML for a report of the issue-12 contract (written straight to the database): the
verdict banner (reliable, or not reliable with its reasons, advice and withheld flags), the learning
warnings, the class thresholds beside the label_quality histogram, the noise matrix handed to the heatmap,
the last-pass epoch metrics named as such, and the rows' reasons and splits. The browser test draws them.
The review screen: the table's predicted labels and decisions, its filters (and the report query's
``suggested_label`` and ``q`` filters behind them), the review buttons, the CSRF token that lets the
sign-in cookie make the page's writes (and nothing else), what a job's review made (versions, retrains),
and a retrained job's link to its source with the before/after comparison."""

from __future__ import annotations

import html
import json
import re

import pytest

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


def flagged_table(page: str) -> str:
    """The review table's HTML."""
    return page.split('id="flagged-table"')[1].split("</table>")[0]


def test_the_review_table_has_filters_predicted_labels_decisions_and_the_review_buttons(client, settings):  # noqa: F811
    job_id, rows, summary = reported_job(client, settings, reliable=True)
    flagged = sorted((r for r in rows if r["flagged"]), key=lambda r: r["rank"])
    decided = client.post(f"/v1/jobs/{job_id}/noise-report/decisions", json={"decisions": [
        {"row_index": flagged[0]["row_index"], "action": "accept"},
        {"row_index": flagged[1]["row_index"], "action": "relabel", "label": "2"},
        {"row_index": flagged[2]["row_index"], "action": "drop"}]})
    assert decided.status_code == 200, decided.text
    page = client.get(f"/ui/jobs/{job_id}").text
    table = flagged_table(page)
    header = table.split("</thead>")[0]
    for title in ("Rank", "Text", "Given", "Predicted", "Suggested", "Confidence", "label_quality", "Reason",
                  "Split", "Decision"):
        assert f">{title}</th>" in header, title
    assert 'id="select-all"' in header and table.count('class="row-pick"') == summary["flagged"]
    decisions = re.findall(r'<td class="decision" data-action="([a-z]*)">([^<]*)</td>', table)
    assert decisions[:3] == [("accept", f"accept → {flagged[0]['suggested_label']}"), ("relabel", "relabel → 2"),
                             ("drop", "drop")]
    assert all(d == ("", "") for d in decisions[3:]) and len(decisions) == summary["flagged"]
    assert f'<span class="label predicted">{flagged[0]["predicted_label"]}</span>' in table

    filters = page.split('id="report-filters"')[1].split("</form>")[0]
    assert '<option value="true" selected>flagged</option>' in " ".join(filters.split())
    for name in ("flagged", "given_label", "suggested_label", "decided", "q"):
        assert f'name="{name}"' in filters, name
    assert filters.count('<option value="1">1</option>') == 2  # the classes, for given and suggested
    assert '<option value="true">decided</option>' in filters and '<option value="false">undecided</option>' in filters
    for button in ("accept-selected", "keep-selected", "relabel-selected", "drop-selected", "publish-version",
                   "retrain", "page-prev", "page-next"):
        assert f'id="{button}"' in page, button
    relabel = page.split('id="relabel-to"')[1].split("</select>")[0]
    assert re.findall(r'<option value="([^"]+)">', relabel) == ["0", "1", "2"]
    assert 'id="review-error" role="alert" hidden' in page and 'id="version-error" role="alert" hidden' in page
    assert "/static/review.js" in page
    data = embedded_data(page)["review"]
    assert data["filters"] == {"flagged": True} and data["count"] == summary["flagged"]
    assert data["page_rows"] == 50 and data["can_write"] is True and data["next_cursor"] is None
    assert data["csrf_token"] is None  # this client signs with a header, not the cookie: no token to embed
    assert 'id="version-result" hidden' in page and 'id="retrain-result" hidden' in page


def test_the_report_query_filters_by_suggested_label_decision_and_text(client, settings):  # noqa: F811
    job_id, rows, _ = reported_job(client, settings, reliable=True)
    url = f"/v1/jobs/{job_id}/noise-report"
    suggested = client.get(url, params={"suggested_label": "2", "limit": 100}).json()
    assert suggested["count"] == sum(r["suggested_label"] == "2" for r in rows) > 0
    assert {r["suggested_label"] for r in suggested["data"]} == {"2"}
    texts = {r["row_index"]: r["text"] for r in client.get(url, params={"limit": 100}).json()["data"]}
    word = texts[0].split()[0]
    found = client.get(url, params={"q": word.upper(), "limit": 100}).json()
    assert found["count"] == sum(word in t.lower() for t in texts.values()) > 0  # case-insensitive substring
    assert {r["row_index"] for r in found["data"]} == {i for i, t in texts.items() if word in t.lower()}
    for wildcard in ("%", "_", "\\"):  # LIKE's wildcards are matched literally (no text has them)
        assert client.get(url, params={"q": wildcard}).json()["count"] == 0, wildcard
    client.post(f"{url}/decisions", json={"decisions": [{"row_index": 0, "action": "keep"}]})
    both = client.get(url, params={"q": word, "decided": "true"}).json()
    assert [r["row_index"] for r in both["data"]] == [0] and both["data"][0]["decision"] == "keep"
    csv_rows = client.get(f"{url}.csv", params={"suggested_label": "2"}).text.strip().splitlines()
    assert len(csv_rows) - 1 == suggested["count"]
    assert client.get(url, params={"q": "x" * 201}).status_code == 422


def test_the_dashboards_cookie_writes_only_with_the_pages_csrf_token(settings, api_key):  # noqa: F811
    from fastapi.testclient import TestClient

    from app.api.auth import csrf_token
    from app.main import create_app

    with TestClient(create_app(settings, enqueue=lambda _: None)) as browser:
        signed = browser.post("/ui/login", data={"key": api_key}, follow_redirects=False)
        assert signed.status_code == 303
        job_id, rows, _ = reported_job(TestClient(browser.app, headers={"Authorization": f"Bearer {api_key}"}),
                                       settings, reliable=True)
        page = browser.get(f"/ui/jobs/{job_id}").text
        token = embedded_data(page)["review"]["csrf_token"]
        assert token == csrf_token(api_key) and api_key not in page  # the page gets the token, never the key
        url, body = f"/v1/jobs/{job_id}/noise-report/decisions", {"decisions": [{"row_index": 1, "action": "drop"}]}
        refused = browser.post(url, json=body)  # the cookie alone: as before, no write
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
        assert "X-CSRF-Token" in refused.json()["error"]["message"]  # a signed-in caller learns why
        for headers in ({"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": csrf_token("another key")},
                        {"X-CSRF-Token": token, "Origin": "https://evil.example"},
                        {"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"},
                        {"X-CSRF-Token": token, "Sec-Fetch-Site": "same-site"}):
            answer = browser.post(url, json=body, headers=headers)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "csrf_failed", headers
        assert browser.get(f"/v1/jobs/{job_id}/noise-report/decisions").json()["count"] == 0
        ok = browser.post(url, json=body, headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "same-origin",
                                                   "Origin": str(browser.base_url)})
        assert ok.status_code == 200 and ok.json()["recorded"] == 1
        # only the dashboard's own writes: not a delete, not an upload
        assert browser.delete(f"/v1/jobs/{job_id}", headers={"X-CSRF-Token": token}).status_code == 401
        upload = browser.post("/v1/datasets", headers={"X-CSRF-Token": token},
                              files={"file": ("data.csv", b"text,label\na,0\nb,1\n")})
        assert upload.status_code == 401
        browser.get("/ui/logout")
        assert browser.post(url, json=body, headers={"X-CSRF-Token": token}).status_code == 401


def test_a_retrained_jobs_page_links_its_source_and_shows_the_comparison(client, settings):  # noqa: F811
    from app.db import session_factory
    from app.models import Job

    job_id, rows, _ = reported_job(client, settings, reliable=True)
    flagged = [r for r in rows if r["flagged"]]
    client.post(f"/v1/jobs/{job_id}/noise-report/decisions", json={"decisions": [
        {"row_index": flagged[0]["row_index"], "action": "accept"}]})
    source = client.get(f"/v1/jobs/{job_id}").json()
    version = client.post(f"/v1/datasets/{source['dataset_id']}/versions", json={"from_job": job_id})
    assert version.status_code == 201, version.text
    version = version.json()
    page = client.get(f"/ui/jobs/{job_id}").text  # the source job's page shows what was made from it
    assert 'id="version-result" hidden' not in page and f'<b id="version-id">{version["id"]}</b>' in page
    assert f'href="/v1/datasets/{version["id"]}/rows.csv"' in page
    assert '<span data-key="accepted">accepted 1</span>' in page
    assert f'data-dataset-id="{version["id"]}"' in page

    retrained = client.post("/v1/jobs", json={"dataset_id": version["id"], "from_job": job_id})
    assert retrained.status_code == 201, retrained.text
    new_id = retrained.json()["id"]
    queued = client.get(f"/ui/jobs/{new_id}").text
    assert f'<a id="from-job" href="/ui/jobs/{job_id}">{job_id}</a>' in queued and 'id="comparison-note"' in queued
    assert 'id="dataset-lineage"' in queued and "made from the review of" in section(queued, "dataset-lineage")
    assert f'class="retrain-link" href="/ui/jobs/{new_id}"' in client.get(f"/ui/jobs/{job_id}").text

    labels = [line.split(",")[3] for line in client.get(f"/v1/datasets/{version['id']}/rows.csv").text.splitlines()[1:]]
    fake_report.finish_job(settings.database_url, new_id, TENANT_A, labels, reliable=True)
    with session_factory(settings.database_url)() as session:
        job = session.get(Job, new_id)
        job.metrics = dict(job.metrics, validation_agreement=0.55)
        session.commit()
    page = client.get(f"/ui/jobs/{new_id}").text
    comparison = client.get(f"/v1/jobs/{new_id}").json()["comparison"]
    assert comparison["difference"]["validation_agreement"] == pytest.approx(0.15)
    table = page.split('id="comparison"')[1].split("</table>")[0]
    cells = re.findall(r'<tr data-metric="validation_agreement"><td>[^<]+</td><td>([^<]*)</td><td>([^<]*)</td>'
                       r'<td class="difference">([^<]*)</td>', table)
    assert cells == [("0.400", "0.550", "+0.150")]
    assert 'data-metric="estimated_noise_rate"' in table and 'id="comparison-note"' not in page
