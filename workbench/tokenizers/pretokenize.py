"""Pre-tokenization: cut text into pieces that BPE merges never cross.

Two steps, each an "isolated" regex split (every match becomes its own piece, and so does the
text between matches):

1. ``digits``: runs of digits are cut first, so a number can be chunked right-to-left even when
   the main pattern would chunk it left-to-right (GPT-4's ``\\p{N}{1,3}``).
2. ``pattern``: the GPT-2 or GPT-4 (cl100k-style) regex, or your own.

>>> PreTokenizer("gpt2").split("Hello world, 1234567!")
['Hello', ' world', ',', ' 1234567', '!']
>>> PreTokenizer("gpt2", digits="r2l3").split("Hello world, 1234567!")
['Hello', ' world', ',', ' ', '1', '234', '567', '!']

The same two steps are HF ``tokenizers``' ``Sequence([Split(digits, "isolated"), Split(pattern,
"isolated"), ByteLevel(use_regex=False)])``, which is how :mod:`.hf_interop` writes them out.
Regexes use the third-party ``regex`` module (``\\p{L}`` and friends), whose syntax for these
patterns matches the Oniguruma engine inside HF ``tokenizers``.

Lesson: ``notebooks/01_tokenization.ipynb`` (1. Train a BPE and watch it; 3. Numbers).
"""
from __future__ import annotations

from typing import Optional

import regex

from .base import TokenizerError

#: GPT-2's pre-tokenization regex (contractions, letters, numbers, punctuation, whitespace).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
#: GPT-4's (cl100k_base) regex: case-insensitive contractions, numbers in 1-3 digit chunks.
GPT4_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
PATTERNS: dict[str, Optional[str]] = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN, "none": None}

#: Digit handling: how a run of digits (``\p{N}``) is cut before the main pattern runs.
DIGIT_PATTERNS: dict[str, Optional[str]] = {
    "none": None,
    "single": r"\p{N}",  # 1234 -> 1 2 3 4
    "l2r3": r"\p{N}{1,3}",  # 1234567 -> 123 456 7
    "r2l3": r"\p{N}{1,3}(?=(?:\p{N}{3})*(?!\p{N}))",  # 1234567 -> 1 234 567
}

# Patterns known to match every character (so ``findall`` alone covers the text).
_COVERING = {GPT2_PATTERN, GPT4_PATTERN}


def compile_pattern(source: str, what: str = "pattern"):
    """Compile ``source`` with the ``regex`` module, or raise a TokenizerError naming it."""
    if not isinstance(source, str) or not source:
        raise TokenizerError(f"{what} must be a non-empty regex string, got {source!r}")
    try:
        return regex.compile(source)
    except (regex.error, TypeError, ValueError, OverflowError) as e:
        raise TokenizerError(f"{what} {source!r} does not compile: {e}") from None


def resolve_pattern(pattern: Optional[str]) -> tuple[str, Optional[str]]:
    """``(name, regex source)`` for a preset name, ``None``/"none" or a custom regex."""
    if pattern is None:
        return "none", None
    if pattern in PATTERNS:
        return pattern, PATTERNS[pattern]
    for name, src in PATTERNS.items():
        if src == pattern:
            return name, src
    compile_pattern(pattern)
    return "custom", pattern


def resolve_digits(digits: Optional[str]) -> tuple[str, Optional[str]]:
    """``(name, regex source)`` for a digit mode (``none``, ``single``, ``l2r3``, ``r2l3``)."""
    if digits is None:
        return "none", None
    if digits in DIGIT_PATTERNS:
        return digits, DIGIT_PATTERNS[digits]
    for name, src in DIGIT_PATTERNS.items():
        if src is not None and src == digits:
            return name, src
    raise TokenizerError(f"unknown digits mode {digits!r}; choose one of {sorted(DIGIT_PATTERNS)}")


def split_isolated(rx, text: str) -> list[str]:
    """Split ``text`` so each (non-empty) match of ``rx`` and each gap between matches is a piece."""
    out, pos = [], 0
    for m in rx.finditer(text):
        a, b = m.span()
        if a == b:
            continue
        if a > pos:
            out.append(text[pos:a])
        out.append(text[a:b])
        pos = b
    if pos < len(text):
        out.append(text[pos:])
    return out


class PreTokenizer:
    """Digit split then pattern split, as described in the module docstring.

    ``pattern`` is ``"gpt2"``, ``"gpt4"``, ``"none"`` (no split: the text is one piece) or a regex;
    ``digits`` is ``"none"``, ``"single"``, ``"l2r3"`` or ``"r2l3"``. ``steps`` lists the regex
    sources in the order they are applied (what goes into a ``tokenizer.json``).
    """

    def __init__(self, pattern: Optional[str] = "gpt2", digits: Optional[str] = "none"):
        self.pattern_name, self.pattern = resolve_pattern(pattern)
        self.digits_name, self.digits = resolve_digits(digits)
        self.steps = [s for s in (self.digits, self.pattern) if s is not None]
        self._compiled = [
            compile_pattern(s, "digits pattern" if s == self.digits else "pattern") for s in self.steps
        ]
        # Fast path: one covering preset needs only findall.
        self._findall = (
            self._compiled[0].findall if len(self.steps) == 1 and self.steps[0] in _COVERING else None
        )

    @classmethod
    def from_steps(cls, steps: list[str]) -> "PreTokenizer":
        """Rebuild from the ordered regex sources of :attr:`steps` (as read from a tokenizer.json)."""
        steps = list(steps)
        digits = None
        if len(steps) == 2:
            digits = steps[0]
            if resolve_digits(digits)[1] is None:
                raise TokenizerError(f"unsupported pre-tokenizer: two splits {steps!r}")
            return cls(steps[1], digits)
        if len(steps) == 1:
            for name, src in DIGIT_PATTERNS.items():
                if src is not None and src == steps[0]:
                    return cls("none", name)
            return cls(steps[0], "none")
        if not steps:
            return cls("none", "none")
        raise TokenizerError(f"unsupported pre-tokenizer: {len(steps)} regex splits {steps!r}")

    def split(self, text: str) -> list[str]:
        """Cut ``text`` into pieces; ``"".join(pieces) == text``."""
        if self._findall is not None:
            return self._findall(text)
        pieces = [text] if text else []
        for rx in self._compiled:
            pieces = [p for piece in pieces for p in split_isolated(rx, piece)]
        return pieces

    def __repr__(self) -> str:
        return f"PreTokenizer(pattern={self.pattern_name!r}, digits={self.digits_name!r})"
