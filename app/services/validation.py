"""Row-level validation of a parsed dataset against its column mapping.

Checks every row before anything is stored and returns all problems at once, each as
``{"row", "code", "column", "message"}`` with ``row`` the 0-based data row (header excluded).
Codes: ``missing_column``, ``no_rows``, ``too_many_rows``, ``empty_text``, ``empty_text_pair``,
``missing_label``, ``unknown_label``, ``missing_gold_label``, ``unknown_gold_label``,
``missing_id``, ``duplicate_id``, ``class_too_small``, ``too_few_classes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from app.errors import InvalidInput

ROLES = ("text", "text_pair", "label", "id", "gold_label")
REQUIRED_ROLES = ("text", "label")


@dataclass
class ValidRows:
    """A dataset whose every row passed validation, with its label names in index order."""

    frame: pd.DataFrame  # columns: row_index, row_id, text, text_pair, label, gold_label
    label_names: list[str]
    histogram: dict[str, int]


def label_order(labels: list[str]) -> list[str]:
    """Labels in a stable order: numerically when every label is an integer, else alphabetically."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def select_columns(frame: pd.DataFrame, mapping: dict[str, str | None]) -> pd.DataFrame:
    """The mapped columns renamed to their roles; raises ``InvalidInput`` naming a missing column."""
    out = pd.DataFrame(index=frame.index)
    for role in ROLES:
        column = mapping.get(role)
        if column is None:
            out[role] = None
            continue
        if column not in frame.columns:
            raise InvalidInput(
                f"column {column!r} (the {role} column) is not in the file; its columns are {list(frame.columns)}",
                param=f"{role}_column", code="missing_column",
                details=[{"row": None, "code": "missing_column", "column": column, "message": "not in the file"}])
        out[role] = frame[column]
    return out.reset_index(drop=True)


def _row_errors(mask: pd.Series, code: str, column: str, message: str) -> list[dict[str, Any]]:
    return [{"row": int(i), "code": code, "column": column, "message": message} for i in mask[mask].index]


def _cell_errors(rows: pd.DataFrame, mapping: dict[str, str | None], declared: list[str] | None) -> list[dict]:
    errors = _row_errors(rows["text"].isna(), "empty_text", mapping["text"], "text is empty")
    if mapping.get("text_pair"):
        errors += _row_errors(rows["text_pair"].isna(), "empty_text_pair", mapping["text_pair"], "text pair is empty")
    errors += _row_errors(rows["label"].isna(), "missing_label", mapping["label"], "label is empty")
    if declared is not None:
        unknown = rows["label"].notna() & ~rows["label"].isin(declared)
        errors += _row_errors(unknown, "unknown_label", mapping["label"], f"label is not one of {declared}")
    if mapping.get("gold_label"):
        errors += _row_errors(rows["gold_label"].isna(), "missing_gold_label", mapping["gold_label"],
                              "gold label is empty")
        if declared is not None:
            unknown = rows["gold_label"].notna() & ~rows["gold_label"].isin(declared)
            errors += _row_errors(unknown, "unknown_gold_label", mapping["gold_label"],
                                  f"gold label is not one of {declared}")
    if mapping.get("id"):
        errors += _row_errors(rows["id"].isna(), "missing_id", mapping["id"], "id is empty")
        dup = rows["id"].notna() & rows["id"].duplicated(keep="first")
        errors += _row_errors(dup, "duplicate_id", mapping["id"], "id already used by an earlier row")
    return errors


def _class_errors(histogram: dict[str, int], label_column: str, min_rows: int) -> list[dict]:
    errors = [{"row": None, "code": "class_too_small", "column": label_column,
               "message": f"class {label!r} has {count} row(s); each class needs at least {min_rows}"}
              for label, count in histogram.items() if count < min_rows]
    if len(histogram) < 2:
        errors.append({"row": None, "code": "too_few_classes", "column": label_column,
                       "message": f"found {len(histogram)} class(es); a classifier needs at least 2"})
    return errors


def validate_rows(frame: pd.DataFrame, mapping: dict[str, str | None], *, declared_labels: list[str] | None,
                  min_rows_per_class: int, max_rows: int) -> tuple[ValidRows | None, list[dict[str, Any]]]:
    """Validate every row; returns ``(ValidRows, [])`` or ``(None, errors)``, errors sorted by row."""
    rows = select_columns(frame, mapping)
    if len(rows) == 0:
        return None, [{"row": None, "code": "no_rows", "column": None, "message": "the file has no data rows"}]
    if len(rows) > max_rows:
        return None, [{"row": None, "code": "too_many_rows", "column": None,
                       "message": f"the file has {len(rows)} rows; the limit is {max_rows}"}]
    for role in ("label", "gold_label", "id"):
        rows[role] = rows[role].map(lambda v: v.strip() if isinstance(v, str) else v)
    errors = _cell_errors(rows, mapping, declared_labels)
    histogram = {str(k): int(v) for k, v in rows["label"].dropna().value_counts().items()}
    if declared_labels is not None:
        histogram = {name: histogram.get(name, 0) for name in declared_labels}
    errors += _class_errors(histogram, mapping["label"], min_rows_per_class)
    if errors:
        return None, sorted(errors, key=lambda e: (e["row"] is None, e["row"] or 0))
    names = declared_labels or label_order(list(histogram))
    rows.insert(0, "row_index", range(len(rows)))
    rows = rows.rename(columns={"id": "row_id"})
    return ValidRows(rows, names, {name: histogram.get(name, 0) for name in names}), []
