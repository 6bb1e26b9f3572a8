"""Command line: ``python -m clear_core train --train FILE --method lora ...``.

Reads CSV, JSONL or Parquet with pandas, trains with CleaR, prints a progress bar and the
per-epoch metrics, and writes ``OUTPUT/adapter/``, ``OUTPUT/noise_report.csv`` and
``OUTPUT/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .callbacks import TrainerCallback, TrainerControl, TrainerState
from .config import DEFAULT_DISTILL_WEIGHT, DEFAULT_ROUTING_CAP, FLAG_RULES, METHODS, ClearConfig, TrainingConfig
from .data import TextClassificationData


def read_table(path: str | Path):
    """Read a CSV / JSONL / Parquet file into a pandas DataFrame (all columns as read).

    Raises:
        ValueError: if the file does not exist or its extension is not .csv, .jsonl, .json or .parquet.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"file {str(path)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json", ".parquet"):
        raise ValueError(f"cannot read {str(path)!r}: use a .csv, .jsonl or .parquet file")
    try:
        if suffix == ".csv":
            return pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if suffix in (".jsonl", ".json"):
            return pd.read_json(p, lines=suffix == ".jsonl", dtype=False, encoding="utf-8")
        return pd.read_parquet(p)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc
    except (ValueError, OSError) as exc:  # pandas' ParserError and pyarrow's errors subclass these
        raise ValueError(f"cannot parse {str(path)!r} as {suffix[1:]}: {exc}") from exc


def load_data(path: str | Path, args: argparse.Namespace, *, limit: int | None) -> TextClassificationData:
    """Build :class:`TextClassificationData` from a file and the column options of ``args``.

    Raises:
        ValueError: if a named column is missing (lists the file's columns) or the rows are invalid.
    """
    frame = read_table(path)
    if limit is not None:
        frame = frame.head(limit)
    wanted = [args.text_column, args.label_column, args.text_pair_column, args.id_column, args.gold_column]
    missing = [c for c in wanted if c and c not in frame.columns]
    if missing:
        raise ValueError(f"{str(path)!r} has no column(s) {missing}; its columns are {list(frame.columns)}")

    def col(name: str | None) -> list[Any] | None:
        return frame[name].tolist() if name else None

    return TextClassificationData(
        texts=col(args.text_column),
        labels=col(args.label_column),
        text_pairs=col(args.text_pair_column),
        ids=col(args.id_column),
        gold_labels=col(args.gold_column),
    )


class ProgressPrinter(TrainerCallback):
    """A tqdm progress bar over optimizer steps plus one printed line of metrics per epoch."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, state: TrainerState, control: TrainerControl) -> None:
        """Open the bar at the current step (resumed runs start mid-way)."""
        from tqdm import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", file=sys.stderr)

    def on_step_end(self, state: TrainerState, control: TrainerControl) -> None:
        """Advance the bar and show epoch, phase and loss."""
        self.bar.set_postfix(epoch=f"{state.epoch + 1}/{state.num_epochs}", phase=state.phase, loss=f"{state.loss:.3f}")
        self.bar.update(1)

    def on_evaluate(self, state, control, metrics, model=None) -> None:
        """Print the epoch's metrics."""
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
        self.bar.write(json.dumps(shown))

    def on_warning(self, state: TrainerState, control: TrainerControl, warning: dict[str, Any]) -> None:
        """Print that the model does not seem to learn, with what to try."""
        from tqdm import tqdm

        tqdm.write(f"WARNING: {warning['message']}", file=sys.stderr)

    def on_train_end(self, state: TrainerState, control: TrainerControl) -> None:
        """Close the bar."""
        self.bar.close()


def build_parser() -> argparse.ArgumentParser:
    """The ``clear_core`` argument parser (one sub-command: ``train``)."""
    parser = argparse.ArgumentParser(prog="python -m clear_core", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fine-tune with CleaR and write the adapter and the noise report",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--train", required=True, help="training file (.csv, .jsonl, .parquet)")
    t.add_argument("--eval", help="held-out file with true labels, scored every epoch")
    t.add_argument("--output", default="clear-output", help="output folder")
    t.add_argument("--model", default="default", help="local HF model folder; 'default' = all-MiniLM-L6-v2")
    t.add_argument("--text-column", default="text")
    t.add_argument("--text-pair-column")
    t.add_argument("--label-column", default="label")
    t.add_argument("--id-column")
    t.add_argument("--gold-column", help="true labels, used only to score the noise report")
    t.add_argument("--limit", type=int, help="use only the first N training rows")
    t.add_argument("--eval-limit", type=int, help="use only the first N held-out rows")
    t.add_argument("--method", default="lora", choices=METHODS)
    t.add_argument("--plain", action="store_true", help="plain PEFT: no CleaR routing")
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--lr", type=float, help="AdamW learning rate (default: the method's, see DEFAULT_LEARNING_RATES)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--keep", default="last", choices=("last", "best"))
    t.add_argument("--warmup-epochs", type=int, help="epochs before routing starts (default: min(3, epochs - 1))")
    t.add_argument("--routing-cap", type=float, default=DEFAULT_ROUTING_CAP)
    t.add_argument("--distill-weight", type=float, default=DEFAULT_DISTILL_WEIGHT)
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--loss-ema", type=float, default=0.0)
    t.add_argument("--global-gmm", action="store_true", help="one GMM for all classes instead of one per class")
    t.add_argument("--validation-fraction", type=float, default=0.1,
                   help="rows held out of training (stratified) and scored out-of-sample; the report's verdict")
    t.add_argument("--flag-rule", default="prune_by_noise_rate", choices=FLAG_RULES,
                   help="confident-learning rule of the flags (cleanlab filter_by)")
    t.add_argument("--flag-when-unreliable", action="store_true",
                   help="keep the flags even when the report's verdict is 'not reliable'")
    t.add_argument("--lora-r", type=int, default=8)
    t.add_argument("--device")
    return parser


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """Train as ``args`` say and write the outputs; returns the final metrics."""
    from .trainer import train

    clear = ClearConfig(
        method=args.method, routed=not args.plain, routing_cap=args.routing_cap, warmup_epochs=args.warmup_epochs,
        distill_weight=args.distill_weight, temperature=args.temperature, loss_ema=args.loss_ema,
        gmm_per_class=not args.global_gmm, lora_r=args.lora_r, flag_rule=args.flag_rule,
        flag_when_unreliable=args.flag_when_unreliable,
    )
    training = TrainingConfig(
        epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size, max_length=args.max_length,
        seed=args.seed, keep=args.keep, device=args.device, validation_fraction=args.validation_fraction,
    )
    data = load_data(args.train, args, limit=args.limit)
    eval_data = None
    if args.eval:
        eval_args = argparse.Namespace(**{**vars(args), "id_column": None, "gold_column": None})
        eval_data = load_data(args.eval, eval_args, limit=args.eval_limit)
    result = train(data, clear=clear, training=training, model_path=args.model, eval_data=eval_data,
                   callbacks=[ProgressPrinter()])
    out = Path(args.output)
    result.save(out / "adapter", training=training.to_dict())
    result.report.write_csv(out / "noise_report.csv")
    summary = {"metrics": result.metrics, "report": result.report.summary(), "wall_time_s": result.wall_time_s}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 on invalid input, with the message on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        summary = run_train(args)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=float))
    print(f"adapter and noise report written to {args.output}/", file=sys.stderr)
    return 0
