"""The last block of a [CLS]-pooled encoder classifier computes only the pooled token's row.

A sequence classifier of the BERT family reads the last block's output at token 0 only: BERT's pooler
(``hidden_states[:, 0]``), the RoBERTa / XLM-RoBERTa / ELECTRA classification heads (``features[:, 0, :]``).
In the last block every other row of the queries, the attention output, the residual, the layer norms and
the feed-forward network is computed and then thrown away: about (T - 1) / T of that block's work, a sixth
of a 6-layer model's forward and backward at any length. :func:`pool_last_layer` makes the last block compute
the query of token 0 only, attend over the keys and values of every token (so token 0 sees the whole row,
as before), and run the attention output, residual, layer norms and feed-forward network on that one row;
the block returns ``(B, 1, H)``, which the pooler or head reads as before.

The logits are those of the full block (the same operations on the same numbers, up to float rounding:
measured 6e-8 on MiniLM), and so are the gradients of every trained parameter, since the discarded rows
had no path to the loss. With attention dropout in training the dropout mask is drawn for one query row
instead of T, so a seeded run draws different masks than with the full block (not different in
distribution). PEFT methods are unaffected: LoRA on the query sees one row, on the key and value every
row; the adapters and BitFit deltas of the block act on the row that is kept; the routing gates broadcast
over any length.

The block falls back to its own full ``forward`` on a call this module does not cover: a key/value cache
(prefix tuning's prefix, decoding), cross-attention inputs, a model that asks for attention weights, or an
attention implementation other than ``eager`` and ``sdpa`` (flash attention's masks are per token).
Other architectures (DistilBERT, DeBERTa-v2's relative attention, ModernBERT's mean pooling, decoders that
pool the last real token) are left as they are (:func:`pool_last_layer` returns False).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from .routing import find_layer_stack

# Classifiers whose head reads only token 0 of the last hidden state (checked in transformers 5's sources).
CLS_POOLED_CLASSIFIERS = frozenset({
    "BertForSequenceClassification", "RobertaForSequenceClassification", "XLMRobertaForSequenceClassification",
    "ElectraForSequenceClassification", "CamembertForSequenceClassification",
})
_POOLED_CLASSES: dict[type, type] = {}


def _bert_block(layer: nn.Module) -> bool:
    """Whether ``layer`` has the BERT block's structure this module's forward relies on."""
    attention = getattr(layer, "attention", None)
    inner = getattr(attention, "self", None)
    return (inner is not None and all(hasattr(inner, a) for a in ("query", "key", "value", "attention_head_size",
                                                                  "scaling", "config", "dropout"))
            and hasattr(attention, "output") and callable(getattr(layer, "feed_forward_chunk", None))
            and not getattr(layer, "is_decoder", False) and not getattr(layer, "add_cross_attention", False)
            and not getattr(inner, "is_causal", False))


def pooled_row_forward(layer: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
                       **kwargs: Any) -> torch.Tensor:
    """The BERT block ``layer`` on ``hidden_states`` ``(B, T, H)``, computed for token 0 only: ``(B, 1, H)``.

    ``attention_mask``: None, or an additive / boolean mask ``(B, 1, T, T)`` (or ``(B, 1, 1, T)``) as the
    encoder builds it for its attention implementation; its first query row is used.
    """
    attn = layer.attention.self
    batch, length, _ = hidden_states.shape
    first = hidden_states[:, :1]
    size = attn.attention_head_size
    query = attn.query(first).view(batch, 1, -1, size).transpose(1, 2)  # (B, heads, 1, size)
    key = attn.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)  # (B, heads, T, size)
    value = attn.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1, :].contiguous()  # (B, 1, 1, T): CUDA kernels want it dense
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = getattr(sys.modules[type(attn).__module__], "eager_attention_forward")
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager)
    out, _ = interface(attn, query, key, value, attention_mask,
                       dropout=0.0 if not attn.training else attn.dropout.p, scaling=attn.scaling, **kwargs)
    out = out.reshape(batch, 1, -1).contiguous()
    return layer.feed_forward_chunk(layer.attention.output(out, first))


def _masks_by_query(layer: nn.Module) -> bool:
    """Whether the block's attention takes a ``(B, 1, T_q, T_k)`` mask whose first query row can be cut out
    (``eager``, ``sdpa``); flash-attention's padding masks are per token and would be misread."""
    return getattr(layer.attention.self.config, "_attn_implementation", "eager") in ("eager", "sdpa")


def _pooled_class(cls: type) -> type:
    """A subclass of the block class ``cls`` whose ``forward`` is :func:`pooled_row_forward` where it applies
    (made once per class; the module's parameters, names and state dict are unchanged)."""
    if cls not in _POOLED_CLASSES:
        def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None,
                    encoder_attention_mask=None, cache=None, **kwargs):
            if (cache is not None or kwargs.get("past_key_values") is not None or encoder_hidden_states is not None
                    or kwargs.get("output_attentions") or not _masks_by_query(self)):
                return cls.forward(self, hidden_states, attention_mask, encoder_hidden_states,
                                   encoder_attention_mask, cache=cache, **kwargs)
            return pooled_row_forward(self, hidden_states, attention_mask, **kwargs)

        _POOLED_CLASSES[cls] = type(f"PooledRow{cls.__name__}", (cls,), {
            "forward": forward, "_pooled_original": cls,
            "__doc__": f"{cls.__name__} computing only token 0 (clear_core.pooled)."})
    return _POOLED_CLASSES[cls]


def pool_last_layer(model: nn.Module) -> bool:
    """Make the last block of ``model`` (a Hugging Face sequence classifier, before or after peft wraps it)
    compute only the pooled token's row (module docstring). Idempotent.

    Returns:
        True if the model is a [CLS]-pooled classifier of ``CLS_POOLED_CLASSIFIERS`` with a BERT block (now
        or already pooled); False, the model untouched, otherwise.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if type(inner).__name__ not in CLS_POOLED_CLASSIFIERS:
        return False
    try:
        _, stack = find_layer_stack(inner)
    except TypeError:
        return False
    last = stack[-1]
    if hasattr(type(last), "_pooled_original"):  # pooled already
        return True
    if not _bert_block(last):
        return False
    last.__class__ = _pooled_class(type(last))
    return True


def unpool_last_layer(model: nn.Module) -> None:
    """Undo :func:`pool_last_layer` (the last block computes every row again); a no-op on any other model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        _, stack = find_layer_stack(inner)
    except TypeError:
        return
    original = getattr(type(stack[-1]), "_pooled_original", None)
    if original is not None:
        stack[-1].__class__ = original
