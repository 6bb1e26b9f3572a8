"""Robustness to label noise (issue 7, Sec. 1): plain PEFT vs CleaR-routed PEFT vs full fine-tuning vs the ceiling.

For each PEFT method: plain PEFT and CleaR-routed PEFT on the noisy labels, full fine-tuning on
the noisy labels, and the ceiling (the same plain PEFT on the true labels ``gt``), for each noise
kind (real human noise, synthetic symmetric / asymmetric noise injected into ``gt``), seed and
budget (epochs). Every arm has the same epochs, learning rate, batch and max length. Test
accuracy and macro-F1 are reported at the last epoch and at the best epoch by held-out
accuracy (a split of the training rows with their given labels; the test set never selects).

    python -m bench.robustness --quick
    python -m bench.robustness --methods lora,adapter --noise real --epochs 15 --variant gmm_per_class=true
    python -m bench.robustness --quick --variant relabel=hard --variant relabel=soft,relabel_threshold=0.8
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

from bench.common import (NOISE_HELP, add_common_args, csv_list, environment, fill_defaults, load_average,
                          load_splits, make_datasets, parse_overrides, variant_name)
from bench.output import markdown_table, mean_std, write_results
from bench.runs import EpochRecorder, run, run_configs

# quick: about 40 optimizer steps per run on 216 rows, enough for LoRA to leave chance level
QUICK = {"methods": "lora", "noise": "real", "seeds": "0", "epochs": "3", "train_rows": 240, "test_rows": 200,
         "max_length": 32, "batch_size": 16, "learning_rate": 2e-3}
FULL = {"methods": "lora,adapter,prefix,bitfit", "noise": "real,sym40,asym40", "seeds": "0,1,2", "epochs": "6,15",
        "train_rows": 0, "test_rows": 0, "max_length": 64, "batch_size": 32, "learning_rate": 5e-4}
QUICK_CLEAR = {"warmup_epochs": 1}
MIN_GAP = 0.01  # a plain-to-ceiling gap below 1 accuracy point is too small to report a share of


def build_parser() -> argparse.ArgumentParser:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--methods", help="PEFT methods, comma-separated (lora,adapter,prefix,bitfit)")
    p.add_argument("--noise", help=f"noise kinds, comma-separated: {NOISE_HELP}")
    p.add_argument("--seeds", help="training seeds, comma-separated (>= 3 in full mode)")
    p.add_argument("--epochs", help="budgets in epochs, comma-separated (short,long)")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="an extra routed arm with these ClearConfig overrides on top of --clear (repeatable)")
    p.add_argument("--no-full", action="store_true", help="skip full fine-tuning")
    p.add_argument("--no-ceiling", action="store_true", help="skip the ground-truth ceiling")
    p.add_argument("--no-plain", action="store_true", help="skip plain PEFT (e.g. to run the arms in parallel)")
    p.add_argument("--no-default-variant", action="store_true", help="run only the --variant routed arms")
    p.add_argument("--full-learning-rate", type=float, default=None,
                   help="learning rate of full fine-tuning (default: the same as every other arm)")
    return p


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs of the grid, each ``{epochs, seed, noise, method, arm, variant, overrides}``."""
    base = parse_overrides(args.clear)
    if args.quick:
        base = {**QUICK_CLEAR, **base}
    variants = [] if args.no_default_variant else [{}]
    variants += [parse_overrides(csv_list(v)) for v in args.variant]
    specs = []
    for epochs in csv_list(args.epochs, int):
        for seed in csv_list(args.seeds, int):
            common = {"epochs": epochs, "seed": seed}
            for method in ([] if args.no_ceiling else csv_list(args.methods)):
                specs.append({**common, "noise": "gt", "method": method, "arm": "ceiling", "variant": "-",
                              "overrides": base})
            for noise in csv_list(args.noise):
                for method in csv_list(args.methods):
                    if not args.no_plain:
                        specs.append({**common, "noise": noise, "method": method, "arm": "plain", "variant": "-",
                                      "overrides": base})
                    for v in variants:
                        specs.append({**common, "noise": noise, "method": method, "arm": "routed",
                                      "variant": variant_name(v), "overrides": {**base, **v}})
                if not args.no_full:
                    specs.append({**common, "noise": noise, "method": "full", "arm": "full", "variant": "-",
                                  "overrides": base})
    return specs


def run_spec(spec: dict[str, Any], splits, args: argparse.Namespace) -> dict[str, Any]:
    """Train one run of the grid and return its record (curves, last, best, report, times)."""
    train_data, heldout, info = make_datasets(splits, spec["noise"], seed=args.data_seed)
    lr = args.full_learning_rate if spec["arm"] == "full" and args.full_learning_rate else args.learning_rate
    training = {"learning_rate": lr, "batch_size": args.batch_size, "max_length": args.max_length,
                "seed": spec["seed"]}
    clear, cfg = run_configs(spec["method"], spec["arm"], spec["overrides"], epochs=spec["epochs"],
                             training=training)
    recorder = EpochRecorder(splits.test["text"].tolist(), splits.test["gt"].astype(int).to_numpy())
    _, summary = run(train_data, heldout, clear=clear, training=cfg, model_path=args.model,
                     label_names=splits.label_names, recorder=recorder)
    record = {k: v for k, v in spec.items() if k != "overrides"}
    record.update(info, clear=clear.to_dict(), training=cfg.to_dict(), **summary)
    return record


def _group(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["noise"], r["epochs"], r["method"], r["arm"], r["variant"]), []).append(r)
    return groups


def results_table(records: list[dict[str, Any]]) -> str:
    """Mean ± std over seeds of test accuracy / macro-F1 (last, best epoch) per arm."""
    rows = []
    for (noise, epochs, method, arm, variant), rs in _group(records).items():
        rows.append([noise, epochs, method, arm, variant, len(rs),
                     mean_std([r["last"].get("test_accuracy") for r in rs]),
                     mean_std([r["best"].get("test_accuracy") for r in rs]),
                     mean_std([r["last"].get("test_macro_f1") for r in rs]),
                     mean_std([r["best"].get("test_macro_f1") for r in rs]),
                     mean_std([r["best"]["epoch"] for r in rs], 1),
                     mean_std([r["report"].get("auroc") for r in rs]),
                     f"{np.mean([r['train_time_s'] for r in rs]):.0f}"])
    headers = ["noise", "epochs", "method", "arm", "variant", "seeds", "test acc (last)", "test acc (best)",
               "macro-F1 (last)", "macro-F1 (best)", "best epoch", "report AUROC", "train s"]
    return markdown_table(headers, rows)


def _mean(rs: list[dict[str, Any]], which: str) -> float | None:
    vals = [r[which].get("test_accuracy") for r in rs]
    return float(np.mean(vals)) if vals else None


def delta_table(records: list[dict[str, Any]]) -> str:
    """Routed minus plain test accuracy (last, best) and the share of the plain→ceiling gap closed (last)."""
    groups = _group(records)
    rows = []
    for (noise, epochs, method, arm, variant), rs in groups.items():
        plain = groups.get((noise, epochs, method, "plain", "-"))
        if arm != "routed" or not plain:
            continue
        ceiling = groups.get(("gt", epochs, method, "ceiling", "-"))
        d_last = _mean(rs, "last") - _mean(plain, "last")
        d_best = _mean(rs, "best") - _mean(plain, "best")
        closed = None
        if ceiling:
            gap = _mean(ceiling, "last") - _mean(plain, "last")
            closed = f"{d_last / gap:.0%}" if gap >= MIN_GAP else "— (gap < 1 pt)"
        rows.append([noise, epochs, method, variant, f"{100 * d_last:+.1f}", f"{100 * d_best:+.1f}", closed])
    headers = ["noise", "epochs", "method", "variant", "routed − plain, last (pts)", "routed − plain, best (pts)",
               "gap to ceiling closed (last)"]
    return markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the grid, print the tables, write the JSON; return the payload."""
    args = fill_defaults(build_parser().parse_args(argv), QUICK, FULL)
    start = time.perf_counter()
    env = environment()
    splits = load_splits(args.data, train_rows=args.train_rows, test_rows=args.test_rows,
                         heldout_frac=args.heldout_frac, data_seed=args.data_seed)
    specs = plan(args)
    records: list[dict[str, Any]] = []
    mode = "quick" if args.quick else "full"
    settings = {k: v for k, v in vars(args).items()}

    def payload() -> dict[str, Any]:
        tables = {"results": results_table(records), "deltas": delta_table(records)} if records else {}
        return {"script": "robustness", "mode": mode, "settings": settings, "data": splits.source,
                "environment": {**env, "load_average_at_end": load_average()}, "runs": records,
                "runs_planned": len(specs), "tables": tables, "wall_time_s": time.perf_counter() - start}

    for i, spec in enumerate(specs, 1):
        record = run_spec(spec, splits, args)
        records.append(record)
        relabelled = record["last"].get("relabelled_rows")
        precision = record["last"].get("relabel_precision")
        relabel = "" if relabelled is None else (f"; relabelled {relabelled} rows in the last epoch"
                                                 + ("" if precision is None else f", precision {precision:.2f}"))
        print(f"[{i}/{len(specs)}] {spec['noise']} {spec['method']} {spec['arm']} {spec['variant']} "
              f"E={spec['epochs']} seed={spec['seed']}: test acc last {record['last'].get('test_accuracy'):.3f} "
              f"best {record['best'].get('test_accuracy'):.3f} ({record['train_time_s']:.0f} s){relabel}", flush=True)
        if i < len(specs):  # a long grid cut short keeps the runs it finished
            write_results(payload(), script="robustness", quick=args.quick, out=args.out)
    result = payload()
    print(f"\n## Robustness ({mode}; model {args.model or 'all-MiniLM-L6-v2'}; {splits.source['train_rows']} "
          f"train / {splits.source['heldout_rows']} held-out / {splits.source['test_rows']} test rows)\n")
    print(result["tables"]["results"] + "\n\n" + result["tables"]["deltas"])
    path = write_results(result, script="robustness", quick=args.quick, out=args.out)
    print(f"\nwrote {path} in {result['wall_time_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
