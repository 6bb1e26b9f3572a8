"""Parse an uploaded CSV, JSONL or Parquet file in chunks of rows, so a large file is never held in
memory whole: pandas' chunked C reader for CSV, one line at a time for JSONL, row-group batches for
Parquet. Each chunk is a frame of ``str`` cells (None where a cell is missing); JSONL cells keep their
JSON type (str, int, float, bool, list, dict) so the validator can name a wrong one.

``iter_tables`` is the fast path of dataset uploads: CSV through Arrow's streaming CSV reader and Parquet
batches as Arrow tables, in chunks of exactly ``CHUNK_ROWS`` rows like ``iter_chunks`` (so errors are
found and listed in the same order). Arrow's reader is stricter than pandas' (a ragged row, a bad byte);
wherever it refuses a file, or its header would differ from pandas', it raises ``FastPathUnusable`` and
the caller parses the file again with ``iter_chunks``, whose answer (rows or error) is the reference.

Every failure raises ``InvalidInput`` with a code (``unsupported_format``, ``bad_encoding``,
``parse_error``, ``empty_file``, ``wrong_type``, ``duplicate_column``) and, where known, the 0-based
data row and the line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePath

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from app.errors import InvalidInput, PayloadTooLarge, too_many_digits
from app.services.uploads import CHUNK, open_binary, sniff

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
CHUNK_ROWS = 20_000
ARROW_BLOCK = 4 << 20  # bytes Arrow's CSV reader parses at a time
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
    """Frames of at most ``chunk_rows`` rows, in file order, of object cells: None where a cell is
    missing, ``str`` otherwise (Parquet integers as their decimal strings), JSONL values as parsed
    (Parquet: only ``columns``, when given).

    Raises:
        InvalidInput: an empty file, bytes that are not UTF-8, invalid gzip, a repeated column name,
            or a file the parser rejects.
        PayloadTooLarge: a compressed file that expands past ``max_uncompressed`` bytes.
    """
    if path.stat().st_size == 0:
        raise _empty()
    if fmt == "parquet":
        frames = _parquet_chunks(path, max_uncompressed, chunk_rows, columns)
    else:
        frames = (_csv_chunks if fmt == "csv" else _jsonl_chunks)(path, max_uncompressed, chunk_rows)
    for frame in frames:
        yield frame.astype(object).where(frame.notna(), None)


def _empty() -> InvalidInput:
    return InvalidInput("the file is empty: upload a file with a header and at least one row", param="file",
                        code="empty_file")


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


def duplicate_column(name: str, count: int, where: str, details: dict | None = None) -> InvalidInput:
    """The error for a column name that appears more than once."""
    return InvalidInput(f"column {name!r} appears {count} times in {where}: rename or remove the extra ones so "
                        "every column has its own name", param="file", code="duplicate_column",
                        details=[{"row": None, "code": "duplicate_column", "column": name,
                                  "message": f"appears {count} times", **(details or {})}])


def check_unique_names(names: list[str], where: str) -> None:
    """Raise ``duplicate_column`` for the first non-empty name that appears more than once."""
    for name, count in Counter(n for n in names if n).items():
        if count > 1:
            raise duplicate_column(name, count, where)


def _csv_header(fh) -> list[str]:
    """The header's names as written (pandas would rename a repeated ``x`` to ``x.1``)."""
    header = pd.read_csv(fh, header=None, nrows=1, dtype=str, keep_default_na=False, na_filter=False,
                         encoding="utf-8-sig")
    return [str(name) for name in header.iloc[0].tolist()] if len(header) else []


def _csv_chunks(path: Path, max_uncompressed: int, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        with open_binary(path, max_uncompressed) as fh:
            header = _csv_header(fh)
            check_unique_names(header, "the CSV header")
        with open_binary(path, max_uncompressed) as fh:
            for chunk in pd.read_csv(fh, dtype=str, keep_default_na=False, na_filter=False, chunksize=chunk_rows,
                                     encoding="utf-8-sig"):
                # a first data row with more fields than the header makes pandas take the first column for the
                # row index (its values vanish, the other columns shift): refused, as Arrow refuses it
                if not isinstance(chunk.index, pd.RangeIndex):
                    raise _longer_than_header(path, max_uncompressed, len(header))
                yield chunk
    except UnicodeDecodeError:
        raise _bad_encoding(path, max_uncompressed) from None
    except pd.errors.EmptyDataError:
        raise _empty() from None
    except (pd.errors.ParserError, ValueError) as exc:
        details = _csv_error_rows(str(exc), path, max_uncompressed)
        said = str(exc).strip()
        if "EOF inside string" in said:  # what pandas' words mean, and the fix (its "row N" counts the header)
            where = f" on row {details[0]['row']} (line {details[0].get('line', '?')})" if details else ""
            said = (f"a quoted field{where} is never closed: it runs to the end of the file; close its quote, or "
                    'write a quote inside a quoted field as two ("")')
        raise InvalidInput(f"the CSV file cannot be parsed: {said}", param="file", code="parse_error",
                           details=details) from exc


def _csv_error_rows(message: str, path: Path, max_uncompressed: int) -> list[dict] | None:
    # pandas' C parser counts records, the header first: "line N" is 1-based, "row N" 0-based
    if match := _C_ERROR_LINE.search(message):
        # pandas' "line N" counts records and blank lines, not the file's lines (a quoted line break is one line to
        # it): the row and line are found again by reading the records (error path only)
        found = _first_long_record(path, max_uncompressed, _expected_fields(message))
        if found is not None:
            row, line, fields = found
            return [{"row": row, "line": line, "code": "parse_error", "column": None, "message": message.strip()}]
        line = int(match.group(1))
        return [{"row": line - 2, "line": line, "code": "parse_error", "column": None, "message": message.strip()}]
    if match := _C_ERROR_ROW.search(message):  # e.g. "EOF inside string starting at row N": a record, not a line
        record = int(match.group(1))
        detail = {"row": record - 1, "code": "parse_error", "column": None, "message": message.strip()}
        line = _line_of_record(path, max_uncompressed, record)
        return [detail if line is None else {**detail, "line": line}]
    return None


def _expected_fields(message: str) -> int | None:
    match = re.search(r"Expected (\d+) fields", message)
    return int(match.group(1)) if match else None


def _first_long_record(path: Path, max_uncompressed: int, width: int | None) -> tuple[int, int, int] | None:
    """``(row, line, fields)`` of the first data record with more than ``width`` fields (``row``: data rows from
    0, blank lines skipped as pandas and Arrow skip them; ``line``: the 1-based line it starts on), read with
    Python's ``csv`` module; None if there is none, ``width`` is None, or the file cannot be read so. Error path
    only: it reads the file up to that record."""
    if width is None:
        return None
    try:
        with open_binary(path, max_uncompressed) as fh:
            reader = _csv_records(fh)
            next(reader)
            row = 0
            for record in reader:
                if not record:
                    continue
                if len(record) > width:
                    return row, reader.line_num - _record_lines(record) + 1, len(record)
                row += 1
    except _UNREADABLE:
        pass
    return None


def _longer_than_header(path: Path, max_uncompressed: int, width: int) -> InvalidInput:
    """The ``parse_error`` of a CSV whose first data row has more fields than its ``width``-name header, naming
    that row and its line (found with Python's ``csv`` module, on this error path only)."""
    row = line = fields = None
    if (found := _first_long_record(path, max_uncompressed, width)) is not None:
        row, line, fields = found
    where = f"row {row} (line {line}) has {fields} fields" if row is not None else "a data row has more fields"
    message = f"{where} but the header has {width}: give every row as many fields as the header names"
    details = None if row is None else [{"row": row, "line": line, "code": "parse_error", "column": None,
                                         "message": message}]
    return InvalidInput(f"the CSV file cannot be parsed: {message}", param="file", code="parse_error",
                        details=details)


def _record_lines(record: list[str]) -> int:
    """How many lines a parsed CSV record spanned (1 plus the line breaks inside its quoted fields)."""
    return 1 + sum(field.count("\n") for field in record)


# what reading a CSV's records with Python's csv module may raise on a file pandas or Arrow already refused
_UNREADABLE = (StopIteration, csv.Error, UnicodeDecodeError, ValueError, OSError)


def _csv_records(fh) -> Iterator[list[str]]:
    """The records of the binary CSV file ``fh`` (UTF-8, BOM skipped), by Python's ``csv`` module (its
    ``line_num`` counts the lines read)."""
    return csv.reader(io.TextIOWrapper(fh, encoding="utf-8-sig", newline=""))


def _line_of_record(path: Path, max_uncompressed: int, record: int) -> int | None:
    """The 1-based line on which CSV record ``record`` (0 = the header) starts, found by reading the records
    before it with Python's ``csv`` module (quoted fields may span lines); None if they cannot be read. Used on
    the error path only: it reads the file up to that record."""
    try:
        with open_binary(path, max_uncompressed) as fh:
            reader = _csv_records(fh)
            for _ in range(record):
                next(reader)
            return reader.line_num + 1
    except _UNREADABLE:
        return None


class _DuplicateKey(ValueError):
    def __init__(self, key: str, count: int) -> None:
        super().__init__(key)
        self.key, self.count = key, count


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    for key, count in Counter(k for k, _ in pairs).items():
        if count > 1:
            raise _DuplicateKey(key, count)
    return dict(pairs)


def _jsonl_record(raw: bytes, line_no: int, row: int, path: Path, max_uncompressed: int) -> dict | None:
    try:
        text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
    except UnicodeDecodeError:
        raise _bad_encoding(path, max_uncompressed) from None
    if not text.strip():
        return None
    try:
        record = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise duplicate_column(exc.key, exc.count, f"the object on line {line_no}",
                               {"row": row, "line": line_no}) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"line {line_no} is not valid JSON: {exc.msg}", param="file", code="parse_error",
                           details=[{"row": row, "line": line_no, "code": "parse_error", "column": None,
                                     "message": f"not valid JSON: {exc.msg} (column {exc.colno})"}]) from exc
    except ValueError as exc:  # an integer past Python's int-string limit (sys.get_int_max_str_digits): a 500 before
        said = too_many_digits(exc)
        if said is None:
            raise
        raise InvalidInput(f"line {line_no} {said}", param="file", code="parse_error",
                           details=[{"row": row, "line": line_no, "code": "parse_error", "column": None,
                                     "message": said}]) from None
    if not isinstance(record, dict):
        raise InvalidInput(f"line {line_no} is not a JSON object", param="file", code="parse_error",
                           details=[{"row": row, "line": line_no, "code": "parse_error", "column": None,
                                     "message": f"a JSON {type(record).__name__}, not an object"}])
    if "\\u" in text:  # an escaped lone surrogate ("\ud800") is valid JSON but not text: nothing can store it
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"line {line_no} has a \\uXXXX escape of half a UTF-16 surrogate pair, which is not "
                               "valid text: fix the escape or remove it", param="file", code="bad_encoding",
                               details=[{"row": row, "line": line_no, "code": "bad_encoding"}]) from None
    return record


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
                yield pd.DataFrame(records, dtype=object)
                records = []
    if rows == 0:
        raise _empty()
    if records:
        yield pd.DataFrame(records, dtype=object)


def _parquet_file(path: Path, max_uncompressed: int, columns: list[str] | None = None) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(path, read_dictionary=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"the Parquet file cannot be read: {exc}", param="file", code="parse_error") from exc
    check_unique_names(parquet.schema_arrow.names, "the Parquet schema")
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
    for batch in _parquet_batches(parquet, names, max_uncompressed, chunk_rows):
        yield batch.to_pandas()


def _parquet_batches(parquet: pq.ParquetFile, names: list[str], max_uncompressed: int, chunk_rows: int
                     ) -> Iterator[pa.RecordBatch]:
    decoded = 0
    try:
        # dictionary-encoded columns stay encoded until their decoded size is known to be acceptable
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=names, use_pandas_metadata=False):
            decoded += _decoded_bytes(batch)
            if decoded > max_uncompressed:
                raise PayloadTooLarge(f"the Parquet file's text expands past {max_uncompressed} bytes once decoded",
                                      param="file", code="decompressed_too_large")
            yield _ints_as_strings(batch)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"the Parquet file cannot be read: {exc}", param="file", code="parse_error") from exc


def _ints_as_strings(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Integer columns as strings, so a null cell does not turn the column into floats (``1`` -> ``1.0``)."""
    arrays = [pc.cast(column, pa.string()) if pa.types.is_integer(column.type) else column
              for column in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def parquet_schema(path: Path) -> pa.Schema | None:
    """The Arrow schema of a Parquet file (None if it cannot be read: the parser reports why)."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError):
        return None


class FastPathUnusable(Exception):
    """Arrow's CSV reader refused the file (or would name its columns differently from pandas): parse it
    with ``iter_chunks`` instead, which gives today's rows or today's error."""


def iter_tables(path: Path, fmt: str, *, max_uncompressed: int, chunk_rows: int = CHUNK_ROWS,
                columns: list[str] | None = None) -> Iterator[pa.Table | pd.DataFrame]:
    """The chunks of ``iter_chunks`` (same rows, same boundaries), as Arrow tables of string, dictionary or
    integer-as-string columns for CSV and Parquet; JSONL chunks stay frames of JSON values.

    Raises:
        FastPathUnusable: (CSV only, possibly after some chunks) Arrow cannot read the file as pandas would.
        InvalidInput, PayloadTooLarge: as ``iter_chunks``, for Parquet and JSONL.
    """
    if path.stat().st_size == 0:
        raise _empty()
    if fmt == "csv":
        yield from _arrow_csv_tables(path, max_uncompressed, chunk_rows)
    elif fmt == "parquet":
        parquet = _parquet_file(path, max_uncompressed, columns)
        names = columns if columns is not None else parquet.schema_arrow.names
        batches = _parquet_batches(parquet, names, max_uncompressed, chunk_rows)
        empty = pa.table({name: pa.array([], pa.string()) for name in names})
        yield from (pa.Table.from_batches([b]) for b in batches) if parquet.metadata.num_rows else [empty]
    else:
        yield from iter_chunks(path, fmt, max_uncompressed=max_uncompressed, chunk_rows=chunk_rows)


def _arrow_csv_tables(path: Path, max_uncompressed: int, chunk_rows: int) -> Iterator[pa.Table]:
    try:
        with open_binary(path, max_uncompressed) as fh:
            names = _csv_header(fh)
        check_unique_names(names, "the CSV header")
        gzipped = sniff(path) == "gzip"
    except Exception as exc:  # pandas' own read of the file reports it exactly
        _give_up(exc)
    if not names or "" in names:  # pandas names an empty header cell "Unnamed: i"
        raise FastPathUnusable("an empty column name")
    source = open_binary(path, max_uncompressed) if gzipped else str(path)
    try:
        reader = pa_csv.open_csv(source, read_options=pa_csv.ReadOptions(block_size=ARROW_BLOCK),
                                 parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                                 convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}))
        if reader.schema.names != names:
            raise FastPathUnusable(f"Arrow reads the header as {reader.schema.names}, pandas as {names}")
        yield from _closed_quotes(_exact_chunks(reader, reader.schema, chunk_rows), path, max_uncompressed, gzipped)
    except FastPathUnusable:
        raise
    except Exception as exc:  # a ragged row, a bad byte, a broken gzip stream, ...: pandas says which
        _give_up(exc)
    finally:
        if gzipped:
            source.close()


def _closed_quotes(tables: Iterator[pa.Table], path: Path, max_uncompressed: int, gzipped: bool) -> Iterator[pa.Table]:
    """``tables``, and once they are all given, a check that no quoted field ran to the end of the file.

    Arrow (``newlines_in_values``) reads a quoted field that is never closed as running to the end of the file,
    silently: the rows after it became one cell (refused as a class problem, or taken). Such a cell is in the
    file's last row and holds the line breaks of the rows it swallowed, so only when the last row has a cell
    with a line break is the file scanned (``_odd_quotes``); an odd count of quotes raises ``FastPathUnusable``
    after the last table (the caller's validator raises row errors only when it finishes, and the rows stored
    are removed again), and pandas then names the row ("EOF inside string starting at row N").

    Raises:
        FastPathUnusable: the file holds an odd number of ``"`` characters and its last row a line break.
    """
    last = None
    for last in tables:
        yield last
    if last is not None and last.num_rows:
        cells = last.slice(last.num_rows - 1).to_pylist()[0].values()
        folded = any(isinstance(v, str) and ("\n" in v or "\r" in v) for v in cells)
        # a quote opened in the very last field of a file without a final line break swallows no line: scan then
        # too, and a compressed file, whose last byte is not known without reading it all
        if (folded or gzipped or not _ends_with_line_break(path)) and _odd_quotes(path, max_uncompressed):
            raise FastPathUnusable("an odd number of quote characters: a quoted field may run to the end of the file")


def _ends_with_line_break(path: Path) -> bool:
    """Whether a plain (not compressed) file's last byte is a line break (True for an empty file)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return True
        fh.seek(-1, 2)
        return fh.read(1) in (b"\n", b"\r")


def _odd_quotes(path: Path, max_uncompressed: int) -> bool:
    """Whether the file holds an odd number of ``"`` characters. Quotes come in pairs in a file whose quoted
    fields are all closed (an escaped quote is two), so an odd count sends the file to pandas; so does a bare
    quote inside an unquoted field (``5" screen``), which pandas then reads as Arrow would. A scan at memory
    speed (``bytes.count``: about 25 ms for 50 MB here), one more read of the file."""
    quotes = 0
    with open_binary(path, max_uncompressed) as fh:
        while block := fh.read(CHUNK):
            quotes += block.count(b'"')
    return quotes % 2 == 1


def _give_up(exc: Exception) -> None:
    """Raise ``FastPathUnusable`` for ``exc``, except for a gzip bomb's ``PayloadTooLarge`` (raised by our
    reader, perhaps wrapped by Arrow), which pandas' read would raise the same: that is raised as it is."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, PayloadTooLarge):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, PayloadTooLarge):
        raise cause
    raise FastPathUnusable(str(exc)) from exc


def _exact_chunks(batches, schema: pa.Schema, chunk_rows: int) -> Iterator[pa.Table]:
    """Arrow's byte-sized batches regrouped into tables of exactly ``chunk_rows`` rows (the last one
    shorter; one empty table for a file without data rows)."""
    pending, count, emitted = [], 0, False
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(pending, schema=schema)
            yield table.slice(0, chunk_rows)
            emitted = True
            pending, count = table.slice(chunk_rows).to_batches(), count - chunk_rows
    if count or not emitted:
        yield pa.Table.from_batches(pending, schema=schema)
