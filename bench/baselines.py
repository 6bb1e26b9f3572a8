"""Models that exist only to be measured against clear_core's routed ones (bench/cost.py).

- :func:`stock_lora`: LoRA from ``peft`` with no gate hook at all (what a user of plain peft runs).
- :func:`frozen_copy_model`: the reference implementation's design for routed LoRA / BitFit
  (REFERENCE_CODE.md Sec. 1.3 and 4): a frozen deep copy of every pretrained layer runs beside
  the PEFT layer, and the layer output is ``g * peft_layer(h) + (1 - g) * frozen_layer(h)``.
  clear_core gates only the PEFT delta instead; this copy measures what that saves. Its
  numerics are not used anywhere.

Symbols: B batch rows, T tokens, D hidden size, L layers.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from clear_core import ClearConfig, ClearModel
from clear_core.methods import attach_method
from clear_core.model import load_backbone, resolve_model_path
from clear_core.routing import GateController, find_layer_stack


class FrozenCopyLayer(nn.Module):
    """A trainable layer and its frozen pretrained copy, mixed per row by the gate of layer ``index``.

    Args:
        layer: the layer with its PEFT modules (run with every PEFT delta fully on).
        frozen: a frozen deep copy of the pretrained layer.
        gates: the controller holding the ``(B, L)`` mixing gates.
        index: l.
    """

    def __init__(self, layer: nn.Module, frozen: nn.Module, gates: GateController, index: int) -> None:
        super().__init__()
        self.layer, self.frozen, self.gates, self.index = layer, frozen, gates, index

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        """``g * layer(h) + (1 - g) * frozen(h)`` on the hidden states ``(B, T, D)``; other outputs from ``layer``."""
        out = self.layer(hidden_states, *args, **kwargs)
        ref = self.frozen(hidden_states, *args, **kwargs)
        is_tuple = isinstance(out, tuple)
        a, b = (out[0], ref[0]) if is_tuple else (out, ref)
        g = self.gates.gate(self.index, a)
        mixed = g * a + (1 - g) * b
        return (mixed, *out[1:]) if is_tuple else mixed


def frozen_copy_model(method: str, model_path: str | None, label_names: Sequence[str], max_length: int,
                      overrides: dict | None = None) -> tuple[ClearModel, GateController]:
    """The reference design of routed ``method`` (lora or bitfit): ``(model, mixing gates)``.

    The returned model's own controller stays at the constant 1 (PEFT fully on inside the
    trainable layer); set the mixing gates on the second return value.

    Raises:
        ValueError: for a method other than lora or bitfit (the reference runs no copy for them).
    """
    if method not in ("lora", "bitfit"):
        raise ValueError(f"method={method!r}: the reference's frozen-copy design exists for lora and bitfit only")
    backbone, tokenizer, _ = load_backbone(resolve_model_path(model_path), label_names)
    _, stack = find_layer_stack(backbone)
    frozen = [copy.deepcopy(layer).requires_grad_(False) for layer in stack]
    cfg = ClearConfig(**{**(overrides or {}), "method": method, "routed": False})
    controller = GateController(len(stack))
    model = attach_method(backbone, cfg, controller)
    _, stack = find_layer_stack(model)
    mix = GateController(len(stack))
    for i in range(len(stack)):
        stack[i] = FrozenCopyLayer(stack[i], frozen[i], mix, i)
    base = "default" if model_path is None else str(model_path)
    return ClearModel(model, tokenizer, cfg, label_names, controller, base, max_length), mix


def stock_lora(model_path: str | None, label_names: Sequence[str], max_length: int,
               overrides: dict | None = None) -> ClearModel:
    """LoRA from stock ``peft`` (same rank, alpha, dropout and targets as clear_core's), without gate hooks."""
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = ClearConfig(**{**(overrides or {}), "method": "lora", "routed": False})
    backbone, tokenizer, _ = load_backbone(resolve_model_path(model_path), label_names)
    _, stack = find_layer_stack(backbone)
    model = get_peft_model(backbone, LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                lora_dropout=cfg.lora_dropout,
                                                target_modules=cfg.lora_target_modules))
    base = "default" if model_path is None else str(model_path)
    return ClearModel(model, tokenizer, cfg, label_names, GateController(len(stack)), base, max_length)
