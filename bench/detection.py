"""Noise detection (issue 12): does the noise report tell the truth? Flags, scores, the noise estimate, the verdict.

Each case trains the CleaR service defaults (routed LoRA, ``validation_fraction`` 0.1, confident
learning on the passes' mean softmax) on the same rows, with labels that are:

* ``gt`` — the clean control (NoisyAG's true labels: nothing should be flagged);
* ``real`` — NoisyAG's crowd labels (19.75 % wrong over the whole file);
* ``sym20``, ``sym40``, ``asym40`` — synthetic noise injected into ``gt`` (``clear_core.synthetic``);
* ``shuffled`` — the crowd labels permuted at random (no model can learn them: the verdict must
  be "not reliable", with no flags and a warning).

Every row of the report is graded against ``gt`` (held-out rows included). ``--cleanlab`` adds
cleanlab's own recipe on the same rows and backbone: K-fold cross-validated plain LoRA, then
``find_label_issues`` and self-confidence, with its total training time. A scoring-rule table
compares the ``label_quality`` rules on the training rows of each run (never the test file).

One JSON per (case, seed) is written under ``bench/results/detection/`` as soon as that run ends;
``--table`` aggregates whatever is there into mean ± std tables.

    python -m bench.detection --quick                       # a smoke run on a few hundred rows
    python -m bench.detection --cases gt,real --seeds 0,1,2 --threads 1
    python -m bench.detection --cases real --seeds 0 --cleanlab-only --threads 1
    python -m bench.detection --table
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from bench.common import DEFAULT_DATA, FALLBACK_TRAIN, environment, quiet
from bench.output import RESULTS_DIR, markdown_table, mean_std
from clear_core import ClearConfig, TextClassificationData, TrainingConfig, train
from clear_core.metrics import detection_metrics
from clear_core.noise import softmax

OUT_DIR = RESULTS_DIR / "detection"
# the demo's budget (scripts/demo): 2 epochs, 1 warm-up, max_length 48, learning rate 2e-3
DEMO = {"epochs": 2, "warmup": 1, "max_length": 48, "learning_rate": 2e-3, "rows": 2000, "batch_size": 32}
QUICK = {"epochs": 3, "warmup": 1, "max_length": 32, "learning_rate": 2e-3, "rows": 240, "batch_size": 16}
CASES = ("gt", "real", "sym20", "sym40", "asym40", "shuffled")


def build_parser() -> argparse.ArgumentParser:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help=f"train.csv with label, gt, text (default {DEFAULT_DATA}/train.csv, "
                   f"else {FALLBACK_TRAIN.name})")
    p.add_argument("--model", default=None, help="local model folder (default all-MiniLM-L6-v2)")
    p.add_argument("--cases", default="gt,real,sym20,sym40,asym40,shuffled", help=f"comma list of {CASES}")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (the synthetic noise uses the same seed)")
    p.add_argument("--rows", type=int, default=None, help="rows drawn from the file (default 2000)")
    p.add_argument("--data-seed", type=int, default=100, help="seed of the row draw (fixed across seeds and cases)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None, help="warm-up epochs")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the cleanlab row")
    p.add_argument("--cleanlab", action="store_true", help="also run cleanlab's K-fold CV recipe per (case, seed)")
    p.add_argument("--cleanlab-only", action="store_true", help="run only the cleanlab recipe")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="a few hundred rows, for checking the script")
    p.add_argument("--out-dir", default=None, help=f"folder of the per-run JSON (default {OUT_DIR})")
    p.add_argument("--table", action="store_true", help="only aggregate the JSON files into tables")
    return p


def load_rows(path: str | None, rows: int, data_seed: int) -> pd.DataFrame:
    """``rows`` rows drawn at random (seeded) from the training file; columns label, gt, text."""
    file = Path(path) if path else (DEFAULT_DATA / "train.csv")
    if not file.exists():
        file = FALLBACK_TRAIN
    frame = pd.read_csv(file, dtype={"label": str, "gt": str})
    take = np.random.default_rng(data_seed).permutation(len(frame))[: min(rows, len(frame))]
    out = frame.iloc[np.sort(take)].reset_index(drop=True)
    out.attrs["file"] = str(file)
    return out


def labels_for(frame: pd.DataFrame, case: str, seed: int) -> np.ndarray:
    """Given labels ``(N,)`` (str) of ``case``; synthetic noise and the shuffle are seeded by ``seed``.

    Raises:
        ValueError: on an unknown case.
    """
    from clear_core.synthetic import asymmetric_noise, symmetric_noise

    gt = frame["gt"].astype(int).to_numpy()
    k = int(gt.max()) + 1
    if case == "gt":
        return gt.astype(str)
    if case == "real":
        return frame["label"].astype(str).to_numpy()
    if case == "shuffled":
        return np.random.default_rng(seed).permutation(frame["label"].astype(str).to_numpy())
    for prefix, fn in (("asym", asymmetric_noise), ("sym", symmetric_noise)):
        if case.startswith(prefix) and case[len(prefix):].isdigit():
            return fn(gt, num_classes=k, rate=int(case[len(prefix):]) / 100.0, seed=seed)[0].astype(str)
    raise ValueError(f"unknown case {case!r}: choose from {CASES}")


def _auroc(is_noisy: np.ndarray, score: np.ndarray) -> float:
    if is_noisy.all() or not is_noisy.any():
        return math.nan
    return detection_metrics(is_noisy, np.zeros_like(is_noisy), score)["auroc"]


def rule_aurocs(result, gt_train: np.ndarray) -> dict[str, float]:
    """AUROC for the truly wrong *training* rows of each candidate ``label_quality`` rule (lower = wronger)."""
    from cleanlab.rank import get_label_quality_scores

    est = result.dynamics
    given = est.given
    noisy = given != gt_train
    mean = est.mean_probs
    last = softmax(est.teacher.astype(np.float64))
    rules = {
        "self_confidence (mean of passes)": get_label_quality_scores(given, mean, method="self_confidence"),
        "normalized_margin (mean of passes)": get_label_quality_scores(given, mean, method="normalized_margin"),
        "confidence_weighted_entropy (mean)": get_label_quality_scores(given, mean,
                                                                       method="confidence_weighted_entropy"),
        "self_confidence (last pass)": last[np.arange(len(given)), given],
        "p_clean (mean of passes)": est.score("p_clean_mean"),
        "p_clean (last pass)": est.score("p_clean_last"),
        "exp(-mean loss)": est.score("loss_mean"),
    }
    return {name: _auroc(noisy, -np.asarray(score, dtype=np.float64)) for name, score in rules.items()}


def clear_run(frame: pd.DataFrame, labels: np.ndarray, args, seed: int) -> dict[str, Any]:
    """One run of the service defaults; its report graded against gt."""
    data = TextClassificationData(frame["text"].tolist(), labels.tolist(), gold_labels=frame["gt"].tolist())
    result = train(data, clear=ClearConfig(warmup_epochs=args.warmup),
                   training=TrainingConfig(epochs=args.epochs, max_length=args.max_length, seed=seed,
                                           learning_rate=args.learning_rate, batch_size=args.batch_size),
                   model_path=args.model)
    report, summary = result.report, result.report.summary()
    gt = np.array([str(x) for x in frame["gt"]])
    given = np.array(report.label_names)[report.given]
    suggested = np.array(report.label_names)[report.suggested]
    noisy = given != gt
    det = detection_metrics(noisy, report.flagged, 1.0 - report.label_quality)
    train_rows = np.array([s == "train" for s in report.split])
    gt_idx = np.array([report.label_names.index(g) for g in gt])
    flagged = report.flagged
    return {
        "wall_time_s": result.wall_time_s, "rows": len(report), "true_noise_rate": float(noisy.mean()),
        "flagged_fraction": float(flagged.mean()), "estimated_noise_rate": summary["estimated_noise_rate"],
        "candidates_fraction": float(report.estimate.check.candidates.mean()),
        "suggested_equals_gt": float((suggested[flagged] == gt[flagged]).mean()) if flagged.any() else None,
        "verdict": summary["reliability"]["verdict"], "reliability": summary["reliability"],
        "warnings": [w["stage"] for w in result.warnings],
        **{k: det[k] for k in ("precision", "recall", "f1", "auroc", "average_precision")},
        "rules_auroc_train_rows": rule_aurocs(result, gt_idx[train_rows]),
        "noise_matrix": summary["noise_matrix"], "estimated_noise_rate_per_class":
            summary["estimated_noise_rate_per_class"], "p_clean_fits": summary["p_clean_fits"],
        "final_metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, bool))},
    }


def cleanlab_run(frame: pd.DataFrame, labels: np.ndarray, args, seed: int) -> dict[str, Any]:
    """cleanlab's recipe: ``folds``-fold CV of plain LoRA (same budget), ``find_label_issues``, self-confidence."""
    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    names = sorted(set(labels.tolist()), key=int)
    given = np.array([names.index(y) for y in labels])
    texts = frame["text"].tolist()
    probs, seconds = np.zeros((len(given), len(names))), 0.0
    clear = ClearConfig(routed=False)
    training = TrainingConfig(epochs=args.epochs, max_length=args.max_length, seed=seed,
                              learning_rate=args.learning_rate, batch_size=args.batch_size, validation_fraction=0.0)
    for fit, held in StratifiedKFold(args.folds, shuffle=True, random_state=seed).split(given, given):
        part = TextClassificationData([texts[i] for i in fit], [labels[i] for i in fit])
        result = train(part, clear=clear, training=training, model_path=args.model, label_names=names)
        start = time.perf_counter()
        probs[held] = softmax(result.model.predict_logits([texts[i] for i in held]).astype(np.float64))
        seconds += result.wall_time_s + time.perf_counter() - start
    flagged = find_label_issues(given, probs, n_jobs=1)
    quality = get_label_quality_scores(given, probs, method="self_confidence")
    gt = np.array([names.index(str(y)) for y in frame["gt"]])
    det = detection_metrics(given != gt, flagged, 1.0 - quality)
    return {"wall_time_s": seconds, "rows": len(given), "true_noise_rate": float((given != gt).mean()),
            "flagged_fraction": float(flagged.mean()), "estimated_noise_rate": float(1 - np.trace(estimate_joint(given, probs))),
            **{k: det[k] for k in ("precision", "recall", "f1", "auroc", "average_precision")}}


def settings(args) -> argparse.Namespace:
    """Fill budget defaults (demo's, or quick's)."""
    for key, value in (QUICK if args.quick else DEMO).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def run_all(args) -> list[Path]:
    """Train every (case, seed), writing one JSON each as it ends; returns the paths."""
    import torch

    quiet()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir) if args.out_dir else OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = load_rows(args.data, args.rows, args.data_seed)
    budget = {k: getattr(args, k) for k in DEMO}
    paths = []
    for case in args.cases.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            labels = labels_for(frame, case, seed)
            kinds = (["cleanlab"] if args.cleanlab_only else ["clear"] + (["cleanlab"] if args.cleanlab else []))
            for kind in kinds:
                start = time.perf_counter()
                row = (clear_run if kind == "clear" else cleanlab_run)(frame, labels, args, seed)
                row.update(case=case, seed=seed, detector=kind, budget=budget, file=frame.attrs["file"],
                           quick=args.quick, data_seed=args.data_seed, environment=environment(),
                           elapsed_s=time.perf_counter() - start)
                path = out_dir / f"{'quick_' if args.quick else ''}{case}_{kind}_seed{seed}.json"
                path.write_text(json.dumps(row, indent=1, default=float))
                paths.append(path)
                print(f"{case} seed {seed} {kind}: flagged {row['flagged_fraction']:.3f}, estimated "
                      f"{row['estimated_noise_rate']:.3f} (true {row['true_noise_rate']:.3f}), AUROC {row['auroc']:.3f}, "
                      f"F1 {row['f1']:.3f}, {row['wall_time_s']:.0f} s -> {path}", flush=True)
    return paths


def tables(out_dir: Path, *, quick: bool = False) -> dict[str, str]:
    """Mean ± std over seeds of every (case, detector) found in ``out_dir``; and the rules table."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(out_dir.glob("*.json")):
        if path.name.startswith("quick_") != quick:
            continue
        r = json.loads(path.read_text())
        rows.setdefault((r["case"], r["detector"]), []).append(r)
    order = {c: i for i, c in enumerate(CASES)}
    body, rule_body = [], []
    for (case, detector), runs in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        get = lambda key: [r.get(key) for r in runs]  # noqa: E731
        verdicts = sorted({r.get("verdict", "—") for r in runs})
        body.append([case, detector, len(runs), mean_std(get("true_noise_rate")), mean_std(get("flagged_fraction")),
                     mean_std(get("estimated_noise_rate")), mean_std(get("auroc")), mean_std(get("precision")),
                     mean_std(get("recall")), mean_std(get("f1")), mean_std(get("suggested_equals_gt")),
                     "/".join(verdicts), mean_std(get("wall_time_s"), 0)])
        if detector == "clear" and runs[0].get("rules_auroc_train_rows"):
            for rule in runs[0]["rules_auroc_train_rows"]:
                rule_body.append([case, rule, mean_std([r["rules_auroc_train_rows"][rule] for r in runs])])
    headers = ["labels", "detector", "seeds", "true noise", "flagged", "estimated noise", "AUROC", "precision",
               "recall", "F1", "flagged: suggested = gt", "verdict", "train s"]
    return {"detection": markdown_table(headers, body),
            "rules": markdown_table(["labels", "label_quality rule", "AUROC (training rows)"], rule_body)}


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Run (unless ``--table``), then print the aggregated tables and return them."""
    args = settings(build_parser().parse_args(argv))
    if not args.table:
        run_all(args)
    out = tables(Path(args.out_dir) if args.out_dir else OUT_DIR, quick=args.quick)
    print("\n\n".join(out.values()))
    return out


if __name__ == "__main__":
    main()
