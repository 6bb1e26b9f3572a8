"""Saving and loading trained adapters.

LoRA and prefix adapters are written in stock ``peft`` format (``adapter_config.json`` +
``adapter_model.safetensors``, head included via ``modules_to_save``); for LoRA the
inference gate is folded into ``lora_B`` so stock peft gives our deterministic logits.
The bottleneck adapter and BitFit write ``adapter_model.safetensors`` with their own
parameter names; full fine-tuning writes a whole Hugging Face model. Every save also holds
``clear_config.json`` (method, CleaR settings, label map, base model) and ``label_map.json``
and the tokenizer, and ``README.md``, a model card (:mod:`clear_core.card`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .config import ClearConfig
from .model import ClearModel, _quiet_transformers

FORMAT_VERSION = 1
CONFIG_NAME = "clear_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def save_adapter(model: ClearModel, directory: str | Path, *, training: dict[str, Any] | None = None,
                 card: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s trained parameters and configuration to ``directory`` (created if missing), with a
    model card as ``README.md`` (:mod:`clear_core.card`; peft's empty template is replaced).

    Args:
        model: a trained :class:`ClearModel`.
        directory: output folder.
        training: optional ``TrainingConfig.to_dict()`` recorded for provenance.
        card: optional numbers for the card: ``report_summary`` (``NoiseReport.summary()``) and ``metrics``.

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    method = model.clear_config.method
    gate = model.clear_config.inference_gate
    folded = False
    if method in ("lora", "prefix"):
        folded = _save_peft(model, out, gate)
    elif method == "full":
        with _quiet_transformers():
            model.model.save_pretrained(out)
    else:
        state = {k: v.contiguous().cpu() for k, v in model.trainable_state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt", "method": method})
    model.tokenizer.save_pretrained(out)
    names = model.label_names
    (out / "label_map.json").write_text(
        json.dumps({"id2label": dict(enumerate(names)), "label2id": {n: k for k, n in enumerate(names)}}, indent=2)
    )
    meta = {
        "format_version": FORMAT_VERSION,
        "method": method,
        "clear": model.clear_config.to_dict(),
        "training": training,
        "label_names": names,
        "base_model": model.base_model,
        "max_length": model.max_length,
        "inference": model.clear_config.inference,
        "inference_gate": gate,
        "gate_folded_into_weights": folded,
    }
    (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    from .card import CARD_NAME, model_card

    config = getattr(model.model, "config", None)
    (out / CARD_NAME).write_text(model_card(meta, architecture=getattr(config, "model_type", None), **(card or {})),
                                 encoding="utf-8")
    return out


def _save_peft(model: ClearModel, out: Path, gate: float) -> bool:
    from .methods.lora import lora_b_weights

    peft_model = model.model
    weights = lora_b_weights(peft_model) if model.clear_config.method == "lora" and gate != 1.0 else []
    originals = [w.detach().clone() for w in weights]
    try:
        with torch.no_grad():
            for w in weights:
                w.mul_(gate)
        peft_model.save_pretrained(str(out))
    finally:
        with torch.no_grad():
            for w, orig in zip(weights, originals):
                w.copy_(orig)
    return bool(weights)


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``clear_config.json`` of a saved adapter.

    Raises:
        ValueError: if the folder has no ``clear_config.json`` or its format is newer than this library.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{str(directory)!r} is not a saved CleaR adapter: {CONFIG_NAME} is missing")
    meta = json.loads(path.read_text())
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"adapter format {meta['format_version']} is newer than this clear_core; upgrade it")
    return meta


def load_adapter(
    directory: str | Path, *, model_path: str | Path | None = None, device: str | torch.device | None = None
) -> ClearModel:
    """Rebuild a :class:`ClearModel` from :func:`save_adapter` output, in deterministic inference mode.

    Args:
        directory: the saved adapter folder.
        model_path: backbone directory; default: the ``base_model`` recorded in the save.
        device: where to put the model (default CPU).

    Raises:
        ValueError: if the folder is not an adapter, the backbone cannot be found, or the saved
            weights do not fit the rebuilt model (names the missing/unexpected keys).
    """
    from safetensors.torch import load_file

    src = Path(directory)
    meta = read_adapter_config(src)
    clear_cfg = ClearConfig.from_dict(meta["clear"])
    names = meta["label_names"]
    base = model_path if model_path is not None else meta["base_model"]
    if clear_cfg.method == "full":
        model = ClearModel.build(src, clear_cfg, names, meta.get("max_length", 128))
        model.base_model = str(base)
    elif clear_cfg.method in ("lora", "prefix"):
        model = ClearModel.build(base, clear_cfg, names, meta.get("max_length", 128), peft_dir=src)
    else:
        model = ClearModel.build(base, clear_cfg, names, meta.get("max_length", 128))
        state = load_file(str(src / WEIGHTS_NAME))
        result = model.model.load_state_dict(state, strict=False)
        missing = sorted(set(model.trainable_state_dict()) - set(state))
        if missing or result.unexpected_keys:
            raise ValueError(
                f"saved adapter does not fit the rebuilt model (missing {missing[:5]}, unexpected "
                f"{list(result.unexpected_keys)[:5]}): it was saved from another backbone"
            )
    model.gate_folded = bool(meta.get("gate_folded_into_weights", False))
    model.use_inference_gates()
    model.eval()
    if device is not None:
        model.to(device)
    return model
