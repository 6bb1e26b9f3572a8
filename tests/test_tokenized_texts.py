"""``TokenizedTexts`` (flat int32 ids with offsets, tokenised in chunks) gives exactly the padded batches of the
list-based version it replaced, on random rows with and without text pairs, for any chunk size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clear_core.data import TokenizedTexts
from clear_core.testing import _tiny_tokenizer

from .conftest import TOPIC_WORDS


def _list_batch(tokenizer, texts, pairs, max_length, indices):
    """The list-based ``TokenizedTexts.batch`` of before (the reference): one tokenizer call, Python lists."""
    enc = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True,
                    max_length=max_length, return_attention_mask=False)
    rows = [enc["input_ids"][i] for i in indices]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[j, : len(r)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if enc.get("token_type_ids") is not None:
        tt = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(indices):
            tt[j, : len(enc["token_type_ids"][i])] = torch.tensor(enc["token_type_ids"][i], dtype=torch.long)
        out["token_type_ids"] = tt
    return out, np.array([len(x) for x in enc["input_ids"]])


def _random_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = [w for ws in TOPIC_WORDS.values() for w in ws] + ["zqx", "ünïcode", "42"]
    return [" ".join(rng.choice(words, int(rng.integers(1, 30)))) for _ in range(n)]


def _tokenizer(kind: str):
    """The tiny WordPiece tokenizer: ``pad`` (no type ids), ``no_pad`` (as decoders ship) or ``types`` (with
    token type ids, as BERT's own tokenizer)."""
    from transformers import PreTrainedTokenizerFast

    corpus = [" ".join(words) for words in TOPIC_WORDS.values()] * 4
    tok = _tiny_tokenizer(corpus, 200, pad=kind != "no_pad")
    if kind == "types":
        tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, pad_token="[PAD]",
                                      model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    return tok


@pytest.fixture(scope="module", params=["pad", "no_pad", "types"])
def tokenizer(request):
    return _tokenizer(request.param)


@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 10_000])
def test_batches_equal_the_list_based_ones(tokenizer, pairs, chunk_rows):
    texts = _random_texts(83, seed=1)
    text_pairs = _random_texts(83, seed=2) if pairs else None
    tokens = TokenizedTexts(tokenizer, texts, text_pairs, 24, chunk_rows=chunk_rows)
    rng = np.random.default_rng(3)
    batches = [rng.permutation(83)[:16], np.arange(83), [5], list(range(80, 83)) + [0, 0], range(7, 20)]
    for indices in batches:
        expected, lengths = _list_batch(tokenizer, texts, text_pairs, 24, list(indices))
        got = tokens.batch(indices)
        assert set(got) == set(expected)
        for key in expected:
            assert got[key].dtype == torch.long and torch.equal(got[key], expected[key]), key
    assert len(tokens) == 83 and np.array_equal(tokens.lengths, lengths) and tokens.pad_id == (
        tokenizer.pad_token_id or 0)
    assert lengths.max() == 24 and lengths.min() < 24  # truncation and padding both exercised
    assert tokens.ids.dtype == np.int32 and tokens.offsets.dtype == np.int64
    assert tokens.offsets[-1] == tokens.ids.size == lengths.sum()
    sorted_batches = tokens.length_sorted_batches(10)
    assert np.array_equal(np.concatenate(sorted_batches), np.argsort(lengths, kind="stable"))
    assert [len(b) for b in sorted_batches] == [10] * 8 + [3]


def test_text_pairs_keep_their_token_types_and_single_texts_store_none():
    tokenizer = _tokenizer("types")
    texts = _random_texts(30, seed=4)
    paired = TokenizedTexts(tokenizer, texts, _random_texts(30, seed=5), 32, chunk_rows=8)
    single = TokenizedTexts(tokenizer, texts, None, 32, chunk_rows=8)
    assert paired.batch(range(30))["token_type_ids"].max() == 1  # the second segment is type 1
    assert single.has_token_type_ids and single.batch(range(30))["token_type_ids"].abs().sum() == 0
    assert single.nbytes < paired.nbytes  # all-zero type ids are not stored


def test_bad_calls_are_refused(tokenizer):
    tokens = TokenizedTexts(tokenizer, ["market bank"], None, 16)
    with pytest.raises(ValueError, match="at least one row"):
        tokens.batch([])
    with pytest.raises(ValueError, match="chunk_rows"):
        TokenizedTexts(tokenizer, ["a"], None, 16, chunk_rows=0)
    with pytest.raises(ValueError, match="text_pairs has 2"):
        TokenizedTexts(tokenizer, ["a"], ["b", "c"], 16)
    with pytest.raises(IndexError):
        tokens.batch([1])


class _TypedTokenizer:
    """A stand-in tokenizer: row i is ids ``[i + 1] * (i % 5 + 1)``; type ids 0 for rows < 10, then ``i % 3``,
    and 300 for row 17 (wider than int8)."""

    pad_token_id = 0

    def __call__(self, texts, pairs, **_):
        rows = [int(t) for t in texts]
        ids = [[i + 1] * (i % 5 + 1) for i in rows]
        types = [[0 if i < 10 else (300 if i == 17 else i % 3)] * len(r) for i, r in zip(rows, ids)]
        return {"input_ids": ids, "token_type_ids": types}


def test_type_ids_that_start_late_or_do_not_fit_int8_are_kept_exactly():
    texts = [str(i) for i in range(23)]
    tokens = TokenizedTexts(_TypedTokenizer(), texts, None, 16, chunk_rows=4)
    got = tokens.batch(range(23))
    for i in range(23):
        width = i % 5 + 1
        assert got["input_ids"][i, :width].tolist() == [i + 1] * width and got["attention_mask"][i].sum() == width
        expected = 0 if i < 10 else (300 if i == 17 else i % 3)
        assert got["token_type_ids"][i, :width].tolist() == [expected] * width, i
        assert got["token_type_ids"][i, width:].abs().sum() == 0
