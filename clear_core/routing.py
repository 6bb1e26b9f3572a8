"""Per-sample, per-layer gates of CleaR and the layer stack they index.

The gates g(i, l) in {0, 1} (or a constant at inference) multiply only the PEFT delta of
layer l for row i (Kim et al., CleaR, ACL 2024, Sec. 3: g(i, l) ~ Bernoulli(c * p_clean(i))).
Routed modules hold a reference to one shared :class:`GateController` and read their
column of the current ``(B, L)`` gate matrix during the forward pass, so no frozen copy of
a layer is ever run. Symbols: B batch rows, L routed layers, c the routing cap.
"""

from __future__ import annotations

import re

import torch
from torch import nn


class GateController:
    """Holds the gates of the batch being run: a ``(B, L)`` tensor or one constant.

    Args:
        num_layers: L >= 1, the number of layers in the stack (``find_layer_stack``).

    The controller is not an ``nn.Module``: it carries no parameters and is never saved.
    """

    def __init__(self, num_layers: int) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers!r} must be >= 1")
        self.num_layers = num_layers
        self._gates: torch.Tensor | None = None
        self._constant: float = 1.0
        self.head_gates: torch.Tensor | None = None

    def set_gates(self, gates: torch.Tensor) -> None:
        """Route the next forward passes with ``gates`` of shape ``(B, L)``, values in [0, 1].

        Raises:
            ValueError: if the second dimension is not L.
        """
        if gates.dim() != 2 or gates.shape[1] != self.num_layers:
            raise ValueError(f"gates must have shape (B, {self.num_layers}), got {tuple(gates.shape)}")
        self._gates = gates

    def set_constant(self, value: float) -> None:
        """Use one gate ``value`` in [0, 1] for every row and layer (deterministic inference)."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"gate value {value!r} is out of range: give a value in [0, 1]")
        self._gates = None
        self._constant = float(value)
        self.head_gates = None

    @property
    def constant(self) -> float | None:
        """The constant gate, or None while a per-row gate matrix is set."""
        return None if self._gates is not None else self._constant

    def gate(self, layer: int, like: torch.Tensor) -> torch.Tensor | float:
        """Gate of ``layer`` shaped to broadcast over ``like`` (``(B, ...)``): ``(B, 1, ..., 1)`` or a float."""
        if self._gates is None:
            return self._constant
        g = self._gates[:, layer].to(dtype=like.dtype, device=like.device)
        if g.shape[0] != like.shape[0]:
            if like.shape[0] != 1:
                raise ValueError(f"gate batch {g.shape[0]} does not match activation batch {like.shape[0]}")
            # A computation shared by every row of the batch (DeBERTa runs its query/key projections once on
            # the relative position embeddings, shape (1, 2k, D)): it cannot be switched per row, so it is on
            # when any row of the batch is on. All rows off is still exactly the frozen backbone, all on the
            # full PEFT model, and a one-row batch is routed exactly.
            g = g.max().reshape(1)
        return g.view(-1, *([1] * (like.dim() - 1)))

    def row_gates(self, layer: int) -> torch.Tensor | None:
        """The ``(B,)`` gate column of ``layer``, or None when a constant is in use."""
        return None if self._gates is None else self._gates[:, layer]


def sample_gates(
    p_clean: torch.Tensor, *, routing_cap: float, num_layers: int, generator: torch.Generator
) -> torch.Tensor:
    """Draw g(i, l) ~ Bernoulli(routing_cap * p_clean(i)) independently per row and layer.

    Args:
        p_clean: ``(B,)`` clean probabilities in [0, 1] (all ones during warm-up).
        routing_cap: c in (0, 1].
        num_layers: L.
        generator: CPU generator, so that a resumed run draws the same gates.

    Returns:
        ``(B, L)`` float tensor of 0/1 on the CPU (CleaR, Kim et al. 2024, Sec. 3).
    """
    probs = (routing_cap * p_clean.float().cpu().clamp(0.0, 1.0)).unsqueeze(1).expand(-1, num_layers)
    return torch.bernoulli(probs, generator=generator)


class Router:
    """Turns p_clean into the gates of one batch (CleaR, Kim et al. 2024, Sec. 3): the gate policy in one place.

    Args:
        controller: the model's :class:`GateController`.
        routing_cap: c in (0, 1].
        routed: False = plain PEFT (every gate 1).
        route_head: also gate the head's updates per row.
        generator: CPU generator of the draws (saved with checkpoints for exact resume).
    """

    def __init__(self, controller: GateController, *, routing_cap: float, routed: bool, route_head: bool,
                 generator: torch.Generator) -> None:
        self.controller, self.cap, self.routed, self.route_head = controller, routing_cap, routed, route_head
        self.generator = generator

    def route(self, p_clean: torch.Tensor | None, batch_rows: int, device: torch.device) -> None:
        """Set the gates of a batch of ``batch_rows`` rows: ``p_clean`` ``(B,)`` after warm-up, None during it."""
        if not self.routed:
            self.controller.set_constant(1.0)
            return
        p = p_clean if p_clean is not None else torch.ones(batch_rows)
        gates = sample_gates(p, routing_cap=self.cap, num_layers=self.controller.num_layers, generator=self.generator)
        self.controller.set_gates(gates.to(device))
        if self.route_head and p_clean is not None:
            head = sample_gates(p, routing_cap=self.cap, num_layers=1, generator=self.generator)
            self.controller.head_gates = head[:, 0].to(device)


def find_layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Find the transformer block list of ``model``: the longest ``nn.ModuleList`` of same-class blocks.

    Works for any encoder whose blocks sit in one ModuleList (BERT's ``encoder.layer``,
    DistilBERT's ``transformer.layer``, RoBERTa, DeBERTa ...), without naming the model type.

    Returns:
        ``(qualified_name, module_list)``.

    Raises:
        TypeError: if the model has no ModuleList of at least one parametrised block.
    """
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        # a block whose class clear_core.pooled swapped for its pooled-row subclass counts as its original class
        classes = {getattr(type(child), "_pooled_original", type(child)) for child in module}
        has_params = any(True for _ in module[0].parameters())
        if len(classes) == 1 and has_params and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        raise TypeError(
            f"{type(model).__name__} has no list of transformer layers (nn.ModuleList) to route; "
            "use a transformer encoder such as BERT, RoBERTa or DistilBERT"
        )
    return best


def layer_index(module_name: str, stack_name: str) -> int | None:
    """Index l of the block holding ``module_name`` inside the stack ``stack_name``, or None outside it."""
    match = re.search(re.escape(stack_name) + r"\.(\d+)(\.|$)", module_name)
    return int(match.group(1)) if match else None
