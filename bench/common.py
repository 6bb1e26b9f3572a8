"""Shared plumbing of the benchmarks: data splits, label-noise variants, the machine record and common flags.

Symbols: N training rows, M held-out rows (a seeded, stratified split of the training file:
model selection only, never the test set), T test rows, K classes. Labels are class indices
as strings ("0".."K-1"); ``label`` is the given (possibly wrong) label, ``gt`` the true one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "noisyag_news"
FALLBACK_TRAIN = REPO_ROOT / "examples" / "noisyag_train_2000.csv"
FALLBACK_TEST = REPO_ROOT / "examples" / "noisyag_test_1000.csv"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
NOISE_HELP = "real (the file's label), gt (true labels), symNN / asymNN (NN %% synthetic noise injected into gt)"


@dataclass
class Splits:
    """The rows of one benchmark.

    Attributes:
        pool: N + M training-file rows (``label``, ``gt``, ``text``, ``split`` in {train, heldout}).
        test: T test rows (``gt`` is the label scored).
        label_names: K class names in logit order.
        source: where the rows came from and how they were drawn.
    """

    pool: pd.DataFrame
    test: pd.DataFrame
    label_names: list[str]
    source: dict[str, Any]


def resolve_data(data: str | None) -> tuple[Path, Path]:
    """``(train.csv, test.csv)`` of ``data`` (a folder), else NoisyAG-News beside the repo, else examples/.

    Raises:
        ValueError: if ``data`` is given but lacks train.csv or test.csv.
    """
    if data is not None:
        folder = Path(data)
        train, test = folder / "train.csv", folder / "test.csv"
        if not (train.is_file() and test.is_file()):
            raise ValueError(f"--data {data!r} must be a folder with train.csv and test.csv")
        return train, test
    if (DEFAULT_DATA / "train.csv").is_file() and (DEFAULT_DATA / "test.csv").is_file():
        return DEFAULT_DATA / "train.csv", DEFAULT_DATA / "test.csv"
    return FALLBACK_TRAIN, FALLBACK_TEST


def _read(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    missing = {"label", "gt", "text"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks column(s) {sorted(missing)}: it needs label, gt and text")
    frame = frame.dropna(subset=["label", "gt", "text"]).reset_index(drop=True)
    frame["label"] = frame["label"].astype(int).astype(str)
    frame["gt"] = frame["gt"].astype(int).astype(str)
    return frame


def _stratified_take(frame: pd.DataFrame, rows: int, column: str, seed: int) -> pd.DataFrame:
    if not rows or rows >= len(frame):
        return frame.reset_index(drop=True)
    from sklearn.model_selection import train_test_split

    taken, _ = train_test_split(frame, train_size=rows, stratify=frame[column], random_state=seed)
    return taken.reset_index(drop=True)


def load_splits(
    data: str | None, *, train_rows: int, test_rows: int, heldout_frac: float, data_seed: int
) -> Splits:
    """Draw the pool and test rows, and the held-out split, all seeded by ``data_seed``.

    ``train_rows`` rows (0 = all) are drawn from the training file stratified by ``label``,
    then ``heldout_frac`` of them become the held-out split (stratified by the given label,
    as a user without clean labels would split). ``test_rows`` (0 = all) are drawn stratified by ``gt``.
    """
    from sklearn.model_selection import train_test_split

    train_path, test_path = resolve_data(data)
    pool = _stratified_take(_read(train_path), train_rows, "label", data_seed)
    test = _stratified_take(_read(test_path), test_rows, "gt", data_seed)
    fit, held = train_test_split(np.arange(len(pool)), test_size=heldout_frac, stratify=pool["label"],
                                 random_state=data_seed)
    pool["split"] = "train"
    pool.loc[held, "split"] = "heldout"
    values = set(pool["label"]) | set(pool["gt"]) | set(test["gt"])
    names = sorted(values, key=int)
    if names != [str(k) for k in range(len(names))]:
        raise ValueError(f"labels must be the class indices 0..K-1, found {names}")
    source = {"train_file": str(train_path), "test_file": str(test_path), "train_rows": int(len(fit)),
              "heldout_rows": int(len(held)), "test_rows": int(len(test)), "data_seed": data_seed,
              "real_noise_rate": float((pool["label"] != pool["gt"]).mean())}
    return Splits(pool, test, names, source)


def given_labels(splits: Splits, kind: str, *, seed: int) -> np.ndarray:
    """Given labels ``(N + M,)`` int64 of the pool under noise ``kind`` (see ``NOISE_HELP``).

    Synthetic noise is injected into ``gt`` with :mod:`clear_core.synthetic`, seeded by ``seed``:
    ``symNN`` flips a row with probability NN/100 to one of the K - 1 other classes uniformly,
    ``asymNN`` flips class k to (k + 1) mod K with probability NN/100.

    Raises:
        ValueError: on an unknown kind.
    """
    from clear_core.synthetic import asymmetric_noise, symmetric_noise

    gt = splits.pool["gt"].astype(int).to_numpy()
    k = len(splits.label_names)
    if kind == "real":
        return splits.pool["label"].astype(int).to_numpy()
    if kind == "gt":
        return gt
    for prefix, fn in (("asym", asymmetric_noise), ("sym", symmetric_noise)):
        if kind.startswith(prefix) and kind[len(prefix):].isdigit():
            return fn(gt, num_classes=k, rate=int(kind[len(prefix):]) / 100.0, seed=seed)[0]
    raise ValueError(f"unknown noise kind {kind!r}: use {NOISE_HELP.replace('%%', '%')}")


def make_datasets(splits: Splits, kind: str, *, seed: int):
    """``(train, heldout, info)``: :class:`TextClassificationData` of the training and held-out rows.

    The training data carries ``gold_labels`` (scoring only); the held-out rows carry their
    *given* labels, since model selection may not see true labels. ``info`` has the noise rates.
    """
    from clear_core import TextClassificationData

    given = given_labels(splits, kind, seed=seed).astype(str)
    pool = splits.pool
    is_train = (pool["split"] == "train").to_numpy()
    train = TextClassificationData(pool["text"][is_train].tolist(), given[is_train].tolist(),
                                   gold_labels=pool["gt"][is_train].tolist())
    held = TextClassificationData(pool["text"][~is_train].tolist(), given[~is_train].tolist())
    noisy = given != pool["gt"].to_numpy()
    info = {"noise": kind, "train_noise_rate": float(noisy[is_train].mean()),
            "heldout_noise_rate": float(noisy[~is_train].mean())}
    return train, held, info


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (other processes competing for the CPUs), or None."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment() -> dict[str, Any]:
    """Machine, versions and git commit of this run (JSON-serialisable)."""
    import torch

    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "sklearn", "numpy", "clear_core", "cleanlab"):
        try:
            versions[name] = getattr(__import__(name), "__version__", "?")
        except ImportError:
            versions[name] = None
    git = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "clear_core", "bench"],
                           capture_output=True, text=True)
    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None, "versions": versions,
        "git_commit": git.stdout.strip() or None, "clear_core_or_bench_modified": bool(dirty.stdout.strip()),
        "argv": sys.argv,
        "load_average_at_start": load_average(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every script shares; numeric defaults are None and filled by :func:`fill_defaults`."""
    parser.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores (small, for checking)")
    parser.add_argument("--data", default=None, help=f"folder with train.csv/test.csv (default {DEFAULT_DATA}, "
                        "else examples/noisyag_*_2000/1000.csv)")
    parser.add_argument("--model", default=None, help="local Hugging Face model folder (default all-MiniLM-L6-v2)")
    parser.add_argument("--train-rows", type=int, default=None, help="rows drawn from train.csv, held-out split "
                        "included (0 = all)")
    parser.add_argument("--test-rows", type=int, default=None, help="test rows (0 = all)")
    parser.add_argument("--heldout-frac", type=float, default=0.1, help="fraction of the drawn rows held out")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per row")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (quick 16, full 32)")
    parser.add_argument("--learning-rate", type=float, default=None, help="AdamW learning rate of every run")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of row draws, split and synthetic noise")
    parser.add_argument("--clear", action="append", default=[], metavar="KEY=VALUE",
                        help="ClearConfig override for every run, e.g. warmup_epochs=2 (repeatable)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the CPUs left idle by the load average, at least 1)")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/<script>_<quick|full>.json)")


def fill_defaults(args: argparse.Namespace, quick: dict[str, Any], full: dict[str, Any]) -> argparse.Namespace:
    """Set every still-None attribute from the ``quick`` or ``full`` defaults; set torch's CPU threads."""
    import torch

    quiet()
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.threads = args.threads or idle_threads(torch.get_num_threads())
    torch.set_num_threads(args.threads)
    return args


def idle_threads(default: int) -> int:
    """CPU threads worth using now: the CPUs the 1-minute load average leaves idle, in [1, default].

    On a shared CPU, torch threads beyond the idle cores wait on each other: a MiniLM step measured
    here took 0.45 s on one thread and 1.3-7.7 s on two while other jobs kept the load at 5-6.
    """
    import torch

    load = load_average()
    if load is None or torch.cuda.is_available():
        return default
    return max(1, min(default, int((os.cpu_count() or 1) - load[0] + 0.5)))


def quiet() -> None:
    """Silence transformers' loading progress bars and deprecation warnings (the tables are the output)."""
    import warnings

    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.utils.logging.disable_progress_bar()


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["warmup_epochs=2", "gmm_per_class=true"]`` -> typed ClearConfig overrides.

    Raises:
        ValueError: on a missing ``=``, an unknown field or a value of the wrong type.
    """
    from clear_core import ClearConfig

    types = {f.name: str(f.type) for f in dataclasses.fields(ClearConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            raise ValueError(f"--clear {item!r}: give KEY=VALUE with KEY one of {sorted(types)}")
        kind, raw = types[key], raw.strip()
        if raw.lower() == "none" and "None" in kind:
            out[key] = None
        elif kind.startswith("bool"):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--clear {item!r}: {key} takes true or false")
            out[key] = raw.lower() in ("true", "1")
        elif kind.startswith("int"):
            out[key] = int(raw)
        elif kind.startswith("float"):
            out[key] = float(raw)
        elif kind.startswith("list"):
            out[key] = [x for x in raw.split(",") if x]
        else:
            out[key] = raw
    return out


def variant_name(overrides: dict[str, Any]) -> str:
    """A short label of the overrides for the tables' variant column ("default" when none)."""
    return ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "default"


def csv_list(text: str, cast=str) -> list:
    """``"a,b"`` -> ``[cast(a), cast(b)]``."""
    return [cast(x.strip()) for x in str(text).split(",") if x.strip()]
