"""Defaults study: one CleaR configuration on NoisyAG-News, judged on held-out *training* rows.

Protocol (the one behind the defaults in clear_core/config.py and docs/method.md): the
training file's rows are permuted with seed 123; the first ``--n`` rows are trained on with
their given (noisy) labels; rows 5000..5000+``--nval`` of that permutation, scored against
their true labels (``gt``), are the held-out set. The test file is never read. One JSON line
per run is appended to ``bench/results/study_defaults.jsonl`` and one per epoch to
``bench/results/study_progress.jsonl``.

    python -m bench.study --tag plain routed=false
    python -m bench.study --tag routed_full inference=full
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import resolve_data

RESULTS = Path(__file__).resolve().parent / "results"


def _value(text: str):
    if text in ("true", "false"):
        return text == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> dict:
    """Run one configuration (ClearConfig overrides as KEY=VALUE) and append its result line."""
    import torch

    from clear_core import ClearConfig, TextClassificationData, TrainerCallback, TrainingConfig, train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="ClearConfig KEY=VALUE overrides")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--data", help="folder with train.csv (default ../shared/data/noisyag_news)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--nval", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {k: _value(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    frame = pd.read_csv(resolve_data(args.data)[0])
    perm = np.random.default_rng(123).permutation(len(frame))
    tr, va = frame.iloc[perm[: args.n]], frame.iloc[perm[5000 : 5000 + args.nval]]
    data = TextClassificationData(tr["text"].tolist(), tr["label"].astype(str).tolist(),
                                  gold_labels=tr["gt"].astype(str).tolist())
    held = TextClassificationData(va["text"].tolist(), va["gt"].astype(str).tolist())
    RESULTS.mkdir(exist_ok=True)

    class Progress(TrainerCallback):
        def on_evaluate(self, state, control, metrics, model=None):
            with (RESULTS / "study_progress.jsonl").open("a") as fh:
                fh.write(json.dumps({"tag": args.tag, **metrics}, default=float) + "\n")

    start = time.time()
    result = train(data, clear=ClearConfig(**overrides), eval_data=held, label_names=["0", "1", "2", "3"],
                   training=TrainingConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=32, max_length=64,
                                           seed=args.seed), callbacks=[Progress()])
    hist = [(h["epoch"], round(h["eval_accuracy"], 3), round(h.get("last_pass_p_clean_auroc", float("nan")), 3))
            for h in result.history]
    line = {"tag": args.tag, "cfg": overrides, "n": args.n, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
            "hist": hist, "best": max(h[1] for h in hist), "last": hist[-1][1],
            "noise_auroc": round(result.metrics["noise_auroc"], 3), "noise_f1": round(result.metrics["noise_f1"], 3),
            "time": round(time.time() - start)}
    with (RESULTS / "study_defaults.jsonl").open("a") as fh:
        fh.write(json.dumps(line) + "\n")
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
