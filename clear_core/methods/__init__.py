"""PEFT methods CleaR routes: LoRA and prefix tuning through peft, bottleneck adapter and BitFit of ours."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import HEAD_NAMES, check_method
from ..config import ClearConfig
from ..routing import GateController
from .adapter import attach_adapter
from .bitfit import attach_bitfit
from .lora import attach_lora
from .prefix import attach_prefix, prefix_forward

def _in_modules(name: str, modules: list[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def attach_method(
    model: nn.Module, cfg: ClearConfig, controller: GateController, peft_dir: str | None = None,
    *, untrained: list[str] | None = None,
) -> nn.Module:
    """Attach ``cfg.method`` to a sequence-classification ``model`` and set ``requires_grad``.

    ``peft_dir``: for lora/prefix, load the adapter from this saved folder with stock peft.
    ``untrained``: modules the checkpoint lacked (:func:`clear_core.architectures.untrained_modules`); they are
    trained and saved beside the head (peft ``modules_to_save`` for lora/prefix).

    Only the PEFT parameters, the classification head and the untrained modules stay trainable; for ``full``
    every parameter does.

    Returns:
        The model to run (a peft model for lora/prefix, ``model`` itself otherwise).

    Raises:
        clear_core.architectures.UnsupportedMethod: the method cannot run on this architecture.
    """
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    check_method(model, cfg.method, cfg.lora_target_modules)
    extra = [m for m in (untrained or []) if m not in HEAD_NAMES]
    if cfg.method == "lora":
        return attach_lora(model, cfg, controller, peft_dir, modules_to_save=extra)
    if cfg.method == "prefix":
        return attach_prefix(model, cfg, controller, peft_dir, modules_to_save=extra)
    for p in model.parameters():
        p.requires_grad_(False)
    attach = attach_adapter if cfg.method == "adapter" else attach_bitfit
    model = attach(model, cfg, controller)
    trained = list(HEAD_NAMES) + extra
    for name, p in model.named_parameters():
        if ".adapter." in name or name.endswith("bias_delta") or _in_modules(name, trained):
            p.requires_grad_(True)
    return model


def attach_head_routing(model: nn.Module, controller: GateController, untrained: list[str] | None = None) -> int:
    """Route the *updates* of the classification head: rows whose head gate is 0 leave it untouched.

    The head cannot be switched off in the forward pass (it produces the logits), so its
    gate stops the gradient instead: each head ``nn.Linear`` computes the same output, but for
    a row with ``controller.head_gates[i] == 0`` through detached weights. The forward values
    never change, so inference is unaffected. The modules the checkpoint lacked (``untrained``: a
    ``pre_classifier``, a ``pooler``) count as the head. Returns the number of linears hooked.
    """
    hooked = 0
    heads = set(HEAD_NAMES) | {m.split(".")[-1] for m in (untrained or [])}
    for name, module in model.named_modules():
        parts = name.split(".")
        if isinstance(module, nn.Linear) and any(p in heads for p in parts) and not _is_frozen_copy(parts) \
                and ".lora_" not in f".{name}" and "base_layer" not in parts:
            module.register_forward_hook(_make_head_hook(controller))
            hooked += 1
    return hooked


def _is_frozen_copy(parts: list[str]) -> bool:
    return "original_module" in parts  # peft keeps the untrained head beside modules_to_save


def _make_head_hook(controller: GateController):
    def hook(module: nn.Linear, inputs, output):
        gates = controller.head_gates
        if gates is None or not torch.is_grad_enabled():
            return None
        bias = module.bias.detach() if module.bias is not None else None
        frozen = F.linear(inputs[0], module.weight.detach(), bias)
        keep = gates.to(output.device, output.dtype).view(-1, *([1] * (output.dim() - 1)))
        return keep * output + (1 - keep) * frozen

    return hook


__all__ = ["attach_method", "attach_head_routing", "prefix_forward", "HEAD_NAMES"]
