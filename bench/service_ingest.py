"""Ingest benchmark (issue 13): ``POST /v1/datasets`` of a CSV, end to end (HTTP upload, spool, parse,
validate, store), against ``psql \\copy`` of the same file into a two-column table, in the same run.

It generates a seeded CSV (``text,label``; texts of a log-normal number of Zipf-distributed words, about
250 bytes a row, some with commas and quotes, four classes), creates a fresh Postgres database (dropped at
the end), migrates it, starts the API as a real ``uvicorn`` subprocess on it and times, ``--repeats``
times, alternating which goes first, one real HTTP POST of the file and one ``\\copy`` of it (the tables
are emptied between repeats, outside the timing); then, for reference, a ``\\copy`` of the rows the POST
stored straight into ``dataset_rows`` (its primary key and dataset check: what the schema alone costs). Prints a markdown table; writes JSON to
``bench/results/service_ingest_{full,quick}.json``. Target: POST <= 2 x ``\\copy``.

    python -m bench.service ingest            # 200,000 rows (~50 MB), 3 repeats
    python -m bench.service ingest --quick    # 20,000 rows, 2 repeats
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import environment
from bench.output import markdown_table, write_results
from bench.postgres import create_database, drop_database, free_port, migrate_database

CLASSES = ("world", "sports", "business", "sci_tech")


def generate_csv(path: Path, rows: int, *, seed: int) -> int:
    """Write ``rows`` seeded rows of ``text,label`` to ``path``; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(8000)]
    vocab += ["it's", '"quoted"', "comma,word", "café", "naïve", "2024", "$5.99"]
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    lengths = np.clip(rng.lognormal(3.45, 0.5, rows).astype(int), 3, 400)
    words = rng.choice(len(vocab), int(lengths.sum()), p=weights / weights.sum())
    labels = rng.choice(CLASSES, rows)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        start = 0
        for n, label in zip(lengths, labels):
            writer.writerow([" ".join(vocab[i] for i in words[start:start + n]), label])
            start += n
    return path.stat().st_size


class Database:
    """A fresh Postgres database, migrated, with an API key and the ``\\copy`` target table."""

    def __init__(self) -> None:
        self.name, self.url = create_database("clear_bench_", migrate=False)
        self.dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={self.name}"

    def prepare(self) -> str:
        """Migrate, create the copy target; returns a key of tenant ``bench`` with every scope."""
        import psycopg

        migrate_database(self.url)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE copy_target (text text, label text)")
            # dataset_rows' columns, primary key and indexes, without its dataset check (triggers are not copied)
            conn.execute("CREATE TABLE rows_unchecked (LIKE dataset_rows INCLUDING ALL)")
        from app.db import session_factory
        from app.services.api_keys import create_key

        with session_factory(self.url)() as session:
            return create_key(session, "bench", "read,write,admin").key

    def empty(self) -> None:
        """Remove the rows of earlier repeats (outside the timing), so each repeat starts alike."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE copy_target, rows_unchecked, dataset_rows, datasets CASCADE")
            conn.execute("VACUUM ANALYZE copy_target, rows_unchecked, dataset_rows, datasets")

    def drop(self) -> None:
        """Drop the database (closing this process's pooled connections first)."""
        drop_database(self.name, self.url)


def start_api(db: Database, data_dir: Path, max_bytes: int, log: Path) -> tuple[subprocess.Popen, str]:
    """``uvicorn app.main:app`` (one worker) on ``db``; returns the process and its base URL once healthy.

    Raises:
        RuntimeError: the API exited or did not answer within 60 s (``bench.service_api.serve_app``).
    """
    from bench.service_api import serve_app

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEAR_")}
    env.update(CLEAR_DATABASE_URL=db.url, CLEAR_DATA_DIR=str(data_dir), CLEAR_MAX_UPLOAD_BYTES=str(max_bytes),
               CLEAR_MAX_UNCOMPRESSED_BYTES=str(4 * max_bytes), CLEAR_LOG_LEVEL="WARNING")
    return serve_app("app.main:app", env, port, log, "the API"), f"http://127.0.0.1:{port}"


def time_post(base: str, key: str, path: Path) -> tuple[float, dict[str, Any]]:
    """Seconds for one ``POST /v1/datasets`` of ``path`` (the file streamed from disk), and the dataset."""
    import httpx

    with httpx.Client(base_url=base, timeout=600, headers={"Authorization": f"Bearer {key}"}) as http:
        with open(path, "rb") as fh:
            start = time.perf_counter()
            response = http.post("/v1/datasets", files={"file": (path.name, fh, "text/csv")})
            seconds = time.perf_counter() - start
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/datasets answered {response.status_code}: {response.text[:500]}")
    return seconds, response.json()


def time_copy(db: Database, path: Path) -> float:
    """Seconds for ``psql -c "\\copy copy_target (text, label) FROM path (csv, header)"``."""
    command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", db.name, "-c",
               f"\\copy copy_target (text, label) FROM '{path}' WITH (FORMAT csv, HEADER true)"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def export_rows(db: Database, dataset_id: str, out: Path) -> None:
    """Write the stored rows of ``dataset_id`` to ``out`` in COPY text format, as rows of dataset ``ds_floor``."""
    query = ("SELECT 'ds_floor', row_index, row_id, text, text_pair, label, gold_label FROM dataset_rows "
             f"WHERE dataset_id = '{dataset_id}' ORDER BY row_index")
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", db.name,
                    "-c", f"\\copy ({query}) TO '{out}'"], check=True, stdout=subprocess.DEVNULL)


def time_floor(db: Database, rows_file: Path, table: str = "dataset_rows") -> float:
    """Seconds for ``psql \\copy <table> FROM rows_file`` in one transaction: the same rows straight into the
    service's table (its primary key and dataset check included: ``dataset_rows_trust`` first, as the API
    does), without the API; what the schema alone costs. With ``table="rows_unchecked"``: the same table
    without its dataset check (what the check costs)."""
    import psycopg

    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO datasets (id, tenant_id, name, status, format, sha256, size_bytes, row_count, "
                     "label_names, class_histogram, columns, created_at) VALUES ('ds_floor', 'bench', 'floor', "
                     "'ready', 'csv', '', 0, 0, '[]', '{}', '{}', now()) ON CONFLICT (id) DO NOTHING")
    command = ["psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", db.name]
    if table == "dataset_rows":  # as the API does (migration 0009): the dataset checked and locked once
        command += ["-c", "SELECT dataset_rows_trust('ds_floor')"]
    command += ["-c", f"\\copy {table} FROM '{rows_file}'"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = argparse.ArgumentParser(prog="python -m bench.service ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=None, help="data rows (default 200000; --quick 20000)")
    p.add_argument("--repeats", type=int, default=None, help="timed POSTs and \\copy runs each (default 3; --quick 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated file")
    p.add_argument("--quick", action="store_true", help="a small check: 20,000 rows, 2 repeats")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/service_ingest_<quick|full>.json)")
    return p


def main(argv: list[str]) -> int:
    """Run the benchmark; 0 when it ran (the target met or not: the table says), 1 when it could not."""
    args = build_parser().parse_args(argv)
    rows = args.rows or (20_000 if args.quick else 200_000)
    repeats = args.repeats or (2 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="clear-bench-ingest-") as tmp:
        folder = Path(tmp)
        path = folder / "ingest.csv"
        size = generate_csv(path, rows, seed=args.seed)
        print(f"generated {rows} rows, {size / 1e6:.1f} MB: {path}", file=sys.stderr)
        db = Database()
        proc = None
        try:
            key = db.prepare()
            proc, base = start_api(db, folder / "data", max(size * 2, 64 << 20), folder / "api.log")
            post, copy, floor, unchecked = [], [], [], []
            rows_file = folder / "rows.copy"
            for repeat in range(repeats):
                db.empty()
                order = ("post", "copy") if repeat % 2 == 0 else ("copy", "post")
                for what in order:
                    if what == "post":
                        seconds, dataset = time_post(base, key, path)
                        assert dataset["row_count"] == rows, dataset
                        post.append(seconds)
                        if not rows_file.exists():
                            export_rows(db, dataset["id"], rows_file)
                    else:
                        copy.append(time_copy(db, path))
                # after the pair, outside the alternation, in alternating order too
                for table in (("dataset_rows", "rows_unchecked") if repeat % 2 == 0 else
                              ("rows_unchecked", "dataset_rows")):
                    (floor if table == "dataset_rows" else unchecked).append(time_floor(db, rows_file, table))
                print(f"repeat {repeat + 1}: POST {post[-1]:.2f} s, \\copy {copy[-1]:.2f} s, \\copy into dataset_rows "
                      f"{floor[-1]:.2f} s (without its dataset check {unchecked[-1]:.2f} s)", file=sys.stderr)
        except Exception as exc:  # a benchmark that cannot run says why and exits 1
            print(f"the ingest benchmark could not run: {exc}", file=sys.stderr)
            return 1
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(20)
            db.drop()
    ratio = statistics.median(post) / statistics.median(copy)
    table = markdown_table(
        ["what", "median s", "min s", "max s", "rows/s (median)", "× \\copy (median)"],
        [["POST /v1/datasets (upload + validate + store)", statistics.median(post), min(post), max(post),
          f"{rows / statistics.median(post):,.0f}", ratio],
         ["psql \\copy into (text, label)", statistics.median(copy), min(copy), max(copy),
          f"{rows / statistics.median(copy):,.0f}", 1.0],
         ["psql \\copy of the stored rows into dataset_rows (the schema's floor)", statistics.median(floor), min(floor),
          max(floor), f"{rows / statistics.median(floor):,.0f}", statistics.median(floor) / statistics.median(copy)],
         ["the same into a copy of dataset_rows without its dataset check", statistics.median(unchecked),
          min(unchecked), max(unchecked), f"{rows / statistics.median(unchecked):,.0f}",
          statistics.median(unchecked) / statistics.median(copy)]])
    print(table)
    print(f"\ntarget POST <= 2 x \\copy: {'met' if ratio <= 2 else 'missed'} ({ratio:.2f} x); per repeat: "
          + ", ".join(f"{p / c:.2f}" for p, c in zip(post, copy)))
    payload = {"benchmark": "service_ingest", "rows": rows, "bytes": size, "repeats": repeats, "seed": args.seed,
               "post_s": post, "copy_s": copy, "copy_into_dataset_rows_s": floor,
               "copy_into_dataset_rows_unchecked_s": unchecked, "ratio_median": ratio,
               "floor_ratio_median": statistics.median(floor) / statistics.median(copy),
               "ratio_per_repeat": [p / c for p, c in zip(post, copy)], "target_ratio": 2.0, "met": ratio <= 2,
               "command": "python -m bench.service ingest" + (" --quick" if args.quick else ""),
               "environment": environment()}
    out = write_results(payload, script="service_ingest", quick=args.quick, out=args.out)
    print(f"wrote {out}", file=sys.stderr)
    return 0
