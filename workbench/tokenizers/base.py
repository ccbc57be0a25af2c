"""The tokenizer interface every lab draws on: ids in, text out, and byte spans for drawing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


class TokenizerError(ValueError):
    """Bad input to a tokenizer (an id out of range, text that is not valid Unicode, ...)."""


@dataclass(frozen=True)
class TokenSpan:
    """One token of an encoding: its id and the byte range ``[start, end)`` of the UTF-8 text it covers."""

    id: int
    start: int
    end: int


class Tokenizer:
    """Base class: subclasses implement ``encode``, ``decode``, ``token_bytes`` and ``vocab_size``.

    ``special_tokens`` maps each special token's text to its id. Ids are ``0 .. vocab_size - 1``.
    """

    special_tokens: dict[str, int]

    @property
    def vocab_size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def token_bytes(self, token_id: int) -> bytes:  # pragma: no cover - abstract
        """The raw bytes one token stands for (a special token gives its UTF-8 text)."""
        raise NotImplementedError

    def token_str(self, token_id: int) -> str:
        """A printable label for one token: control characters and spaces made visible, and bytes that are
        not a whole UTF-8 character shown as ``<0xNN>``."""
        b = self.token_bytes(token_id)
        try:
            return printable(b.decode("utf-8"))
        except UnicodeDecodeError:
            return "".join(f"<0x{x:02X}>" for x in b)

    def token_lengths(self, ids: Sequence[int]) -> list[int]:
        """The byte length of each token in ``ids`` (subclasses may answer from a table)."""
        return [len(self.token_bytes(i)) for i in ids]

    def spans(self, text: str) -> list[TokenSpan]:
        """Encode ``text`` and give each token's byte span in ``text.encode('utf-8')``."""
        ids = self.encode(text)
        out, pos = [], 0
        for i, n in zip(ids, self.token_lengths(ids)):
            out.append(TokenSpan(i, pos, pos + n))
            pos += n
        return out

    def check_ids(self, ids: Sequence[int]) -> list[int]:
        """Return ``ids`` as ints, or raise naming the first id outside ``[0, vocab_size)``."""
        ids = [int(i) for i in ids]
        for pos, i in enumerate(ids):
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(
                    f"token id {i} at position {pos} is out of range: ids must be in [0, {self.vocab_size})"
                )
        return ids

    def to_dict(self) -> dict:  # pragma: no cover - abstract
        """A JSON-ready description from which :func:`tokenizer_from_dict` rebuilds the tokenizer."""
        raise NotImplementedError


_VISIBLE = {"\n": "⏎", "\t": "⇥", "\r": "␍", " ": "·"}


def printable(s: str) -> str:
    """Make whitespace and control characters visible, e.g. ``"a b\\n"`` -> ``"a·b⏎"``."""
    out = []
    for ch in s:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
    return "".join(out)


def check_text(text: str) -> bytes:
    """UTF-8 bytes of ``text``, or a clear error for lone surrogates (not valid Unicode)."""
    if not isinstance(text, str):
        raise TokenizerError(f"expected text as str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(
            f"text contains a lone surrogate {text[e.start]!r} at character {e.start}: "
            "only valid Unicode can be encoded"
        ) from None


_REGISTRY: dict[str, type] = {}


def register(kind: str):
    """Class decorator: make a tokenizer class loadable by :func:`tokenizer_from_dict` under ``kind``."""

    def deco(cls):
        _REGISTRY[kind] = cls
        cls.kind = kind
        return cls

    return deco


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.to_dict` output."""
    kind = d.get("workbench_kind") if isinstance(d, dict) else None
    if kind not in _REGISTRY:
        raise TokenizerError(
            f"unknown tokenizer kind {kind!r}; known kinds: {sorted(_REGISTRY)}"
        )
    return _REGISTRY[kind].from_dict(d)
