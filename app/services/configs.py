"""Resolve a job's CleaR and training settings with ``clear_core``'s own config classes.

The configs are plain dataclasses (no torch), so the API validates and echoes exactly the
values the worker will train with; their ``ValueError`` becomes a 422 naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from clear_core.config import ClearConfig, TrainingConfig, resolve_configs as _resolve  # no torch behind them

from app.errors import InvalidInput
from app.settings import DEFAULT_MODEL, Settings

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
    top = {"method": method, "routed": routed}
    for key in ("method", "routed"):  # a job echoes them inside clear too: sent back equal, they are taken
        if key in clear and clear[key] != top[key]:
            raise InvalidInput(f"clear.{key}={clear[key]!r} differs from the job's {key}={top[key]!r}: set {key} at "
                               "the top level of the job (inside clear it may only repeat it)", param=f"clear.{key}")
    clear_config = _build("clear", ClearConfig, {**clear, **top})
    training_config = _build("training", TrainingConfig, training)
    if training_config.device is not None:
        raise InvalidInput("training.device is chosen by the worker (CLEAR_WORKER_DEVICE), not by a job; "
                           "remove it", param="training.device")
    try:
        clear_config, training_config = _resolve(clear_config, training_config)
    except ValueError as exc:  # the warm-up / epochs cross-check
        raise InvalidInput(str(exc), param=_param("clear", str(exc))) from exc
    return clear_config.to_dict(), training_config.to_dict()


def _build(prefix: str, cls: type, values: dict[str, Any]) -> Any:
    try:
        return cls.from_dict(values)
    except ValueError as exc:
        raise InvalidInput(str(exc), param=_param(prefix, str(exc))) from exc
    except TypeError as exc:
        raise InvalidInput(f"a {prefix} setting has a value of the wrong type: {exc}", param=prefix) from exc
    except OverflowError as exc:  # config.py turns every number it checks into a ValueError; this is a backstop
        raise InvalidInput(f"a {prefix} setting holds a number too large for a float: {exc}", param=prefix) from exc


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
