"""The artifact store: adapters (and later checkpoints) under keys, in any fsspec file system.

A local folder by default; an object store URL (``s3://bucket/prefix``) when workers run
on other machines.
"""

from __future__ import annotations

import os
import uuid
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem


class ArtifactStore:
    """Files addressed by keys such as ``tenants/<tenant>/jobs/<id>/adapter.tar.gz`` below the root URL."""

    def __init__(self, url: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.url = url

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"artifact key {key!r} must be relative and stay below the store root")
        return f"{self.root.rstrip('/')}/{key}"

    def put_file(self, local_path: str, key: str) -> str:
        """Copy a local file to ``key`` and return its key. On a local disk the copy goes to a temporary
        name first and is renamed, so a reader never sees half a file (object stores are atomic per put)."""
        path = self._path(key)
        if not isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(local_path, path)
            return key
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        for attempt in range(3):  # a concurrent delete may prune a just-made empty folder (``_prune``): remake it
            try:
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(local_path, tmp)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        os.replace(tmp, path)
        return key

    def get_file(self, key: str, local_path: str) -> None:
        """Copy the file at ``key`` to ``local_path``."""
        self.fs.get_file(self._path(key), local_path)

    def delete(self, key: str) -> None:
        """Remove the file at ``key`` if it exists, and the folders it leaves empty."""
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm_file(path)
        self._prune(path)

    def delete_prefix(self, prefix: str) -> None:
        """Remove everything below ``prefix`` (a folder-like key), and the folders it leaves empty."""
        path = self._path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
        self._prune(path)

    def _prune(self, path: str) -> None:
        """On a local disk, remove the now-empty folders above ``path`` up to (not including) the root; object
        stores have no folders to leave behind. A folder another writer has just filled is left alone."""
        if not isinstance(self.fs, LocalFileSystem):
            return
        root = os.path.abspath(self.root)
        folder = os.path.dirname(os.path.abspath(path))
        while folder.startswith(root + os.sep) and folder != root:
            try:
                os.rmdir(folder)  # only succeeds when empty
            except OSError:
                return
            folder = os.path.dirname(folder)

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a file."""
        return self.fs.exists(self._path(key))

    def size(self, key: str) -> int:
        """Size of the file at ``key`` in bytes."""
        return int(self.fs.size(self._path(key)))

    def open(self, key: str) -> BinaryIO:
        """The file at ``key`` opened for binary reading (the caller closes it)."""
        return self.fs.open(self._path(key), "rb")


def adapter_key(tenant_id: str, job_id: str) -> str:
    """Where a job's adapter archive is stored: below its tenant's folder."""
    return f"tenants/{tenant_id}/jobs/{job_id}/adapter.tar.gz"
