"""The tokenizer interface every lab draws on: ids in, text out, and byte spans for drawing.

Two things every tokenizer offers for models whose vocabulary is not exactly the tokenizer's:

* **Ids without text.** Real checkpoints often pad the embedding (Pythia, Qwen, Phi: the model scores more
  ids than the tokenizer has), and some vocabularies have holes. :meth:`Tokenizer.is_decodable` says whether
  an id has text; :meth:`Tokenizer.token_str` and :meth:`Tokenizer.decode_with_placeholders` show such an id
  as the visible placeholder ``<id 301>`` (see :func:`placeholder`) instead of raising, so labels, traces and
  widgets never crash on them. :meth:`Tokenizer.decode` stays strict.
* **Vocabulary identity.** :meth:`Tokenizer.vocab_fingerprint` hashes the vocabulary itself (each id's bytes,
  which ids are unassigned, and the special tokens), so two tokenizers compare equal with
  :meth:`Tokenizer.same_vocab` however they are stored: a :class:`ByteTokenizer`, a :class:`BPETokenizer`
  converted from HF and an :class:`HFTokenizer` loaded from ``save_pretrained`` files all compare by what
  their ids mean. Merges and pre-tokenization are not part of it: they decide how text is split, not what an
  id stands for.

>>> from workbench.tokenizers import ByteTokenizer
>>> t = ByteTokenizer()
>>> t.token_str(300), t.decode_with_placeholders([104, 105, 300])
('<id 300>', 'hi<id 300>')
>>> t.same_vocab(ByteTokenizer()), t.same_vocab(ByteTokenizer(special_tokens=()))
(True, False)

Lesson: ``notebooks/01_tokenization.ipynb``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence


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
        not a whole UTF-8 character shown as ``<0xNN>``. An id without text (outside the vocabulary, e.g. a
        padded model id, or unassigned) is shown as the placeholder ``<id N>`` rather than raising."""
        if not self.is_decodable(token_id):
            return placeholder(token_id)
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

    # -- ids without text ---------------------------------------------------------------------------

    def _decodable_table(self) -> list[bool]:
        size = self.vocab_size
        cached = getattr(self, "_wb_decodable", None)
        if cached is not None and len(cached) == size:
            return cached
        table = []
        for i in range(size):
            try:
                self.token_bytes(i)
                table.append(True)
            except TokenizerError:
                table.append(False)
        self._wb_decodable = table
        return table

    def is_decodable(self, token_id) -> bool:
        """True when ``token_id`` has text here: an int in ``[0, vocab_size)`` that is assigned."""
        try:
            i = int(token_id)
        except (TypeError, ValueError):
            return False
        return 0 <= i < self.vocab_size and self._decodable_table()[i]

    def undecodable_ids(self, model_vocab_size: Optional[int] = None) -> list[int]:
        """Ids in ``[0, model_vocab_size)`` (default: this vocabulary) that have no text: unassigned ids and,
        for a model with a padded embedding, every id from ``vocab_size`` up. Ascending."""
        n = self.vocab_size if model_vocab_size is None else int(model_vocab_size)
        table = self._decodable_table()
        return [i for i in range(n) if i >= len(table) or not table[i]]

    def decode_with_placeholders(self, ids: Sequence[int]) -> str:
        """Like :meth:`decode`, but an id without text becomes ``<id N>`` instead of an error; the runs of
        decodable ids between them are decoded together (so multi-byte characters survive)."""
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            if self.is_decodable(i):
                run.append(int(i))
                continue
            if run:
                out.append(self.decode(run))
                run = []
            out.append(placeholder(i))
        if run:
            out.append(self.decode(run))
        return "".join(out)

    def decode_segments(self, ids: Sequence[int]) -> list[tuple[str, str]]:
        """What :meth:`decode_with_placeholders` shows, as ``(kind, text)`` pieces that say where text came from:
        ``"text"`` (decoded as the tokenizer does), ``"bytes"`` (bytes that are not valid UTF-8, which a decoder
        would show as U+FFFD; here written ``<0xNN>`` per byte) and ``"id"`` (a placeholder ``<id N>``).

        A byte-level model picks one byte (or byte piece) at a time, so it can emit a lone continuation byte or
        stop in the middle of a character: those bytes are not text, and this says so instead of hiding them.

        >>> from workbench.tokenizers import ByteTokenizer
        >>> ByteTokenizer().decode_segments([104, 0xC3, 105, 300])
        [('text', 'h'), ('bytes', '<0xC3>'), ('text', 'i'), ('id', '<id 300>')]
        """
        out: list[tuple[str, str]] = []
        run: list[int] = []

        def flush():
            if not run:
                return
            raw = b"".join(self.token_bytes(i) for i in run)
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                out.extend(split_invalid_utf8(raw))
            else:
                out.append(("text", self.decode(run)))
            run.clear()

        for i in ids:
            if self.is_decodable(i):
                run.append(int(i))
                continue
            flush()
            out.append(("id", placeholder(i)))
        flush()
        merged: list[tuple[str, str]] = []
        for kind, text in out:
            if not text:
                continue
            if merged and merged[-1][0] == kind:
                merged[-1] = (kind, merged[-1][1] + text)
            else:
                merged.append((kind, text))
        return merged

    # -- vocabulary identity --------------------------------------------------------------------------

    def vocab_entries(self) -> list[Optional[bytes]]:
        """Each id's bytes in ``[0, vocab_size)``, None for an unassigned id (special tokens give their text)."""
        out: list[Optional[bytes]] = []
        for i in range(self.vocab_size):
            try:
                out.append(self.token_bytes(i))
            except TokenizerError:
                out.append(None)
        return out

    def vocab_fingerprint(self) -> str:
        """A SHA-256 hex digest of what the ids mean: the vocabulary size, each id's bytes (or "unassigned")
        and the special tokens with their ids. Equal fingerprints mean the same id stands for the same token,
        whatever class or file format holds the tokenizer. Cached per vocabulary size."""
        size = self.vocab_size
        cached = getattr(self, "_wb_fingerprint", None)
        if cached is not None and cached[0] == size:
            return cached[1]
        h = hashlib.sha256(f"vocab {size}\n".encode())
        for b in self.vocab_entries():
            h.update(b"-" if b is None else b"+" + len(b).to_bytes(4, "big") + b)
        for s, i in sorted(self.special_tokens.items(), key=lambda kv: (kv[1], kv[0])):
            enc = s.encode("utf-8")
            h.update(b"special" + int(i).to_bytes(8, "big") + len(enc).to_bytes(4, "big") + enc)
        digest = h.hexdigest()
        self._wb_fingerprint = (size, digest)
        return digest

    def same_vocab(self, other) -> bool:
        """True when ``other`` is a tokenizer whose ids mean the same tokens (equal :meth:`vocab_fingerprint`)."""
        return isinstance(other, Tokenizer) and self.vocab_fingerprint() == other.vocab_fingerprint()

    def vocab_difference(self, other) -> Optional[str]:
        """None when :meth:`same_vocab`, else a sentence naming the first difference (for error messages)."""
        if not isinstance(other, Tokenizer):
            return f"{type(other).__name__} is not a workbench Tokenizer"
        if self.same_vocab(other):
            return None
        if self.vocab_size != other.vocab_size:
            return f"{self.vocab_size} vs {other.vocab_size} ids"
        for i, (a, b) in enumerate(zip(self.vocab_entries(), other.vocab_entries())):
            if a != b:
                show = lambda x: "unassigned" if x is None else repr(x)  # noqa: E731
                return f"id {i} is {show(a)} in one and {show(b)} in the other"
        mine = sorted(self.special_tokens.items(), key=lambda kv: kv[1])
        theirs = sorted(other.special_tokens.items(), key=lambda kv: kv[1])
        return f"special tokens differ: {mine} vs {theirs}"


def placeholder(token_id) -> str:
    """The visible label of an id that has no text in the tokenizer, e.g. ``<id 301>``."""
    try:
        return f"<id {int(token_id)}>"
    except (TypeError, ValueError):
        return f"<id {token_id!r}>"


def split_invalid_utf8(raw: bytes) -> list[tuple[str, str]]:
    """``raw`` as ``("text", str)`` and ``("bytes", "<0xNN>...")`` pieces: the valid UTF-8 runs decoded, every byte
    that is not part of a valid character written out (where ``errors="replace"`` would put U+FFFD).

    >>> split_invalid_utf8("é".encode() + b"\\xe6\\x9d" + b"ok")
    [('text', 'é'), ('bytes', '<0xE6><0x9D>'), ('text', 'ok')]
    """
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(raw):
        try:
            out.append(("text", raw[pos:].decode("utf-8")))
            break
        except UnicodeDecodeError as e:
            if e.start:
                out.append(("text", raw[pos:pos + e.start].decode("utf-8")))
            bad = raw[pos + e.start:pos + e.end]
            out.append(("bytes", "".join(f"<0x{b:02X}>" for b in bad)))
            pos += e.end
    merged: list[tuple[str, str]] = []
    for kind, text in out:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


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
