"""Tiny, offline models for tests and smoke runs: a config-built BERT and a tokenizer trained locally.

Nothing here downloads anything; the model is random (seeded) and small enough (hidden 32,
2 layers, a few thousand word pieces) that a training step takes milliseconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

_DEFAULT_CORPUS = (
    "the market rose as stocks and shares gained in early trading",
    "the team won the match with a late goal in the final minute",
    "scientists released new software for faster computer chips",
    "the president met foreign leaders to discuss the peace talks",
    "oil prices fell while the bank cut interest rates",
    "the coach praised the players after the championship game",
    "a new space telescope sent images of a distant galaxy",
    "election results were announced by the government today",
)


def _tiny_tokenizer(texts: list[str], vocab_size: int, *, pad: bool = True):
    """A deterministic WordPiece ``PreTrainedTokenizerFast`` over ``texts`` (BERT-style specials; without the
    pad token when ``pad`` is False, as many decoder tokenizers ship)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # A deterministic WordPiece vocabulary: tokenizers' trainer breaks ties between merges of
    # equal frequency differently from run to run, which made seeded results machine-dependent.
    # Here: the most frequent whole words (ties by spelling), then every character alone and as a
    # "##" continuation, so any text tokenizes without [UNK] for known characters.
    counts: dict[str, int] = {}
    for text in texts:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            counts[word] = counts.get(word, 0) + 1
    chars = sorted({c for word in counts for c in word})
    pieces = chars + [f"##{c}" for c in chars]
    room = max(0, vocab_size - len(specials) - len(pieces))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in pieces][:room]
    vocab = specials + pieces + words
    tok.model = models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    specials_kw = dict(unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    if pad:
        specials_kw["pad_token"] = "[PAD]"
    else:
        specials_kw["eos_token"] = "[SEP]"  # what a decoder's tokenizer has instead of a pad token
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **specials_kw)


def build_tiny_model(
    directory: str | Path,
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 600,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_labels: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tiny random BERT (``BertForSequenceClassification``) plus its tokenizer to ``directory``.

    Args:
        directory: Target folder; created if missing. Loadable afterwards with
            ``AutoModelForSequenceClassification.from_pretrained(directory)`` and
            ``AutoTokenizer.from_pretrained(directory)``, offline.
        corpus: Texts whose most frequent words (plus every character) make the WordPiece
            vocabulary, deterministically; a small built-in news-like corpus when None.
        vocab_size: Upper bound on the WordPiece vocabulary, >= 50.
        hidden_size, num_layers: Size of the encoder (4 heads; intermediate = 2 * hidden).
        num_labels: Head size written into the config (callers may override when loading).
        seed: Seed of the random weights.

    Returns:
        The directory as a ``Path``.

    Raises:
        ValueError: if ``vocab_size`` < 50 or ``hidden_size`` is not divisible by 4.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    if vocab_size < 50:
        raise ValueError(f"vocab_size={vocab_size!r} is too small: give at least 50")
    if hidden_size % 4:
        raise ValueError(f"hidden_size={hidden_size!r} must be divisible by the 4 attention heads")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus is not None else list(_DEFAULT_CORPUS)
    fast = _tiny_tokenizer(texts, vocab_size)
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(out)
    return out


ENCODERS = ("bert", "distilbert", "roberta", "deberta-v2", "electra", "modernbert")
DECODERS = ("llama", "qwen2")
ARCHITECTURES = ENCODERS + DECODERS


def tiny_config(architecture: str, vocab_size: int, *, hidden_size: int = 32, num_layers: int = 2):
    """A ``PretrainedConfig`` of ``architecture`` (one of :data:`ARCHITECTURES`) with hidden ``hidden_size``,
    ``num_layers`` blocks, 4 attention heads (2 key/value heads for the decoders), intermediate 2 x hidden and
    128 positions.

    Raises:
        ValueError: an architecture not in :data:`ARCHITECTURES`.
    """
    from transformers import AutoConfig

    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=4, intermediate_size=2 * hidden_size, max_position_embeddings=128)
    special = {
        "bert": {}, "roberta": {"pad_token_id": 0}, "electra": {"embedding_size": hidden_size},
        "deberta-v2": {"pooler_hidden_size": hidden_size, "relative_attention": True, "position_buckets": 16,
                       "pos_att_type": ["p2c", "c2p"], "share_att_key": True},  # as DeBERTa-v3
        "modernbert": {"global_attn_every_n_layers": 1, "local_attention": 16, "pad_token_id": 0,
                       "bos_token_id": 2, "eos_token_id": 3, "cls_token_id": 2, "sep_token_id": 3},
        # the tiny tokenizer's [CLS]/[SEP] stand for bos/eos; no pad token, as decoder checkpoints ship
        "llama": {"num_key_value_heads": 2, "tie_word_embeddings": False, "bos_token_id": 2, "eos_token_id": 3,
                  "pad_token_id": None},
        "qwen2": {"num_key_value_heads": 2, "tie_word_embeddings": False, "bos_token_id": 2, "eos_token_id": 3,
                  "pad_token_id": None},
    }
    if architecture == "distilbert":
        return AutoConfig.for_model("distilbert", vocab_size=vocab_size, dim=hidden_size, n_layers=num_layers,
                                    n_heads=4, hidden_dim=2 * hidden_size, max_position_embeddings=128)
    if architecture not in special:
        raise ValueError(f"unknown tiny architecture {architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    return AutoConfig.for_model(architecture, **common, **special[architecture])


def build_tiny_backbone(
    directory: str | Path,
    architecture: str,
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 200,
    hidden_size: int = 32,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tiny random ``architecture`` backbone *without a task head* (``AutoModel.from_config``, as a
    pretrained checkpoint is) plus a tokenizer to ``directory``: the checkpoint shape users bring.

    Encoders get the BERT-style tiny tokenizer; decoders (:data:`DECODERS`) the same vocabulary without a pad
    token (and with an eos token), as decoder tokenizers usually ship, so the pad handling is exercised.

    Returns:
        The directory as a ``Path``.

    Raises:
        ValueError: an unknown architecture.
    """
    import torch
    from transformers import AutoModel

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus is not None else list(_DEFAULT_CORPUS)
    tokenizer = _tiny_tokenizer(texts, vocab_size, pad=architecture not in DECODERS)
    config = tiny_config(architecture, len(tokenizer), hidden_size=hidden_size, num_layers=num_layers)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out
