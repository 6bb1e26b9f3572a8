"""Module roles per architecture, found from the model's structure rather than its parameter names.

CleaR needs, in each transformer block of any Hugging Face sequence classifier: the layer stack
(:func:`clear_core.routing.find_layer_stack`), the linears LoRA wraps, the two output projections that
write into the residual stream (the bottleneck adapter's places, Houlsby et al. 2019: after attention and
after the feed-forward network), the bias terms BitFit trains, and whether the backbone takes a key/value
cache that prefix tuning can fill. It also needs the parameters the checkpoint lacks (a headless checkpoint's
classifier, DistilBERT's ``pre_classifier``, DeBERTa's ``pooler``): they start random, so they are trained
and saved with the adapter.

* **LoRA targets**: ``ClearConfig.lora_target_modules`` if set; else peft's own table for the model type
  (``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``: query/value for BERT, q_proj/v_proj for Llama);
  else every linear of each block's attention module except its output projection (DistilBERT's
  ``q_lin``/``k_lin``/``v_lin``, ModernBERT's fused ``Wqkv``).
* **Adapter places**: in each block, per direct child of the block (``attention``, ``self_attn``, ``mlp``,
  ``output`` ...), the last-registered linear whose output width is the model's hidden size: BERT's
  ``attention.output.dense`` and ``output.dense``, DistilBERT's ``out_lin`` and ``lin2``, Llama's
  ``o_proj`` and ``down_proj``, ModernBERT's ``attn.Wo`` and ``mlp.Wo``.
* **BitFit**: every ``Linear``/``LayerNorm`` with a bias inside the stack; none (Llama, ModernBERT) means
  BitFit cannot be used.
* **Prefix tuning**: encoders whose backbone ``forward`` takes a cache (``cache``/``past_key_values``: BERT,
  RoBERTa, ELECTRA). DistilBERT, DeBERTa-v2 and ModernBERT have no key/value cache to hold a prefix; on
  decoders the prefix would have to be gated inside each layer's causal mask, which this release does not do,
  so prefix tuning is refused there.

Everything here runs on a model built on the ``meta`` device too (no weights), which is how
:func:`method_support` answers for a model folder without loading it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterable

from torch import nn

from .routing import find_layer_stack, layer_index

METHODS = ("lora", "adapter", "prefix", "bitfit", "full")
HEAD_NAMES = ("classifier", "score")


class UnsupportedMethod(ValueError):
    """A PEFT method cannot run on this architecture; the message says why and which methods can.

    Attributes:
        method: the refused method.
        model_type: the architecture (``config.model_type``).
        supported: the methods that can run on it.
    """

    def __init__(self, method: str, model_type: str, reason: str, supported: Iterable[str]) -> None:
        self.method, self.model_type, self.supported = method, model_type, list(supported)
        super().__init__(f"method {method!r} cannot run on {model_type}: {reason}; "
                         f"methods that can: {', '.join(self.supported)}")


def _hidden_size(model: nn.Module) -> int:
    config = model.config
    for name in ("hidden_size", "dim", "d_model", "n_embd"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise TypeError(f"{type(model).__name__}'s config names no hidden size")


def is_decoder(model_type: str) -> bool:
    """Whether ``model_type`` is a decoder-only family (a causal LM and no masked LM in transformers' tables):
    its sequence classifier pools the last non-pad token and needs a pad token id."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _blocks(model: nn.Module) -> tuple[str, list[tuple[int, str, nn.Module]]]:
    stack_name, stack = find_layer_stack(model)
    return stack_name, [(i, f"{stack_name}.{i}", block) for i, block in enumerate(stack)]


def adapter_targets(model: nn.Module) -> list[tuple[str, nn.Linear, int]]:
    """The residual-stream output projections of each block: ``[(qualified name, linear, layer)]``.

    Per direct child of a block, the last-registered ``nn.Linear`` with ``out_features`` equal to the hidden
    size (see the module docstring); peft's LoRA wrappers are looked through (their ``base_layer``).
    """
    hidden = _hidden_size(model)
    stack_name, blocks = _blocks(model)
    found = []
    for layer, prefix, block in blocks:
        for child_name, child in block.named_children():
            last = None
            for name, module in child.named_modules(prefix=f"{prefix}.{child_name}"):
                if isinstance(module, nn.Linear) and module.out_features == hidden and ".lora_" not in name \
                        and not name.endswith(".base_layer"):
                    last = (name, module)
            if isinstance(child, nn.Linear) and child.out_features == hidden:
                last = (f"{prefix}.{child_name}", child)
            if last is not None:
                found.append((last[0], last[1], layer))
    return found


def _attention_child(block: nn.Module, outputs: set[str], prefix: str) -> tuple[str, nn.Module] | None:
    """The direct child of ``block`` that holds self-attention: the one whose name says so, or the first child
    holding an output projection."""
    children = [(n, c) for n, c in block.named_children() if any(isinstance(m, nn.Linear) for m in c.modules())]
    for name, child in children:  # ModernBERT's `attn_norm` has "attn" in its name but no linear
        if "attn" in name.lower() or "attention" in name.lower():
            return name, child
    for name, child in children:
        if any(o.startswith(f"{prefix}.{name}.") for o in outputs):
            return name, child
    return None


def lora_targets(model: nn.Module, configured: list[str] | None = None) -> list[str]:
    """The module names LoRA wraps (peft ``target_modules``): the qualified names of the blocks' linear layers
    that ``configured`` names match (so ``dense`` on BERT wraps the blocks' dense layers, not the pooler's),
    peft's table for the model type, or the attention input projections found in the blocks (module
    docstring)."""
    if configured:  # every block linear a name matches (as peft matches), by its qualified name: none outside
        from .config import block_module_names, matched_target_modules

        qualified = block_module_names(*_block_linears_of_stack(model))
        return list(dict.fromkeys(q for t in configured for q in matched_target_modules(t, qualified)))
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TABLE

    model_type = getattr(model.config, "model_type", "")
    if TABLE.get(model_type):
        return list(TABLE[model_type])
    outputs = {name for name, _, _ in adapter_targets(model)}
    names: list[str] = []
    _, blocks = _blocks(model)
    for _, prefix, block in blocks[:1]:
        found = _attention_child(block, outputs, prefix)
        if found is None:
            continue
        child_name, child = found
        for name, module in child.named_modules(prefix=f"{prefix}.{child_name}"):
            if isinstance(module, nn.Linear) and name not in outputs:
                names.append(name.rsplit(".", 1)[-1])
    return list(dict.fromkeys(names))


def block_linears(model: nn.Module) -> list[str]:
    """The linear layers (``nn.Linear``, GPT-2's ``Conv1D``) of the first block, named relative to it
    (``attention.self.query``, ``output.dense``): what ``lora_target_modules`` may name. peft's own LoRA
    sub-layers are looked through (a wrapped model gives the same names as an unwrapped one)."""
    from transformers.pytorch_utils import Conv1D

    _, blocks = _blocks(model)
    if not blocks:
        return []
    _, _, block = blocks[0]
    names = []
    for name, module in block.named_modules():
        if ".lora_" in f".{name}" or not isinstance(module, (nn.Linear, Conv1D)):
            continue
        names.append(name.removesuffix(".base_layer"))  # a peft-wrapped linear: its wrapper's name
    return list(dict.fromkeys(names))


def _block_linears_of_stack(model: nn.Module) -> tuple[list[str], str, int]:
    """``(block_linears(model), layer stack name, number of blocks)``: what the target-module matching of
    :mod:`clear_core.config` takes."""
    stack_name, blocks = _blocks(model)
    return block_linears(model), stack_name, len(blocks)


def lora_target_refusal(model: nn.Module, targets: list[str] | None) -> str | None:
    """Why ``lora_target_modules=targets`` cannot be used on ``model`` (some name matches no linear layer in
    its blocks, :func:`clear_core.config.unmatched_target_modules`), or None (``targets`` None, or all match)."""
    from .config import unmatched_target_modules

    if not targets:
        return None
    linears, stack_name, layers = _block_linears_of_stack(model)
    unmatched = unmatched_target_modules(targets, linears, stack_name, layers)
    if not unmatched:
        return None
    return (f"lora_target_modules {unmatched} match no linear layer in its blocks (CleaR gates LoRA only there; "
            f"a qualified name is {stack_name}.<0..{layers - 1}>.<name>); the linear layers of each block "
            f"are {linears}")


def bitfit_targets(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """Every biased ``Linear``/``LayerNorm`` inside the layer stack: ``[(name, module, layer)]``."""
    stack_name, _ = find_layer_stack(model)
    return [(name, module, layer_index(name, stack_name)) for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.LayerNorm)) and getattr(module, "bias", None) is not None
            and layer_index(name, stack_name) is not None]


def backbone_of(model: nn.Module) -> nn.Module:
    """The transformer inside a sequence classifier (``model.bert``, ``model.model`` ...)."""
    prefix = getattr(model, "base_model_prefix", "")
    return getattr(model, prefix, model) if prefix else model


def cache_argument(model: nn.Module) -> str | None:
    """The name of the backbone ``forward``'s key/value-cache argument (``cache`` in transformers 5,
    ``past_key_values`` earlier), or None if it takes none."""
    params = inspect.signature(backbone_of(model).forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def prefix_refusal(model: nn.Module) -> str | None:
    """Why prefix tuning cannot run on ``model``, or None if it can."""
    model_type = getattr(model.config, "model_type", type(model).__name__)
    if is_decoder(model_type):
        return ("prefix tuning is not supported on decoders, routed or plain (a routed prefix would have to be "
                "gated inside each layer's causal mask, which is not built)")
    if cache_argument(model) is None:
        return f"{type(backbone_of(model)).__name__} takes no key/value cache, so there is nowhere to put a prefix"
    if not any(type(m).__name__.endswith("SelfAttention") for m in backbone_of(model).modules()):
        return "no *SelfAttention module whose attention mask can gate the prefix"
    return None


def refusals(model: nn.Module, lora_target_modules: list[str] | None = None) -> dict[str, str]:
    """``{method: reason}`` for the methods that cannot run on ``model`` (a sequence classifier, possibly on
    the meta device); methods not named can."""
    out: dict[str, str] = {}
    try:
        find_layer_stack(model)
    except TypeError as exc:
        return {m: str(exc) for m in METHODS if m != "full"}
    target_refusal = lora_target_refusal(model, lora_target_modules)
    if target_refusal:
        out["lora"] = target_refusal
    elif not lora_targets(model, lora_target_modules):
        out["lora"] = "no linear layer found for LoRA in the attention of its blocks"
    if not adapter_targets(model):
        out["adapter"] = "no attention or feed-forward output projection found in its blocks"
    reason = prefix_refusal(model)
    if reason:
        out["prefix"] = reason
    if not bitfit_targets(model):
        out["bitfit"] = "its blocks have no bias terms, so BitFit has nothing to train"
    return out


def check_method(model: nn.Module, method: str, lora_target_modules: list[str] | None = None) -> None:
    """Raise :class:`UnsupportedMethod` if ``method`` cannot run on ``model``."""
    refused = refusals(model, lora_target_modules)
    if method in refused:
        model_type = getattr(model.config, "model_type", type(model).__name__)
        raise UnsupportedMethod(method, model_type, refused[method], [m for m in METHODS if m not in refused])


def untrained_modules(model: nn.Module, loading_info: dict[str, Any]) -> list[str]:
    """The modules whose parameters the checkpoint did not provide (missing or of a mismatched shape), as
    qualified module names: the top-level module (``classifier``, ``pre_classifier``, ``pooler``), or the
    backbone's direct child (``bert.pooler``) when the gap is inside the backbone. These are trained and saved
    with every PEFT method (peft ``modules_to_save`` for LoRA and prefix)."""
    keys = list(loading_info.get("missing_keys") or [])
    keys += [k[0] if isinstance(k, tuple) else k for k in loading_info.get("mismatched_keys") or []]
    prefix = getattr(model, "base_model_prefix", "")
    names = []
    for key in keys:
        parts = key.split(".")
        depth = 2 if parts[0] == prefix and len(parts) > 2 else 1
        names.append(".".join(parts[:depth]))
    tied = {n for n in names if n.split(".")[-1] in ("embeddings", "embed_tokens", "lm_head", "word_embeddings")}
    return sorted(set(names) - tied)


def describe(model: nn.Module, refused: dict[str, str] | None = None) -> dict[str, Any]:
    """What the catalogue shows of a model: ``architecture`` (model type), ``decoder``, ``layers``,
    ``hidden_size``, ``parameters`` (count), ``max_length`` (positions, or None when unbounded),
    ``methods`` (those that can run; ``refused``, :func:`refusals`, is computed when not given) and
    ``lora_modules`` (:func:`block_linears`: the names ``lora_target_modules`` may give) and ``layer_stack``
    (the block list's qualified name)."""
    refused = refusals(model) if refused is None else refused
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    _, stack = find_layer_stack(model)
    return {
        "architecture": getattr(config, "model_type", type(model).__name__),
        "decoder": is_decoder(getattr(config, "model_type", "")),
        "layers": len(stack),
        "hidden_size": _hidden_size(model),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "max_length": int(positions) if isinstance(positions, int) else None,
        "methods": [m for m in METHODS if m not in refused],
        "lora_modules": block_linears(model),
        "layer_stack": find_layer_stack(model)[0],
    }


def skeleton(model_dir: str | Path, num_labels: int = 2, *, gguf_file: str | None = None) -> nn.Module:
    """The sequence classifier of ``model_dir`` built from its config on the ``meta`` device: the structure
    without loading a weight (milliseconds, no memory).

    Raises:
        ValueError: the folder's config cannot be read or names no sequence-classification model.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(str(model_dir), num_labels=num_labels,
                                            **({"gguf_file": gguf_file} if gguf_file else {}))
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{str(model_dir)!r} holds no sequence-classification model: {exc}") from exc


def method_support(model_dir: str | Path, *, gguf_file: str | None = None) -> dict[str, Any]:
    """:func:`describe` of the model in ``model_dir`` plus ``refused`` ``{method: reason}``, from its structure
    alone (:func:`skeleton`)."""
    model = skeleton(model_dir, gguf_file=gguf_file)
    refused = refusals(model)
    return {**describe(model, refused), "refused": refused}


def main(argv: list[str] | None = None) -> int:
    """``python -m clear_core.architectures FOLDER [FOLDER ...]``: print ``{folder: method_support(folder)}``
    as JSON (``{"error": message}`` for a folder that holds no usable model). The service's model
    catalogue runs this in a subprocess, so that the API process never imports torch. Exit status: 0 every
    folder described, 1 some could not be, 2 no folder given (or ``--help``)."""
    import json
    import sys
    import warnings

    from .model import resolve_model

    folders = sys.argv[1:] if argv is None else argv
    if not folders or any(f in ("-h", "--help") for f in folders):
        print("usage: python -m clear_core.architectures FOLDER [FOLDER ...]: each model's architecture, size and "
              "supported methods as JSON", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    out: dict[str, Any] = {}
    for folder in folders:
        try:
            path, gguf_file = resolve_model(folder)
            out[folder] = method_support(path, gguf_file=gguf_file)
        except (ValueError, TypeError, OSError) as exc:
            out[folder] = {"error": str(exc)}
    print(json.dumps(out))
    return 1 if any("error" in entry for entry in out.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
