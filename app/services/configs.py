"""Resolve a job's CleaR and training settings with ``clear_core``'s own config classes.

The configs are plain dataclasses (no torch), so the API validates and echoes exactly the
values the worker will train with; their ``ValueError`` becomes a 422 naming the field.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType
from typing import Any

from app.errors import InvalidInput
from app.settings import DEFAULT_MODEL, Settings



def _clear_core_config() -> ModuleType:
    """``clear_core.config`` without running ``clear_core/__init__`` (which imports torch).

    The module is registered under its real name, so a later ``import clear_core`` (in the
    worker) reuses it and the config classes stay the same objects.
    """
    if "clear_core.config" in sys.modules:
        return sys.modules["clear_core.config"]
    package = importlib.util.find_spec("clear_core")  # finds, does not execute, a top-level package
    if package is None or not package.submodule_search_locations:
        raise ImportError("clear_core is not installed: pip install -e . from the repository root")
    location = f"{list(package.submodule_search_locations)[0]}/config.py"
    spec = importlib.util.spec_from_file_location("clear_core.config", location)
    module = importlib.util.module_from_spec(spec)
    sys.modules["clear_core.config"] = module
    spec.loader.exec_module(module)
    return module


_config = _clear_core_config()
ClearConfig, TrainingConfig = _config.ClearConfig, _config.TrainingConfig
_FIELD = re.compile(r"^(\w+)=")
_UNKNOWN = re.compile(r"unknown \w+ field\(s\) \['([^']+)'")


def _param(prefix: str, message: str) -> str:
    match = _FIELD.match(message) or _UNKNOWN.search(message)
    return f"{prefix}.{match.group(1)}" if match else prefix


def resolve_configs(method: str, routed: bool, clear: dict[str, Any], training: dict[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The full ``ClearConfig`` and ``TrainingConfig`` dicts, every default filled in.

    Raises:
        InvalidInput: a bad or unknown setting; ``param`` names it, e.g. ``clear.routing_cap``.
    """
    for key in ("method", "routed"):
        if key in clear:
            raise InvalidInput(f"set {key} at the top level of the job, not inside clear", param=f"clear.{key}")
    resolved = []
    for prefix, cls, values in (("clear", ClearConfig, {**clear, "method": method, "routed": routed}),
                                ("training", TrainingConfig, training)):
        try:
            resolved.append(cls.from_dict(values).to_dict())
        except ValueError as exc:
            raise InvalidInput(str(exc), param=_param(prefix, str(exc))) from exc
        except TypeError as exc:
            raise InvalidInput(f"a {prefix} setting has a value of the wrong type: {exc}", param=prefix) from exc
    return resolved[0], resolved[1]


def available_models(settings: Settings) -> list[str]:
    """Names a job may give as ``base_model``: the packaged default and the folders of ``model_dir``."""
    names = [DEFAULT_MODEL]
    if settings.model_dir and settings.model_dir.is_dir():
        names += sorted(p.name for p in settings.model_dir.iterdir() if p.is_dir())
    return names


def resolve_base_model(name: str | None, settings: Settings) -> str:
    """The base model name to store, checked against ``available_models``; ``InvalidInput`` otherwise."""
    name = name or settings.default_base_model
    available = available_models(settings)
    if name not in available:
        raise InvalidInput(f"base_model={name!r} is not available: choose one of {available}", param="base_model")
    return name
