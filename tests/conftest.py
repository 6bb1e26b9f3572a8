"""Shared fixtures: an offline tiny BERT, a separable toy task, and offline Hugging Face settings."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# where an embedded service records its key file for clearft (clearft.local): a folder of this run, never
# the user's ~/.local/state
if "CLEARFT_STATE_DIR" not in os.environ:
    import tempfile

    os.environ["CLEARFT_STATE_DIR"] = tempfile.mkdtemp(prefix="clearft-state-")

import numpy as np
import pytest

TOPIC_WORDS = {
    0: "market stocks bank oil prices shares trading economy profit investors".split(),
    1: "team match goal coach players game championship season league score".split(),
    2: "software computer chips internet research space telescope scientists data network".split(),
}


def toy_texts(n: int, *, num_classes: int = 2, seed: int = 0, words_per_text: int = 8):
    """n texts of random topic words; labels (ints) are the topic, classes balanced."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    texts = [" ".join(rng.choice(TOPIC_WORDS[int(y)], words_per_text)) for y in labels]
    return texts, labels


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random hidden-32, 2-layer BERT with a WordPiece tokenizer built from the topic words."""
    from clear_core.testing import build_tiny_model

    corpus = [" ".join(words) for words in TOPIC_WORDS.values()] * 4
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"), corpus=corpus, vocab_size=200)
