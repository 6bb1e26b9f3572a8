"""Malformed uploads: every case answers a 4xx in the error envelope with its code and, where a row
is at fault, the row; nothing is stored; the service still answers. A 1 GB upload streamed without
a length is cut off at the limit, never read whole."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.main import create_app
from tests.service.conftest import table_counts
from tests.service.malformed_inputs import STRICT, cases, csv, rows
from tests.service.helpers import upload

CASES = cases()


@pytest.fixture
def strict_settings(settings):
    """Settings with small limits, so each limit is reached by a small file."""
    return settings.model_copy(update=STRICT)


@pytest.fixture
def strict_client(strict_settings, auth):
    """An API client on the strict settings."""
    with TestClient(create_app(strict_settings, enqueue=lambda _id: None), headers=auth) as client:
        yield client


def test_the_suite_has_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_upload_is_a_4xx_with_row_and_code_and_stores_nothing(strict_client, settings, name):
    case = CASES[name]
    response = upload(strict_client, case.content, case.filename, **case.form)
    assert response.status_code == case.status, (name, response.text[:500])
    error = response.json()["error"]
    assert error["code"] == case.code and error["message"] and error["param"], (name, error)
    found = [(d.get("row"), d["code"]) for d in error.get("details") or []]
    for expected in case.rows:
        assert expected in found, (name, found[:10])
    if case.exact:
        assert sorted(found, key=str) == sorted(case.rows, key=str), (name, found[:10])
    assert case.message in error["message"], (name, error["message"])
    named = {d.get("column") for d in error.get("details") or []}
    assert set(case.columns) <= named, (name, named)
    assert set(table_counts(settings.database_url).values()) == {0}, name
    assert strict_client.get("/healthz").status_code == 200


def test_a_utf8_bom_and_quoted_newlines_are_accepted(strict_client):
    body = [("\"two\nlines\"", "a")] + rows()[1:]
    response = upload(strict_client, b"\xef\xbb\xbf" + csv(body), "data.csv")
    assert response.status_code == 201, response.text
    assert response.json()["columns"] == {"text": "text", "label": "label"} and response.json()["row_count"] == 12


def test_file_names_are_labels_never_paths(strict_client):
    for filename in ("../../../../etc/passwd.csv", "C:\\Windows\\system32\\evil.csv", "a\x00b\x07.csv"):
        response = upload(strict_client, csv(), filename)
        assert response.status_code == 201, response.text
        name = response.json()["name"]
        assert "/" not in name and "\\" not in name and "\x00" not in name and name.endswith(".csv")
    long_name = upload(strict_client, csv(), "data.csv", name="n" * 900).json()["name"]
    assert len(long_name) == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lazy_gigabyte(sent: list[int], boundary: str):
    """A multipart body of 1 GiB of CSV rows, generated 1 MiB at a time as the server reads it."""
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n"
           "Content-Type: text/csv\r\n\r\ntext,label\r\n").encode()
    block = b"some words of text,a\r\n" * ((1 << 20) // 22)
    for _ in range(1024):
        sent[0] += len(block)
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def test_a_1gb_stream_without_length_is_cut_off_at_the_limit(strict_settings, auth):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(strict_settings, enqueue=lambda _id: None), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        sent, boundary = [0], "lazyboundary7d2f"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            response = http.post("/v1/datasets", content=_lazy_gigabyte(sent, boundary),
                                 headers={"content-type": f"multipart/form-data; boundary={boundary}", **auth})
            assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
            assert sent[0] < 64 << 20, f"the client got to send {sent[0]} bytes"  # far from 1 GiB
            assert http.get("/healthz").status_code == 200
        assert set(table_counts(strict_settings.database_url).values()) == {0}
    finally:
        server.should_exit = True
        thread.join(10)


def test_every_string_cell_of_the_report_csv_is_formula_safe():
    import csv as csv_module
    import io

    from app.services.reports import REPORT_FIELDS, csv_lines

    row = {name: None for name in REPORT_FIELDS}
    attacks = {"text": "=HYPERLINK(\"http://x\")", "text_pair": "+1+2", "id": "-2+3", "given_label": "@SUM(A1)",
               "predicted_label": "\t=1", "suggested_label": "\r=1"}
    row.update(attacks, rank=1, row_index=0, p_clean_history=[0.5], label_quality=0.1, flagged=True)
    parsed = list(csv_module.DictReader(io.StringIO("".join(csv_lines(iter([row]))))))
    for name, value in attacks.items():
        assert parsed[0][name] == "'" + value, name
