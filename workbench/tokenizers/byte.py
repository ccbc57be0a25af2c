"""Byte-level tokenizer: ids 0..255 are the bytes, special tokens follow.

Lesson: ``notebooks/00_tour.ipynb`` (Train your own micro model).
"""
from __future__ import annotations

import re
from typing import Sequence

from .base import Tokenizer, TokenizerError, check_text, register


@register("byte")
class ByteTokenizer(Tokenizer):
    """Each UTF-8 byte is one token (ids 0-255); special tokens get ids 256, 257, ...

    >>> t = ByteTokenizer(special_tokens=["<|endoftext|>"])
    >>> t.encode("hé<|endoftext|>")
    [104, 195, 169, 256]

    Decoding uses ``errors="replace"``: ids that end mid-character decode to U+FFFD.

    ``bos=True`` adds a beginning-of-sequence token after the special tokens (id ``256 + len(special_tokens)``)
    that :meth:`encode` puts at position 0 of every encoding. It stands for no text: its
    :meth:`token_bytes` are empty (so byte spans and bits per byte stay exact), :meth:`decode` drops it
    (``decode(encode(t)) == t``), :meth:`token_str` shows it as ``<bos>``, and typing ``<bos>`` in the text
    gives the five bytes, never the token. The shipped byte models are trained with it at the start of every
    window, which is what gives them an attention sink.

    >>> t = ByteTokenizer(bos=True)
    >>> t.encode("hi"), t.bos_id, t.vocab_size, t.decode(t.encode("hi")), t.token_str(t.bos_id)
    ([257, 104, 105], 257, 258, 'hi', '<bos>')
    """

    BOS_LABEL = "<bos>"

    def __init__(self, special_tokens: Sequence[str] = ("<|endoftext|>",), bos: bool = False):
        specials = list(special_tokens)
        for s in specials:
            if not isinstance(s, str) or not s:
                raise TokenizerError(f"special tokens must be non-empty strings, got {s!r}")
        if len(set(specials)) != len(specials):
            raise TokenizerError(f"duplicate special tokens in {specials}")
        self.special_tokens = {s: 256 + i for i, s in enumerate(specials)}
        self._special_by_id = {i: s for s, i in self.special_tokens.items()}
        self._special_re = (
            re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
            if specials
            else None
        )
        #: id of the beginning-of-sequence token, or None (the default) when there is none
        self.bos_id: int | None = 256 + len(specials) if bos else None

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.special_tokens) + (self.bos_id is not None)

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text`` (special tokens as their ids), after the BOS id if there is one."""
        check_text(text)
        ids: list[int] = [] if self.bos_id is None else [self.bos_id]
        if self._special_re is None:
            return ids + list(text.encode("utf-8"))
        pos = 0
        for m in self._special_re.finditer(text):
            ids.extend(text[pos : m.start()].encode("utf-8"))
            ids.append(self.special_tokens[m.group()])
            pos = m.end()
        ids.extend(text[pos:].encode("utf-8"))
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        (token_id,) = self.check_ids([token_id])
        if token_id < 256:
            return bytes([token_id])
        if token_id == self.bos_id:
            return b""
        return self._special_by_id[token_id].encode("utf-8")

    def token_str(self, token_id: int) -> str:
        if self.bos_id is not None and int(token_id) == self.bos_id:
            return self.BOS_LABEL
        return super().token_str(token_id)

    def decode(self, ids: Sequence[int]) -> str:
        ids = self.check_ids(ids)
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        d = {"workbench_kind": "byte", "special_tokens": list(self.special_tokens)}
        if self.bos_id is not None:
            d["bos"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ByteTokenizer":
        return cls(special_tokens=d.get("special_tokens", []), bos=bool(d.get("bos", False)))

    # -- HF tokenizer.json (a BPE with the 256 bytes as ids 0-255 and no merges) --------------------

    def as_bpe(self):
        """The same tokenizer as a merge-less :class:`~workbench.tokenizers.bpe.BPETokenizer`."""
        from .bpe import BPETokenizer

        if self.bos_id is not None:
            raise TokenizerError("a byte tokenizer with a BOS has no merge-less BPE / tokenizer.json twin: "
                                 "its encode adds a token that stands for no text")
        vocab = [bytes([b]) for b in range(256)] + [s.encode("utf-8") for s in self.special_tokens]
        return BPETokenizer(vocab, (), dict(self.special_tokens), pattern="none", digits="none")

    def to_hf_json(self) -> dict:
        return self.as_bpe().to_hf_json()

    def to_hf(self):
        """A ``tokenizers.Tokenizer`` giving the same ids (needs the ``tokenizers`` package)."""
        return self.as_bpe().to_hf()

    def save(self, path) -> None:
        """Write a HF ``tokenizer.json`` atomically (nothing appears at ``path`` unless it succeeds)."""
        from .hf_interop import save_json

        save_json(self.to_hf_json(), path)

    @classmethod
    def load(cls, path) -> "ByteTokenizer":
        """Read a ``tokenizer.json`` written by :meth:`save`."""
        from .hf_interop import bpe_from_hf_json, load_json

        bpe = bpe_from_hf_json(load_json(path))
        specials = sorted(bpe.special_tokens.items(), key=lambda kv: kv[1])
        if bpe.merges or bpe.byte_ids != list(range(256)) or [i for _, i in specials] != list(
            range(256, 256 + len(specials))
        ):
            raise TokenizerError(f"{str(path)!r} is not a byte tokenizer (it has merges or another id layout)")
        return cls(special_tokens=[s for s, _ in specials])

    def __repr__(self) -> str:
        bos = f", bos_id={self.bos_id}" if self.bos_id is not None else ""
        return f"ByteTokenizer(vocab_size={self.vocab_size}, special_tokens={list(self.special_tokens)}{bos})"
