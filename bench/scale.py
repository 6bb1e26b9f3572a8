"""A million rows in a small worker (issue 13): peak memory per stage and the report write against COPY.

Seeded synthetic rows (about 50 tokens each: [CLS], 24-72 words of a 500-word vocabulary the tiny tokenizer
knows whole, [SEP]; 4 classes; an id per row) are stored as a dataset in a fresh Postgres database made
with the app's migrations (inserted with COPY by a child process, so the measured process starts clean),
then go through the worker's own code, stage by stage, in one process:

    load       worker.pipeline._rows + _as_data (rows streamed in chunks into column lists)
    tokenise   clear_core.data.TokenizedTexts (flat int32 ids, chunked tokenizer calls)
    pass       ClearModel.logits_for, no grad, a tiny config-built BERT (hidden 32, 2 layers)
    estimate   NoiseEstimator.update + finish (confident learning on the pass's softmax)
    report     NoiseReport.from_estimate
    write      worker.results.write_noise_report (COPY in columns) + commit
    label check    clear_core.confident.check_labels on the pass's softmax (a labelled prediction run's check)
    predict write  worker.predict.prediction_columns + write_rows (a prediction run's rows, COPY in columns)

Memory: before each stage the kernel's peak-RSS mark is reset (``/proc/self/clear_refs`` "5"); a stage's
peak is ``VmHWM`` after it, and both it and the RSS still held after the stage are given beyond the
process's RSS once the model is loaded (imports, torch and the model: "the model's own RSS"). Where the
mark cannot be reset the peak is the process's peak so far, and the JSON says so.

The report write is timed against a plain ``COPY ... FROM STDIN`` of the same rows (exported in Postgres'
own text format to a file first, so the COPY renders nothing) into a table of the same shape: the same
columns, primary key, indexes and foreign keys (``LIKE noise_rows INCLUDING ALL`` plus its two FKs); the
prediction rows' write likewise against a COPY into a table shaped as ``prediction_rows``.

``--pass-rows`` (default: all rows) limits the model pass to the first rows, for a machine too slow for a
million-row pass; the other rows then take the pass's logits cyclically and the table says how many rows the
pass ran on. ``--compare-lists`` instead measures ``TokenizedTexts`` against the list-based version it
replaced (each in a fresh child process, on the same texts: the bytes of the token structure itself, the RSS
it leaves held and its peak, beyond the texts; tokenise seconds; seconds to fill every pass batch).

    python -m bench.scale --quick
    OMP_NUM_THREADS=1 python -m bench.scale                 # 1,000,000 rows -> bench/results/scale_full.json
    python -m bench.scale --compare-lists [--rows 1000000]  # -> bench/results/scale_lists_<quick|full>.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.postgres import drop_database
from bench.postgres import create_database as _create_database
from bench.output import markdown_table, write_results

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICK = {"rows": 20_000}
QUICK_LISTS = {"rows": 100_000}  # --compare-lists --quick: five tokenizer chunks, enough to tell them apart
FULL = {"rows": 1_000_000}
VOCAB_WORDS, MIN_WORDS, MAX_WORDS = 500, 24, 72  # 24-72 words + [CLS] and [SEP]: 50 tokens a row on average
LABELS = ["alpha", "beta", "gamma", "delta"]
GEN_CHUNK = 50_000
PREDICTION_STAGES = ("label check", "predict write")  # a prediction run's, after the training stages
TENANT, DATASET, JOB, RUN = "bench-scale", "ds_bench_scale", "job_bench_scale", "pred_bench_scale"


def vocabulary() -> list[str]:
    """500 distinct lowercase words of two or three syllables, in a fixed order."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    rng = np.random.default_rng(12345)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < VOCAB_WORDS:
        word = "".join(rng.choice(syllables, int(rng.integers(2, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def synthetic_rows(rows: int, *, seed: int, start: int = 0, end: int | None = None) -> Iterator[tuple]:
    """Rows ``start:end`` of the seeded synthetic dataset as ``(row_index, row_id, text, label)``; the same
    rows whatever the slice (each chunk of ``GEN_CHUNK`` rows draws from its own seeded generator)."""
    words = np.array(vocabulary(), dtype=object)
    end = rows if end is None else end
    for chunk in range(start // GEN_CHUNK, (end + GEN_CHUNK - 1) // GEN_CHUNK):
        rng = np.random.default_rng([seed, chunk])
        first, last = chunk * GEN_CHUNK, min(rows, (chunk + 1) * GEN_CHUNK)
        counts = rng.integers(MIN_WORDS, MAX_WORDS + 1, last - first)
        picks = words[rng.integers(0, VOCAB_WORDS, int(counts.sum()))]
        labels = rng.integers(0, len(LABELS), last - first)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for j in range(last - first):
            i = first + j
            if start <= i < end:
                yield i, f"r{i}", " ".join(picks[bounds[j]:bounds[j + 1]]), LABELS[labels[j]]


# --- memory -------------------------------------------------------------------------------------------


def _status(field: str) -> int:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if field == "VmHWM" else 0


def _reset_peak() -> bool:
    """Reset the peak-RSS mark to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Meter:
    """Seconds, peak RSS and retained RSS of each stage, beyond a baseline RSS (bytes)."""

    def __init__(self) -> None:
        gc.collect()
        self.baseline = _status("VmRSS")
        self.stages: list[dict[str, Any]] = []
        self.peak_reset = True

    @contextlib.contextmanager
    def stage(self, name: str, **info: Any) -> Iterator[dict[str, Any]]:
        """Measure the block as stage ``name``; the yielded dict takes extra fields for the table."""
        gc.collect()
        self.peak_reset = _reset_peak() and self.peak_reset
        record = {"stage": name, **info}
        start = time.perf_counter()
        yield record
        record["seconds"] = time.perf_counter() - start
        record["peak_beyond_model_bytes"] = _status("VmHWM") - self.baseline
        gc.collect()
        record["retained_beyond_model_bytes"] = _status("VmRSS") - self.baseline
        self.stages.append(record)
        print(f"  {name}: {record['seconds']:.1f} s, peak +{record['peak_beyond_model_bytes'] / 2**30:.2f} GiB, "
              f"held +{record['retained_beyond_model_bytes'] / 2**30:.2f} GiB", flush=True)


# --- the database ---------------------------------------------------------------------------------------


def create_database() -> tuple[str, str]:
    """A fresh database migrated to head with the app's Alembic scripts: ``(name, SQLAlchemy URL)``."""
    return _create_database("clear_bench_scale_")


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def populate(url: str, rows: int, seed: int) -> float:
    """Store the tenant, the dataset, its ``rows`` synthetic rows (COPY) and a job; returns the COPY seconds."""
    import psycopg

    from app.db import session_factory
    from app.models import Dataset, Job, Tenant

    with session_factory(url)() as session:
        session.add(Tenant(id=TENANT))
        session.flush()
        session.add(Dataset(id=DATASET, tenant_id=TENANT, name="scale", format="csv", sha256="0" * 64,
                            size_bytes=0, row_count=rows, label_names=LABELS, class_histogram={},
                            columns={"text": "text", "label": "label", "id": "id"}))
        session.flush()
        session.add(Job(id=JOB, tenant_id=TENANT, dataset_id=DATASET, base_model="tiny-bert", method="lora",
                        routed=True, clear_config={}, training_config={}, status="running"))
        session.flush()
        session.add(Job(id=RUN, tenant_id=TENANT, dataset_id=DATASET, kind="predict", model_job_id=JOB,
                        base_model="tiny-bert", method="lora", routed=True, clear_config={}, training_config={},
                        status="running", attempt=1))
        session.commit()
    start = time.perf_counter()
    with psycopg.connect(_psycopg_dsn(url)) as conn, conn.cursor() as cursor:
        with cursor.copy("COPY dataset_rows (dataset_id, row_index, row_id, text, label) FROM STDIN") as copy:
            for row in synthetic_rows(rows, seed=seed):
                copy.write_row((DATASET, *row))
        conn.commit()
        cursor.execute("ANALYZE dataset_rows")
    return time.perf_counter() - start


def copy_baseline(url: str, table: str = "noise_rows", key: str = "job_id", value: str = JOB) -> dict[str, Any]:
    """Export the rows of ``table`` whose ``key`` is ``value`` in Postgres' text format to a file, then time a plain
    COPY of that file into a same-shaped table (columns, keys, indexes, foreign keys); the table is dropped after."""
    import psycopg

    foreign = {"noise_rows": "ADD FOREIGN KEY (job_id) REFERENCES jobs (id)",
               "prediction_rows": "ADD FOREIGN KEY (run_id) REFERENCES jobs (id) ON DELETE CASCADE"}[table]
    with tempfile.TemporaryFile() as spool, psycopg.connect(_psycopg_dsn(url)) as conn:
        with conn.cursor() as cursor:
            with cursor.copy(f"COPY (SELECT * FROM {table} WHERE {key} = '{value}') TO STDOUT") as copy:
                for block in copy:
                    spool.write(block)
            cursor.execute(f"CREATE TABLE {table}_copy (LIKE {table} INCLUDING ALL)")
            cursor.execute(f"ALTER TABLE {table}_copy {foreign}, ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id)")
            conn.commit()
            size = spool.tell()
            spool.seek(0)
            start = time.perf_counter()
            with cursor.copy(f"COPY {table}_copy FROM STDIN") as copy:
                while block := spool.read(1 << 20):
                    copy.write(block)
            conn.commit()
            seconds = time.perf_counter() - start
            cursor.execute(f"DROP TABLE {table}_copy")
            conn.commit()
    return {"seconds": seconds, "bytes": size}


# --- the pipeline ---------------------------------------------------------------------------------------


class _FirstRows:
    """The first ``n`` rows of a ``TokenizedTexts`` (for a pass over fewer rows than were tokenised)."""

    def __init__(self, tokens, n: int) -> None:
        self.tokens, self.n, self.lengths = tokens, n, tokens.lengths[:n]

    def __len__(self) -> int:
        return self.n

    def batch(self, indices, device="cpu"):
        return self.tokens.batch(indices, device)

    def length_sorted_batches(self, batch_size: int):
        order = np.argsort(self.lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def tiny_model(folder: Path, max_length: int):
    """The tiny config-built BERT (hidden 32, 2 layers, random seeded weights) with the synthetic vocabulary,
    as a :class:`~clear_core.ClearModel` (LoRA, routed; the pass uses inference gates)."""
    from clear_core import ClearConfig, ClearModel
    from clear_core.testing import build_tiny_model

    words = vocabulary()
    corpus = [" ".join(words[i:i + 10]) for i in range(0, len(words), 10)]
    build_tiny_model(folder, corpus=corpus, vocab_size=600, num_labels=len(LABELS))
    return ClearModel.build(folder, ClearConfig(), LABELS, max_length)


def run_pipeline(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Load the model, then run and measure each worker stage on the stored dataset (see the module docstring)."""
    import torch

    from app.db import session_factory
    from clear_core.data import TokenizedTexts, encode_labels
    from clear_core.estimate import NoiseEstimator
    from clear_core.report import NoiseReport
    from worker.pipeline import _as_data, _rows
    from clear_core.confident import check_labels
    from worker.predict import FLAG_RULE, QUALITY, PredictionInputs, prediction_columns, write_rows
    from worker.results import write_noise_report

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        model = tiny_model(Path(folder), args.max_length)
    meter = Meter()
    factory = session_factory(url)
    print(f"model loaded: RSS {meter.baseline / 2**30:.2f} GiB (the baseline)", flush=True)
    with meter.stage("load") as record:
        with factory() as session:
            columns = _rows(session, DATASET)
        data, row_indices = _as_data(columns), columns.row_index
        del columns
        record["rows"] = len(data)
    with meter.stage("tokenise") as record:
        tokens = TokenizedTexts(model.tokenizer, data.texts, data.text_pairs, args.max_length)
        record["tokens"] = int(tokens.lengths.sum())
        record["token_array_bytes"] = tokens.nbytes
    pass_rows = min(args.pass_rows or len(data), len(data))
    with meter.stage("pass", rows=pass_rows):
        logits = model.logits_for(_FirstRows(tokens, pass_rows), batch_size=args.batch_size)
        if pass_rows < len(data):  # the rest take the pass's logits cyclically (the flag's documented stand-in)
            logits = np.resize(logits, (len(data), logits.shape[1]))
    meter.stages[-1]["rows_per_s"] = pass_rows / meter.stages[-1]["seconds"]
    given = encode_labels(data.labels, LABELS)
    with meter.stage("estimate") as record:
        estimator = NoiseEstimator(given, num_classes=len(LABELS))
        estimator.update(logits, 1)
        estimate = estimator.finish(logits, LABELS, flag_when_unreliable=True)
        record["rows"] = len(given)
    with meter.stage("report") as record:
        report = NoiseReport.from_estimate(estimate, LABELS, positions=np.arange(len(given)), score="self_confidence",
                                           flag_rule="prune_by_noise_rate", ids=data.ids)
        record["rows"] = len(report)
    with meter.stage("write") as record:
        with factory() as session:
            write_noise_report(session, JOB, report, row_indices)
            session.commit()
        record["rows"] = len(report)
    write_seconds = meter.stages[-1]["seconds"]
    del report, estimate, estimator, tokens
    gc.collect()
    probs = _softmax(logits)
    with meter.stage("label check") as record:
        check = check_labels(given, probs, LABELS, filter_by=FLAG_RULE, quality=QUALITY)
        record["rows"] = len(given)
    with meter.stage("predict write") as record:
        inputs = PredictionInputs(row_indices, data.ids, data.texts, data.text_pairs, data.labels)
        predicted = prediction_columns(inputs, LABELS, probs, check)
        with factory() as session:
            assert write_rows(session, RUN, 1, predicted, {"rows": len(predicted)})
        record["rows"] = len(predicted)
    predict_write_seconds = meter.stages[-1]["seconds"]
    del predicted, inputs, check, probs, data, model
    gc.collect()
    baseline = copy_baseline(url)
    predict_baseline = copy_baseline(url, "prediction_rows", "run_id", RUN)
    return {"baseline_rss_bytes": meter.baseline, "peak_reset": meter.peak_reset, "stages": meter.stages,
            "pass_rows": pass_rows, "write_seconds": write_seconds, "copy_seconds": baseline["seconds"],
            "copy_bytes": baseline["bytes"], "write_over_copy": write_seconds / baseline["seconds"],
            "predict_write_seconds": predict_write_seconds, "predict_copy_seconds": predict_baseline["seconds"],
            "predict_copy_bytes": predict_baseline["bytes"],
            "predict_write_over_copy": predict_write_seconds / predict_baseline["seconds"]}


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` logits, float32 (as ``predict_proba`` returns probabilities)."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


# --- TokenizedTexts against lists -------------------------------------------------------------------------


class ListTokenizedTexts:
    """The list-based ``TokenizedTexts`` this change replaced (one tokenizer call, Python lists, a per-row
    fill loop), kept here only to measure against."""

    def __init__(self, tokenizer, texts, text_pairs, max_length: int) -> None:
        enc = tokenizer(list(texts), list(text_pairs) if text_pairs is not None else None, truncation=True,
                        max_length=max_length, return_attention_mask=False)
        self.input_ids = enc["input_ids"]
        self.token_type_ids = enc.get("token_type_ids")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.lengths = np.array([len(x) for x in self.input_ids])

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, indices, device="cpu"):
        import torch

        rows = [self.input_ids[i] for i in indices]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if self.token_type_ids is not None:
            tt = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(indices):
                tt[j, : len(self.token_type_ids[i])] = torch.tensor(self.token_type_ids[i], dtype=torch.long)
            out["token_type_ids"] = tt
        return {k: v.to(device) for k, v in out.items()}

    def length_sorted_batches(self, batch_size: int):
        order = np.argsort(self.lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def measure_tokens(kind: str, rows: int, seed: int, max_length: int, batch_size: int, types: bool) -> dict:
    """In this (fresh) process: tokenise the synthetic texts with ``kind`` ("lists" or "arrays"); its retained
    and peak bytes beyond the texts, and the seconds of tokenising and of filling every pass batch."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from clear_core.data import TokenizedTexts
    from clear_core.testing import _tiny_tokenizer

    torch.set_num_threads(1)
    words = vocabulary()
    tokenizer = _tiny_tokenizer([" ".join(words[i:i + 10]) for i in range(0, len(words), 10)], 600)
    if types:  # as BERT's own tokenizer: token type ids too
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, pad_token="[PAD]",
                                            model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    texts = [text for _, _, text, _ in synthetic_rows(rows, seed=seed)]
    gc.collect()
    before = _status("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    tokens = (ListTokenizedTexts if kind == "lists" else TokenizedTexts)(tokenizer, texts, None, max_length)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM") - before
    gc.collect()
    retained = _status("VmRSS") - before
    owned = tokens.nbytes if kind == "arrays" else _list_bytes(tokens.input_ids) + _list_bytes(tokens.token_type_ids)
    batches = tokens.length_sorted_batches(batch_size)
    start = time.perf_counter()
    for idx in batches:
        tokens.batch(idx)
    fill = time.perf_counter() - start
    return {"kind": kind, "rows": rows, "tokens": int(tokens.lengths.sum()), "retained_bytes": retained,
            "structure_bytes": owned,
            "peak_bytes": peak, "tokenise_seconds": seconds, "batch_fill_seconds": fill, "batches": len(batches),
            "token_type_ids": types}


def _list_bytes(rows: list[list[int]] | None) -> int:
    """Bytes of a list of token lists: the lists, and an int object per id above 256 (CPython shares only the
    small ints -5..256; the tokenizer makes a new object for every other id)."""
    if rows is None:
        return 0
    return sys.getsizeof(rows) + sum(sys.getsizeof(r) + 28 * sum(1 for x in r if x > 256) for r in rows)


def _in_child(function, *args):
    """Run ``function(*args)`` in a fresh spawned process and return its result."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def compare_lists(args: argparse.Namespace) -> int:
    results = []
    for types in {"no": (False,), "yes": (True,), "both": (False, True)}[args.type_ids]:
        for kind in ("lists", "arrays"):
            print(f"tokenising {args.rows} rows with {kind} (token type ids: {types}) ...", flush=True)
            results.append(_in_child(measure_tokens, kind, args.rows, args.seed, args.max_length,
                                     args.batch_size, types))
    gib = 2 ** 30
    table = markdown_table(
        ["TokenizedTexts", "type ids", "rows", "tokens", "structure GiB", "RSS held GiB", "peak RSS GiB",
         "tokenise s", f"fill {results[0]['batches']} batches s"],
        [[r["kind"], "yes" if r["token_type_ids"] else "no", r["rows"], r["tokens"], r["structure_bytes"] / gib,
          r["retained_bytes"] / gib, r["peak_bytes"] / gib, r["tokenise_seconds"], r["batch_fill_seconds"]]
         for r in results])
    print(table)
    from bench.common import environment

    path = write_results({"results": results, "table": table, "environment": environment()},
                         script="scale_lists", quick=args.quick, out=args.out)
    print(f"wrote {path}")
    return 0


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['rows']} rows instead of {FULL['rows']}")
    parser.add_argument("--rows", type=int, help="synthetic rows (default 1,000,000; --quick 20,000, "
                        "or 100,000 with --compare-lists)")
    parser.add_argument("--pass-rows", type=int, default=None,
                        help="rows the model pass runs on (default: all); the rest reuse its logits")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per pass batch")
    parser.add_argument("--max-length", type=int, default=128, help="truncation length in tokens")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-lists", action="store_true",
                        help="measure TokenizedTexts against the list-based version instead")
    parser.add_argument("--type-ids", choices=("no", "yes", "both"), default="both",
                        help="--compare-lists: a tokenizer without token type ids (the tiny BERT's), with them "
                             "(as BERT's own), or both")
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database (its name is printed)")
    parser.add_argument("--out", help="JSON path (default bench/results/scale_<quick|full>.json, or "
                        "scale_lists_<quick|full>.json with --compare-lists)")
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = (QUICK_LISTS if args.compare_lists else QUICK)["rows"] if args.quick else FULL["rows"]
    if args.rows < 1 or (args.pass_rows is not None and args.pass_rows < 1):
        parser.error("--rows and --pass-rows must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the tables, write the JSON; 0 on success."""
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.compare_lists:
        return compare_lists(args)
    from bench.common import environment, load_average

    env = environment()
    name, url = create_database()
    print(f"database {name}: storing {args.rows} rows ...", flush=True)
    try:
        insert_seconds = _in_child(populate, url, args.rows, args.seed)
        print(f"  stored in {insert_seconds:.1f} s (COPY)", flush=True)
        result = run_pipeline(args, url)
    finally:
        if args.keep_db:
            print(f"kept database {name}")
        else:
            drop_database(name, url)
    gib = 2 ** 30
    stages = result["stages"]
    table = markdown_table(
        ["stage", "rows", "seconds", "peak RSS beyond model, GiB", "held after, beyond model, GiB"],
        [[s["stage"], s.get("rows", args.rows), s["seconds"], s["peak_beyond_model_bytes"] / gib,
          s["retained_beyond_model_bytes"] / gib] for s in stages])
    training = [s for s in stages if s["stage"] not in PREDICTION_STAGES]  # a training job's stages
    peak = max(s["peak_beyond_model_bytes"] for s in training)
    predict_peak = max(s["peak_beyond_model_bytes"] for s in stages if s["stage"] in PREDICTION_STAGES)
    summary = markdown_table(
        ["what", "measured", "target", "met"],
        [["worker peak RSS beyond the model, GiB (load to report write)", peak / gib, "≤ 1.5 GB (1.397 GiB)",
          peak <= 1.5e9],
         ["report write / plain COPY of the same rows", result["write_over_copy"], "≤ 2",
          result["write_over_copy"] <= 2],
         ["report write, s", result["write_seconds"], None, None],
         ["plain COPY, s", result["copy_seconds"], None, None],
         ["prediction run: peak RSS beyond the model, GiB (label check, rows write)", predict_peak / gib, None, None],
         ["prediction rows write / plain COPY of the same rows", result["predict_write_over_copy"], None, None],
         ["prediction rows write, s", result["predict_write_seconds"], None, None],
         ["plain COPY of the prediction rows, s", result["predict_copy_seconds"], None, None],
         ["model baseline RSS, GiB", result["baseline_rss_bytes"] / gib, None, None]])
    print(f"\n{args.rows} rows, pass over {result['pass_rows']} rows, "
          f"peak mark reset per stage: {result['peak_reset']}\n")
    print(table + "\n\n" + summary)
    payload = {"rows": args.rows, "database": name, "dropped": not args.keep_db, "args": vars(args),
               "insert_seconds": insert_seconds, **result,
               "peak_beyond_model_bytes": peak, "peak_target_bytes": int(1.5e9), "table": table,
               "summary": summary, "environment": env, "load_average_at_end": load_average()}
    path = write_results(payload, script="scale", quick=args.quick, out=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
