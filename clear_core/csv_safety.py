"""CSV formula-injection guard shared by every CSV this project writes (no heavy imports: the API uses it).

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return as a
formula (OWASP, "CSV Injection"); prefixing a quote makes it text.
"""

from __future__ import annotations

from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """``value`` with ``'`` prepended if it is a string a spreadsheet would run as a formula; else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
