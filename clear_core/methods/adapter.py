"""Bottleneck adapters (Houlsby et al., ICML 2019) after the attention-output and FFN-output projections.

Each adapted projection computes ``h = W x + b`` then ``h + g(i, l) * up(gelu(down(h)))``:
the adapter's residual branch is the PEFT delta and the gate multiplies only that branch,
so g = 0 returns the frozen projection exactly (CleaR, Kim et al. 2024). ``up`` starts at
zero, so an untrained adapter is the identity. peft has no such adapter, hence our module.
"""

from __future__ import annotations

import torch
from torch import nn

from ..architectures import adapter_targets
from ..config import ClearConfig
from ..routing import GateController


class BottleneckAdapter(nn.Module):
    """down (D -> m), GELU, up (m -> D); ``up`` zero-initialised. Input/output ``(B, T, D)``."""

    def __init__(self, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """The residual branch ``up(gelu(down(h)))``, same shape as ``h``."""
        return self.up(self.act(self.down(h)))


class AdaptedLinear(nn.Module):
    """A frozen ``nn.Linear`` followed by a gated bottleneck adapter on its output."""

    def __init__(self, base_layer: nn.Linear, bottleneck: int, controller: GateController, layer: int) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = BottleneckAdapter(base_layer.out_features, bottleneck)
        self.controller = controller
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``base(x) + g * adapter(base(x))`` with g of shape ``(B, 1, 1)`` or a constant."""
        h = self.base_layer(x)
        g = self.controller.gate(self.layer, h)
        if isinstance(g, float) and g == 0.0:
            return h
        return h + g * self.adapter(h)


def attach_adapter(model: nn.Module, cfg: ClearConfig, controller: GateController) -> nn.Module:
    """Insert a gated adapter after the attention and feed-forward output projections of every block
    (:func:`clear_core.architectures.adapter_targets`, found by role), in place.

    Raises:
        TypeError: if no output projection is found in the blocks.
    """
    targets = adapter_targets(model)
    if not targets:
        raise TypeError(f"no attention/FFN output projection found in {type(model).__name__}'s blocks for the adapter")
    for name, module, layer in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, AdaptedLinear(module, cfg.adapter_size, controller, layer))
    return model
