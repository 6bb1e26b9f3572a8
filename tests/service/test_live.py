"""The live routes: the Server-Sent Events stream (resume after Last-Event-ID, follow a running job to
its end) and the noise report's statistics."""

from __future__ import annotations

import json
import threading
import time

import httpx

from app.db import session_factory
from app.services.transitions import add_event, transition
from tests.service.fake_results import make_finished_job
from tests.service.helpers import ServerThread, toy_frame, upload_frame


def read_sse(client, job_id: str, **headers: str) -> list[dict]:
    """Every event of one stream until the server closes it, as {event, id, data} dicts."""
    events, current = [], {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events/stream", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
            elif not line.startswith((":", "retry:")):
                field, _, value = line.partition(": ")
                current[field] = json.loads(value) if field == "data" else value
    return events


def test_the_stream_replays_a_finished_job_and_resumes_after_last_event_id(client, settings):
    job_id, _ = make_finished_job(client, settings)
    events = read_sse(client, job_id)
    logged = [e for e in events if "id" in e]
    assert [e["event"] for e in logged] == ["state", "state", "epoch", "epoch", "state"]
    assert [e["data"]["data"]["status"] for e in logged if e["event"] == "state"] == ["queued", "running", "succeeded"]
    assert events[-1] == {"event": "end", "data": {"status": "succeeded"}}
    progress = [e["data"] for e in events if e["event"] == "progress"]
    assert progress[-1]["progress"] == 1.0 and progress[-1]["num_epochs"] == 2
    resumed = read_sse(client, job_id, **{"Last-Event-ID": logged[2]["id"]})
    assert [e["id"] for e in resumed if "id" in e] == [e["id"] for e in logged[3:]]


def test_the_stream_follows_a_running_job_until_it_ends(client, settings):
    dataset = upload_frame(client, toy_frame(30))
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"}).json()["id"]

    def worker() -> None:
        time.sleep(0.8)
        with session_factory(settings.database_url)() as session:
            transition(session, job_id, ("queued",), "running", global_step=0, max_steps=4)
            time.sleep(0.8)
            add_event(session, job_id, "epoch", data={"epoch": 1, "train_loss": 0.5})
            transition(session, job_id, ("running",), "succeeded", progress=1.0, global_step=4)

    thread = threading.Thread(target=worker)
    thread.start()
    events = read_sse(client, job_id)
    thread.join()
    names = [e["event"] for e in events]
    assert names[0] == "state" and names[-1] == "end" and "epoch" in names
    statuses = [e["data"]["status"] for e in events if e["event"] == "progress"]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded"


def test_the_stream_refuses_unknown_jobs_and_bad_ids(client, settings):
    missing = client.get("/v1/jobs/job_nope/events/stream")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    job_id, _ = make_finished_job(client, settings)
    bad = client.get(f"/v1/jobs/{job_id}/events/stream", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "Last-Event-ID"


def test_report_stats_count_every_row_once(client, settings):
    job_id, rows = make_finished_job(client, settings, n=30)
    stats = client.get(f"/v1/jobs/{job_id}/noise-report/stats", params={"bins": 10}).json()
    flagged = sum(r["flagged"] for r in rows)
    assert stats["rows"] == 30 and stats["flagged"] == flagged and stats["flags_withheld"] is False
    hist = stats["histogram"]
    assert hist["field"] == "label_quality" and len(hist["edges"]) == 11
    assert hist["thresholds"] == {"0": 0.4, "1": 0.5, "2": 0.6}
    assert stats["noise_matrix"]["joint"] == [[0.3, 0.05, 0.0], [0.0, 0.3, 0.05], [0.0, 0.0, 0.3]]
    assert sum(hist["flagged"]) == flagged and sum(hist["unflagged"]) == 30 - flagged
    assert stats["confusion"]["labels"] == ["0", "1", "2"]
    matrix = stats["confusion"]["matrix"]
    for k, label in enumerate(stats["confusion"]["labels"]):
        given = [r for r in rows if r["given_label"] == label]
        assert sum(matrix[k]) == len(given)
        assert matrix[k][1] == sum(r["predicted_label"] == "1" for r in given)
        per_class = stats["per_class"][k]
        assert per_class["flagged"] == sum(r["flagged"] for r in given)
        # the calibrated estimate of the summary, not the flagged fraction
        assert per_class["estimated_noise_rate"] == {"0": 0.1, "1": 0.2, "2": 0.0}[label]


def test_report_stats_need_a_finished_job(client, settings):
    dataset = upload_frame(client, toy_frame(30))
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"}).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}/noise-report/stats").status_code == 409
    assert client.get("/v1/jobs/job_nope/noise-report/stats").status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/noise-report/stats", params={"bins": 1}).status_code == 422


def test_odd_last_event_ids_and_cursors_are_422_not_500(client, settings):
    """'²' passes str.isdigit() but not int(); a 20-digit id or cursor value does not fit a 64-bit column
    (SQLite raises OverflowError binding it): each is a bad request, not a crash."""
    import base64

    job_id, _ = make_finished_job(client, settings)

    def cursor(values) -> str:
        return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")

    for value in ("²", "1" * 20, "1" * 5000):
        bad = client.get(f"/v1/jobs/{job_id}/events/stream", params={"last_event_id": value})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "Last-Event-ID", value
    for path, values in ((f"/v1/jobs/{job_id}/events", [10**30]),
                         (f"/v1/jobs/{job_id}/noise-report", [0.5, 10**30, 1]),
                         (f"/v1/jobs/{job_id}/noise-report", [0.5, 1, -10**30]),
                         ("/v1/jobs", ["2020-01-01T00:00:00", 10**30])):
        bad = client.get(path, params={"cursor": cursor(values)})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "cursor", (path, values)
    nan = client.get(f"/v1/jobs/{job_id}/noise-report", params={"cursor": base64.urlsafe_b64encode(
        b"[NaN, 1, 1]").decode()})
    assert nan.status_code == 422


def test_head_on_a_jobs_stream_answers_at_once_and_frees_its_connection(client, settings, auth):
    # HEAD runs as GET without a body (app.api.limits.HeadAsGet): on a real server, the stream of a job that does
    # not end is stopped at its first piece, so the next request on the same keep-alive connection is answered
    # (before, the server followed the stream until the job ended and that connection answered nothing more)
    from app.main import create_app

    dataset = upload_frame(client, toy_frame(30))
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "base_model": "tiny-bert"}).json()["id"]
    with ServerThread(create_app(settings, enqueue=lambda _id: None)) as server, \
            httpx.Client(base_url=server.url, headers=auth, timeout=10) as http:
        head = http.head(f"/v1/jobs/{job_id}/events/stream")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"].startswith("text/event-stream")
        after = http.get(f"/v1/jobs/{job_id}")  # the same connection (httpx keeps it alive)
        assert after.status_code == 200 and after.json()["status"] == "queued"
