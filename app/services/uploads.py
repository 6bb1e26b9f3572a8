"""Uploaded files on their way in: where they are spooled (written as the body arrives by
``app.api.multipart``), sniffed by their first bytes, and read back through a decompression cap.

The caller's file name is only ever a label (the dataset's display name, a hint of the format);
it never becomes part of a path.

Spool files live in a folder of their own process, ``<Settings.scratch("uploads")>/<pid>-<token>/``, beside
a lock file ``<pid>-<token>.lock`` that the process holds an exclusive ``flock`` on for its whole life (the
kernel drops it when the process dies, SIGKILL included). ``remove_stale`` (run at API start-up) deletes the
folders whose lock it can take, i.e. those of dead processes, and leaves those of live ones alone, so
several API processes (``uvicorn --workers N``) can share one data folder. ``flock`` needs a local file
system (on NFS it may not be honoured).
"""

from __future__ import annotations

import fcntl
import gzip
import io
import os
import re
import secrets
import shutil
import threading
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from app.errors import InvalidInput, PayloadTooLarge

CHUNK = 1 << 20
NAME_MAX = 200
GZIP_MAGIC, ZIP_MAGIC = b"\x1f\x8b", b"PK\x03\x04"


@dataclass
class StoredUpload:
    """An upload spooled to ``path`` (a temporary file, deleted with its upload), its size and sha256."""

    path: Path
    size: int
    sha256: str


_LOCK = ".lock"
_owned: dict[tuple[Path, int], tuple[Path, int]] = {}  # (root, pid) -> (this process's folder, lock fd)
_holders: dict[tuple[Path, int], int] = {}  # (root, pid) -> apps of this process that hold the folder
_owned_guard = threading.Lock()


def process_folder(root: Path) -> Path:
    """This process's own folder under ``root`` (created, with its held lock, on first use): where it
    spools. Safe to call from several threads; a forked child gets a folder of its own."""
    root = Path(root)
    with _owned_guard:
        owned = _owned.get((root, os.getpid()))
        if owned is not None and owned[0].is_dir():
            return owned[0]
        root.mkdir(parents=True, exist_ok=True)
        folder, fd = _claim(root)
        _owned[(root, os.getpid())] = (folder, fd)
        return folder


def _claim(root: Path) -> tuple[Path, int]:
    while True:
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        lock = root / f"{name}{_LOCK}"
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else a start-up cleanup took the lock before we did and removed it: try another name
            (root / name).mkdir(mode=0o700)
            return root / name, fd
        os.close(fd)


def remove_stale(root: Path) -> list[str]:
    """Delete under ``root`` every process folder whose owner is gone (its lock can be taken), any folder
    without a lock file and any loose file; live processes' folders (their lock is held) are kept.
    Returns the names removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    mine = {folder.name for (base, _pid), (folder, _fd) in _owned.items() if base == root}
    for lock in sorted(root.glob(f"*{_LOCK}")):
        name = lock.name[:-len(_LOCK)]
        if name not in mine and _remove_if_dead(root, name):
            removed.append(name)
    for entry in sorted(root.iterdir()):
        if entry.name.endswith(_LOCK) or entry.name in mine or (root / f"{entry.name}{_LOCK}").exists():
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def _remove_if_dead(root: Path, name: str) -> bool:
    try:
        fd = os.open(root / f"{name}{_LOCK}", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # its process is alive
        os.close(fd)
        return False
    try:  # the folder first, then the lock: a folder never outlives its lock unnoticed
        shutil.rmtree(root / name, ignore_errors=True)
        (root / f"{name}{_LOCK}").unlink(missing_ok=True)
    finally:
        os.close(fd)
    return True


def hold_folder(root: Path) -> Path:
    """``process_folder(root)``, counted: each app started in this process (API start-up) holds it once,
    and ``release_folder`` removes it when the last one stops."""
    folder = process_folder(root)
    with _owned_guard:
        key = (Path(root), os.getpid())
        _holders[key] = _holders.get(key, 0) + 1
    return folder


def release_folder(root: Path) -> None:
    """Drop one hold of this process's folder under ``root``; the last one removes the folder and its lock
    (at API shutdown)."""
    key = (Path(root), os.getpid())
    with _owned_guard:
        _holders[key] = _holders.get(key, 1) - 1
        if _holders[key] > 0:
            return
        del _holders[key]
        owned = _owned.pop(key, None)
    if owned is not None:
        folder, fd = owned
        shutil.rmtree(folder, ignore_errors=True)
        Path(f"{folder}{_LOCK}").unlink(missing_ok=True)
        os.close(fd)


def safe_name(*candidates: str | None) -> str:
    """A display name from the first usable candidate: its last path component only, control
    characters removed, at most 200 characters; ``"dataset"`` if none is usable."""
    for raw in candidates:
        if not raw:
            continue
        base = PureWindowsPath(PurePosixPath(raw).name).name
        clean = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
        clean = re.sub(r"\s+", " ", clean)[:NAME_MAX].strip()
        if clean and clean not in (".", ".."):
            return clean
    return "dataset"


class CappedReader(io.RawIOBase):
    """A binary stream over ``raw`` that raises ``PayloadTooLarge`` (code ``decompressed_too_large``)
    once more than ``limit`` bytes were read: what keeps a gzip bomb from filling memory or disk."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self.raw, self.limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        """Always True."""
        return True

    def readinto(self, buffer) -> int:
        """Fill ``buffer`` from the underlying stream, counting bytes against the limit."""
        data = self.raw.read(len(buffer))
        self.count += len(data)
        if self.count > self.limit:
            raise PayloadTooLarge(f"the file expands to more than {self.limit} bytes when decompressed; upload "
                                  "it uncompressed or split it", param="file", code="decompressed_too_large")
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        """Close the underlying stream too."""
        self.raw.close()
        super().close()


class GzipReader(CappedReader):
    """A ``CappedReader`` over a gzip stream that turns a corrupt or truncated stream into
    ``InvalidInput`` (code ``parse_error``) instead of a bare ``EOFError``/``zlib.error``."""

    def readinto(self, buffer) -> int:
        """Decompress into ``buffer``; raises ``InvalidInput`` where the gzip data is broken."""
        try:
            return super().readinto(buffer)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            # the count is of reads that completed: the failing read's own bytes are lost with it
            where = f" (after {self.count} bytes decompressed without error)" if self.count else ""
            raise not_gzip(f"{exc}{where}") from exc


def not_gzip(reason: str) -> InvalidInput:
    """The error for a file that should be gzip but is not valid gzip."""
    return InvalidInput(f"the file is not valid gzip: {reason}; upload the file again, compressed with gzip, "
                        "or uncompressed without the .gz extension", param="file", code="parse_error")


def check_gzip_name(path: Path, filename: str | None) -> None:
    """A file named ``*.gz`` must start like gzip; raises ``InvalidInput`` (``parse_error``) otherwise."""
    if PurePosixPath(filename or "").suffix.lower() == ".gz" and sniff(path) != "gzip":
        raise not_gzip("it is named .gz but does not start with the gzip magic bytes")


def sniff(path: Path) -> str | None:
    """``"gzip"`` for a gzip file; raises for a zip archive (not accepted); None otherwise."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(ZIP_MAGIC):
        raise InvalidInput("zip archives are not accepted: upload the CSV, JSONL or Parquet file itself "
                           "(gzip-compressed if you like)", param="file", code="unsupported_format")
    return "gzip" if head.startswith(GZIP_MAGIC) else None


def open_binary(path: Path, max_uncompressed: int) -> BinaryIO:
    """The file's content as a buffered binary stream, decompressed (with a cap) if it is gzip."""
    if sniff(path) == "gzip":
        return io.BufferedReader(GzipReader(gzip.open(path, "rb"), max_uncompressed), buffer_size=CHUNK)
    return open(path, "rb")
