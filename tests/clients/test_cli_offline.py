"""``clearft`` against a fake transport (no service): an empty noise report, a missing or unsupported
local file, the row errors of a refused upload, and ``--archive -o FILE.tgz``."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from clearft import Client, UsageError
from clearft.cli import main


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
