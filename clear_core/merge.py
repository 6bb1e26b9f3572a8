"""Fold the trained PEFT deltas into the frozen weights for a no-grad pass, and put the weights back.

During a deterministic pass every gate is one constant g (:meth:`ClearModel.use_inference_gates`), so a
LoRA layer computes ``W x + g * s * B A x = (W + g * s * B A) x`` (Hu et al., "LoRA", ICLR 2022, Sec. 4.1:
the update "can be merged" into W for inference) and a BitFit layer ``b0 + g * delta_b``: one matmul (or one
bias) instead of three. :func:`merged_deltas` writes ``W + g * delta`` into the base weights, switches the
unmerged branch off for the pass, and afterwards **copies the saved originals back** (never ``W' - delta``,
which would drift the frozen weights by rounding every pass).

Merging is skipped (the pass then runs unmerged, same values up to float rounding) where it is not exact
enough or not possible: gates not constant (a routed training forward), base weights in bf16/fp16 (the
delta would be rounded into a 8-bit mantissa), a LoRA variant (DoRA and the like), or a peft whose layers
lack the switch this module uses. Adapters (non-linear bottlenecks) and prefix tuning have nothing to merge.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .methods.bitfit import BiasDelta


def _lora_layers(model: nn.Module) -> list[nn.Module]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return []
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def _mergeable_lora(layer: nn.Module) -> bool:
    base = getattr(layer, "base_layer", None)
    weight = getattr(base, "weight", None)
    return (isinstance(weight, torch.Tensor) and weight.dtype == torch.float32
            and not getattr(layer, "lora_variant", {}) and not layer.merged
            and hasattr(layer, "_disable_adapters") and hasattr(layer, "get_delta_weight")
            and not layer.disable_adapters)


@contextlib.contextmanager
def merged_deltas(model: nn.Module, gate: float | None) -> Iterator[int]:
    """Within the block, LoRA and BitFit layers of ``model`` run with ``gate * delta`` folded into their
    frozen weights; on exit (also on error) the original weights are copied back bit for bit.

    Args:
        model: the wrapped Hugging Face model (``ClearModel.model``).
        gate: the constant gate g in [0, 1] of every layer during the pass
            (``GateController.constant``); None (per-row gates) merges nothing.

    Yields:
        The number of layers merged (0 when nothing could be merged).

    Memory: one copy of each merged base weight (LoRA) or bias (BitFit) for the duration of the block.
    Call it under ``torch.no_grad`` / ``inference_mode``: the merged weights must not be trained.
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    switched: list[nn.Module] = []
    try:
        if gate is not None:
            with torch.no_grad():
                for layer in _lora_layers(model):
                    if not _mergeable_lora(layer):
                        continue
                    active = [a for a in layer.active_adapters if a in layer.lora_A]
                    if not active:
                        continue
                    weight = layer.base_layer.weight
                    delta = sum(layer.get_delta_weight(a) for a in active)
                    saved.append((weight, weight.detach().clone()))
                    weight.add_(delta.to(weight.dtype), alpha=gate)
                    layer._disable_adapters = True  # peft: run base_layer only (the delta is in its weight now)
                    switched.append(layer)
                for module in model.modules():
                    if isinstance(module, BiasDelta) and not module.merged \
                            and module.base_layer.bias.dtype == torch.float32:
                        bias = module.base_layer.bias
                        saved.append((bias, bias.detach().clone()))
                        bias.add_(module.bias_delta.detach(), alpha=gate)
                        module.merged = True
                        switched.append(module)
        yield len(switched)
    finally:
        with torch.no_grad():
            for tensor, original in saved:
                tensor.copy_(original)
        for module in switched:
            if isinstance(module, BiasDelta):
                module.merged = False
            else:
                module._disable_adapters = False
