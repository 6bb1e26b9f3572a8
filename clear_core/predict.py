"""Batch prediction with a trained (or reloaded) model: class probabilities for N texts.

Symbols: N rows, K classes, B batch rows. The model runs in deterministic inference mode (dropout off,
inference gates, see :meth:`ClearModel.logits_for`); on CUDA the forward passes run under bf16 autocast,
the softmax is taken in float64 on the float32 logits, so every row sums to 1 within 1e-6.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .data import TokenizedTexts
from .model import ClearModel
from .noise import softmax


def predict_proba(model: ClearModel, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                  batch_size: int = 64, max_length: int | None = None, autocast: bool | None = None) -> np.ndarray:
    """Class probabilities ``(N, K)`` float32 for N texts, in the order given; column k is
    ``model.label_names[k]``; each row is in [0, 1] and sums to 1.

    Args:
        model: a :class:`ClearModel`, e.g. from :func:`clear_core.load_adapter` (moved to its device first).
        texts: N non-empty strings.
        text_pairs: optional N second segments (sentence-pair models), or None.
        batch_size: rows per forward pass (B >= 1); rows are sorted by length inside, so padding stays small.
        max_length: truncation length in tokens (default: the model's ``max_length``).
        autocast: bf16 autocast on; default: when the model is on a CUDA device.

    Raises:
        ValueError: no texts, a text or text pair that is empty or not a string, ``text_pairs`` of another
            length than ``texts``, or ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be at least 1")
    if len(texts) == 0:
        raise ValueError("no texts to predict: give at least one")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(f"text_pairs has {len(text_pairs)} entries but texts has {len(texts)}: give one per text")
    for name, column in (("texts", texts), ("text_pairs", text_pairs)):
        bad = [] if column is None else [i for i, t in enumerate(column) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"{name} rows {bad[:10]} are empty or not strings: every row needs non-empty text")
    use_autocast = model.device.type == "cuda" if autocast is None else bool(autocast)
    tokens = TokenizedTexts(model.tokenizer, texts, text_pairs, max_length or model.max_length)
    with torch.inference_mode():
        logits = model.logits_for(tokens, batch_size=batch_size, autocast=use_autocast)
    return softmax(logits.astype(np.float64)).astype(np.float32)
