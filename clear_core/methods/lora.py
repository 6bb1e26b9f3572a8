"""LoRA through ``peft``, with the low-rank delta of layer l gated per row by g(i, l).

The gate multiplies the output of ``lora_B`` (so the whole delta ``B A x * scaling``) and
nothing else: with g = 0 the wrapped linear returns exactly its frozen base output
(CleaR, Kim et al. 2024; fixes the reference code's frozen-copy design, REFERENCE_CODE.md B1a, Sec. 4).
"""

from __future__ import annotations

from torch import nn

from ..architectures import lora_targets
from ..config import ClearConfig
from ..routing import GateController, find_layer_stack, layer_index


def attach_lora(
    model: nn.Module, cfg: ClearConfig, controller: GateController, peft_dir: str | None = None,
    *, modules_to_save: list[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` with a peft LoRA adapter (task SEQ_CLS, head in ``modules_to_save``) and gate it.

    With ``peft_dir`` the adapter is loaded from a saved folder by stock ``PeftModel.from_pretrained``.
    The target modules come from :func:`clear_core.architectures.lora_targets` (``cfg.lora_target_modules``,
    peft's table, or the attention projections found in the blocks); ``modules_to_save`` adds modules the
    checkpoint lacked (peft adds the head, ``classifier``/``score``, itself).

    Returns:
        The ``peft.PeftModelForSequenceClassification``.

    Raises:
        ValueError: if peft finds none of the target modules (names them and the model type).
    """
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model
    from peft.tuners.lora import LoraLayer

    if peft_dir is not None:
        peft_model = PeftModel.from_pretrained(model, peft_dir, is_trainable=False)
        _gate(peft_model, controller, LoraLayer)
        return peft_model

    lora_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_targets(model, cfg.lora_target_modules),
        modules_to_save=list(modules_to_save or []) or None,
    )
    try:
        peft_model = get_peft_model(model, lora_config)
    except ValueError as exc:
        raise ValueError(
            f"LoRA cannot wrap {type(model).__name__} with target_modules={lora_config.target_modules!r}: {exc}; "
            "set lora_target_modules to linear layer names of this model"
        ) from exc
    _gate(peft_model, controller, LoraLayer)
    return peft_model


def _gate(peft_model: nn.Module, controller: GateController, lora_layer_cls: type) -> None:
    stack_name, _ = find_layer_stack(peft_model)
    for name, module in peft_model.named_modules():
        if isinstance(module, lora_layer_cls):
            layer = layer_index(name, stack_name)
            if layer is not None:
                for lora_b in module.lora_B.values():
                    lora_b.register_forward_hook(_make_gate_hook(controller, layer))


def _make_gate_hook(controller: GateController, layer: int):
    def hook(_module, _inputs, output):
        g = controller.gate(layer, output)
        if isinstance(g, float) and g == 1.0:
            return output
        return output * g

    return hook


def lora_b_weights(peft_model: nn.Module) -> list[nn.Parameter]:
    """Every ``lora_B`` weight of the model (the factor an inference gate is folded into)."""
    from peft.tuners.lora import LoraLayer

    weights = []
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            weights.extend(lin.weight for lin in module.lora_B.values())
    return weights
