"""Byte-level conventions shared by the BPE tokenizer, its trainer and the HF interop: GPT-2's reversible map
from bytes to printable characters (the names HF's ``tokenizer.json`` gives byte-level tokens), HF's byte order,
and the checks on special tokens.

Lesson: ``notebooks/01_tokenization.ipynb`` (1. Train a BPE and watch it).
"""
from __future__ import annotations

import re
from typing import Iterable, Optional, Sequence

from .base import TokenizerError, check_text

def bytes_to_unicode() -> dict[int, str]:
    """Map each byte to a printable character: printable Latin-1 bytes map to themselves, the
    other 68 bytes (control characters, space, ...) to U+0100 onwards, in byte order.

    >>> bytes_to_unicode()[ord("a")], bytes_to_unicode()[ord(" ")]
    ('a', 'Ġ')
    """
    keep = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
#: Bytes in HF's alphabet order (sorted by their mapped character's code point).
HF_BYTE_ORDER = sorted(range(256), key=lambda b: ord(BYTE_TO_CHAR[b]))


def bytes_to_hf_str(bs: bytes) -> str:
    """Bytes as HF byte-level vocabulary text, e.g. ``b" the"`` -> ``"Ġthe"``."""
    return "".join(BYTE_TO_CHAR[b] for b in bs)


def hf_str_to_bytes(s: str) -> Optional[bytes]:
    """Inverse of :func:`bytes_to_hf_str`; ``None`` when ``s`` has a character outside the map."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in s)
    except KeyError:
        return None


def check_special_tokens(special_tokens: Iterable[str]) -> list[str]:
    """The special tokens as a list, or a TokenizerError for an empty, non-str or repeated one."""
    if isinstance(special_tokens, str):
        raise TokenizerError(
            f"special_tokens must be a list of strings, not one string {special_tokens!r}"
        )
    specials = list(special_tokens)
    seen = set()
    for s in specials:
        if not isinstance(s, str) or not s:
            raise TokenizerError(f"special tokens must be non-empty strings, got {s!r}")
        if s in seen:
            raise TokenizerError(f"special token {s!r} is given more than once")
        check_text(s)
        if len(s) == 1 and s in CHAR_TO_BYTE:
            raise TokenizerError(
                f"special token {s!r} is also the byte-level name of byte {CHAR_TO_BYTE[s]:#04x} in the "
                "tokenizer.json format; choose a longer special token"
            )
        seen.add(s)
    return specials


def special_aliases(special_tokens: dict[str, int]) -> dict[bytes, int]:
    """Byte strings whose HF vocabulary name equals a special token's text, mapped to its id.

    HF keys its vocabulary by name, so a merge whose result is spelled like a special token (say
    ``<|endoftext|>``, learned from its occurrences in the training text) gets the special's id
    rather than a new one. Mirrored here for parity.
    """
    out = {}
    for s, i in special_tokens.items():
        if all(c in CHAR_TO_BYTE for c in s):
            out[bytes(CHAR_TO_BYTE[c] for c in s)] = i
    return out


def special_splitter(specials: Sequence[str]):
    if not specials:
        return None
    # Longest first: at any position the longest special wins (HF matches leftmost-longest too).
    return re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
