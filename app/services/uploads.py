"""Uploaded files on their way in: copied in 1 MiB pieces to a private temporary file with a size cap
(hashing as they go), sniffed by their first bytes, and read back through a decompression cap.

The caller's file name is only ever a label (the dataset's display name, a hint of the format);
it never becomes part of a path.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tempfile
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
    """An upload spooled to ``path`` (a temporary file the caller deletes), its size and sha256."""

    path: Path
    size: int
    sha256: str


async def spool(upload, limit: int, directory: str | None = None) -> StoredUpload:
    """Copy an async-readable upload (``await upload.read(n)``) to a temporary file, refusing (413)
    as soon as it passes ``limit`` bytes; the temporary file is removed on any error."""
    digest, size = hashlib.sha256(), 0
    fd, name = tempfile.mkstemp(prefix="upload-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the file is larger than the limit of {limit} bytes: split it or "
                                          "sample it", param="file")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    return StoredUpload(Path(name), size, digest.hexdigest())


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
            raise not_gzip(f"{exc} (after {self.count} decompressed bytes)") from exc


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
