"""Attempt folders: every job attempt (and prediction run) works in its own folder under
``Settings.scratch("attempts")`` (the downloaded checkpoint, the trainer's checkpoints, the packaged adapter),
removed when the attempt ends, however it ends; a folder left by a killed worker is removed when a worker starts.

Several worker processes, on one machine or several, may share one ``data_dir``, so a folder is removed at
start-up only when its owner is gone: the owner holds an exclusive ``flock`` on the folder's ``.lock`` file for
the attempt's whole life, and the kernel drops that lock when the process ends in any way (SIGKILL included).
The lock is taken on a file of another name and renamed into place, so ``.lock`` never exists unlocked while its
owner lives; a folder with no ``.lock`` at all (its owner died within the microseconds between creating it and
locking it) is removed once it is older than ``ORPHAN_GRACE_S``. The file is opened for writing, which the
``flock`` emulation of NFS needs. ``worker.celery_app`` sweeps when a worker is ready.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from app.settings import Settings

logger = logging.getLogger(__name__)
LOCK_FILE = ".lock"
ORPHAN_GRACE_S = 60.0


def _remove(path: Path) -> None:
    def onerror(_func: Any, name: str, exc_info: Any) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):  # another sweeper may be removing it too
            logger.warning("could not remove %s from the attempt folders: %s", name, exc_info[1])

    shutil.rmtree(path, onerror=onerror)


@contextmanager
def attempt_folder(root: Path, prefix: str) -> Iterator[Path]:
    """A new folder ``root/<prefix>-<random>/``, locked for as long as the ``with`` block runs, then removed
    (on return, exception or ``SystemExit`` alike); ``root`` is created if missing.

    Raises:
        OSError: ``root`` cannot be created or written.
    """
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))
    fd = None
    try:
        fd = os.open(folder / ".lock-new", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # nobody else knows this name: it cannot block
        os.rename(folder / ".lock-new", folder / LOCK_FILE)
        yield folder
    finally:
        _remove(folder)  # while still locked, so no sweeper takes it for an orphan half-way
        if fd is not None:
            os.close(fd)


def sweep(root: Path, *, grace_s: float = ORPHAN_GRACE_S) -> list[Path]:
    """Remove the folders under ``root`` whose owner has ended (its lock is free), and loose entries older than
    ``grace_s`` seconds; a live worker's folder is never touched. Returns the removed paths."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for entry in root.iterdir():
        try:
            if not entry.is_dir() or entry.is_symlink():
                if now - entry.lstat().st_mtime > grace_s:
                    entry.unlink()
                    removed.append(entry)
                continue
            try:
                fd = os.open(entry / LOCK_FILE, os.O_RDWR)
            except FileNotFoundError:
                if now - entry.stat().st_mtime > grace_s:
                    _remove(entry)
                    removed.append(entry)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live attempt
            else:
                _remove(entry)
                removed.append(entry)
            finally:
                os.close(fd)
        except FileNotFoundError:  # removed meanwhile by its owner or another sweeper
            continue
    return removed


def sweep_at_start(settings: Settings) -> None:
    """``sweep`` of ``settings.scratch("attempts")`` when a worker starts, logging what it removed (a failure to
    read the folder is logged, not raised: the worker starts anyway)."""
    root = settings.scratch("attempts")
    try:
        removed = sweep(root)
    except OSError:
        logger.warning("could not clean the attempt folders under %s", root, exc_info=True)
        return
    if removed:
        logger.warning("removed %d attempt folder(s) left by stopped workers under %s: %s", len(removed), root,
                       ", ".join(p.name for p in removed))
