"""PEFT methods CleaR routes: LoRA and prefix tuning through peft, bottleneck adapter and BitFit of ours."""

from __future__ import annotations

from torch import nn

from ..config import ClearConfig
from ..routing import GateController
from .adapter import attach_adapter
from .bitfit import attach_bitfit
from .lora import attach_lora
from .prefix import attach_prefix, prefix_forward

HEAD_NAMES = ("classifier", "score")


def attach_method(
    model: nn.Module, cfg: ClearConfig, controller: GateController, peft_dir: str | None = None
) -> nn.Module:
    """Attach ``cfg.method`` to a sequence-classification ``model`` and set ``requires_grad``.

    ``peft_dir``: for lora/prefix, load the adapter from this saved folder with stock peft.

    Only the PEFT parameters and the classification head stay trainable; for ``full``
    every parameter does.

    Returns:
        The model to run (a peft model for lora/prefix, ``model`` itself otherwise).
    """
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg.method == "lora":
        return attach_lora(model, cfg, controller, peft_dir)
    if cfg.method == "prefix":
        return attach_prefix(model, cfg, controller, peft_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    attach = attach_adapter if cfg.method == "adapter" else attach_bitfit
    model = attach(model, cfg, controller)
    for name, p in model.named_parameters():
        if ".adapter." in name or name.endswith("bias_delta") or name.split(".")[0] in HEAD_NAMES:
            p.requires_grad_(True)
    return model


__all__ = ["attach_method", "prefix_forward", "HEAD_NAMES"]
