"""Row-level validation of a parsed dataset against its column mapping, one chunk of rows at a time.

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

import pandas as pd
import pyarrow as pa

from clear_core.labels import label_order  # the library's order, no torch behind it

from app.errors import InvalidInput

ROLES = ("text", "text_pair", "label", "id", "gold_label")
_TYPE_CODES = {"text": "text_not_string", "text_pair": "text_not_string", "label": "bad_label_type",
               "gold_label": "bad_label_type", "id": "bad_id_type"}
_JSON_TYPES = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}
LABEL_MAX = ID_MAX = 200  # the database columns' width
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
class RowValidator:
    """Feed chunks with ``add``; ``finish`` gives the label names and histogram or raises with every error."""

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
    ids: set[str] = field(default_factory=set)

    def _select(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.seen_columns.update(map(str, frame.columns))
        out = pd.DataFrame(index=frame.index)
        for role in ROLES:
            column = self.mapping.get(role)
            if column is not None and column not in frame.columns and self.fixed_columns:
                raise missing_column(role, column, [str(c) for c in frame.columns])
            out[role] = frame[column] if column is not None and column in frame.columns else None
        return out.reset_index(drop=True)

    def _check_types(self, rows: pd.DataFrame) -> pd.Series:
        """Flag JSONL values of a type the role cannot hold (text must be a string, labels and ids not
        arrays or objects; numbers and booleans become their text); returns the rows whose label is
        of a wrong type, kept out of the class histogram."""
        bad_label = pd.Series(False, index=rows.index)
        for role, code in _TYPE_CODES.items():
            if not self.mapping.get(role):
                continue
            wrong = rows[role].map(lambda v, r=role: _wrong_json_type(v, r))
            if wrong.any():
                kinds = sorted({_JSON_TYPES.get(type(v), type(v).__name__) for v in rows[role][wrong]})
                wanted = "a string" if role in ("text", "text_pair") else "a string or an integer"
                self._flag(rows, wrong, code, role, f"{role.replace('_', ' ')} is a JSON {'/'.join(kinds)}; it must "
                                                    f"be {wanted}")
                if role == "label":
                    bad_label = wrong
            rows[role] = rows[role].map(cell_text)
        return bad_label

    def _flag(self, rows: pd.DataFrame, mask: pd.Series, code: str, role: str, message: str) -> None:
        hits = mask.index[mask.eq(True).to_numpy()]
        self.error_count += len(hits)
        if len(hits):
            self.codes.add(code)
        room = max(0, self.max_errors - len(self.errors))
        self.errors += [{"row": int(rows.at[i, "row_index"]), "code": code, "column": self.mapping.get(role),
                         "message": message} for i in hits[:room]]

    def add(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        """Validate a chunk; returns its rows ready to store, or None once any error has been seen.

        Raises:
            InvalidInput: a missing column, or more rows than ``max_rows`` (reading stops there).
        """
        rows = self._select(frame)
        rows.insert(0, "row_index", range(self.rows, self.rows + len(rows)))
        self.rows += len(rows)
        if self.rows > self.max_rows:
            raise InvalidInput(f"the file has more than {self.max_rows} rows, the limit; split it", param="file",
                               code="invalid_rows", details=[{"row": self.max_rows, "code": "too_many_rows",
                                                              "column": None, "message": f"limit {self.max_rows}"}])
        bad_label = self._check_types(rows)
        for role in ("label", "gold_label", "id"):
            rows[role] = rows[role].map(lambda v: v.strip() if isinstance(v, str) else v)
        self._check_cells(rows)
        labels = rows.loc[~bad_label, "label"].dropna()
        for label, count in labels.value_counts().items():
            self.histogram[str(label)] = self.histogram.get(str(label), 0) + int(count)
        return None if self.error_count else rows.rename(columns={"id": "row_id"})

    def _check_cells(self, rows: pd.DataFrame) -> None:
        m, limit = self.mapping, self.max_text_chars
        for role in ROLES:
            if m.get(role):
                self._flag(rows, rows[role].str.contains("\x00", regex=False), "nul_character", role,
                           f"{role} contains a NUL character")
        self._flag(rows, rows["text"].isna(), "empty_text", "text", "text is empty")
        self._flag(rows, rows["text"].str.len() > limit, "text_too_long", "text", f"text is over {limit} characters")
        if m.get("text_pair"):
            self._flag(rows, rows["text_pair"].isna(), "empty_text_pair", "text_pair", "text pair is empty")
            self._flag(rows, rows["text_pair"].str.len() > limit, "text_too_long", "text_pair",
                       f"text pair is over {limit} characters")
        self._check_labels(rows, "label", "missing_label", "unknown_label")
        if m.get("gold_label"):
            self._check_labels(rows, "gold_label", "missing_gold_label", "unknown_gold_label")
        if m.get("id"):
            self._check_ids(rows)

    def _check_labels(self, rows: pd.DataFrame, role: str, missing: str, unknown: str) -> None:
        values = rows[role]
        self._flag(rows, values.isna(), missing, role, f"{role.replace('_', ' ')} is empty")
        self._flag(rows, values.str.len() > LABEL_MAX, "label_too_long", role, f"over {LABEL_MAX} characters")
        if self.declared is not None:
            self._flag(rows, values.notna() & ~values.isin(self.declared), unknown, role,
                       f"{role.replace('_', ' ')} is not one of {self.declared}")
        else:
            self._flag(rows, values.str.match(_FLOAT), "float_label", role,
                       "looks like a decimal number: labels are class names or integers (declare `labels` to "
                       "accept it as a name)")

    def _check_ids(self, rows: pd.DataFrame) -> None:
        ids = rows["id"]
        self._flag(rows, ids.isna(), "missing_id", "id", "id is empty")
        self._flag(rows, ids.str.len() > ID_MAX, "id_too_long", "id", f"id is over {ID_MAX} characters")
        dup = ids.notna() & (ids.duplicated(keep="first") | ids.isin(self.ids))
        self._flag(rows, dup, "duplicate_id", "id", "id already used by an earlier row")
        self.ids.update(ids.dropna())

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
