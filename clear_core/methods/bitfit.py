"""BitFit (Ben Zaken et al., ACL 2022) as gated bias deltas: ``b = b0 + g(i, l) * delta_b``.

Every ``nn.Linear`` and ``nn.LayerNorm`` with a bias inside layer l gets a trainable delta
initialised at zero; the frozen bias b0 stays in place, so g = 0 reproduces the pretrained
layer exactly without running a frozen copy (REFERENCE_CODE.md B-list, Sec. 4). peft has no
BitFit tuner, hence our module.
"""

from __future__ import annotations

import torch
from torch import nn

from ..architectures import bitfit_targets
from ..config import ClearConfig
from ..routing import GateController


class BiasDelta(nn.Module):
    """A frozen module with a bias (Linear or LayerNorm) plus a gated trainable bias delta ``(D,)``.

    ``merged`` (set only by :func:`clear_core.merge.merged_deltas` for a no-grad pass): the delta has been
    added to ``base_layer.bias``, so ``forward`` returns the base output alone."""

    def __init__(self, base_layer: nn.Module, controller: GateController, layer: int) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.bias_delta = nn.Parameter(torch.zeros_like(base_layer.bias))
        self.controller = controller
        self.layer = layer
        self.merged = False  # set by clear_core.merge.merged_deltas: the delta is in base_layer.bias for a pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``base(x) + g * delta_b``; output ``(B, T, D)``."""
        out = self.base_layer(x)
        if self.merged:
            return out
        g = self.controller.gate(self.layer, out)
        if isinstance(g, float) and g == 0.0:
            return out
        return out + g * self.bias_delta


def attach_bitfit(model: nn.Module, cfg: ClearConfig, controller: GateController) -> nn.Module:
    """Wrap every biased Linear/LayerNorm of the layer stack with a gated bias delta, in place.

    Raises:
        ValueError: if the layer stack has no bias terms (BitFit cannot train such a model).
    """
    del cfg
    targets = bitfit_targets(model)
    if not targets:
        raise ValueError(
            f"{type(model).__name__} has no bias terms in its layers, so BitFit has nothing to train; "
            "choose method='lora' or 'adapter'"
        )
    for name, module, layer in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, BiasDelta(module, controller, layer))
    return model
