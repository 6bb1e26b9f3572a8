"""The Python client: against the live service (a job created, waited for and read back as
DataFrames), and against a fake transport (bearer key, error envelope, stream reconnection)."""

from __future__ import annotations

import io
import json

import httpx
import pytest

from clearft import ApiError, Client
from clearft.models import StreamEvent
from clearft.progress import ProgressBar
from clearft.sse import parse_sse
from tests.clients import fake_report


def test_a_finished_job_reads_back_as_dataframes(live_service, finished_job):
    with Client(live_service) as client:
        job = client.jobs.get(finished_job.id)
        assert job.status == "succeeded" and job.is_final and job.progress == 1.0
        report = job.noise_report()
        summary = report.attrs["summary"]
        held_out = report["split"] == "validation"
        assert len(report) == 60 == summary["rows"]  # every row, the 20 % held out of training too
        assert summary["validation_rows"] == int(held_out.sum()) == 12 and summary["train_rows"] == 48
        assert report.loc[held_out, "p_clean"].isna().all() and report.loc[~held_out, "p_clean"].notna().all()
        assert report["rank"].tolist() == list(range(1, 61))  # rank order: flagged rows first
        assert report["flagged"].is_monotonic_decreasing
        for _, part in report.groupby("flagged"):
            assert part["label_quality"].is_monotonic_increasing
        assert report["flag_reason"].str.len().gt(0).all()
        assert int(report["flagged"].sum()) == summary["flagged"]
        assert summary["reliability"]["verdict"] in ("reliable", "not reliable")
        assert abs(sum(map(sum, summary["noise_matrix"]["joint"])) - 1) < 1e-6
        flagged = job.noise_report(flagged=True)
        assert len(flagged) == summary["flagged"] and flagged["flagged"].all()
        validation = job.noise_report(split="validation")
        assert len(validation) == 12 and (validation["split"] == "validation").all()
        none = job.noise_report(decided=True)  # no review decision yet, so no row: the columns are still there
        assert len(none) == 0 and list(none.columns) == list(report.columns) and none.attrs["summary"] == summary
        epochs = job.epochs()
        assert epochs["epoch"].tolist() == [1, 2, 3] and epochs["validation_agreement"].notna().all()
        assert epochs["last_pass_p_clean_mean"].notna().tolist() == [False, True, True]  # one warm-up epoch
        stats = client.jobs.report_stats(job.id)
        assert sum(stats["histogram"]["flagged"]) == stats["flagged"] == summary["flagged"]
        assert stats["histogram"]["thresholds"] == summary["class_thresholds"]
        assert job.id in [j.id for j in client.jobs.list(status="succeeded")]


def _fake(handler) -> Client:
    return Client(key="sk-test", http=httpx.Client(base_url="http://service", transport=httpx.MockTransport(handler)))


def test_the_key_is_sent_as_a_bearer_token_and_errors_keep_the_envelope(monkeypatch, tmp_path):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no job", "param": "job_id"}})

    with pytest.raises(ApiError) as caught:
        _fake(handler).jobs.get("job_x")
    assert seen == ["Bearer sk-test"]
    assert (caught.value.status, caught.value.code, caught.value.param) == (404, "not_found", "job_id")
    monkeypatch.setenv("CLEARFT_API_KEY", "from-env")
    assert Client("http://service").http.headers["authorization"] == "Bearer from-env"
    monkeypatch.delenv("CLEARFT_API_KEY")
    monkeypatch.chdir(tmp_path)  # no var/api-key here
    monkeypatch.delenv("CLEARFT_API_KEY_FILE", raising=False)
    monkeypatch.setenv("CLEAR_DATA_DIR", str(tmp_path / "data"))
    assert "authorization" not in Client("http://service").http.headers
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "api-key").write_text("from-the-embedded-service\n")  # what `serve` writes
    assert Client("http://service").http.headers["authorization"] == "Bearer from-the-embedded-service"


def test_the_stream_reconnects_with_last_event_id(monkeypatch):
    monkeypatch.setattr("clearft.jobs.time.sleep", lambda _: None)
    asked = []
    first = 'retry: 2000\n\nid: 7\nevent: state\ndata: {"type": "state", "data": {"status": "running"}}\n\n'
    rest = ('event: progress\ndata: {"status": "succeeded", "progress": 1.0}\n\n'
            'id: 9\nevent: state\ndata: {"type": "state", "data": {"status": "succeeded"}}\n\n'
            'event: end\ndata: {"status": "succeeded"}\n\n')

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        body = first if len(asked) == 1 else rest  # the first connection drops before "end"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    events = list(_fake(handler).jobs.stream("job_x"))
    assert asked == [None, "7"]
    assert [(e.event, e.id) for e in events] == [("state", 7), ("progress", None), ("state", 9), ("end", None)]


def test_the_sse_parser_and_the_progress_bar():
    lines = ["retry: 10", "", ": keep-alive", "", "id: 3", "event: epoch", 'data: {"data": {"epoch": 1,', 'data: "x": 2}}',
             ""]
    events = list(parse_sse(lines))
    assert [e.event for e in events] == ["keep-alive", "epoch"] and events[1].id == 3
    assert events[1].data == {"data": {"epoch": 1, "x": 2}}
    out = io.StringIO()
    bar = ProgressBar("job_x", file=out)
    bar.feed(StreamEvent("progress", {"status": "running", "num_epochs": 3, "epoch": 1, "global_step": 12,
                                      "max_steps": 36, "phase": "routed", "loss": 0.4321}))
    bar.feed(StreamEvent("epoch", {"data": {"epoch": 2, "phase": "routed", "train_loss": 0.5, "eval_accuracy": 0.8,
                                            "last_pass_p_clean_mean": 0.74, "p_clean_mean": 0.1}}, 4))
    bar.feed(StreamEvent("warning", {"type": "warning", "message": fake_report.WARNING,
                                     "data": {"stage": "after_warmup", "reliability": {"reliable": False}}}, 5))
    bar.feed(StreamEvent("resumed", {"type": "resumed", "message": "attempt 2 resumes from the checkpoint at step 8",
                                     "data": {"attempt": 2, "global_step": 8}}, 6))
    bar.close()
    text = out.getvalue()
    for part in ("step 12/36", "epoch 2/3 routed", "loss 0.4321", "ETA",
                 "epoch 2/3 (routed): train_loss 0.500, eval_accuracy 0.800, last_pass_p_clean_mean 0.740\n",
                 f"WARNING: {fake_report.WARNING}\n", "job_x: attempt 2 resumes from the checkpoint at step 8\n"):
        assert part in text, text
    assert "p_clean_mean 0.100" not in text  # an old name is not printed


def _json_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_the_api_and_the_worker_log_json_lines_with_the_job_id(finished_job, service_logs):
    worker = [line for line in _json_lines(service_logs / "worker.log") if line["job_id"] == finished_job.id]
    assert any(line["message"] == f"job {finished_job.id} ended succeeded" for line in worker), worker
    api = [line for line in _json_lines(service_logs / "api.log") if line["job_id"] == finished_job.id]
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events/stream"} <= {line.get("route") for line in api}


def test_the_client_imports_neither_the_service_nor_torch():
    import subprocess
    import sys

    code = "import clearft, clearft.cli, sys; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "fastapi", "sqlalchemy", "celery", "app", "pandas")}
