"""Labellers for probes: per-token labels that need no annotation, read off the text itself.

A labeller is any callable ``labeller(model, text, ids) -> (T,) int array``: one label per token of ``ids`` (the
model's encoding of ``text``), ``-1`` for a token to skip. A :class:`Labeller` also carries ``label_names``.

* :data:`in_string_literal`: 1 if the token starts inside a Python string literal (quotes included), found with
  Python's own ``tokenize`` module, else 0.
* :data:`next_is_digit`: 1 if the character right after the token is a digit 0-9, else 0 (-1 for the last token).
* :data:`is_digit`: 1 if the token's text contains a digit (a feature written in the token itself).

Tokens are mapped to characters through their byte lengths (``tokenizer.token_lengths``), so any tokenizer whose
tokens spell the text works; a zero-length token (BOS) gets -1 unless a rule says otherwise.

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> m = TinyGPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=257), ByteTokenizer())
>>> text = 'x = "a1"'
>>> in_string_literal(m, text, m.tokenizer.encode(text)).tolist()
[0, 0, 0, 0, 1, 1, 1, 1]
>>> next_is_digit(m, text, m.tokenizer.encode(text)).tolist()
[0, 0, 0, 0, 0, 1, 0, -1]
"""
from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ResidualError


@dataclass(frozen=True)
class Labeller:
    """A named labeller: ``fn(model, text, ids) -> (T,) int`` (-1 = skip) and the names of its labels 0, 1, ..."""

    name: str
    label_names: tuple
    fn: Callable

    def __call__(self, model, text: str, ids) -> np.ndarray:
        return self.fn(model, text, ids)


def char_spans(model, text: str, ids) -> tuple[np.ndarray, np.ndarray]:
    """Each token's ``[start, end)`` in characters of ``text`` ``(T,)`` each, from the tokens' byte lengths; a
    :class:`ResidualError` when the tokens do not spell the text (a tokenizer that normalises)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ResidualError("this model has no tokenizer: labels are read off the text through the tokens")
    ids = [int(i) for i in ids]
    lengths = list(tok.token_lengths(ids))
    raw = text.encode("utf-8")
    specials = set(getattr(tok, "special_tokens", {}).values())
    bos = getattr(tok, "bos_id", None)
    if sum(lengths) != len(raw):  # special tokens the text does not spell (an added BOS/EOS) take no characters
        lengths = [0 if (i in specials or i == bos) else n for i, n in zip(ids, lengths)]
    if sum(lengths) != len(raw):
        raise ResidualError(f"the tokens cover {sum(lengths)} bytes but the text has {len(raw)}: this tokenizer does "
                            "not spell the text byte for byte, so labels cannot be aligned to tokens")
    char_of_byte = np.zeros(len(raw) + 1, dtype=np.int64)
    b = 0
    for c, ch in enumerate(text):
        n = len(ch.encode("utf-8"))
        char_of_byte[b:b + n] = c
        b += n
    char_of_byte[len(raw)] = len(text)
    ends_b = np.cumsum(lengths)
    starts_b = ends_b - np.asarray(lengths)
    starts = char_of_byte[starts_b]
    ends = np.where(np.asarray(lengths) > 0, char_of_byte[np.maximum(ends_b - 1, 0)] + 1, starts)
    return starts, ends


def string_spans(source: str) -> tuple[list[tuple[int, int]], int]:
    """Python string literals of ``source`` as character spans ``[start, end)`` (quotes and prefixes included,
    f-strings whole), and how far the source could be tokenized (``len(source)`` unless ``tokenize`` stopped at an
    error: labels beyond that point are unknown)."""
    line_starts = [0]
    for line in source.split("\n")[:-1]:
        line_starts.append(line_starts[-1] + len(line) + 1)

    def off(rc):
        r, c = rc
        return line_starts[r - 1] + c if r - 1 < len(line_starts) else len(source)

    spans, depth, fstart, reached = [], 0, 0, 0
    try:
        for t in tokenize.generate_tokens(io.StringIO(source).readline):
            name = tokenize.tok_name[t.type]
            if name == "STRING" and depth == 0:
                spans.append((off(t.start), off(t.end)))
            elif name == "FSTRING_START":  # Python 3.12+: f-strings arrive in pieces
                if depth == 0:
                    fstart = off(t.start)
                depth += 1
            elif name == "FSTRING_END":
                depth -= 1
                if depth == 0:
                    spans.append((fstart, off(t.end)))
            if depth == 0:
                reached = max(reached, off(t.end))
    except (tokenize.TokenError, SyntaxError):
        return spans, reached
    return spans, len(source)


def _in_string(model, text, ids):
    starts, ends = char_spans(model, text, ids)
    spans, reached = string_spans(text)
    inside = np.zeros(len(text) + 1, dtype=bool)
    for a, b in spans:
        inside[a:b] = True
    labels = inside[starts].astype(np.int64)
    labels[starts >= reached] = -1
    labels[ends == starts] = -1  # a token without characters (BOS)
    return labels


def _next_digit(model, text, ids):
    starts, ends = char_spans(model, text, ids)
    nxt = np.array([e < len(text) and text[e] in "0123456789" for e in ends], dtype=bool)
    labels = nxt.astype(np.int64)
    labels[ends >= len(text)] = -1
    return labels


def _is_digit(model, text, ids):
    starts, ends = char_spans(model, text, ids)
    labels = np.array([any(ch in "0123456789" for ch in text[a:b]) for a, b in zip(starts, ends)], dtype=np.int64)
    labels[ends == starts] = -1
    return labels


in_string_literal = Labeller("inside a Python string literal", ("code", "string"), _in_string)
next_is_digit = Labeller("next character is a digit", ("other", "digit next"), _next_digit)
is_digit = Labeller("token contains a digit", ("no digit", "digit"), _is_digit)
LABELLERS = {"in_string_literal": in_string_literal, "next_is_digit": next_is_digit, "is_digit": is_digit}


def python_snippets(n: int = 40, max_chars: int = 600, corpus: str = "python-code") -> list[str]:
    """``n`` whole top-level definitions (``def``/``class`` at column 0, up to ``max_chars`` characters each) from
    the embedded Python source, in order: complete statements, so ``tokenize`` finds every string in them."""
    from ..data import load_corpus

    src = load_corpus(corpus)
    out, cur = [], []
    for line in src.split("\n"):
        if line.startswith(("def ", "class ", "@", "# ----")) and cur and not cur[-1].startswith("@"):
            piece = "\n".join(cur).rstrip() + "\n"
            if piece.startswith(("def ", "class ", "@")) and len(piece) <= max_chars:
                _, reached = string_spans(piece)
                if reached == len(piece):
                    out.append(piece)
                    if len(out) == n:
                        return out
            cur = []
        cur.append(line)
    return out


def digit_paragraphs(n: int = 40, max_chars: int = 600, corpus: str = "python-docs") -> list[str]:
    """``n`` paragraphs of the embedded docs that contain digits (up to ``max_chars`` characters each), in order:
    material where "the next character is a digit" happens often enough to learn."""
    from ..data import load_corpus

    out = []
    for para in load_corpus(corpus).split("\n\n"):
        para = para.strip()
        if 40 <= len(para) <= max_chars and sum(ch.isdigit() for ch in para) >= 4:
            out.append(para)
            if len(out) == n:
                break
    return out


__all__ = ["LABELLERS", "Labeller", "char_spans", "digit_paragraphs", "in_string_literal", "is_digit",
           "next_is_digit", "python_snippets", "string_spans"]
