"""Training rows, label maps and tokenised batches.

Symbols: N rows, K classes, B batch rows, T tokens of the longest row in a batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .labels import held_out_per_class, label_order


@dataclass
class TextClassificationData:
    """Texts with their given (possibly wrong) labels.

    Args:
        texts: N non-empty strings.
        labels: N given labels (str or int; stored as str). These are the labels trained on.
        text_pairs: optional N second segments (sentence-pair tasks), non-empty strings.
        ids: optional N caller row ids, echoed in the noise report.
        gold_labels: optional N true labels, used only to *score* accuracy and noise detection,
            never for training.

    Raises:
        ValueError: on empty data, length mismatches, empty/non-string texts or missing labels;
            the message lists the first offending row indices.
    """

    texts: Sequence[str]
    labels: Sequence[Any]
    text_pairs: Sequence[str] | None = None
    ids: Sequence[Any] | None = None
    gold_labels: Sequence[Any] | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        if n == 0:
            raise ValueError("the dataset has no rows: give at least one text with its label")
        for name in ("labels", "text_pairs", "ids", "gold_labels"):
            column = getattr(self, name)
            if column is not None and len(column) != n:
                raise ValueError(f"{name} has {len(column)} entries but texts has {n}: give one per text")
        _check_texts("texts", self.texts)
        if self.text_pairs is not None:
            _check_texts("text_pairs", self.text_pairs)
        missing = [i for i, y in enumerate(self.labels) if y is None or (isinstance(y, str) and not y.strip())]
        if missing:
            raise ValueError(f"rows {missing[:10]} have no label: every row needs a label")
        self.labels = [_label_str(y) for y in self.labels]
        if self.gold_labels is not None:
            self.gold_labels = [_label_str(y) for y in self.gold_labels]

    def __len__(self) -> int:
        return len(self.texts)


def _label_str(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _check_texts(name: str, texts: Sequence[Any]) -> None:
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"{name} rows {bad[:10]} are empty or not strings: every row needs non-empty text")


def build_label_names(labels: Sequence[str], label_names: Sequence[Any] | None = None) -> list[str]:
    """The ordered class names: ``label_names`` if given, else the sorted distinct labels.

    Integer labels sort numerically ("2" before "10"), others by code point (:func:`clear_core.labels.label_order`,
    the service's order too).

    Returns:
        K class names; index k is logit column k.

    Raises:
        ValueError: if fewer than 2 classes, duplicate names, or a label outside ``label_names``.
    """
    if label_names is not None:
        names = [_label_str(x) for x in label_names]
        if len(set(names)) != len(names):
            raise ValueError(f"label_names {names} has duplicates: give each class once")
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise ValueError(f"labels {unknown[:10]} are not in label_names {names}: add them or fix the rows")
    else:
        names = label_order(labels)
    if len(names) < 2:
        raise ValueError(f"found {len(names)} class(es) {names}: classification needs at least 2 classes")
    return names


def encode_gold_labels(labels: Sequence[str], label_names: Sequence[str]) -> np.ndarray:
    """Map N true (gold) label strings to ``(N,)`` int64 class indices; a gold label outside
    ``label_names`` becomes K = ``len(label_names)``, a class no model output can be.

    Gold labels only score a run, and a dataset may know a true class that none of its given labels
    carries (a version whose reviewer dropped every row labelled with it, or gold labels from a
    richer annotation): such a row then counts as mislabelled and as wrongly predicted, which it is.
    """
    index = {name: k for k, name in enumerate(label_names)}
    return np.array([index.get(y, len(label_names)) for y in labels], dtype=np.int64)


def encode_labels(labels: Sequence[str], label_names: Sequence[str]) -> np.ndarray:
    """Map N label strings to ``(N,)`` int64 class indices.

    Raises:
        ValueError: naming the rows whose label is not in ``label_names``.
    """
    index = {name: k for k, name in enumerate(label_names)}
    bad = [i for i, y in enumerate(labels) if y not in index]
    if bad:
        raise ValueError(
            f"rows {bad[:10]} have labels {[labels[i] for i in bad[:10]]} not in the label map {list(label_names)}"
        )
    return np.array([index[y] for y in labels], dtype=np.int64)


def stratified_holdout(given: np.ndarray, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into training and held-out rows, stratified by given label.

    Each class holds out ``floor(fraction * n_k + 0.5)`` of its n_k rows, at most ``n_k // 2`` (so at
    least half, and at least one row, stay for training: no class vanishes from training); rows are
    drawn with ``seed``.

    Args:
        given: ``(N,)`` int given labels.
        fraction: in [0, 0.5]; 0 = no held-out rows.

    Returns:
        ``(train_idx, held_idx)``: sorted int64 index arrays that together cover 0..N-1.

    Raises:
        ValueError: if ``fraction`` is outside [0, 0.5].
    """
    if not 0.0 <= fraction <= 0.5:
        raise ValueError(f"validation_fraction={fraction!r} is out of range: give a value in [0, 0.5]")
    given = np.asarray(given)
    rng = np.random.default_rng(seed)
    held = []
    for k in np.unique(given):
        rows = rng.permutation(np.flatnonzero(given == k))
        take = held_out_per_class(len(rows), fraction)  # half up; never over half
        held.extend(rows[:take].tolist())
    mask = np.zeros(len(given), dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def subset(data: TextClassificationData, indices: Sequence[int]) -> TextClassificationData:
    """The rows ``indices`` of ``data`` (all columns)."""
    pick = (lambda column: None if column is None else [column[i] for i in indices])
    return TextClassificationData(texts=pick(data.texts), labels=pick(data.labels), text_pairs=pick(data.text_pairs),
                                  ids=pick(data.ids), gold_labels=pick(data.gold_labels))


# rows per tokenizer call: the call's own objects (Rust encodings, then Python lists) take about 10 KB a row
# of ~50 tokens, and the allocator keeps that high-water mark as slack: tokenising 300,000 rows left 30 MB
# beyond the arrays at 2,000 rows a call, 60 MB at 5,000, ~200 MB at 20,000, at the same speed
CHUNK_ROWS = 2_000


class TokenizedTexts:
    """Token ids of N rows, tokenised once in chunks, padded per batch (dynamic padding).

    The ids of all rows sit in one flat ``int32`` array with ``(N + 1,)`` int64 row offsets (row i is
    ``ids[offsets[i]:offsets[i + 1]]``), about 4 bytes a token instead of a Python list's ~36; token
    type ids, when the tokenizer gives any, likewise (``int8`` when they fit, and not stored at all when
    every one is 0, as for single texts).

    Args:
        tokenizer: a Hugging Face tokenizer.
        texts, text_pairs: as in :class:`TextClassificationData`.
        max_length: truncation length in tokens (>= 8).
        chunk_rows: rows per tokenizer call (>= 1); the result does not depend on it.

    Attributes:
        ids: ``(sum of lengths,)`` int32 token ids, row after row.
        offsets: ``(N + 1,)`` int64 start of each row in ``ids`` (and its end).
        lengths: ``(N,)`` int64 tokens per row.
        pad_id: the tokenizer's pad token id (0 when it has none).
        has_token_type_ids: whether the tokenizer gives token type ids (then ``batch`` returns them).

    Raises:
        ValueError: if ``chunk_rows`` < 1, or ``text_pairs`` has another length than ``texts``.
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str], text_pairs: Sequence[str] | None, max_length: int,
                 *, chunk_rows: int = CHUNK_ROWS):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows={chunk_rows!r}: give at least 1 row per tokenizer call")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"text_pairs has {len(text_pairs)} entries but texts has {len(texts)}: give one per text")
        n = len(texts)
        # one array grown in place (realloc) per column, not chunk arrays concatenated at the end: freed
        # chunk arrays would stay behind as heap slack about the size of the result
        ids, types = _Growable(np.int32), None
        self.lengths = np.zeros(n, dtype=np.int64)
        self.has_token_type_ids = False
        for start in range(0, n, chunk_rows):
            end = min(n, start + chunk_rows)
            enc = tokenizer(list(texts[start:end]), list(text_pairs[start:end]) if text_pairs is not None else None,
                            truncation=True, max_length=max_length, return_attention_mask=False)
            self.lengths[start:end] = np.fromiter(map(len, enc["input_ids"]), dtype=np.int64, count=end - start)
            total = int(self.lengths[start:end].sum())
            ids.append(_flat(enc["input_ids"], total, np.int32))
            if enc.get("token_type_ids") is not None:
                self.has_token_type_ids = True
                chunk = _flat(enc["token_type_ids"], total, np.int32)
                if types is None and chunk.any():  # the first non-zero type id: the rows before were all 0
                    types = _Growable(np.int8)
                    types.append(np.zeros(ids.size - total, dtype=np.int8))
                if types is not None:
                    types.append(chunk)
            del enc
        self.offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        self.ids = ids.finish()
        # all-zero type ids (single texts) are not stored: batch() gives the zeros
        self._type_ids = types.finish() if types is not None else None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def nbytes(self) -> int:
        """Bytes held by the token arrays (ids, offsets, lengths and stored type ids)."""
        stored = self._type_ids.nbytes if self._type_ids is not None else 0
        return int(self.ids.nbytes + self.offsets.nbytes + self.lengths.nbytes + stored)

    def batch(self, indices: Sequence[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Padded int64 tensors ``input_ids`` (pad = ``pad_id``), ``attention_mask`` (1 = token, 0 = pad) and,
        when the tokenizer gives them, ``token_type_ids`` (0 on pads), each ``(B, T)`` with T the longest of the
        B rows ``indices``; rows are right-padded, in the order given.

        Raises:
            ValueError: if ``indices`` is empty.
            IndexError: on an index outside [-N, N).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("batch() needs at least one row index")
        lengths, starts = self.lengths[idx], self.offsets[idx]
        width = int(lengths.max())
        mask = np.arange(width)[None, :] < lengths[:, None]
        source = (starts[:, None] + np.arange(width)[None, :])[mask]
        ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        ids[mask] = self.ids[source]
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}
        if self.has_token_type_ids:
            types = np.zeros((len(idx), width), dtype=np.int64)
            if self._type_ids is not None:
                types[mask] = self._type_ids[source]
            out["token_type_ids"] = torch.from_numpy(types)
        return {k: v.to(device) for k, v in out.items()}

    def length_sorted_batches(self, batch_size: int) -> list[np.ndarray]:
        """Index batches of rows sorted by length, for no-grad passes (less padding)."""
        order = np.argsort(self.lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _flat(rows: list[list[int]], total: int, dtype: type) -> np.ndarray:
    """The ``(total,)`` concatenation of a chunk's token lists as ``dtype``."""
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=total)


class _Growable:
    """A 1-D array appended to in place: its buffer grows by realloc (half again each time), so a large one is
    remapped rather than copied, and :meth:`finish` shrinks it to size. Values that do not fit the dtype
    widen it to int32."""

    def __init__(self, dtype: type) -> None:
        self.data, self.size = np.zeros(0, dtype=dtype), 0

    def append(self, values: np.ndarray) -> None:
        """Append ``values`` (1-D integers)."""
        limits = np.iinfo(self.data.dtype)
        if values.size and (values.min() < limits.min or values.max() > limits.max):
            self.data = self.data.astype(np.int32)
        need = self.size + values.size
        if need > self.data.size:
            self.data.resize(max(need, self.data.size * 3 // 2, 1 << 16), refcheck=False)
        self.data[self.size:need] = values
        self.size = need

    def finish(self) -> np.ndarray:
        """The appended values, ``(size,)``; the buffer is the result (no copy)."""
        self.data.resize(self.size, refcheck=False)
        return self.data
