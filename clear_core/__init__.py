"""clear_core: CleaR (Clean Routing, Kim et al., ACL 2024) as a plain library.

Routed PEFT (LoRA, bottleneck adapter, prefix tuning, BitFit) for text classification on
noisy labels, clean-probability estimation, a trainer with callbacks and exact resume,
noise reports, synthetic noise and metrics. It imports no web, database or queue package
and never reads the environment.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported lazily (PEP 562), so `import clear_core.config` stays free of torch:
# the API validates job settings with the same config classes without loading torch.
_EXPORTS = {
    "ClearConfig": "config",
    "TrainingConfig": "config",
    "ClearModel": "model",
    "resolve_model_path": "model",
    "NoiseReport": "report",
    "TextClassificationData": "data",
    "TrainResult": "trainer",
    "train": "trainer",
    "TrainerCallback": "callbacks",
    "TrainerControl": "callbacks",
    "TrainerState": "callbacks",
    "TrainingCancelled": "callbacks",
    "load_adapter": "io",
    "read_adapter_config": "io",
    "save_adapter": "io",
    "predict_proba": "predict",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clear_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "ClearConfig",
    "ClearModel",
    "NoiseReport",
    "TextClassificationData",
    "TrainResult",
    "TrainerCallback",
    "TrainerControl",
    "TrainerState",
    "TrainingCancelled",
    "TrainingConfig",
    "load_adapter",
    "predict_proba",
    "read_adapter_config",
    "resolve_model_path",
    "save_adapter",
    "train",
]
