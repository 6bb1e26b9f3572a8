"""CSV bodies of streamed responses, in chunks: the report, a dataset's rows and a prediction run's rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

FLUSH_ROWS = 500


def csv_chunks(header: Sequence[str], rows: Iterable[Sequence[Any]], *, flush_rows: int = FLUSH_ROWS
               ) -> Iterator[str]:
    """CSV text: the ``header`` line, then one line per row of cells (already made safe by the caller), yielded
    ``flush_rows`` rows at a time (>= 1) so a long body never sits in memory whole; the last chunk may be short
    (the header alone for no rows)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for i, cells in enumerate(rows, start=1):
        writer.writerow(cells)
        if i % flush_rows == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
