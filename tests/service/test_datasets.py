"""Dataset upload: three formats, row-level validation with codes and rows, nothing stored on error, 413."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.service.conftest import table_counts
from tests.service.helpers import to_bytes, toy_frame, upload, upload_frame


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_upload_stores_every_row_with_histogram_and_sha256(client, settings, fmt):
    frame = toy_frame(60)
    content = to_bytes(frame, fmt)
    response = upload(client, content, f"train.{fmt}", gold_label_column="gold", id_column="id", name="toy")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "ready" and body["format"] == fmt and body["row_count"] == 60
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["label_names"] == ["0", "1", "2"]
    assert body["class_histogram"] == {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()}
    assert body["columns"] == {"text": "text", "label": "label", "id": "id", "gold_label": "gold"}
    assert client.get(f"/v1/datasets/{body['id']}").json() == body
    assert table_counts(settings.database_url)["dataset_rows"] == 60


def test_text_pair_and_declared_label_order(client, settings):
    frame = pd.DataFrame({"premise": ["a b", "c d", "e f", "g h"], "hypothesis": ["x", "y", "z", "w"],
                          "y": ["yes", "no", "yes", "no"]})
    body = upload_frame(client, frame, text_column="premise", text_pair_column="hypothesis", label_column="y",
                        labels='["yes", "no"]')
    assert body["label_names"] == ["yes", "no"] and body["columns"]["text_pair"] == "hypothesis"
    assert body["class_histogram"] == {"yes": 2, "no": 2}


@pytest.mark.parametrize("labels, order", [
    (["²", "1", "1", "²"], ["1", "²"]),            # '²' is a digit to str.isdigit, not to int: was a 500
    (["--1", "2", "10", "2", "--1", "10"], ["--1", "10", "2"]),  # not all integers: by code point
    (["10", "2", "-1", "2", "-1", "10"], ["-1", "2", "10"]),    # all integers: by value
])
def test_labels_order_as_clear_core_orders_them(client, labels, order):
    from clear_core.data import build_label_names

    frame = pd.DataFrame({"text": [f"row {i}" for i in range(len(labels))], "label": labels})
    body = upload_frame(client, frame)
    assert body["label_names"] == order == build_label_names(labels)


def _error(response, status=422):
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_two_file_parts_are_refused_and_nothing_is_stored(client, settings):
    first = toy_frame(30).to_csv(index=False).encode()
    second = toy_frame(40).to_csv(index=False).encode()
    response = client.post("/v1/datasets", files=[("file", ("a.csv", first, "text/csv")),
                                                  ("file", ("b.csv", second, "text/csv"))])
    error = _error(response)
    assert error["param"] == "file" and "more than one part named 'file'" in error["message"]
    # a file and a text field both named 'file', in either order: the service's own 422 (pydantic's "Expected
    # UploadFile" answered when the text came last), at the first part that is wrong
    for fields, says in (([("file", ("a.csv", first, "text/csv")), ("file", (None, b"hello"))], "more than one part"),
                         ([("file", (None, b"hello")), ("file", ("a.csv", first, "text/csv"))], "must be a file")):
        error = _error(client.post("/v1/datasets", files=fields))
        assert error["param"] == "file" and says in error["message"], (fields, error)
    assert table_counts(settings.database_url)["dataset_rows"] == 0
    assert client.get("/v1/datasets").json()["count"] == 0
    assert not [p for p in settings.scratch("uploads").rglob("upload-*")]  # nothing spooled is left


def test_a_text_field_named_file_or_a_field_given_twice_is_a_422_saying_so(client, settings):
    content = toy_frame(30).to_csv(index=False).encode()
    error = _error(client.post("/v1/datasets", files=[("file", (None, b"hello"))]))
    assert error["param"] == "file" and "must be a file" in error["message"] and "Expected" not in error["message"]
    twice = [("id_column", (None, b"id")), ("id_column", (None, b"text")), ("file", ("a.csv", content, "text/csv"))]
    error = _error(client.post("/v1/datasets", files=twice))
    assert error["param"] == "id_column" and "given more than once" in error["message"]
    assert client.get("/v1/datasets").json()["count"] == 0


def test_an_unterminated_quote_names_its_row_and_the_line_it_starts_on(client):
    content = (b'text,label\n"two\nlines",a\n' + b"".join(f"row {i},b\n".encode() for i in range(1, 5))
               + b'"never closed,a\nmore,b\n')
    error = _error(upload(client, content))
    assert error["code"] == "parse_error"
    [detail] = error["details"]
    assert detail["row"] == 5 and detail["line"] == 8  # the header is line 1, the first row spans lines 2-3


@pytest.mark.parametrize("content, row, line", [
    # quoted line breaks before the ragged row (pandas' "line 5" counts records): LF, then CRLF
    (b'id,text,label\n1,"hello, world\nsecond line\nthird",a\n2,"bye, ""x"" world",b\n3,"multi\nline",a\n'
     b"4,bar,b,EXTRA\n5,baz,a\n", 3, 8),
    (b'id,text,label\r\n1,"a\r\nb",a\r\n2,"c,d",b\r\n3,foo,a\r\n4,bar,b,EXTRA\r\n5,baz,a\r\n', 3, 6),
    # a blank line is no row (as validation counts rows), but it is a line
    (b"id,text,label\n1,a,a\n\n2,b,b\n3,c,a,X\n4,d,b\n", 2, 5),
    (b"id,text,label\n\n1,a,a,X\n2,b,b\n3,c,a\n", 0, 3),
])
def test_a_row_with_too_many_fields_is_named_by_its_row_and_the_line_it_starts_on(client, content, row, line):
    error = _error(upload(client, content, id_column="id"))
    assert error["code"] == "parse_error"
    [detail] = error["details"]
    assert (detail["row"], detail["line"]) == (row, line), detail


def _bad(frame_or_bytes, filename="data.csv", **form):
    content = frame_or_bytes if isinstance(frame_or_bytes, bytes) else frame_or_bytes.to_csv(index=False).encode()
    return content, filename, form


def _with(frame: pd.DataFrame, row: int, **values) -> pd.DataFrame:
    frame = frame.copy()
    for column, value in values.items():
        frame.loc[row, column] = value
    return frame


BASE = toy_frame(30)
BAD_CASES = {
    "empty_text": (_bad(_with(BASE, 4, text="  ")), "invalid_rows", [(4, "empty_text")]),
    "missing_label": (_bad(_with(BASE.astype({"label": object}), 7, label="")), "invalid_rows",
                      [(7, "missing_label")]),
    "unknown_label": (_bad(_with(BASE.astype({"label": object}), 2, label="9"), labels="0,1,2"), "invalid_rows",
                      [(2, "unknown_label")]),
    "duplicate_id": (_bad(_with(BASE, 9, id="r3"), id_column="id"), "invalid_rows", [(9, "duplicate_id")]),
    "class_too_small": (_bad(_with(BASE, 0, label=7)), "invalid_rows", [(None, "class_too_small")]),
    "declared_class_without_rows": (_bad(BASE, labels="0,1,2,3"), "invalid_rows", [(None, "class_too_small")]),
    "single_class": (_bad(BASE.assign(label=1)), "invalid_rows", [(None, "too_few_classes")]),
    "missing_column": (_bad(BASE, label_column="topic"), "missing_column", [(None, "missing_column")]),
    "bad_encoding": (_bad("text,label\ncaf\xe9 ok,0\nb,1\n".encode("latin-1")), "bad_encoding",
                     [(0, "bad_encoding")]),
    "broken_jsonl": (_bad(b'{"text": "a", "label": 0}\n{"text": "b", "label"\n', "data.jsonl"), "parse_error",
                     [(1, "parse_error")]),
    "corrupt_parquet": (_bad(b"PAR1 not really parquet", "data.parquet"), "parse_error", []),
    "empty_file": (_bad(b""), "empty_file", []),
    "header_only": (_bad(b"text,label\n"), "invalid_rows", [(None, "no_rows")]),
    "unsupported_format": (_bad(b"text,label\na,0\n", "data.txt"), "unsupported_format", []),
    "bad_declared_labels": (_bad(BASE, labels='["only"]'), "invalid_input", []),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_upload_names_rows_and_codes_and_stores_nothing(client, settings, case):
    (content, filename, form), code, expected = BAD_CASES[case]
    error = _error(upload(client, content, filename, **form))
    assert error["code"] == code and error["message"] and error["param"]
    found = [(d.get("row"), d["code"]) for d in error.get("details") or []]
    for item in expected:
        assert item in found, (case, found)
    assert table_counts(settings.database_url) == dict.fromkeys(table_counts(settings.database_url), 0)


def test_every_bad_row_is_listed_at_once(client):
    frame = _with(_with(BASE, 1, text=""), 5, text="")
    frame = _with(frame, 8, id="r0")
    details = _error(upload(client, frame.to_csv(index=False).encode(), id_column="id"))["details"]
    assert [(d["row"], d["code"]) for d in details] == [(1, "empty_text"), (5, "empty_text"), (8, "duplicate_id")]


def test_upload_over_the_limit_is_413_and_stores_nothing(settings, auth):
    small = settings.model_copy(update={"max_upload_bytes": 1000})
    with TestClient(create_app(small, enqueue=lambda _id: None), headers=auth) as client:
        content = to_bytes(toy_frame(60), "csv")  # a few KB: passes the header check, fails while reading
        assert len(content) > 1000
        assert _error(upload(client, content), 413)["code"] == "payload_too_large"
        huge = b"text,label\n" + b"word,0\n" * 20000  # well over limit + slack: refused from Content-Length
        assert _error(upload(client, huge), 413)["code"] == "payload_too_large"
    assert table_counts(settings.database_url)["datasets"] == 0


def test_unknown_dataset_is_404(client):
    error = _error(client.get("/v1/datasets/ds_nope"), 404)
    assert error["code"] == "not_found" and error["param"] == "dataset_id"


def test_list_pages_with_cursor(client):
    ids = [upload_frame(client, toy_frame(12, seed=i))["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = client.get("/v1/datasets", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert page["count"] == 5
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert _error(client.get("/v1/datasets", params={"cursor": "garbage!"}))["param"] == "cursor"
