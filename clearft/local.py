"""Where the embedded service's key is found from any folder.

``python -m app.cli serve`` writes its local tenant's key to ``<data_dir>/api-key``; a ``clearft`` run from
another folder cannot guess ``<data_dir>``. So each embedded start also records, in a small per-user file,
which key file belongs to which service URL::

    $CLEARFT_STATE_DIR/services.json          (default $XDG_STATE_HOME/clearft, else ~/.local/state/clearft)
    {"http://127.0.0.1:8000": "/home/me/project/var/api-key", ...}

The client looks its URL up there when no key was given and none is in the environment or ``./var``. The
file holds paths, never keys; it is written atomically (a temporary file renamed over it) with mode 0600. A
service that stops removes its own entries (``unregister``); one killed with SIGKILL leaves them, and its URL
then finds its old key file until another service registers that URL.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

LOCAL_HOSTS = ("0.0.0.0", "::", "localhost", "127.0.0.1", "[::]")


def state_dir() -> Path:
    """The per-user folder of this file: ``$CLEARFT_STATE_DIR``, else ``$XDG_STATE_HOME/clearft``, else
    ``~/.local/state/clearft``."""
    if os.environ.get("CLEARFT_STATE_DIR"):
        return Path(os.environ["CLEARFT_STATE_DIR"]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "clearft"


def registry_path() -> Path:
    """``state_dir() / "services.json"``."""
    return state_dir() / "services.json"


def _normalise(url: str) -> str:
    return url.strip().rstrip("/").lower()


def service_urls(host: str, port: int) -> list[str]:
    """The URLs a client on this machine may use for a service bound to ``host:port``: the bound address and,
    for a wildcard or loopback bind, ``127.0.0.1`` and ``localhost`` too."""
    urls = [f"http://{url_host(host)}:{port}"]
    if host in LOCAL_HOSTS:
        urls += [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    return list(dict.fromkeys(urls))


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets (``::1`` -> ``[::1]``), anything else as it is."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _read() -> dict[str, str]:
    try:
        data = json.loads(registry_path().read_text())
    except (OSError, ValueError):
        return {}  # no file yet, or a damaged one: it is rewritten at the next start
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def register(urls: list[str], key_file: Path) -> Path | None:
    """Record that the service at each of ``urls`` keeps its key in ``key_file`` (an absolute path is stored).
    Returns the registry's path, or None if the per-user folder cannot be written (a read-only home): the key
    is then found only as before, which is not an error of the service."""
    entries = _read()
    entries.update({_normalise(u): str(Path(key_file).resolve()) for u in urls})
    return _write(entries)


def unregister(urls: list[str], key_file: Path) -> Path | None:
    """Remove the entries of ``urls`` that still name ``key_file`` (a service that stops; an entry another
    service registered since is kept). Returns the registry's path, or None if it cannot be written (nothing
    is raised: a stale entry only means the key file is looked up again, as before)."""
    entries, ours, gone = _read(), str(Path(key_file).resolve()), {_normalise(u) for u in urls}
    kept = {url: name for url, name in entries.items() if not (url in gone and name == ours)}
    return _write(kept) if kept != entries else registry_path()


def _write(entries: dict[str, str]) -> Path | None:
    """Replace the registry by ``entries`` atomically (mode 0600); None if the folder cannot be written."""
    path = registry_path()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".services.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(entries, fh, indent=2, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return None
    return path


def key_file_for(url: str) -> Path | None:
    """The key file recorded for ``url`` if it still exists, else None."""
    name = _read().get(_normalise(url))
    return Path(name) if name and Path(name).is_file() else None
