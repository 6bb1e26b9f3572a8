"""Parse an uploaded CSV, JSONL or Parquet file in chunks of rows, so a large file is never held in
memory whole: pandas' chunked C reader for CSV, one line at a time for JSONL, row-group batches for
Parquet. Each chunk is a frame of ``str`` cells (None where a cell is empty).

Every failure raises ``InvalidInput`` with a code (``unsupported_format``, ``bad_encoding``,
``parse_error``, ``empty_file``, ``wrong_type``) and, where known, the 0-based data row and the line.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePath

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.errors import InvalidInput, PayloadTooLarge
from app.services.uploads import CHUNK, open_binary

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
CHUNK_ROWS = 20_000
_C_ERROR_LINE = re.compile(r"line (\d+)")
_C_ERROR_ROW = re.compile(r"row (\d+)")


def detect_format(filename: str | None, declared: str | None) -> str:
    """The file format: the declared one, else from the file name's extension (``.gz`` looked through)."""
    if declared:
        fmt = declared.lower().strip()
        if fmt not in set(FORMATS.values()):
            raise InvalidInput(f"format={declared!r} is not supported: use csv, jsonl or parquet",
                               param="format", code="unsupported_format")
        return fmt
    path = PurePath(filename or "")
    suffix = PurePath(path.stem).suffix.lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInput(f"cannot tell the format of file {filename!r}: name it .csv, .jsonl or .parquet, "
                           "or pass format=csv|jsonl|parquet", param="format", code="unsupported_format")
    return FORMATS[suffix]


def iter_chunks(path: Path, fmt: str, *, max_uncompressed: int, chunk_rows: int = CHUNK_ROWS,
                columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Frames of at most ``chunk_rows`` rows, in file order, with ``str``/None cells (Parquet: only
    ``columns``, when given).

    Raises:
        InvalidInput: an empty file, bytes that are not UTF-8, or a file the parser rejects.
        PayloadTooLarge: a compressed file that expands past ``max_uncompressed`` bytes.
    """
    if path.stat().st_size == 0:
        raise _empty()
    if fmt == "parquet":
        frames = _parquet_chunks(path, max_uncompressed, chunk_rows, columns)
    else:
        frames = (_csv_chunks if fmt == "csv" else _jsonl_chunks)(path, max_uncompressed, chunk_rows)
    for frame in frames:
        yield frame.astype(object).where(frame.notna(), None).map(_to_text)


def _empty() -> InvalidInput:
    return InvalidInput("the file is empty: upload a file with a header and at least one row", param="file",
                        code="empty_file")


def _to_text(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def _bad_encoding(path: Path, max_uncompressed: int) -> InvalidInput:
    """Find the first byte that is not UTF-8 (streaming) and say where it is."""
    decoder, offset, line = codecs.getincrementaldecoder("utf-8")(), 0, 1
    with open_binary(path, max_uncompressed) as fh:
        while chunk := fh.read(CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = offset + exc.start
                line += chunk[: exc.start].count(b"\n")
                break
            offset += len(chunk)
            line += chunk.count(b"\n")
        else:
            bad = offset
    return InvalidInput(f"the file is not valid UTF-8: bad byte at offset {bad} (line {line}); save it as UTF-8",
                        param="file", code="bad_encoding",
                        details=[{"row": max(0, line - 2), "line": line, "code": "bad_encoding"}])


def _csv_chunks(path: Path, max_uncompressed: int, chunk_rows: int) -> Iterator[pd.DataFrame]:
    with open_binary(path, max_uncompressed) as fh:
        try:
            yield from pd.read_csv(fh, dtype=str, keep_default_na=False, na_filter=False, chunksize=chunk_rows,
                                   encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise _bad_encoding(path, max_uncompressed) from None
        except pd.errors.EmptyDataError:
            raise _empty() from None
        except (pd.errors.ParserError, ValueError) as exc:
            raise InvalidInput(f"the CSV file cannot be parsed: {str(exc).strip()}", param="file",
                               code="parse_error", details=_csv_error_rows(str(exc))) from exc


def _csv_error_rows(message: str) -> list[dict] | None:
    # pandas' C parser counts records, the header first: "line N" is 1-based, "row N" 0-based
    if match := _C_ERROR_LINE.search(message):
        line = int(match.group(1))
        return [{"row": line - 2, "line": line, "code": "parse_error"}]
    if match := _C_ERROR_ROW.search(message):
        return [{"row": int(match.group(1)) - 1, "code": "parse_error"}]
    return None


def _json_cell(value: object) -> object:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _jsonl_record(raw: bytes, line_no: int, row: int, path: Path, max_uncompressed: int) -> dict | None:
    try:
        text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
    except UnicodeDecodeError:
        raise _bad_encoding(path, max_uncompressed) from None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"line {line_no} is not valid JSON: {exc.msg}", param="file", code="parse_error",
                           details=[{"row": row, "line": line_no, "code": "parse_error"}]) from exc
    if not isinstance(record, dict):
        raise InvalidInput(f"line {line_no} is not a JSON object", param="file", code="parse_error",
                           details=[{"row": row, "line": line_no, "code": "parse_error"}])
    return {k: _json_cell(v) for k, v in record.items()}


def _jsonl_chunks(path: Path, max_uncompressed: int, chunk_rows: int) -> Iterator[pd.DataFrame]:
    records, rows = [], 0
    with open_binary(path, max_uncompressed) as fh:
        for line_no, raw in enumerate(fh, start=1):
            record = _jsonl_record(raw, line_no, rows, path, max_uncompressed)
            if record is None:
                continue
            records.append(record)
            rows += 1
            if len(records) >= chunk_rows:
                yield pd.DataFrame.from_records(records)
                records = []
    if rows == 0:
        raise _empty()
    if records:
        yield pd.DataFrame.from_records(records)


def _parquet_file(path: Path, max_uncompressed: int, columns: list[str] | None = None) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(path, read_dictionary=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"the Parquet file cannot be read: {exc}", param="file", code="parse_error") from exc
    meta = parquet.metadata
    expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if expanded > max_uncompressed:  # a Parquet "zip bomb": tiny on disk, huge once decoded
        raise PayloadTooLarge(f"the Parquet file expands to {expanded} bytes, over the limit of {max_uncompressed}",
                              param="file", code="decompressed_too_large")
    return parquet


def _decoded_bytes(batch: pa.RecordBatch) -> int:
    """Bytes the batch's string columns take once dictionary-decoded, computed without decoding."""
    total = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            lengths = pc.binary_length(column.dictionary.cast(pa.large_binary()))
            total += int(pc.sum(pc.take(lengths, column.indices)).as_py() or 0)
        else:
            total += column.nbytes
    return total


def _parquet_chunks(path: Path, max_uncompressed: int, chunk_rows: int, columns: list[str] | None
                    ) -> Iterator[pd.DataFrame]:
    parquet = _parquet_file(path, max_uncompressed, columns)
    names = columns if columns is not None else parquet.schema_arrow.names
    if parquet.metadata.num_rows == 0:
        yield pd.DataFrame(columns=names)
        return
    decoded = 0
    try:
        # dictionary-encoded columns stay encoded until their decoded size is known to be acceptable
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=names, use_pandas_metadata=False):
            decoded += _decoded_bytes(batch)
            if decoded > max_uncompressed:
                raise PayloadTooLarge(f"the Parquet file's text expands past {max_uncompressed} bytes once decoded",
                                      param="file", code="decompressed_too_large")
            yield batch.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"the Parquet file cannot be read: {exc}", param="file", code="parse_error") from exc


def parquet_schema(path: Path) -> pa.Schema | None:
    """The Arrow schema of a Parquet file (None if it cannot be read: the parser reports why)."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError):
        return None
