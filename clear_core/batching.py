"""Batch orders of the training loop and the reusable batches of the no-grad passes.

Symbols: N rows, B batch rows, T tokens of the longest row of a batch, M batches per bucket.

Training batches are padded to their longest row, so random batches of a realistic length mix carry
about 1.5x the real tokens (issue 13). :func:`bucketed_batches` draws them the way
``transformers``' ``LengthGroupedSampler`` does (its "megabatches" of 50 batches): shuffle the rows, cut
the permutation into buckets of ``M * B`` rows, sort each bucket by length, cut it into batches and shuffle
the batches. Every row is seen once per epoch, a batch's rows are of similar length, and which rows share a
batch changes every epoch. The order is a pure function of (lengths, B, seed), so a resumed run that knows
its epoch and step draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

BUCKET_BATCHES = 50  # M: as transformers' LengthGroupedSampler (megabatch_mult = 50)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s batch order (the trainer's historical formula ``seed * 100003 + epoch``)."""
    return seed * 100003 + epoch


def random_batches(num_rows: int, batch_size: int, *, seed: int) -> list[np.ndarray]:
    """ceil(N / B) batches of a uniformly random permutation (``torch.randperm`` seeded with ``seed``), the
    last one possibly short: the order of runs with ``length_bucketing`` off.

    Returns:
        Index arrays (int64) into 0..N-1.

    Raises:
        ValueError: ``num_rows < 1`` or ``batch_size < 1``.
    """
    _check(num_rows, batch_size)
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed)).numpy()
    return [order[i:i + batch_size] for i in range(0, num_rows, batch_size)]


def bucketed_batches(lengths: np.ndarray, batch_size: int, *, seed: int,
                     bucket_batches: int = BUCKET_BATCHES) -> list[np.ndarray]:
    """ceil(N / B) length-grouped batches, shuffled within and across buckets (see the module docstring).

    Args:
        lengths: ``(N,)`` token counts of the rows.
        batch_size: B >= 1.
        seed: seed of this epoch's order (:func:`epoch_seed`).
        bucket_batches: M >= 1 batches per bucket; 1 = random batches sorted internally (no gain), large =
            nearly deterministic batch membership.

    Returns:
        Index arrays (int64) into 0..N-1; every batch has B rows except at most one (the last bucket's last).

    Raises:
        ValueError: no rows, ``batch_size < 1`` or ``bucket_batches < 1``.
    """
    lengths = np.asarray(lengths)
    _check(len(lengths), batch_size)
    if bucket_batches < 1:
        raise ValueError(f"bucket_batches={bucket_batches!r} must be >= 1")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(lengths))
    span = batch_size * bucket_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), span):
        bucket = perm[start:start + span]
        bucket = bucket[np.argsort(lengths[bucket], kind="stable")]
        batches.extend(bucket[i:i + batch_size] for i in range(0, len(bucket), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def padded_tokens(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    """Tokens the batches carry once padded to their longest row: sum over batches of ``B_b * T_b``."""
    lengths = np.asarray(lengths)
    return int(sum(len(b) * int(lengths[b].max()) for b in batches if len(b)))


def _check(num_rows: int, batch_size: int) -> None:
    if num_rows < 1:
        raise ValueError("there are no rows to batch: give at least one row")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")


class PassBatches:
    """The length-sorted, padded batches of a no-grad pass over fixed rows, built once and reused.

    A routed run passes over the same rows every epoch; padding them (a Python loop per row) once and keeping
    the tensors saves that work on every later pass. The tensors are kept on the CPU as int32 (half of int64)
    while their padded size is at most ``max_cached_tokens``; past it (a million rows) each pass rebuilds its
    batches on the fly, holding one batch at a time.

    Args:
        tokens: a :class:`clear_core.data.TokenizedTexts` (or anything with ``len``, ``lengths``,
            ``length_sorted_batches(B)`` and ``batch(idx)``).
        batch_size: rows per pass batch, >= 1.
        max_cached_tokens: most padded tokens kept (0 = never keep).

    Raises:
        ValueError: ``batch_size < 1`` or ``max_cached_tokens < 0``.
    """

    def __init__(self, tokens: Any, batch_size: int, *, max_cached_tokens: int = 8_000_000) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        if max_cached_tokens < 0:
            raise ValueError(f"max_cached_tokens={max_cached_tokens!r} must be >= 0")
        self.tokens = tokens
        self.batch_size = batch_size
        self.index = tokens.length_sorted_batches(batch_size)
        self.padded_tokens = padded_tokens(tokens.lengths, self.index)
        self.cached = 0 < self.padded_tokens <= max_cached_tokens
        self._cache: list[dict[str, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """Yield ``(idx, batch)``: the rows' indices ``(B,)`` and int64 CPU tensors ``(B, T)``."""
        if not self.cached:
            for idx in self.index:
                yield idx, self.tokens.batch(idx)
            return
        if self._cache is None:
            self._cache = [{k: v.to(torch.int32) for k, v in self.tokens.batch(idx).items()} for idx in self.index]
        for idx, batch in zip(self.index, self._cache):
            yield idx, {k: v.long() for k, v in batch.items()}
