"""The order of class names, in one function for the service and the library (no torch behind it).

Labels are strings. When every label is an integer written in ASCII digits with an optional sign (``"2"``,
``"-1"``, ``"+3"``, ``"10"``), classes are ordered by value ("2" before "10"); otherwise by code point. Python's
``str.isdigit`` and ``int`` accept more than that (``"²"`` is a digit to ``isdigit`` but not to ``int``;
``int`` reads ``"1_000"``, ``" 7"`` and Arabic-Indic digits), which made the service and ``clear_core``
disagree on the order or fail; this rule has no such cases.
"""

from __future__ import annotations

import re
from typing import Iterable

_INTEGER = re.compile(r"[+-]?[0-9]+")


def is_integer_label(label: str) -> bool:
    """Whether ``label`` is an integer in ASCII digits with an optional leading sign (``"-1"``, ``"10"``)."""
    return _INTEGER.fullmatch(label) is not None


def label_order(labels: Iterable[str]) -> list[str]:
    """The distinct ``labels`` in class order: by integer value when every one is an integer label (ties, such
    as ``"1"`` and ``"+1"``, by spelling), else by code point. Index k of the result is logit column k."""
    distinct = set(labels)
    if distinct and all(is_integer_label(x) for x in distinct):
        return sorted(distinct, key=lambda x: (int(x), x))
    return sorted(distinct)


def held_out_per_class(class_rows: int, fraction: float) -> int:
    """Rows a class of ``class_rows`` rows holds out for validation at ``validation_fraction=fraction``:
    ``floor(fraction * n_k + 0.5)``, at most ``n_k // 2`` (so at least half, and at least one row, stay for
    training). The one rule of ``clear_core.data.stratified_holdout`` and of the service's check that a job
    asking for ``keep='best'`` holds some row out.

    Args:
        class_rows: n_k >= 0.
        fraction: in [0, 0.5].
    """
    return min(int(fraction * class_rows + 0.5), class_rows // 2)
