"""Compression and segmentation statistics of a tokenizer on a text.

>>> from workbench.tokenizers import ByteTokenizer
>>> s = measure(ByteTokenizer(), "hello world")
>>> s.bytes_per_token, s.fertility, s.split_word_share
(1.0, 5.0, 1.0)

Words are maximal runs of non-whitespace characters. A word's tokens are the tokens whose byte
spans overlap it, so GPT-2's ``" world"`` counts as one token of the word ``world`` and a token that
straddles two words counts for both.

Lesson: ``notebooks/01_tokenization.ipynb`` (2. Compression against vocabulary size).
"""
from __future__ import annotations

import bisect
import itertools
from dataclasses import asdict, dataclass

import regex

from .base import Tokenizer, check_text

_WORD = regex.compile(r"\S+")


@dataclass(frozen=True)
class TokenStats:
    """Statistics of one tokenizer on one text (see :func:`measure`)."""

    n_bytes: int
    n_chars: int
    n_tokens: int
    n_words: int
    bytes_per_token: float  # UTF-8 bytes per token: higher is better compression
    chars_per_token: float
    fertility: float  # tokens per word
    split_word_share: float  # share of words covered by more than one token
    vocab_used: int  # distinct ids in the encoding
    vocab_utilisation: float  # vocab_used / (vocab_size - number of special tokens)

    def as_dict(self) -> dict:
        return asdict(self)


def measure(tokenizer: Tokenizer, text: str) -> TokenStats:
    """Encode ``text`` once and compute every statistic in :class:`TokenStats`."""
    data = check_text(text)
    ids = tokenizer.encode(text)
    n_tok = len(ids)
    # Byte position of every word: map character offsets to UTF-8 byte offsets.
    words = []
    if text.isascii():
        words = [m.span() for m in _WORD.finditer(text)]
    else:
        char_to_byte = [0]
        for ch in text:
            char_to_byte.append(char_to_byte[-1] + len(ch.encode("utf-8")))
        words = [(char_to_byte[a], char_to_byte[b]) for a, b in (m.span() for m in _WORD.finditer(text))]
    ends = list(itertools.accumulate(tokenizer.token_lengths(ids)))
    if ends and ends[-1] != len(data):  # e.g. a wrapped tokenizer that normalises text
        spans = tokenizer.spans(text)
        ends = [s.end for s in spans]
    pieces = 0
    split = 0
    for a, b in words:
        first = bisect.bisect_right(ends, a)  # first token ending after the word starts
        last = bisect.bisect_left(ends, b)  # token containing the word's last byte
        k = max(1, last - first + 1)
        pieces += k
        split += k > 1
    used = len(set(ids))
    n_normal = max(1, tokenizer.vocab_size - len(getattr(tokenizer, "special_tokens", {}) or {}))
    nw = len(words)
    return TokenStats(
        n_bytes=len(data),
        n_chars=len(text),
        n_tokens=n_tok,
        n_words=nw,
        bytes_per_token=len(data) / n_tok if n_tok else 0.0,
        chars_per_token=len(text) / n_tok if n_tok else 0.0,
        fertility=pieces / nw if nw else 0.0,
        split_word_share=split / nw if nw else 0.0,
        vocab_used=used,
        vocab_utilisation=used / n_normal,
    )


def count_difference(a: Tokenizer, b: Tokenizer, text: str) -> dict:
    """How many tokens ``a`` and ``b`` need for ``text``: ``{"a": n_a, "b": n_b, "difference": n_a - n_b,
    "ratio": n_a / n_b}`` (ratio > 1 means ``a`` needs more tokens)."""
    na, nb = len(a.encode(text)), len(b.encode(text))
    return {"a": na, "b": nb, "difference": na - nb, "ratio": na / nb if nb else float("inf")}
