"""Noise detection (issue 7, Sec. 2): how well the noise report finds the wrong labels, against the alternatives.

Detectors, on the same training rows and backbone: the CleaR noise report (its ``label_quality``
and ``flagged``); (a) the small-loss criterion of one plain-PEFT run (last-epoch loss, GMM flags);
(b) cleanlab's ``find_label_issues`` on out-of-sample probabilities from k-fold cross-validation
of the same plain PEFT (cleanlab is AGPL-3.0 and optional: ``pip install cleanlab``; the row is
skipped with a message when it is missing). Each row reports precision / recall / F1 of its flags,
AUROC and average precision of its score, recall among the top k (k = the true number of wrong
labels) and its training cost. A second table compares the scoring rules the report could use,
computed from each run's per-epoch logits of the training rows (recorded by a callback; that
extra pass is timed and left out of the cost).

    python -m bench.detection --quick
    python -m bench.detection --noise sym40 --clear gmm_per_class=true
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.common import (NOISE_HELP, add_common_args, environment, fill_defaults, load_average, load_splits,
                          make_datasets, parse_overrides)
from bench.output import markdown_table, write_results
from bench.runs import EpochRecorder, run, run_configs
from bench.scoring import epoch_aurocs, grade, rebuild_tracker, rule_scores, small_loss
from clear_core import ClearConfig, TextClassificationData, TrainingConfig, train
from clear_core.data import encode_labels
from clear_core.noise import softmax

QUICK = {"epochs": 3, "train_rows": 240, "max_length": 32, "batch_size": 16, "learning_rate": 2e-3, "folds": 5}
FULL = {"epochs": 6, "train_rows": 0, "max_length": 64, "batch_size": 32, "learning_rate": 5e-4, "folds": 5}
QUICK_CLEAR = {"warmup_epochs": 1}
METRIC_KEYS = ("precision", "recall", "f1", "auroc", "average_precision", "recall_at_k")


def build_parser() -> argparse.ArgumentParser:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--method", default="lora", help="PEFT method of every detector (lora, adapter, prefix, bitfit)")
    p.add_argument("--noise", default="real", help=f"one noise kind: {NOISE_HELP}")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every training run")
    p.add_argument("--folds", type=int, default=None, help="cross-validation folds of the cleanlab row")
    p.add_argument("--no-cleanlab", action="store_true", help="skip the cleanlab row")
    return p


def _import_cleanlab():
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        return None
    return find_label_issues, get_label_quality_scores


def cross_val_probs(
    data: TextClassificationData, given: np.ndarray, *, folds: int, clear: ClearConfig, training: TrainingConfig,
    model_path: str | None, label_names: list[str],
) -> tuple[np.ndarray, float]:
    """Out-of-sample probabilities ``(N, K)`` from ``folds``-fold CV (stratified on given labels) and total seconds."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(given), len(label_names)))
    seconds = 0.0
    texts, labels = list(data.texts), list(data.labels)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=training.seed)
    for fit, held in splitter.split(np.zeros(len(given)), given):
        part = TextClassificationData([texts[i] for i in fit], [labels[i] for i in fit])
        result = train(part, clear=clear, training=training, model_path=model_path, label_names=label_names)
        start = time.perf_counter()
        probs[held] = softmax(result.model.predict_logits([texts[i] for i in held]).astype(np.float64))
        seconds += result.wall_time_s + time.perf_counter() - start
    return probs, seconds


def cleanlab_row(data, given, is_noisy, args, clear, training, label_names) -> dict[str, Any]:
    """The cleanlab detector: ``find_label_issues`` flags, self-confidence score, cost of the CV runs."""
    found = None if args.no_cleanlab else _import_cleanlab()
    if found is None:
        reason = "--no-cleanlab" if args.no_cleanlab else "cleanlab is not installed (pip install cleanlab; AGPL-3.0)"
        print(f"skipping the cleanlab row: {reason}", file=sys.stderr)
        return {"detector": f"cleanlab find_label_issues ({args.folds}-fold CV, plain {args.method})",
                "skipped": reason, "runs": args.folds}
    find_label_issues, quality = found
    probs, seconds = cross_val_probs(data, given, folds=args.folds, clear=clear, training=training,
                                     model_path=args.model, label_names=label_names)
    flagged = find_label_issues(given, probs, n_jobs=1)
    score = 1.0 - quality(given, probs)
    return {"detector": f"cleanlab find_label_issues ({args.folds}-fold CV, plain {args.method})",
            "runs": args.folds, "train_time_s": seconds, **grade(is_noisy, score, flagged)}


def detector_table(rows: list[dict[str, Any]]) -> str:
    """One line per detector: cost and detection quality."""
    body = []
    for r in rows:
        if "skipped" in r:
            body.append([r["detector"], r["runs"], None] + [None] * len(METRIC_KEYS) + [f"skipped: {r['skipped']}"])
        else:
            body.append([r["detector"], r["runs"], f"{r['train_time_s']:.0f}"] + [r[k] for k in METRIC_KEYS]
                        + [r["n_flagged"]])
    headers = ["detector", "training runs", "train s", "precision", "recall", "F1", "AUROC", "AP",
               "recall@k", "flagged"]
    return markdown_table(headers, body)


def rules_for(name: str, summary: dict, logits, given, is_noisy, clear: ClearConfig, seed: int) -> list[dict]:
    """Grade every scoring rule on one run's recorded logits (post-warm-up = epochs >= the routed run's W)."""
    tracker = rebuild_tracker(logits, given, warmup_epochs=clear.warmup_epochs, loss_ema=clear.loss_ema,
                              per_class=clear.gmm_per_class, seed=seed)
    scores = rule_scores(tracker, logits, given, summary["best"]["epoch"], per_class=clear.gmm_per_class, seed=seed)
    return [{"run": name, "rule": rule, **grade(is_noisy, s)} for rule, s in scores.items()]


def train_runs(data, heldout, given, args, configs: dict[str, ClearConfig], training: TrainingConfig, names):
    """Train the routed and the plain run, recording the training rows' logits every epoch.

    Returns ``(summaries, logits, report)``: per run its summary and ``[(N, K)] * E`` logits, and
    the routed run's :class:`NoiseReport`. The routed summary gets ``rebuild_max_abs_diff``, the
    largest gap between the trainer's p_clean history and the one rebuilt from the logits.
    """
    runs, logits, report = {}, {}, None
    for name, clear in configs.items():
        recorder = EpochRecorder(train_texts=list(data.texts))
        result, runs[name] = run(data, heldout, clear=clear, training=training, model_path=args.model,
                                 label_names=names, recorder=recorder)
        logits[name] = recorder.train_logits
        if name == "routed":
            report = result.report
            rebuilt = rebuild_tracker(logits[name], given, warmup_epochs=clear.warmup_epochs, loss_ema=clear.loss_ema,
                                      per_class=clear.gmm_per_class, seed=args.seed).p_clean_history
            n = min(len(rebuilt), len(report.p_clean_history))
            diff = np.abs(np.stack(rebuilt[-n:]) - report.p_clean_history[-n:]) if n else None
            runs[name]["rebuild_max_abs_diff"] = float(diff.max()) if n else None
        print(f"{name} run: {runs[name]['train_time_s']:.0f} s", flush=True)
    return runs, logits, report


def build_tables(detectors: list[dict], rules: list[dict], runs: dict[str, dict]) -> dict[str, str]:
    """The three markdown tables: detectors, scoring rules, per-epoch AUROC of the loss."""
    rule_rows = [[r["run"], r["rule"], r["auroc"], r["average_precision"], r["recall_at_k"], r["precision"],
                  r["recall"], r["f1"]] for r in rules]
    epoch_rows = [[a["epoch"], a["phase"], a["eval_accuracy"], a["loss_auroc"], b["eval_accuracy"], b["loss_auroc"]]
                  for a, b in zip(runs["routed"]["curves"], runs["plain"]["curves"])]
    return {
        "detectors": detector_table(detectors),
        "rules": markdown_table(["run", "rule (1 − label_quality)", "AUROC", "AP", "recall@k", "precision",
                                 "recall", "F1"], rule_rows),
        "epochs": markdown_table(["epoch", "routed phase", "routed held-out acc", "routed loss AUROC",
                                  "plain held-out acc", "plain loss AUROC"], epoch_rows),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the detectors, print the tables, write the JSON; return the payload."""
    args = build_parser().parse_args(argv)
    args.test_rows = args.test_rows if args.test_rows is not None else 0
    args = fill_defaults(args, QUICK, FULL)
    start, env = time.perf_counter(), environment()
    splits = load_splits(args.data, train_rows=args.train_rows, test_rows=args.test_rows,
                         heldout_frac=args.heldout_frac, data_seed=args.data_seed)
    data, heldout, info = make_datasets(splits, args.noise, seed=args.data_seed)
    given = encode_labels(data.labels, splits.label_names)
    is_noisy = given != encode_labels(data.gold_labels, splits.label_names)
    overrides = {**(QUICK_CLEAR if args.quick else {}), **parse_overrides(args.clear)}
    training = {"learning_rate": args.learning_rate, "batch_size": args.batch_size, "max_length": args.max_length,
                "seed": args.seed}
    routed_cfg, cfg = run_configs(args.method, "routed", overrides, epochs=args.epochs, training=training)
    plain_cfg, _ = run_configs(args.method, "plain", overrides, epochs=args.epochs, training=training)
    runs, logits, report = train_runs(data, heldout, given, args, {"routed": routed_cfg, "plain": plain_cfg}, cfg,
                                      splits.label_names)
    detectors = [
        {"detector": f"CleaR noise report (routed {args.method}, score={report.score})", "runs": 1,
         "train_time_s": runs["routed"]["train_time_s"],
         **grade(is_noisy, 1.0 - report.label_quality, report.flagged)},
        {"detector": f"small-loss (plain {args.method}, last-epoch loss, GMM flags)", "runs": 1,
         "train_time_s": runs["plain"]["train_time_s"],
         **grade(is_noisy, *small_loss(logits["plain"][-1], given, seed=args.seed))},
        cleanlab_row(data, given, is_noisy, args, plain_cfg, cfg, splits.label_names),
    ]
    rules = [r for name in ("routed", "plain") for r in
             rules_for(name, runs[name], logits[name], given, is_noisy, routed_cfg, args.seed)]
    for name in runs:
        for row, auroc in zip(runs[name]["curves"], epoch_aurocs(logits[name], given, is_noisy)):
            row["loss_auroc"] = auroc
    tables = build_tables(detectors, rules, runs)
    env["load_average_at_end"] = load_average()
    mode = "quick" if args.quick else "full"
    print(f"\n## Noise detection ({mode}; {args.noise} noise, {info['train_noise_rate']:.1%} of "
          f"{len(given)} training rows wrong; {args.method}, {args.epochs} epochs, seed {args.seed})\n")
    print("\n\n".join(tables.values()))
    payload = {"script": "detection", "mode": mode, "settings": vars(args), "data": {**splits.source, **info},
               "environment": env, "detectors": detectors, "rules": rules, "runs": runs, "tables": tables,
               "clear": routed_cfg.to_dict(), "training": cfg.to_dict(), "wall_time_s": time.perf_counter() - start}
    path = write_results(payload, script="detection", quick=args.quick, out=args.out)
    print(f"\nwrote {path} in {payload['wall_time_s']:.0f} s")
    return payload


if __name__ == "__main__":
    main()
