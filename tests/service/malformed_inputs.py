"""Builders of malformed uploads for ``test_malformed.py``: each case is a file (bytes, name, form
fields) with the status, error code and (row, code) details the service must answer with."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

STRICT = {"max_rows": 500, "max_text_chars": 1000, "max_uncompressed_bytes": 8 << 20, "max_upload_bytes": 4 << 20}


@dataclass
class Case:
    """One bad upload and what the service must answer."""

    content: bytes
    filename: str = "data.csv"
    status: int = 422
    code: str = "invalid_rows"
    rows: list[tuple[int | None, str]] = field(default_factory=list)
    form: dict[str, Any] = field(default_factory=dict)
    exact: bool = False  # the (row, code) details are exactly ``rows``, nothing else
    message: str = ""  # a phrase the error message must contain
    columns: list[str] = field(default_factory=list)  # column names the details must name


def rows(n: int = 12) -> list[tuple[str, str]]:
    """``n`` valid (text, label) rows over two classes."""
    return [(f"sample text number {i}", "ab"[i % 2]) for i in range(n)]


def csv(body: list[tuple[str, ...]] | None = None, header: str = "text,label", encoding: str = "utf-8") -> bytes:
    """A CSV file (no quoting: callers pass the cells they want to break)."""
    lines = [header] + [",".join(r) for r in (rows() if body is None else body)]
    return ("\n".join(lines) + "\n").encode(encoding)


def with_row(index: int, *cells: str) -> list[tuple[str, ...]]:
    """The valid rows with row ``index`` replaced."""
    body: list[tuple[str, ...]] = list(rows())
    body[index] = cells
    return body


def jsonl(records: list[Any]) -> bytes:
    """JSON lines from Python values (strings are written as they are: a broken line stays broken)."""
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode() + b"\n"


def parquet(table: pa.Table, **options: Any) -> bytes:
    """A Parquet file of ``table``."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def gzip_bomb(expanded: int = 64 << 20) -> bytes:
    """A gzipped CSV whose one data line expands to ``expanded`` bytes (about 1/1000 of that on the wire)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as gz:
        gz.write(b"text,label\n")
        block = b"a" * (1 << 20)
        for _ in range(expanded // len(block)):
            gz.write(block)
    return buffer.getvalue()


def zip_bomb(expanded: int = 64 << 20) -> bytes:
    """A zip archive holding one CSV of ``expanded`` zero bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("data.csv", "w") as member:
            for _ in range(expanded >> 20):
                member.write(bytes(1 << 20))
    return buffer.getvalue()


def parquet_bomb(rows_: int = 50_000, value_chars: int = 200_000) -> bytes:
    """A dictionary-encoded text column: one long value repeated; tiny on disk, gigabytes decoded."""
    text = pa.DictionaryArray.from_arrays(pa.array([0] * rows_, pa.int32()), pa.array(["x" * value_chars]))
    label = pa.array(["ab"[i % 2] for i in range(rows_)])
    return parquet(pa.table({"text": text, "label": label}), compression="zstd")


def broken_gzip(kind: str) -> bytes:
    """The toy CSV gzipped, then broken: ``truncated``, ``bad_crc`` or ``bad_deflate``."""
    whole = gzip.compress(csv(rows(200)))
    if kind == "truncated":
        return whole[: len(whole) // 2]
    if kind == "bad_crc":
        return whole[:-8] + bytes(4) + whole[-4:]
    return whole[:10] + b"\xff" * 64  # a gzip header, then bytes that are not deflate data


def int_labels_with_a_null(row: int = 3) -> list[int | None]:
    """Twelve integer labels 0/1 with ``row`` left empty."""
    return [None if i == row else i % 2 for i in range(12)]


def json_rows(**replace: dict[str, Any]) -> bytes:
    """The valid rows as JSONL, with row ``r<N>`` updated by the given fields."""
    records = [{"text": t, "label": y} for t, y in rows()]
    for key, fields in replace.items():
        records[int(key[1:])].update(fields)
    return jsonl(records)


def toy_table(**columns: Any) -> pa.Table:
    """Twelve valid rows as an Arrow table, with ``columns`` replaced."""
    base = {"text": [t for t, _ in rows()], "label": [y for _, y in rows()]}
    return pa.table({**base, **columns})


def cases() -> dict[str, Case]:
    """Every malformed input, by name (at least 30)."""
    good = csv()
    return {
        "empty_file": Case(b"", code="empty_file"),
        "whitespace_only": Case(b"  \n\n \n", code="empty_file"),
        "header_only": Case(b"text,label\n", rows=[(None, "no_rows")]),
        "binary_png": Case(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), code="bad_encoding",
                           rows=[(0, "bad_encoding")]),
        "latin1_encoding": Case(csv(with_row(3, "caf\xe9 au lait", "a"), encoding="latin-1"), code="bad_encoding",
                                rows=[(3, "bad_encoding")]),
        "utf16_with_bom": Case(good.decode().encode("utf-16"), code="bad_encoding", rows=[(0, "bad_encoding")]),
        "utf8_bom_then_bad_row": Case(b"\xef\xbb\xbf" + csv(with_row(2, " ", "a")), rows=[(2, "empty_text")]),
        "ragged_row_too_many_fields": Case(csv(with_row(4, "x", "a", "extra")), code="parse_error",
                                           rows=[(4, "parse_error")]),
        "ragged_row_too_few_fields": Case(csv(with_row(5, "only text")), rows=[(5, "missing_label")]),
        # pandas would take the first column for an index: the values of 'text' silently became the ids' (found by a
        # fresh user): every row one field too many, or only the first
        "every_row_one_field_too_many": Case(csv([(str(i), t, y) for i, (t, y) in enumerate(rows())]),
                                             code="parse_error", rows=[(0, "parse_error")], exact=True,
                                             message="row 0 (line 2) has 3 fields but the header has 2"),
        "first_row_one_field_too_many": Case(csv(with_row(0, "x", "a", "extra")), code="parse_error",
                                             rows=[(0, "parse_error")], exact=True, message="has 3 fields"),
        "unterminated_quote": Case(csv(with_row(6, '"never closed', "a")), code="parse_error",
                                   rows=[(6, "parse_error")]),
        # the quote opens the row's last field: the rest of the file folds into that one field without a ragged
        # row, which Arrow took silently (a class_too_small for the rows that were lost)
        "unterminated_quote_in_last_field": Case(csv(with_row(6, "text", '"never closed')), code="parse_error",
                                                 rows=[(6, "parse_error")], message="is never closed"),
        # the same in the file's very last field, without a final line break: no line is swallowed (it was stored)
        "unterminated_quote_at_the_end": Case(good + b'last,"never closed', code="parse_error",
                                              rows=[(12, "parse_error")], message="is never closed"),
        "embedded_newline_then_ragged_row": Case(csv(with_row(1, '"two\nlines"', "a") + [("x", "b", "extra")]),
                                                 code="parse_error", rows=[(12, "parse_error")]),
        "embedded_quotes_and_empty_label": Case(csv(with_row(7, '"say ""hi"""', ""))
                                                , rows=[(7, "missing_label")]),
        "missing_label_column": Case(good, code="missing_column", form={"label_column": "topic"},
                                     rows=[(None, "missing_column")]),
        "single_class": Case(csv([(f"text {i}", "a") for i in range(12)]), rows=[(None, "too_few_classes")]),
        "labels_as_floats": Case(csv([(f"text {i}", f"{i % 2}.0") for i in range(12)]),
                                 rows=[(0, "float_label"), (1, "float_label")]),
        "huge_line": Case(csv(with_row(8, "word " * 5000, "a")), rows=[(8, "text_too_long")]),
        "nul_in_text": Case(csv(with_row(9, "bad\x00byte", "a")), rows=[(9, "nul_character")]),
        "label_too_long": Case(csv(with_row(10, "text", "L" * 300)), rows=[(10, "label_too_long")]),
        "duplicate_ids": Case(csv([(f"r{i % 11}", t, y) for i, (t, y) in enumerate(rows())], header="id,text,label"),
                              form={"id_column": "id"}, rows=[(11, "duplicate_id")]),
        "id_too_long": Case(csv([("i" * 300 if i == 2 else f"r{i}", t, y) for i, (t, y) in enumerate(rows())],
                                header="id,text,label"), form={"id_column": "id"}, rows=[(2, "id_too_long")]),
        "too_many_rows": Case(csv(rows(600)), rows=[(500, "too_many_rows")]),
        "empty_cells_only": Case(csv([(",",)] * 12, header="text,label"),
                                 rows=[(0, "empty_text"), (0, "missing_label")]),
        "jsonl_broken_line": Case(jsonl([{"text": "a", "label": "x"}, '{"text": "b", "label"', {"text": "c"}]),
                                  "data.jsonl", code="parse_error", rows=[(1, "parse_error")]),
        "jsonl_array_line": Case(jsonl([{"text": "a", "label": "x"}, ["not", "an", "object"]]), "data.jsonl",
                                 code="parse_error", rows=[(1, "parse_error")]),
        "jsonl_missing_key": Case(jsonl([{"text": t, "label": y} if i != 3 else {"label": y}
                                         for i, (t, y) in enumerate(rows())]), "data.jsonl", rows=[(3, "empty_text")]),
        "jsonl_label_never_present": Case(jsonl([{"text": t} for t, _ in rows()]), "data.jsonl",
                                          code="missing_column", rows=[(None, "missing_column")]),
        "jsonl_float_labels": Case(jsonl([{"text": t, "label": 0.5 + i % 2} for i, (t, _) in enumerate(rows())]),
                                   "data.jsonl", rows=[(0, "float_label")]),
        "parquet_text_as_integers": Case(parquet(toy_table(text=list(range(12)))), "data.parquet",
                                         code="wrong_type", rows=[(None, "wrong_type")]),
        "parquet_float_labels": Case(parquet(toy_table(label=[float(i % 2) for i in range(12)])), "data.parquet",
                                     code="wrong_type", rows=[(None, "wrong_type")]),
        "parquet_corrupt": Case(b"PAR1" + bytes(64) + b"PAR1", "data.parquet", code="parse_error"),
        "parquet_missing_column": Case(parquet(toy_table()), "data.parquet", code="missing_column",
                                       form={"text_column": "body"}, rows=[(None, "missing_column")]),
        "parquet_dictionary_bomb": Case(parquet_bomb(), "data.parquet", 413, "decompressed_too_large"),
        "zip_bomb": Case(zip_bomb(), "data.zip", code="unsupported_format"),
        "zip_bomb_named_csv": Case(zip_bomb(), "data.csv", code="unsupported_format"),
        "gzip_bomb": Case(gzip_bomb(), "data.csv.gz", 413, "decompressed_too_large"),
        "gzip_bomb_named_csv": Case(gzip_bomb(), "data.csv", 413, "decompressed_too_large"),
        "unsupported_extension": Case(good, "data.exe", code="unsupported_format"),
        "declared_labels_bad_json": Case(good, code="invalid_input", form={"labels": '["a", '}),
        "unknown_declared_label": Case(csv(with_row(0, "text", "c")), form={"labels": "a,b"},
                                       rows=[(0, "unknown_label")]),
        "gzip_named_but_plain_csv": Case(good, "data.csv.gz", code="parse_error", message="not valid gzip"),
        "gzip_truncated": Case(broken_gzip("truncated"), "data.csv.gz", code="parse_error",
                               message="not valid gzip"),
        "gzip_bad_crc": Case(broken_gzip("bad_crc"), "data.csv.gz", code="parse_error", message="not valid gzip"),
        "gzip_bad_deflate_data": Case(broken_gzip("bad_deflate"), "data.jsonl.gz", code="parse_error",
                                      message="not valid gzip"),
        "jsonl_int_labels_one_null": Case(jsonl([{"text": t, "label": y} for (t, _), y in
                                                 zip(rows(), int_labels_with_a_null())]), "data.jsonl",
                                          rows=[(3, "missing_label")], exact=True),
        "parquet_int_labels_one_null": Case(parquet(toy_table(label=pa.array(int_labels_with_a_null(), pa.int64()))),
                                            "data.parquet", rows=[(3, "missing_label")], exact=True),
        "csv_int_labels_one_empty": Case(csv([(t, "" if y is None else str(y)) for (t, _), y in
                                              zip(rows(), int_labels_with_a_null())]),
                                         rows=[(3, "missing_label")], exact=True),
        "jsonl_text_number_and_object": Case(json_rows(r2={"text": 42}, r4={"text": {"a": 1}}), "data.jsonl",
                                             rows=[(2, "text_not_string"), (4, "text_not_string")], exact=True,
                                             columns=["text"]),
        "jsonl_label_list_and_object": Case(json_rows(r5={"label": ["a"]}, r6={"label": {"x": 1}}), "data.jsonl",
                                            rows=[(5, "bad_label_type"), (6, "bad_label_type")], exact=True,
                                            columns=["label"]),
        "jsonl_lone_surrogate_escape": Case(jsonl([{"text": t, "label": y} for t, y in rows()[:3]]
                                                  + ['{"text": "half \\ud800 a pair", "label": "a"}']), "data.jsonl",
                                            code="bad_encoding", rows=[(3, "bad_encoding")], message="surrogate"),
        "jsonl_id_object": Case(json_rows(**{f"r{i}": {"id": {"n": i}} if i == 1 else {"id": i} for i in range(12)}),
                                "data.jsonl", form={"id_column": "id"}, rows=[(1, "bad_id_type")], exact=True),
        "csv_duplicate_header": Case(csv(header="text,text"), code="duplicate_column",
                                     rows=[(None, "duplicate_column")], columns=["text"], message="'text'"),
        "csv_duplicate_header_unmapped": Case(csv([(t, y, "x", "y") for t, y in rows()], header="text,label,n,n"),
                                              code="duplicate_column", columns=["n"]),
        "jsonl_duplicate_key": Case(jsonl([{"text": t, "label": y} for t, y in rows()[:2]]
                                          + ['{"text": "x", "label": "a", "label": "b"}']), "data.jsonl",
                                    code="duplicate_column", rows=[(2, "duplicate_column")], columns=["label"]),
        "parquet_duplicate_column": Case(parquet(pa.table([pa.array([t for t, _ in rows()]), pa.array(["ab"[i % 2] for i
                                                                                                      in range(12)]),
                                                           pa.array(["x"] * 12)], names=["text", "label", "text"])),
                                         "data.parquet", code="duplicate_column", columns=["text"]),
        "mapping_text_pair_is_text": Case(good, code="invalid_mapping", form={"text_pair_column": "text"},
                                          message="text_pair_column"),
        "mapping_gold_label_is_label": Case(good, code="invalid_mapping", form={"gold_label_column": "label"},
                                            message="gold_label_column"),
        "mapping_label_is_text": Case(good, code="invalid_mapping", form={"label_column": "text"},
                                      message="label_column"),
        "over_the_size_limit": Case(csv(rows(500)) + b"x" * (5 << 20), status=413, code="payload_too_large"),
    }
