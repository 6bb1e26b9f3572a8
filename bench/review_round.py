"""A second round of review (issue 10): does retraining on the report's accepted suggestions help?

Round 1 trains the service's defaults (routed LoRA, ``validation_fraction`` 0.1) on NoisyAG rows with
their real crowd labels, at the demo's budget; a reviewer who accepts every flagged row's suggestion
(the bulk rule ``{"flagged": true}`` + ``accept``) turns those rows' labels into the suggested ones;
round 2 retrains the same settings, same seed, on the corrected labels. Both models are scored on the
same test rows (``gt``); the labels' noise rate against ``gt`` is reported before and after the review.
The test rows never choose anything.

    python -m bench.review_round --seeds 0,1,2 --threads 1
    python -m bench.review_round --table

One JSON per seed under ``bench/results/review_round/`` as soon as that seed ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from bench.common import DEFAULT_DATA, FALLBACK_TEST, environment, quiet
from bench.detection import DEMO, load_rows
from bench.output import RESULTS_DIR, markdown_table, mean_std

OUT_DIR = RESULTS_DIR / "review_round"


def _test_rows(rows: int, data_seed: int) -> pd.DataFrame:
    file = DEFAULT_DATA / "test.csv"
    if not file.exists():
        file = FALLBACK_TEST
    frame = pd.read_csv(file, dtype={"label": str, "gt": str})
    take = np.random.default_rng(data_seed).permutation(len(frame))[: min(rows, len(frame))]
    return frame.iloc[np.sort(take)].reset_index(drop=True)


def one_round(texts: list[str], labels: list[str], gold: list[str], test: pd.DataFrame, args, seed: int):
    """Train once; ``(result, test_accuracy)``."""
    from clear_core import ClearConfig, TextClassificationData, TrainingConfig, train

    data = TextClassificationData(texts, labels, gold_labels=gold)
    result = train(data, clear=ClearConfig(warmup_epochs=args.warmup),
                   training=TrainingConfig(epochs=args.epochs, max_length=args.max_length, seed=seed,
                                           learning_rate=args.learning_rate, batch_size=args.batch_size),
                   model_path=args.model, label_names=sorted(set(gold), key=int))
    logits = result.model.predict_logits(test["text"].tolist())
    names = result.report.label_names
    predicted = np.array(names)[logits.argmax(axis=1)]
    return result, float((predicted == test["gt"].to_numpy()).mean())


def run_seed(frame: pd.DataFrame, test: pd.DataFrame, args, seed: int) -> dict[str, Any]:
    """Round 1, accept every flagged suggestion, round 2; the record of one seed."""
    texts, gold = frame["text"].tolist(), frame["gt"].tolist()
    given = frame["label"].to_numpy()
    first, acc1 = one_round(texts, given.tolist(), gold, test, args, seed)
    report = first.report
    names = np.array(report.label_names)
    corrected = given.copy()
    flagged = np.asarray(report.flagged, dtype=bool)
    corrected[flagged] = names[report.suggested][flagged]
    second, acc2 = one_round(texts, corrected.tolist(), gold, test, args, seed)
    gt = frame["gt"].to_numpy()
    return {
        "seed": seed, "rows": len(frame), "test_rows": len(test),
        "first_test_accuracy": acc1, "second_test_accuracy": acc2, "difference": acc2 - acc1,
        "accepted": int(flagged.sum()),
        "accepted_right": int((corrected[flagged] == gt[flagged]).sum()),
        "accepted_were_wrong": int((given[flagged] != gt[flagged]).sum()),
        "noise_rate_before": float((given != gt).mean()), "noise_rate_after": float((corrected != gt).mean()),
        "first_verdict": report.summary()["reliability"]["verdict"],
        "second_flagged_fraction": float(np.mean(second.report.flagged)),
        "wall_time_s": first.wall_time_s + second.wall_time_s,
    }


def table(out_dir: Path) -> str:
    """Mean ± std over the seeds found in ``out_dir``."""
    records = [json.loads(p.read_text())["record"] for p in sorted(out_dir.glob("seed*.json"))]
    if not records:
        return "(no results)"
    keys = ("first_test_accuracy", "second_test_accuracy", "difference", "accepted", "accepted_right",
            "noise_rate_before", "noise_rate_after")
    return markdown_table(["seeds"] + list(keys),
                          [[len(records)] + [mean_std([r[k] for r in records], 3) for k in keys]])


def main(argv: list[str] | None = None) -> int:
    """Run the seeds (or only print ``--table``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rows", type=int, default=DEMO["rows"])
    p.add_argument("--test-rows", type=int, default=1000)
    p.add_argument("--data-seed", type=int, default=100)
    p.add_argument("--data", default=None, help="train.csv with label, gt, text (default NoisyAG beside the repo)")
    p.add_argument("--model", default=None)
    p.add_argument("--epochs", type=int, default=DEMO["epochs"])
    p.add_argument("--warmup", type=int, default=DEMO["warmup"])
    p.add_argument("--max-length", type=int, default=DEMO["max_length"])
    p.add_argument("--learning-rate", type=float, default=DEMO["learning_rate"])
    p.add_argument("--batch-size", type=int, default=DEMO["batch_size"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=None)
    p.add_argument("--table", action="store_true")
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else OUT_DIR
    if args.table:
        print(table(out_dir))
        return 0
    import torch

    quiet()
    torch.set_num_threads(args.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = load_rows(args.data, args.rows, args.data_seed)
    test = _test_rows(args.test_rows, args.data_seed)
    env = environment()
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        start = time.perf_counter()
        record = run_seed(frame, test, args, seed)
        (out_dir / f"seed{seed}.json").write_text(json.dumps(
            {"script": "review_round", "settings": vars(args), "data_file": frame.attrs.get("file"),
             "environment": env, "record": record, "elapsed_s": time.perf_counter() - start}, indent=1))
        print(f"seed {seed}: test accuracy {record['first_test_accuracy']:.3f} -> {record['second_test_accuracy']:.3f}"
              f" ({record['accepted']} accepted, {record['accepted_right']} of them right; noise "
              f"{record['noise_rate_before']:.3f} -> {record['noise_rate_after']:.3f})", flush=True)
    print(table(out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
