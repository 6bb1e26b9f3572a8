"""A dynamic int8 copy of a model for the routing pass on a CPU without native bf16.

The pass before a routed epoch only feeds per-row losses to the noise estimator's Gaussian mixture
(p_clean); on a CPU without AMX / AVX512-BF16 it runs in fp32 and costs a third of an epoch of steps.
PyTorch's dynamic quantisation (``torch.ao.quantization.quantize_dynamic``; Jacob et al., "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, for the affine
scheme) stores each ``nn.Linear`` weight as int8 with one scale per tensor, quantises each batch's
activations on the fly, and runs the products with the x86 / fbgemm int8 kernels: 2.7-3x faster than fp32
on the demo's pass on an AVX2 CPU (``bench/cost.py --suite training``, BENCHMARKS.md section 8.2), logits of
all-MiniLM-L6-v2 within a few hundredths.

Only the routing pass uses it (``TrainingConfig.pass_precision``): evaluation, held-out rows, the final
pass behind the noise report and the saved adapter are never quantised. The copy is made per pass from the
current (merged) weights and dropped after it; the model itself is not touched.

``quantize_dynamic`` is deprecated upstream (in favour of torchao, whose int8 CPU path was not faster here);
where it is missing or fails, :func:`int8_copy` returns None and the pass runs in full precision.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import nn

logger = logging.getLogger(__name__)
_warned: list[bool] = []


def available() -> bool:
    """Whether this PyTorch can make the int8 copy on the CPU (``quantize_dynamic`` and an x86 / fbgemm engine)."""
    quantize = getattr(getattr(getattr(torch, "ao", None), "quantization", None), "quantize_dynamic", None)
    return quantize is not None and bool({"x86", "fbgemm"} & set(torch.backends.quantized.supported_engines))


def int8_copy(model: nn.Module) -> nn.Module | None:
    """A deep copy of ``model`` in eval mode whose ``nn.Linear`` layers are dynamic int8, for a no-grad CPU pass;
    None (logged once) where PyTorch has no dynamic quantisation or no int8 CPU engine. Call it inside
    ``clear_core.merge.merged_deltas`` so the copy carries the merged deltas.

    Memory: about a quarter of the Linear weights plus every other parameter, for as long as the copy lives.
    """
    if not available():
        _warn_once("this PyTorch has no dynamic int8 quantisation on the CPU: the routing pass runs in full precision")
        return None
    quantize = torch.ao.quantization.quantize_dynamic
    qconfig = torch.ao.quantization.default_dynamic_qconfig
    # every plain Linear but a LoRA branch's (peft reads lora_A.weight.dtype; merged, the branch is not run at all)
    spec = {name: qconfig for name, module in model.named_modules()
            if type(module) is nn.Linear and ".lora_" not in f".{name}"}
    try:
        with warnings.catch_warnings():  # the deprecation notices of torch.ao.quantization, once per pass
            warnings.simplefilter("ignore")
            return quantize(copy.deepcopy(model), spec, dtype=torch.qint8).eval()
    except (RuntimeError, NotImplementedError, TypeError, AttributeError) as exc:
        fallback(exc)
        return None


def fallback(exc: BaseException) -> None:
    """Log (once per process) that the int8 copy could not be made or run, so the pass ran in full precision."""
    _warn_once(f"the int8 routing pass failed ({type(exc).__name__}: {exc}): it runs in full precision")


def _warn_once(message: str) -> None:
    if not _warned:
        _warned.append(True)
        logger.warning(message)
