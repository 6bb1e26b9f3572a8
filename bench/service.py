"""Service benchmarks (issue 13): ingest against Postgres ``COPY``, and the API under 64 connections.

Each subcommand prints a table and writes JSON under ``bench/results/``:

    python -m bench.service ingest [--rows 200000] ...   # bench/service_ingest.py
    python -m bench.service api [--connections 64] ...   # bench/service_api.py

``python -m bench.service SUBCOMMAND --help`` lists a subcommand's flags.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUBCOMMANDS = {"ingest": "bench.service_ingest", "api": "bench.service_api"}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its module's ``main(rest)``; 2 with a usage line on a bad subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        print(f"usage: python -m bench.service {{{','.join(SUBCOMMANDS)}}} [flags]  (--help after one for its flags)",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
