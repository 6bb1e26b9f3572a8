"""Prefix tuning through ``peft``, with the prefix of layer l masked out of attention when g(i, l) = 0.

peft 0.21 refuses BERT-style backbones under transformers 5 (its forward looks for a
``past_key_values`` argument that BERT renamed to ``cache``), so :func:`prefix_forward`
runs the same computation as ``peft``'s own ``_prefix_tuning_forward``: prompt cache from
``get_prompt``, an all-ones mask over the prefix, the backbone, then the classifier's own head (pooler,
dropout, classifier, whatever the architecture's ``forward`` does after its backbone: it is run with the
backbone's output substituted); with one difference: the tokens keep the positions the backbone gives them without a prefix (0..T-1 for BERT), so
that with every prefix gated off the model is exactly the pretrained backbone (peft leaves BERT to number
them from P). Which architectures can carry a prefix: :func:`clear_core.architectures.prefix_refusal`.
Gating follows CleaR (Kim et al. 2024): per row and layer the prefix keys are removed from
the attention mask, never a second copy of the layer (REFERENCE_CODE.md, Sec. 1.3).
"""

from __future__ import annotations


import torch
from torch import nn

from ..architectures import _hidden_size, backbone_of, cache_argument
from ..config import ClearConfig
from ..routing import GateController, find_layer_stack, layer_index


def _num_heads(model: nn.Module) -> int:
    for name in ("num_attention_heads", "n_heads", "n_head"):
        value = getattr(model.config, name, None)
        if isinstance(value, int):
            return value
    raise TypeError(f"{type(model).__name__}'s config names no number of attention heads")


def attach_prefix(
    model: nn.Module, cfg: ClearConfig, controller: GateController, peft_dir: str | None = None,
    *, modules_to_save: list[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` with a peft prefix-tuning adapter (task SEQ_CLS) and gate each layer's prefix.

    With ``peft_dir`` the adapter is loaded from a saved folder by stock ``PeftModel.from_pretrained``. The
    prefix's sizes (token_dim, layers, heads) are read from the model's structure, not left to peft's
    config-name guesses; ``modules_to_save`` adds modules the checkpoint lacked.

    Raises:
        TypeError: if the layer stack has no ``*SelfAttention`` modules whose mask can be gated.
    """
    from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model

    if peft_dir is not None:
        peft_model = PeftModel.from_pretrained(model, peft_dir, is_trainable=False)
    else:
        _, stack = find_layer_stack(model)
        peft_model = get_peft_model(model, PrefixTuningConfig(
            task_type=TaskType.SEQ_CLS, num_virtual_tokens=cfg.num_virtual_tokens, token_dim=_hidden_size(model),
            num_layers=len(stack), num_attention_heads=_num_heads(model),
            modules_to_save=list(modules_to_save or []) or None))
    stack_name, _ = find_layer_stack(peft_model)
    hooked = 0
    for name, module in peft_model.named_modules():
        layer = layer_index(name, stack_name)
        if layer is not None and type(module).__name__.endswith("SelfAttention"):
            module.register_forward_pre_hook(
                _make_mask_hook(controller, layer, cfg.num_virtual_tokens), with_kwargs=True
            )
            hooked += 1
    if hooked == 0:
        raise TypeError(
            f"prefix routing found no *SelfAttention module in {type(model).__name__}'s layers: "
            "use a BERT-style encoder or another method"
        )
    return peft_model


def _make_mask_hook(controller: GateController, layer: int, num_prefix: int):
    def hook(_module, args, kwargs):
        gates = controller.row_gates(layer)
        if gates is None:
            if controller.constant == 1.0:
                return None
            gates = torch.full((args[0].shape[0],), controller.constant)
        hidden = args[0]
        mask = kwargs.get("attention_mask")
        kwargs["attention_mask"] = gate_prefix_mask(mask, gates, num_prefix, hidden)
        return args, kwargs

    return hook


def gate_prefix_mask(
    mask: torch.Tensor | None, gates: torch.Tensor, num_prefix: int, hidden: torch.Tensor
) -> torch.Tensor:
    """Remove the first ``num_prefix`` keys from attention for rows whose gate is 0.

    Args:
        mask: ``(B, 1, T, P + T)`` bool (True = attend) or additive float mask, or None (all attend).
        gates: ``(B,)`` gates in {0, 1}.
        num_prefix: P.
        hidden: ``(B, T, D)`` hidden states (for sizes, dtype and device).

    Returns:
        A mask of the same kind (bool, or float when the input was float).
    """
    b, t = hidden.shape[0], hidden.shape[1]
    if mask is None:
        mask = torch.ones((b, 1, t, num_prefix + t), dtype=torch.bool, device=hidden.device)
    keep = (gates.to(hidden.device) > 0.5).view(b, 1, 1, 1)
    mask = mask.clone()
    if mask.dtype == torch.bool:
        mask[..., :num_prefix] &= keep
    else:
        blocked = torch.finfo(mask.dtype).min
        mask[..., :num_prefix] = torch.where(keep, mask[..., :num_prefix], torch.full_like(mask[..., :num_prefix], blocked))
    return mask


def prefix_forward(peft_model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits ``(B, K)`` of a peft prefix-tuning model for one tokenised batch (see module docstring)."""
    input_ids = batch["input_ids"]
    b = input_ids.shape[0]
    num_prefix = peft_model.peft_config[peft_model.active_adapter].num_virtual_tokens
    cache = peft_model.get_prompt(batch_size=b)
    prefix_mask = torch.ones((b, num_prefix), dtype=batch["attention_mask"].dtype, device=input_ids.device)
    kwargs = {k: v for k, v in batch.items() if k != "attention_mask"}
    classifier = peft_model.base_model
    backbone = backbone_of(classifier)
    # A prefix has no position: the tokens keep the positions the backbone gives them without a cache
    # (BERT's 0..T-1, RoBERTa's from padding_idx + 1), not ones shifted by P; so the embeddings are told
    # the cache is empty.
    hook = backbone.embeddings.register_forward_pre_hook(_no_cache_positions, with_kwargs=True) \
        if hasattr(backbone, "embeddings") else None
    try:
        outputs = backbone(attention_mask=torch.cat([prefix_mask, batch["attention_mask"]], dim=1),
                           **{cache_argument(classifier): cache}, **kwargs)
    finally:
        if hook is not None:
            hook.remove()
    # The head as the architecture runs it (BERT: pooler output -> dropout -> classifier; RoBERTa/ELECTRA:
    # the first token's hidden state through a dense head): the classifier's own forward, with its backbone
    # answering the output just computed instead of running again.
    backbone.forward = lambda *_a, **_k: outputs
    try:
        return classifier(input_ids=input_ids, attention_mask=batch["attention_mask"]).logits
    finally:
        del backbone.forward  # back to the class's forward


def _no_cache_positions(_module, args, kwargs):
    for name in ("cache_length", "past_key_values_length"):
        if name in kwargs:
            kwargs[name] = 0
    return args, kwargs
