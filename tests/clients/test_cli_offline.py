"""``clearft`` against a fake transport (no service): an empty noise report, a missing or unsupported
local file, the row errors of a refused upload, ``--archive -o FILE.tgz``, and how a job's report is shown
(estimated noise rate, verdict, reasons and advice when it is not reliable, warnings, the ``--split``
filter and each row's ``flag_reason``)."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from clearft import Client, UsageError
from clearft.cli import main
from tests.clients import fake_report


def _fake(handler) -> Client:
    return Client(http=httpx.Client(base_url="http://service", transport=httpx.MockTransport(handler)))


def _never_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"nothing should be sent, got {request.method} {request.url}")


def run(capsys, handler, *argv: str) -> tuple[int, str, str]:
    """Run one command on a fake service; returns (status, stdout, stderr)."""
    code = main(list(argv), client=_fake(handler))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flags", [[], ["--flagged"]])
def test_noise_report_of_an_empty_report_says_so(capsys, flags):
    summary = {"rows": 0, "flagged": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs/job_x/noise-report.jsonl"
        return httpx.Response(200, text=json.dumps({"summary": summary}) + "\n")

    code, out, err = run(capsys, handler, "jobs", "noise-report", "job_x", *flags)
    assert code == 0 and "has no rows" in out and err == ""


def test_upload_of_a_missing_file_is_one_line_and_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, _never_called, "datasets", "upload", str(tmp_path / "nope.csv"))
    assert code == 2 and out == "" and "no such file" in err and "nope.csv" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = run(capsys, _never_called, "datasets", "upload", str(tmp_path))
    assert code == 2 and "is not a file" in err


@pytest.mark.parametrize("flags", [["--learning-rate", "nan"], ["--learning-rate", "inf"],
                                   ["--set", "clear.temperature=NaN"], ["--set", "training.seed=1e400"],
                                   ["--set", f"training.learning_rate=1{'0' * 400}"],
                                   ["--validation-fraction", "nan"]])
def test_a_number_json_cannot_carry_is_a_usage_error_before_sending(capsys, flags):
    code, out, err = run(capsys, _never_called, "jobs", "create", "--dataset", "ds_x", *flags)
    assert code == 2 and out == "" and "finite value" in err and "Traceback" not in err


@pytest.mark.parametrize("item", ["x.y=1", "=1", "training.learning_rate", "training=NaN"])
def test_a_malformed_set_is_a_usage_error(capsys, item):
    code, out, err = run(capsys, _never_called, "jobs", "create", "--dataset", "ds_x", "--set", item)
    assert code == 2 and out == "" and "write clear.FIELD=VALUE" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["sheet.xlsx", "data.txt", "data", "data.xlsx.gz"])
def test_an_unsupported_extension_is_refused_before_sending(capsys, tmp_path, name):
    (tmp_path / name).write_bytes(b"PK\x03\x04 not really a spreadsheet")
    code, _, err = run(capsys, _never_called, "datasets", "upload", str(tmp_path / name))
    assert code == 2 and "cannot upload" in err and "CSV" in err and "Traceback" not in err
    with pytest.raises(UsageError):
        _fake(_never_called).datasets.upload(tmp_path / name)


def test_a_declared_format_or_a_gzipped_csv_is_sent(capsys, tmp_path):
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(422, json={"error": {"code": "invalid_rows", "message": "bad", "param": "file"}})

    (tmp_path / "data.csv.gz").write_bytes(gzip.compress(b"text,label\n"))
    (tmp_path / "export.txt").write_bytes(b"text,label\n")
    assert run(capsys, handler, "datasets", "upload", str(tmp_path / "data.csv.gz"))[0] == 1
    assert run(capsys, handler, "datasets", "upload", str(tmp_path / "export.txt"), "--format", "csv")[0] == 1
    assert len(sent) == 2


def test_a_refused_upload_lists_its_row_errors(capsys, tmp_path):
    details = [{"row": i, "code": "missing_label", "column": "label", "message": "label is empty"} for i in range(25)]
    details.append({"row": None, "code": "class_too_small", "column": "label", "message": "class 'a' has 1 row(s)"})
    body = {"error": {"code": "invalid_rows", "message": "26 validation error(s)", "param": "file", "details": details}}
    (tmp_path / "train.csv").write_text("text,label\nx,\n")
    code, _, err = run(capsys, lambda _: httpx.Response(422, json=body), "datasets", "upload",
                       str(tmp_path / "train.csv"))
    assert code == 1 and "422 invalid_rows: 26 validation error(s)" in err
    lines = err.splitlines()
    assert any(line.split()[:4] == ["0", "label", "missing_label", "label"] for line in lines), err
    assert any(line.split()[:3] == ["19", "label", "missing_label"] for line in lines), err
    assert not any(line.split()[:1] == ["20"] for line in lines), err
    assert "and 6 more" in err and "ROW" in err and "COLUMN" in err and "CODE" in err and "MESSAGE" in err


def test_adapter_archive_is_written_to_the_named_file(capsys, tmp_path):
    payload = gzip.compress(b"not checked")

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs/job_x/adapter"
        return httpx.Response(200, content=payload)

    for name in ("x.tgz", "sub/x.tar.gz"):
        code, out, _ = run(capsys, handler, "jobs", "adapter", "job_x", "--archive", "-o", str(tmp_path / name))
        assert code == 0 and (tmp_path / name).is_file() and (tmp_path / name).read_bytes() == payload, name
        assert str(tmp_path / name) in out
    folder = tmp_path / "folder"
    code, _, _ = run(capsys, handler, "jobs", "adapter", "job_x", "--archive", "-o", str(folder))
    assert code == 0 and (folder / "job_x-adapter.tar.gz").read_bytes() == payload


def test_key_files_and_odd_keys_are_usage_errors_not_tracebacks(capsys, tmp_path, monkeypatch):
    """$CLEARFT_API_KEY_FILE: only its first line is the key (a note may follow), and a file that does not
    exist is named rather than silently skipped; a key with a non-ASCII character is exit 2 with one line,
    not an httpx UnicodeEncodeError traceback."""
    from clearft.client import default_key

    monkeypatch.delenv("CLEARFT_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    key_file = tmp_path / "key"
    key_file.write_text("clr_0123abcd_secret\n# the CI key of acme\n")
    monkeypatch.setenv("CLEARFT_API_KEY_FILE", str(key_file))
    assert default_key() == "clr_0123abcd_secret"
    assert Client("http://service").http.headers["authorization"] == "Bearer clr_0123abcd_secret"
    monkeypatch.setenv("CLEARFT_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="CLEARFT_API_KEY_FILE"):
        default_key()
    code = main(["--url", "http://127.0.0.1:9", "jobs", "list"])
    assert code == 2 and "CLEARFT_API_KEY_FILE" in capsys.readouterr().err
    monkeypatch.delenv("CLEARFT_API_KEY_FILE")
    for bad in ("clé", "two words"):
        code = main(["--url", "http://127.0.0.1:9", "--api-key", bad, "jobs", "list"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("clearft: the API key has") and bad not in err, err


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`clearft --json datasets list | head -1` printed a BrokenPipeError traceback once head had left."""
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    one = {"id": "ds_x", "name": "n" * 100, "status": "ready", "row_count": 2, "label_names": ["a", "b"],
           "class_histogram": {"a": 1, "b": 1}, "sha256": "0" * 64, "created_at": "2026-01-01T00:00:00Z"}
    body = json.dumps({"data": [one] * 500, "count": 500, "next_cursor": None}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cli = subprocess.Popen([sys.executable, "-m", "clearft", "--url", f"http://127.0.0.1:{server.server_port}",
                                "--api-key", "k", "--json", "datasets", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        cli.stdout.read(10)
        cli.stdout.close()  # the reader leaves, like `head`
        err = cli.stderr.read().decode()
        assert cli.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
    finally:
        server.shutdown()


def test_a_refused_download_keeps_the_existing_file_and_leaves_nothing(capsys, tmp_path):
    """`noise-report -o report.csv` (or `adapter --archive -o a.tgz`) for a job that is not finished, or with
    the wrong key, used to truncate an existing file to 0 bytes before the 409/404 came back, and to leave an
    empty file otherwise; `adapter -o` naming an existing file was a FileExistsError traceback."""
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": {"code": "report_not_ready", "message": "job is running"}})

    report = tmp_path / "report.csv"
    report.write_text("rank,row_index\n1,7\n")
    code, _, err = run(capsys, refuse, "jobs", "noise-report", "job_x", "-o", str(report))
    assert code == 1 and "report_not_ready" in err
    assert report.read_text() == "rank,row_index\n1,7\n"
    code, _, _ = run(capsys, refuse, "jobs", "noise-report", "job_x", "-o", str(tmp_path / "new.jsonl"))
    code, _, _ = run(capsys, refuse, "jobs", "adapter", "job_x", "--archive", "-o", str(tmp_path / "a.tgz"))
    code, _, _ = run(capsys, refuse, "jobs", "adapter", "job_x", "-o", str(tmp_path / "unpacked"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="rank,row_index\n1,3\n")

    assert run(capsys, serve, "jobs", "noise-report", "job_x", "-o", str(report))[0] == 0
    assert report.read_text() == "rank,row_index\n1,3\n" and sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]
    code, _, err = run(capsys, serve, "jobs", "adapter", "job_x", "-o", str(report))
    assert code == 1 and err.startswith("clearft: ") and "File exists" in err


def test_request_errors_show_their_field_and_counts_must_be_positive(capsys):
    """A 422 invalid_request (e.g. --validation-fraction 2) printed a details table with '-' for the column
    and an empty code, plus the note about data rows; --top -1 printed every row as 'the -1 likeliest'."""
    body = {"error": {"code": "invalid_request", "message": "validation_fraction: Input should be <= 0.5",
                      "param": "validation_fraction", "details": [{"param": "validation_fraction", "message":
                                                                   "Input should be <= 0.5", "type": "less_than_equal"}]}}
    code, _, err = run(capsys, lambda _: httpx.Response(422, json=body), "jobs", "create", "--dataset", "ds_x",
                       "--validation-fraction", "2")
    assert code == 1 and any(line.split()[:3] == ["-", "validation_fraction", "less_than_equal"]
                             for line in err.splitlines()), err
    assert "0-based data row" not in err
    for argv in (["jobs", "noise-report", "job_x", "--top", "-1"], ["jobs", "list", "--limit", "0"],
                 ["datasets", "list", "--limit", "x"]):
        with pytest.raises(SystemExit) as exited:
            main(argv, client=_fake(_never_called))
        assert exited.value.code == 2 and "whole number >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["report.xlsx", "report.txt", "report"])
def test_a_noise_report_file_must_be_csv_or_jsonl(capsys, tmp_path, name):
    code, _, err = run(capsys, _never_called, "jobs", "noise-report", "job_x", "-o", str(tmp_path / name))
    assert code == 2 and "name the file .csv or .jsonl" in err and not (tmp_path / name).exists()


def _job_body(report_summary: dict, metrics: dict) -> dict:
    return {"id": "job_x", "dataset_id": "ds_x", "base_model": "tiny-bert", "method": "lora", "routed": True,
            "clear": {}, "training": {"epochs": 3}, "status": "succeeded", "attempt": 1, "progress": 1.0, "epoch": 3,
            "global_step": 12, "max_steps": 12, "phase": "routed", "loss": 0.5, "metrics": metrics,
            "report_summary": report_summary, "created_at": "2026-01-01T00:00:00Z"}


def test_jobs_get_of_a_reliable_report_prints_the_noise_rate_and_the_verdict(capsys):
    body = _job_body(fake_report.summary(), {"eval_accuracy": 0.8, "estimated_noise_rate": 0.12,
                                             "report_reliable": True, "warnings": []})
    code, out, _ = run(capsys, lambda _: httpx.Response(200, json=body), "jobs", "get", "job_x")
    assert code == 0
    assert "noise report: 9 of 60 rows flagged (the 60: 48 trained on, 12 held out); estimated noise rate 0.120" in out, out
    assert "verdict: reliable (held-out agreement 0.850 vs majority 0.350 on 20 rows)" in out, out
    assert "withheld" not in out and "WARNING" not in out and "warnings" not in out


def test_jobs_get_of_a_report_that_is_not_reliable_says_why_and_that_flags_are_withheld(capsys):
    body = _job_body(fake_report.summary(reliable=False),
                     {"eval_accuracy": 0.35, "report_reliable": False, "warnings": [fake_report.WARNING]})
    code, out, _ = run(capsys, lambda _: httpx.Response(200, json=body), "jobs", "get", "job_x")
    assert code == 0
    lines = out.splitlines()
    assert "noise report: 0 of 60 rows flagged (the 60: 48 trained on, 12 held out); flags withheld: the report is not " \
           "reliable; estimated noise rate 0.120" in lines, out
    assert any(line.startswith("verdict: not reliable - flags withheld (held-out agreement 0.350") for line in lines)
    for text in fake_report.UNRELIABLE_REASONS:
        assert f"  reason: {text}" in lines, out
    assert f"  try: {fake_report.ADVICE}" in lines
    # a warning of the training, told apart from the verdict on the final model (the two may disagree)
    assert f"WARNING: {fake_report.WARNING} (posted during training; the verdict above is on the final model)" in lines
    metrics_line = next(line for line in lines if line.startswith("metrics: "))
    assert "report_reliable False" in metrics_line and "warnings" not in metrics_line


def test_flags_kept_on_an_unreliable_report_are_said_to_be_kept(capsys):
    report_summary = dict(fake_report.summary(reliable=False), flags_withheld=False, flagged=9)
    body = _job_body(report_summary, {})
    code, out, _ = run(capsys, lambda _: httpx.Response(200, json=body), "jobs", "get", "job_x")
    assert code == 0 and "verdict: not reliable - flags kept (clear.flag_when_unreliable)" in out, out
    assert "flags withheld" not in out


def _report_service(rows: list[dict], report_summary: dict, seen: list):
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs/job_x/noise-report.jsonl"
        seen.append(dict(request.url.params))
        split = request.url.params.get("split")
        lines = [{"summary": report_summary}] + [r for r in rows if split in (None, r["split"])]
        return httpx.Response(200, text="".join(json.dumps(line) + "\n" for line in lines))
    return handler


def test_noise_report_prints_the_verdict_the_split_and_each_rows_reason(capsys):
    seen: list = []
    rows = fake_report.report_rows(6, flagged=2)
    code, out, err = run(capsys, _report_service(rows, fake_report.summary(), seen), "jobs", "noise-report",
                         "job_x", "--top", "4")
    assert code == 0 and err == "" and seen == [{}]
    lines = out.splitlines()
    assert lines[0] == "noise report: 9 of 60 rows flagged (the 60: 48 trained on, 12 held out); estimated noise rate 0.120"
    assert lines[1].startswith("verdict: reliable (held-out")
    assert "likeliest wrong" in lines[2] and "flagged rows first" in lines[2]
    header = lines[3].split()
    assert header[:7] == ["rank", "row_index", "split", "given_label", "suggested_label", "label_quality", "flagged"]
    assert header[-2:] == ["text", "flag_reason"]
    table = lines[4:]
    assert len(table) == 4
    assert table[0].rstrip().endswith(fake_report.reason("0", "1", flagged=True))  # the reason in full
    assert table[2].rstrip().endswith(": kept") and " validation " in table[2]
    assert "..." in table[0]  # the long text is cut, not the reason


def test_noise_report_filters_by_split(capsys):
    seen: list = []
    rows = fake_report.report_rows(6, flagged=2)
    handler = _report_service(rows, fake_report.summary(), seen)
    code, out, _ = run(capsys, handler, "jobs", "noise-report", "job_x", "--split", "validation", "--flagged")
    assert code == 0 and seen == [{"split": "validation", "flagged": "true"}]
    table = out.splitlines()[4:]
    assert len(table) == 2 and all(" validation " in line for line in table), out
    with pytest.raises(SystemExit):
        main(["jobs", "noise-report", "job_x", "--split", "test"], client=_fake(_never_called))
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="split"):
        _fake(_never_called).jobs.noise_report("job_x", split="test")


def test_noise_report_of_an_unreliable_report_says_flags_are_withheld(capsys):
    rows = fake_report.report_rows(3, flagged=2, withheld=True)
    code, out, _ = run(capsys, _report_service(rows, fake_report.summary(reliable=False), []), "jobs",
                       "noise-report", "job_x")
    assert code == 0 and "; flags withheld: the report is not reliable;" in out.splitlines()[0]
    assert "verdict: not reliable - flags withheld" in out and f"  try: {fake_report.ADVICE}" in out
    assert "flag withheld (the report is not reliable): predicted '0'" in out


def test_events_print_warnings_as_warning_lines(capsys):
    events = [{"id": 1, "job_id": "job_x", "type": "state", "message": None, "data": {"status": "running"},
               "created_at": "2026-01-01T00:00:00Z"},
              {"id": 2, "job_id": "job_x", "type": "warning", "message": fake_report.WARNING,
               "data": {"stage": "after_warmup", "reliability": fake_report.summary(reliable=False)["reliability"]},
               "created_at": "2026-01-01T00:00:01Z"}]
    body = {"data": events, "next_cursor": None, "has_more": False}
    code, out, _ = run(capsys, lambda _: httpx.Response(200, json=body), "jobs", "events", "job_x")
    assert code == 0 and out.splitlines()[1].endswith(f"#2 WARNING: {fake_report.WARNING}"), out


def test_models_lists_methods_and_reasons_and_json_goes_anywhere(capsys):
    listing = {"data": [{"id": "all-MiniLM-L6-v2", "default": True, "architecture": "bert", "parameters": 22713986,
                         "max_length": 512, "methods": ["lora", "adapter", "prefix", "bitfit", "full"], "refused": {}},
                        {"id": "tiny-llama", "default": False, "architecture": "llama", "parameters": 26018,
                         "max_length": 128, "methods": ["lora", "adapter", "full"],
                         "refused": {"bitfit": "its blocks have no bias terms"}}], "count": 2}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        return httpx.Response(200, json=listing)

    code, out, _ = run(capsys, handler, "models")
    assert code == 0 and "all-MiniLM-L6-v2 (default)" in out and "22.7M" in out and "26.0K" in out
    assert "tiny-llama: no bitfit: its blocks have no bias terms" in out
    for argv in (["--json", "models"], ["models", "--json"]):
        code, out, _ = run(capsys, handler, *argv)
        assert code == 0 and [m["id"] for m in json.loads(out)] == ["all-MiniLM-L6-v2", "tiny-llama"]


def test_a_conflict_without_row_details_prints_no_empty_table(capsys):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": {"code": "dataset_in_use", "message": "used by 2 versions",
                                                   "details": [{"dataset_id": "ds_1", "kind": "version"}]}})

    code, _, err = run(capsys, handler, "datasets", "delete", "ds_0")
    assert code == 1 and "used by 2 versions" in err and "ROW" not in err and "add --cascade" in err


def test_a_bulk_decision_without_a_condition_needs_all_rows(capsys):
    """`jobs decide ID --action keep` with no condition decided every row of the report without a word."""
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"recorded": 60, "by_action": {"keep": 60}})

    code, _, err = run(capsys, handler, "jobs", "decide", "job_x", "--action", "keep")
    assert code == 2 and "--all-rows" in err and sent == [], err
    code, _, err = run(capsys, handler, "jobs", "decide", "job_x", "--action", "keep", "--all-rows", "--flagged")
    assert code == 2 and "without conditions" in err and sent == [], err
    code, out, _ = run(capsys, handler, "jobs", "decide", "job_x", "--action", "keep", "--all-rows")
    assert code == 0 and sent == [{"rule": {"all_rows": True}, "action": "keep"}] and "60 row(s) decided" in out


def test_a_service_url_without_http_says_what_to_give(capsys):
    code = main(["--url", "localhost:8765", "jobs", "list"])
    _, err = capsys.readouterr()
    assert code == 2 and "give http://localhost:8765" in err, err
    with pytest.raises(UsageError, match="not http:// or https://"):
        Client("ftp://example.org", "clr_x")
