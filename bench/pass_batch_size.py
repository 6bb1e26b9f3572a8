"""The no-grad pass's batch size on this device (issue 13: "the pass's batch size chosen per device").

Times ``ClearModel.logits_for`` (merged LoRA, padded batches built once and reused, the trainer's own pass
path) over the demo's training rows at each ``--batch-sizes`` and ``--lengths``, in one process, the order
of the sizes reversed every repeat; prints the median seconds per size and writes JSON (machine, CPU
flags, threads, every repeat) to ``bench/results/pass_batch_size_<quick|full>.json``.

    python -m bench.pass_batch_size                      # 1,800 rows, 48 and 128 tokens, sizes 32, 64, 128; 3 repeats
    python -m bench.pass_batch_size --quick              # 200 rows, 48 tokens, 2 repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.common import environment, load_average
from bench.output import markdown_table, write_results
from bench.cost_training import lora_model
from clear_core.batching import PassBatches
from clear_core.data import TokenizedTexts
from clear_core.model import cpu_has_native_bf16

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "noisyag_train_2000.csv"


def build_parser() -> argparse.ArgumentParser:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SAMPLE), help="a CSV with a text column (default: the bundled sample)")
    p.add_argument("--model", default=None, help="model folder (default: the installed all-MiniLM-L6-v2)")
    p.add_argument("--rows", type=int, default=None, help="rows of the pass (default 1800; --quick 200)")
    p.add_argument("--lengths", default=None, help="max_length values, comma-separated (default 48,128)")
    p.add_argument("--batch-sizes", default="32,64,128", help="pass batch sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=None, help="timed passes per size (default 3; --quick 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--autocast", action="store_true", help="bf16 autocast, as precision='auto' on a bf16 CPU")
    p.add_argument("--quick", action="store_true", help="a small check")
    p.add_argument("--out", default=None, help="JSON path")
    return p


def time_sizes(texts: list[str], names: list[str], *, max_length: int, sizes: list[int], repeats: int,
               autocast: bool, model_path) -> dict[int, list[float]]:
    """Seconds of each timed pass per batch size, for a LoRA model with a non-zero (random) delta."""
    model, _ = lora_model(True, names, max_length, model_path)  # the same seeded, trained-looking LoRA
    tokens = TokenizedTexts(model.tokenizer, texts, None, max_length)
    batches = {bs: PassBatches(tokens, bs, max_cached_tokens=10**9) for bs in sizes}
    reference = None
    for bs, pb in batches.items():  # build the padded batches, warm up, and check every size gives the same logits
        logits = model.logits_for(pb, autocast=autocast)
        reference = logits if reference is None else reference
        if not np.allclose(logits, reference, atol=1e-3 if autocast else 1e-4):
            raise RuntimeError(f"batch size {bs} changed the logits by {np.abs(logits - reference).max():.2e}")
    times: dict[int, list[float]] = {bs: [] for bs in sizes}
    for rep in range(repeats):
        for bs in (sizes if rep % 2 == 0 else sizes[::-1]):
            start = time.perf_counter()
            model.logits_for(batches[bs], autocast=autocast)
            times[bs].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON."""
    args = build_parser().parse_args(argv)
    import pandas as pd

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = args.rows or (200 if args.quick else 1800)
    lengths = [int(x) for x in (args.lengths or ("48" if args.quick else "48,128")).split(",") if x]
    sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    repeats = args.repeats or (2 if args.quick else 3)
    frame = pd.read_csv(args.data)
    texts, names = frame["text"].astype(str).tolist()[:rows], sorted(frame["label"].astype(str).unique())
    env = environment()
    env.update(load_average_at_start=load_average(), torch_threads=torch.get_num_threads(),
               cpu_has_native_bf16=cpu_has_native_bf16(), autocast=args.autocast)
    results: dict[str, Any] = {}
    table = []
    for length in lengths:
        times = time_sizes(texts, names, max_length=length, sizes=sizes, repeats=repeats, autocast=args.autocast,
                           model_path=args.model)
        medians = {bs: statistics.median(v) for bs, v in times.items()}
        best = min(medians, key=medians.get)
        results[str(length)] = {"seconds": {str(k): v for k, v in times.items()},
                                "median_s": {str(k): v for k, v in medians.items()}, "fastest": best}
        table.append([length] + [f"{medians[bs]:.2f}" for bs in sizes] + [best])
        print(f"max_length {length}: " + ", ".join(f"{bs}: {medians[bs]:.2f} s" for bs in sizes), flush=True)
    env["load_average_at_end"] = load_average()
    text = markdown_table(["max_length"] + [f"batch {bs}, s" for bs in sizes] + ["fastest"], table)
    print(f"\nThe pass over {rows} rows (median of {repeats}; {torch.get_num_threads()} threads, "
          f"autocast {args.autocast}):\n\n{text}")
    out = write_results({"script": "pass_batch_size", "rows": rows, "repeats": repeats, "results": results,
                         "table": text, "environment": env}, script="pass_batch_size", quick=args.quick, out=args.out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
