"""clear_core: CleaR (Clean Routing, Kim et al., ACL 2024) as a plain library.

Routed PEFT (LoRA, bottleneck adapter, prefix tuning, BitFit) for text classification on
noisy labels, clean-probability estimation, a trainer with callbacks and exact resume,
noise reports, synthetic noise and metrics. It imports no web, database or queue package
and never reads the environment.
"""

from .callbacks import TrainerCallback, TrainerControl, TrainerState, TrainingCancelled
from .config import ClearConfig, TrainingConfig
from .data import TextClassificationData
from .io import load_adapter, read_adapter_config, save_adapter
from .model import ClearModel, resolve_model_path
from .report import NoiseReport
from .trainer import TrainResult, train

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
    "read_adapter_config",
    "resolve_model_path",
    "save_adapter",
    "train",
]
