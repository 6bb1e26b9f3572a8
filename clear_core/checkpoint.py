"""Checkpoints that resume a run exactly: trainable weights, optimizer, scheduler, every RNG, dynamics.

A checkpoint is a folder ``checkpoint-{global_step}`` holding ``trainer_state.pt``. It is
written to a temporary name and renamed, so a crash never leaves a half-written checkpoint.
Only the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"


def data_fingerprint(texts: Sequence[str], labels: Sequence[str]) -> str:
    """sha256 hex digest of the rows and labels, so a checkpoint is never resumed on other data."""
    h = hashlib.sha256()
    for t, y in zip(texts, labels):
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
        h.update(y.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


def rng_state(gate_generator: torch.Generator) -> dict[str, Any]:
    """The state of python, numpy, torch (CPU and CUDA) and the gate generator."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "gates": gate_generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], gate_generator: torch.Generator) -> None:
    """Restore :func:`rng_state` output."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gate_generator.set_state(state["gates"])


def write_checkpoint(directory: str | Path, global_step: int, payload: dict[str, Any], *, keep: int = 1) -> Path:
    """Atomically write ``payload`` to ``directory/checkpoint-{global_step}`` and prune older ones.

    Returns:
        The checkpoint folder.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{global_step}"
    tmp = root / f".tmp-checkpoint-{global_step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(payload, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    existing = sorted(latest_checkpoints(root), key=lambda p: int(p.name.split("-")[1]))
    for old in existing[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``directory``."""
    root = Path(directory)
    if not root.is_dir():
        return []
    return [p for p in root.glob("checkpoint-*") if (p / STATE_FILE).is_file()]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest step under ``directory``, or None."""
    found = latest_checkpoints(directory)
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint payload (trusted file written by :func:`write_checkpoint`).

    Raises:
        ValueError: if ``path`` holds no checkpoint.
    """
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"no checkpoint at {str(path)!r}: expected a folder holding {STATE_FILE}")
    return torch.load(file, map_location="cpu", weights_only=False)
