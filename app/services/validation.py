"""Row-level validation of a parsed dataset against its column mapping, one chunk of rows at a time, in
columns (``pyarrow.compute``): each rule is one vectorised test over the chunk's column, not a Python loop
over its rows (JSONL values of the wrong JSON type are the one per-cell check, since only JSONL has them).

Every row is checked before anything is kept, and all problems are reported at once (the first
``max_errors`` listed), each as ``{"row", "code", "column", "message"}`` with ``row`` the 0-based
data row (header excluded). Codes: ``missing_column``, ``wrong_type``, ``no_rows``,
``too_many_rows``, ``empty_text``, ``empty_text_pair``, ``text_too_long``, ``missing_label``,
``unknown_label``, ``float_label``, ``label_too_long``, ``missing_gold_label``,
``unknown_gold_label``, ``missing_id``, ``duplicate_id``, ``id_too_long``, ``nul_character``,
``class_too_small``, ``too_few_classes``, and for JSONL values of the wrong JSON type
``text_not_string``, ``bad_label_type``, ``bad_id_type``. A mapping that names one column for two
roles is ``invalid_mapping``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from clear_core.labels import label_order  # the library's order, no torch behind it

from app.errors import InvalidInput

ROLES = ("text", "text_pair", "label", "id", "gold_label")
_TYPE_CODES = {"text": "text_not_string", "text_pair": "text_not_string", "label": "bad_label_type",
               "gold_label": "bad_label_type", "id": "bad_id_type"}
_JSON_TYPES = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}
LABEL_MAX = ID_MAX = 200  # the database columns' width
# the characters Python's str.isspace() accepts (what str.strip() removes); tests check it against Python
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
              "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# the bytes a whitespace character's UTF-8 encoding can start with (a cell starting with another is not blank)
_WHITESPACE_LEAD = np.zeros(256, dtype=bool)
_WHITESPACE_LEAD[[ch.encode()[0] for ch in WHITESPACE]] = True
_BLANK = "^[" + "".join(f"\\x{{{ord(ch):x}}}" for ch in WHITESPACE) + "]*$"  # RE2: empty or only whitespace
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+|nan|inf(inity)?)$", re.IGNORECASE)


def check_mapping(mapping: dict[str, str | None]) -> None:
    """Each mapped column may serve one role only; raises ``InvalidInput`` (``invalid_mapping``) naming
    the two roles that share a column."""
    seen: dict[str, str] = {}
    for role in ROLES:
        column = mapping.get(role)
        if not column:
            continue
        if column in seen:
            message = (f"{seen[column]}_column and {role}_column both name column {column!r}: each role needs its "
                       f"own column; map {role}_column to another column or leave it out")
            raise InvalidInput(message, param=f"{role}_column", code="invalid_mapping",
                               details=[{"row": None, "code": "invalid_mapping", "column": column,
                                         "message": f"used as {seen[column]} and {role}"}])
        seen[column] = role


def cell_text(value: object) -> str | None:
    """A cell as text: None for a missing or blank cell, JSON spelling for booleans, arrays, objects."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value)
    else:
        text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def _wrong_json_type(value: object, role: str) -> bool:
    if value is None or isinstance(value, str):
        return False
    return role in ("text", "text_pair") or isinstance(value, (list, dict))


def missing_column(role: str, column: str, found: list[str]) -> InvalidInput:
    """The error for a mapped column that is not in the file."""
    return InvalidInput(f"column {column!r} (the {role} column) is not in the file; its columns are {found}",
                        param=f"{role}_column", code="missing_column",
                        details=[{"row": None, "code": "missing_column", "column": column,
                                  "message": "not in the file"}])


def check_parquet_types(schema: pa.Schema, mapping: dict[str, str | None]) -> None:
    """Every mapped column must exist; text columns must hold strings; label, gold label and id
    columns strings or integers."""
    for role, column in mapping.items():
        if column is None:
            continue
        if column not in schema.names:
            raise missing_column(role, column, list(schema.names))
        kind = schema.field(column).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        ok = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        if role not in ("text", "text_pair"):
            ok = ok or pa.types.is_integer(kind)
        if not ok:
            wanted = "strings" if role in ("text", "text_pair") else "strings or integers"
            raise InvalidInput(f"column {column!r} (the {role} column) has type {kind}; it must hold {wanted}",
                               param=f"{role}_column", code="wrong_type",
                               details=[{"row": None, "code": "wrong_type", "column": column, "message": str(kind)}])


@dataclass
class Rows:
    """One chunk on its way through the validator: rows ``start`` … ``start + length - 1`` (0-based data rows)
    and, per role, its cells (an Arrow string array once ``RowValidator._check_types`` has run; before, the
    chunk's own column: a pandas object Series or an Arrow array; None for a role the file lacks)."""

    start: int
    length: int
    cells: dict[str, Any]

    def __getitem__(self, role: str) -> Any:
        return self.cells[role]


def _as_mask(values: pa.Array) -> np.ndarray:
    """A boolean Arrow array as a numpy mask, null counted as False."""
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _strings(column: Any, length: int) -> pa.Array:
    """An Arrow column (any string, dictionary, null or integer type) as one ``pa.string()`` array."""
    if column is None:
        return pa.nulls(length, pa.string())
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column if column.type == pa.string() else pc.cast(column, pa.string())


def _contains(values: pa.Array, char: str) -> np.ndarray:
    """Rows whose cell contains ``char``: one byte search over the column's data first (almost no cell
    holds a NUL), the per-cell test only when the byte is there."""
    data = values.buffers()[2]
    if data is None or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)
    start, end = int(offsets[values.offset]), int(offsets[values.offset + len(values)])
    if char.encode() not in bytes(memoryview(data)[start:end]):
        return np.zeros(len(values), dtype=bool)
    return _as_mask(pc.match_substring(values, char))


def blank_to_null(values: pa.Array) -> pa.Array:
    """``cell_text`` in columns: a cell that is empty or only whitespace (Python's ``str.isspace`` set)
    becomes null; other cells are kept as they are."""
    if values.null_count == len(values):
        return values
    # only a cell that is empty or starts with a byte that can begin a whitespace character is tested with
    # the regex (over every cell of a text column it cost more than the rest of the column's checks)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + len(values) + 1]
    data = values.buffers()[2]
    bytes_ = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(0, np.uint8)
    starts, ends = offsets[:-1], offsets[1:]
    nonempty = ends > starts
    maybe = ~nonempty
    maybe[nonempty] = _WHITESPACE_LEAD[bytes_[starts[nonempty]]]
    candidates = np.flatnonzero(maybe)
    if not len(candidates):
        return values
    blank = np.zeros(len(values), dtype=bool)
    blank[candidates] = _as_mask(pc.match_substring_regex(values.take(pa.array(candidates)), _BLANK))
    return pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), values) if blank.any() else values


def python_strip(values: pa.Array) -> pa.Array:
    """``str.strip()`` in columns: leading and trailing characters of Python's whitespace set removed."""
    return pc.utf8_trim(values, characters=WHITESPACE)


def match_distinct(values: pa.Array, pattern: re.Pattern) -> np.ndarray:
    """Rows whose value ``pattern.match``es, with Python's ``re`` semantics, testing each distinct value
    once (labels have few distinct values); null rows are False."""
    encoded = pc.dictionary_encode(values)
    hits = np.array([bool(pattern.match(v)) for v in encoded.dictionary.to_pylist()], dtype=bool)
    return _take_mask(hits, encoded.indices)


def _take_mask(per_value: np.ndarray, indices: pa.Array) -> np.ndarray:
    index = pc.fill_null(indices, -1).to_numpy(zero_copy_only=False)
    mask = np.zeros(len(index), dtype=bool)
    present = index >= 0
    mask[present] = per_value[index[present]]
    return mask


@dataclass
class RowValidator:
    """Feed chunks with ``add``; ``finish`` gives the label names and histogram or raises with every error.

    A chunk is a pandas frame of object cells (JSONL values keep their JSON type) or an Arrow table
    (CSV and Parquet: string, dictionary or integer columns); both go through the same column rules.
    """

    mapping: dict[str, str | None]
    declared: list[str] | None
    min_rows_per_class: int
    max_rows: int
    max_text_chars: int
    max_errors: int = 100
    fixed_columns: bool = True
    rows: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    codes: set[str] = field(default_factory=set)
    histogram: dict[str, int] = field(default_factory=dict)
    seen_columns: set[str] = field(default_factory=set)
    ids: dict[str, int] = field(default_factory=dict)  # id -> the 0-based row that first used it

    def _select(self, frame: pd.DataFrame | pa.Table) -> Rows:
        names = frame.column_names if isinstance(frame, pa.Table) else [str(c) for c in frame.columns]
        self.seen_columns.update(names)
        cells: dict[str, Any] = {}
        for role in ROLES:
            column = self.mapping.get(role)
            if column is not None and column not in names and self.fixed_columns:
                raise missing_column(role, column, names)
            present = column is not None and column in names
            if isinstance(frame, pa.Table):
                cells[role] = frame.column(column) if present else None
            else:
                cells[role] = frame[column].reset_index(drop=True) if present else None
        return Rows(self.rows, len(frame), cells)

    def _check_types(self, rows: Rows) -> np.ndarray:
        """Flag JSONL values of a type the role cannot hold (text must be a string, labels and ids not
        arrays or objects; numbers and booleans become their text), then turn every role's cells into
        an Arrow string array with blank cells null (``cell_text``); returns the rows whose label is of
        a wrong type, kept out of the class histogram."""
        bad_label = np.zeros(rows.length, dtype=bool)
        for role in _TYPE_CODES:  # text, text_pair, label, gold_label, id: the order errors are listed in
            column = rows.cells[role]
            if isinstance(column, pd.Series):
                if role in _TYPE_CODES and self.mapping.get(role):
                    wrong = column.map(lambda v, r=role: _wrong_json_type(v, r)).to_numpy(dtype=bool)
                    if wrong.any():
                        kinds = sorted({_JSON_TYPES.get(type(v), type(v).__name__) for v in column[wrong]})
                        wanted = "a string" if role in ("text", "text_pair") else "a string or an integer"
                        self._flag(rows, wrong, _TYPE_CODES[role], role, f"{role.replace('_', ' ')} is a JSON "
                                                                         f"{'/'.join(kinds)}; it must be {wanted}")
                        if role == "label":
                            bad_label = wrong
                rows.cells[role] = pa.array([cell_text(v) for v in column.tolist()], type=pa.string())
            else:
                rows.cells[role] = blank_to_null(_strings(column, rows.length))
        return bad_label

    def _flag(self, rows: Rows, mask: np.ndarray, code: str, role: str, message: str, detail=None) -> None:
        """Count the rows of ``mask`` (``(rows.length,)`` bool) as ``code`` errors and list the first ones
        (up to ``max_errors`` in all) as ``{"row", "code", "column", "message"}``, ``row`` 0-based among the
        file's data rows; ``detail(i)``, if given, adds or overrides keys for the chunk's row ``i``."""
        hits = np.flatnonzero(mask)
        self.error_count += len(hits)
        if len(hits):
            self.codes.add(code)
        room = max(0, self.max_errors - len(self.errors))
        for i in hits[:room]:
            error = {"row": rows.start + int(i), "code": code, "column": self.mapping.get(role), "message": message}
            if detail is not None:
                error.update(detail(int(i)))
            self.errors.append(error)

    def add(self, frame: pd.DataFrame | pa.Table) -> pa.Table | None:
        """Validate a chunk; returns its rows ready to store (an Arrow table of ``row_index`` int64 and
        ``row_id``, ``text``, ``text_pair``, ``label``, ``gold_label`` strings), or None once any error
        has been seen.

        Raises:
            InvalidInput: a missing column, or more rows than ``max_rows`` (reading stops there).
        """
        rows = self._select(frame)
        self.rows += rows.length
        if self.rows > self.max_rows:
            raise InvalidInput(f"the file has more than {self.max_rows} rows, the limit; split it", param="file",
                               code="invalid_rows", details=[{"row": self.max_rows, "code": "too_many_rows",
                                                              "column": None, "message": f"limit {self.max_rows}"}])
        bad_label = self._check_types(rows)
        for role in ("label", "gold_label", "id"):
            rows.cells[role] = python_strip(rows.cells[role])
        self._check_cells(rows)
        self._count_labels(rows.cells["label"], bad_label)
        if self.error_count:
            return None
        cells = rows.cells
        return pa.table({"row_index": pa.array(np.arange(rows.start, rows.start + rows.length, dtype=np.int64)),
                         "row_id": cells["id"], "text": cells["text"], "text_pair": cells["text_pair"],
                         "label": cells["label"], "gold_label": cells["gold_label"]})

    def _count_labels(self, labels: pa.Array, bad_label: np.ndarray) -> None:
        """Add the chunk's labels to the histogram, most frequent first and ties in order of appearance
        (the order pandas' ``value_counts`` gave, which orders ``class_too_small`` errors)."""
        if bad_label.any():
            labels = labels.filter(pa.array(~bad_label))
        counts = pc.value_counts(labels.drop_null())
        values, tallies = counts.field("values").to_pylist(), counts.field("counts").to_numpy()
        for i in np.argsort(-tallies, kind="stable"):
            self.histogram[values[i]] = self.histogram.get(values[i], 0) + int(tallies[i])

    def _check_cells(self, rows: Rows) -> None:
        m, limit = self.mapping, self.max_text_chars
        for role in ROLES:
            if m.get(role):
                self._flag(rows, _contains(rows[role], "\x00"), "nul_character", role,
                           f"{role} contains a NUL character")
        text = rows["text"]
        self._flag(rows, _as_mask(pc.is_null(text)), "empty_text", "text", "text is empty")
        self._flag(rows, _as_mask(pc.greater(pc.utf8_length(text), limit)), "text_too_long", "text",
                   f"text is over {limit} characters")
        if m.get("text_pair"):
            pair = rows["text_pair"]
            self._flag(rows, _as_mask(pc.is_null(pair)), "empty_text_pair", "text_pair", "text pair is empty")
            self._flag(rows, _as_mask(pc.greater(pc.utf8_length(pair), limit)), "text_too_long", "text_pair",
                       f"text pair is over {limit} characters")
        self._check_labels(rows, "label", "missing_label", "unknown_label")
        if m.get("gold_label"):
            self._check_labels(rows, "gold_label", "missing_gold_label", "unknown_gold_label")
        if m.get("id"):
            self._check_ids(rows)

    def _check_labels(self, rows: Rows, role: str, missing: str, unknown: str) -> None:
        values = rows[role]
        self._flag(rows, _as_mask(pc.is_null(values)), missing, role, f"{role.replace('_', ' ')} is empty")
        self._flag(rows, _as_mask(pc.greater(pc.utf8_length(values), LABEL_MAX)), "label_too_long", role,
                   f"over {LABEL_MAX} characters")
        if self.declared is not None:
            outside = pc.and_(pc.is_valid(values),
                              pc.invert(pc.is_in(values, value_set=pa.array(self.declared, pa.string()))))
            self._flag(rows, _as_mask(outside), unknown, role,
                       f"{role.replace('_', ' ')} is not one of {self.declared}")
        else:
            self._flag(rows, match_distinct(values, _FLOAT), "float_label", role,
                       "looks like a decimal number: labels are class names or integers (declare `labels` to "
                       "accept it as a name)")

    def _check_ids(self, rows: Rows) -> None:
        ids = rows["id"]
        self._flag(rows, _as_mask(pc.is_null(ids)), "missing_id", "id", "id is empty")
        self._flag(rows, _as_mask(pc.greater(pc.utf8_length(ids), ID_MAX)), "id_too_long", "id",
                   f"id is over {ID_MAX} characters")
        # an id is a duplicate where an earlier row, in this chunk or an earlier one, has the same id
        encoded = pc.dictionary_encode(ids)
        distinct = encoded.dictionary.to_pylist()
        index = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        present = np.flatnonzero(index >= 0)
        codes, first_at = np.unique(index[present], return_index=True)
        first = np.zeros(rows.length, dtype=bool)
        first[present[first_at]] = True
        known = np.array([v in self.ids for v in distinct], dtype=bool)  # ids of an earlier chunk
        duplicate = (index >= 0) & (~first | _take_mask(known, encoded.indices))
        # each distinct id's first row: an earlier chunk's, else its first row in this chunk
        first_row = np.full(len(distinct), -1, dtype=np.int64)
        first_row[codes] = rows.start + present[first_at]
        for code in np.flatnonzero(known):
            first_row[code] = self.ids[distinct[code]]
        self.ids.update((distinct[code], int(first_row[code])) for code in np.flatnonzero(~known))
        self._flag(rows, duplicate, "duplicate_id", "id", "id already used by an earlier row",
                   detail=lambda i: {"message": f"id {distinct[index[i]]!r} already used by row "
                                                f"{int(first_row[index[i]])}", "first_row": int(first_row[index[i]])})

    def finish(self) -> tuple[list[str], dict[str, int]]:
        """``(label_names, histogram)`` of a valid file.

        Raises:
            InvalidInput: code ``invalid_rows`` with the listed errors (or ``missing_column``).
        """
        for role, column in self.mapping.items():
            if column is not None and column not in self.seen_columns:
                raise missing_column(role, column, sorted(self.seen_columns))
        if self.rows == 0:
            raise InvalidInput("the file has no data rows", param="file", code="invalid_rows",
                               details=[{"row": None, "code": "no_rows", "column": None, "message": "no data rows"}])
        histogram = self.histogram
        if self.declared is not None:
            histogram = {name: histogram.get(name, 0) for name in self.declared}
        for label, count in histogram.items():
            if count < self.min_rows_per_class:
                self._fail_with({"row": None, "code": "class_too_small", "column": self.mapping["label"],
                                 "message": f"class {label!r} has {count} row(s); each class needs at least "
                                            f"{self.min_rows_per_class}"})
        if len(histogram) < 2:
            self._fail_with({"row": None, "code": "too_few_classes", "column": self.mapping["label"],
                             "message": f"found {len(histogram)} class(es); a classifier needs at least 2"})
        if self.error_count:
            raise InvalidInput(f"{self.error_count} validation error(s) ({', '.join(sorted(self.codes))}); fix the "
                               "listed rows and upload again", param="file", code="invalid_rows",
                               details=sorted(self.errors, key=lambda e: (e["row"] is None, e["row"] or 0)))
        names = self.declared or label_order(list(histogram))
        return names, {name: histogram.get(name, 0) for name in names}

    def _fail_with(self, error: dict[str, Any]) -> None:
        self.errors.append(error)
        self.error_count += 1
        self.codes.add(error["code"])
