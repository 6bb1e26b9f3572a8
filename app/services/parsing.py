"""Parse an uploaded CSV, JSONL or Parquet file into a frame of strings (None where a cell is empty).

Every failure raises ``InvalidInput`` with a code (``unsupported_format``, ``bad_encoding``,
``parse_error``, ``empty_file``) and, where known, the 0-based data row or line.
"""

from __future__ import annotations

import io
import json
from pathlib import PurePath

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from app.errors import InvalidInput

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def detect_format(filename: str | None, declared: str | None) -> str:
    """The file format: the declared one, else from the file name's extension."""
    if declared:
        fmt = declared.lower().strip()
        if fmt not in set(FORMATS.values()):
            raise InvalidInput(f"format={declared!r} is not supported: use csv, jsonl or parquet",
                               param="format", code="unsupported_format")
        return fmt
    suffix = PurePath(filename or "").suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInput(f"cannot tell the format of file {filename!r}: name it .csv, .jsonl or .parquet, "
                           "or pass format=csv|jsonl|parquet", param="format", code="unsupported_format")
    return FORMATS[suffix]


def parse_file(content: bytes, fmt: str) -> pd.DataFrame:
    """Parse ``content`` as ``fmt`` into a DataFrame of ``str`` cells, with None for empty cells.

    Raises:
        InvalidInput: an empty file, bytes that are not UTF-8, or a file the parser rejects.
    """
    if not content.strip():
        raise InvalidInput("the file is empty: upload a file with a header and at least one row",
                           param="file", code="empty_file")
    frame = {"csv": _parse_csv, "jsonl": _parse_jsonl, "parquet": _parse_parquet}[fmt](content)
    return frame.astype(object).where(frame.notna(), None).map(_to_text)


def _to_text(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def _decode(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"the file is not valid UTF-8: bad byte at offset {exc.start} (line {line}); "
                           "save it as UTF-8", param="file", code="bad_encoding",
                           details=[{"row": None, "line": line, "code": "bad_encoding"}]) from exc


def _parse_csv(content: bytes) -> pd.DataFrame:
    text = _decode(content)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise InvalidInput(f"the CSV file cannot be parsed: {exc}", param="file", code="parse_error") from exc


def _parse_jsonl(content: bytes) -> pd.DataFrame:
    records = []
    for line_no, line in enumerate(_decode(content).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"line {line_no} is not valid JSON: {exc.msg}", param="file", code="parse_error",
                               details=[{"row": len(records), "line": line_no, "code": "parse_error"}]) from exc
        if not isinstance(record, dict):
            raise InvalidInput(f"line {line_no} is not a JSON object", param="file", code="parse_error",
                               details=[{"row": len(records), "line": line_no, "code": "parse_error"}])
        records.append({k: v if v is None or isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict))
                        else v for k, v in record.items()})
    return pd.DataFrame.from_records(records)


def _parse_parquet(content: bytes) -> pd.DataFrame:
    try:
        table = pq.read_table(io.BytesIO(content))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"the Parquet file cannot be read: {exc}", param="file", code="parse_error") from exc
    return table.to_pandas()
