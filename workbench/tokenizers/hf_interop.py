"""HF ``tokenizers`` interop: the ``tokenizer.json`` format, conversion both ways, and a wrapper.

* :func:`bpe_to_hf_json` / :func:`bpe_from_hf_json`: a :class:`BPETokenizer` as a ``tokenizer.json``
  document. Written by hand, so saving and loading need no third-party package; HF reads the files.
* :func:`to_hf` / :func:`from_hf`: to and from a live ``tokenizers.Tokenizer`` (same ids).
* :func:`save_json` / :func:`load_json`: atomic file writes (temp file + ``os.replace``).
* :class:`HFTokenizer`: any HF tokenizer behind this package's :class:`Tokenizer` interface, so a
  production tokenizer can sit next to the ones trained here.

>>> from workbench.tokenizers import BPETokenizer
>>> tok = BPETokenizer.train("a bb ccc " * 20, 260)
>>> hf = to_hf(tok)                                   # doctest: +SKIP
>>> hf.encode("a bb ccc").ids == tok.encode("a bb ccc")  # doctest: +SKIP
True

Lesson: ``notebooks/01_tokenization.ipynb``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import regex

from ..atomic import write_bytes_atomic
from .base import Tokenizer, TokenizerError, check_text
from .bpe import BPETokenizer
from .byte_level import bytes_to_hf_str, hf_str_to_bytes
from .pretokenize import GPT2_PATTERN, PreTokenizer


# ---------------------------------------------------------------------------------------------
# tokenizer.json <-> BPETokenizer


def _split_json(source: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": source}, "behavior": "Isolated", "invert": False}


def bpe_to_hf_json(tok: BPETokenizer) -> dict:
    """The ``tokenizer.json`` document for ``tok`` (HF ``tokenizers`` 0.19+ reads it)."""
    steps = [_split_json(s) for s in tok.pretokenizer.steps]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    pre = {"type": "Sequence", "pretokenizers": steps + [byte_level]}
    specials = tok.special_tokens
    vocab = {}
    for i, bs in enumerate(tok.vocab):
        if bs is None:
            continue
        vocab[tok._special_by_id[i] if i in tok._special_by_id else bytes_to_hf_str(bs)] = i
    # A pair merged twice (possible in HF training) keeps its last rank, as HF's own map does.
    last = {}
    for rank, (a, b, _) in enumerate(tok.merges):
        last[(a, b)] = rank
    merges = [
        [bytes_to_hf_str(tok.vocab[a]), bytes_to_hf_str(tok.vocab[b])]
        for rank, (a, b, _) in enumerate(tok.merges)
        if last[(a, b)] == rank
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s, i in sorted(specials.items(), key=lambda kv: kv[1])
        ],
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def _unsupported(what: str):
    return TokenizerError(
        f"not a plain byte-level BPE tokenizer.json ({what}); wrap it with HFTokenizer instead"
    )


def _pre_steps(pre: Optional[dict]) -> list[str]:
    if pre is None:
        raise _unsupported("no pre_tokenizer, so no ByteLevel step")
    items = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    steps: list[str] = []
    seen_byte_level = False
    for i, p in enumerate(items):
        kind = p.get("type")
        if kind == "Split":
            if p.get("behavior") not in ("Isolated", "isolated") or p.get("invert"):
                raise _unsupported(f"Split with behavior {p.get('behavior')!r}, invert={p.get('invert')}")
            pat = p.get("pattern", {})
            steps.append(pat["Regex"] if "Regex" in pat else regex.escape(pat.get("String", "")))
        elif kind == "ByteLevel":
            if p.get("add_prefix_space"):
                raise _unsupported("ByteLevel add_prefix_space=True")
            if i != len(items) - 1:
                raise _unsupported("ByteLevel is not the last pre-tokenizer")
            if p.get("use_regex", True):
                steps.append(GPT2_PATTERN)
            seen_byte_level = True
        else:
            raise _unsupported(f"pre-tokenizer {kind!r}")
    if not seen_byte_level:
        raise _unsupported("no ByteLevel pre-tokenizer")
    return steps


def bpe_from_hf_json(doc: dict) -> BPETokenizer:
    """Build a :class:`BPETokenizer` from a ``tokenizer.json`` document with a byte-level BPE."""
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise TokenizerError("not a tokenizer.json document (no 'model' object)")
    model = doc["model"]
    if model.get("type", "BPE") != "BPE":
        raise _unsupported(f"model type {model.get('type')!r}")
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            raise _unsupported(f"model {key}={model.get(key)!r}")
    if model.get("byte_fallback") or model.get("ignore_merges"):
        raise _unsupported("byte_fallback/ignore_merges")
    if doc.get("normalizer") is not None:
        raise _unsupported(f"normalizer {doc['normalizer'].get('type')!r}")
    pre = PreTokenizer.from_steps(_pre_steps(doc.get("pre_tokenizer")))
    added = {t["content"]: int(t["id"]) for t in doc.get("added_tokens", [])}
    hf_vocab: dict[str, int] = model.get("vocab", {})
    ids = list(hf_vocab.values()) + list(added.values())
    size = max(ids) + 1 if ids else 0
    vocab: list[Optional[bytes]] = [None] * size
    for s, i in hf_vocab.items():
        if s in added and added[s] == i:
            continue
        bs = hf_str_to_bytes(s)
        if bs is None:
            raise _unsupported(f"vocabulary entry {s!r} is not byte-level text")
        vocab[i] = bs
    for s, i in added.items():
        vocab[i] = s.encode("utf-8")
    merges = []
    for m in model.get("merges", []):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        try:
            merges.append((hf_vocab[a], hf_vocab[b], hf_vocab[a + b]))
        except KeyError:
            raise TokenizerError(f"merge {m!r} refers to a token missing from the vocabulary") from None
    pattern = pre.pattern if pre.pattern_name == "custom" else pre.pattern_name
    return BPETokenizer(vocab, merges, added, pattern=pattern, digits=pre.digits_name)


def to_hf(tok: BPETokenizer):
    """A ``tokenizers.Tokenizer`` with the same vocabulary, merges and ids as ``tok``."""
    try:
        from tokenizers import Tokenizer as HFTok
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TokenizerError("to_hf needs the 'tokenizers' package: pip install tokenizers") from e
    try:
        return HFTok.from_str(json.dumps(bpe_to_hf_json(tok)))
    except Exception as e:  # a custom regex Oniguruma cannot compile, for instance
        raise TokenizerError(f"HF tokenizers rejected this tokenizer: {e}") from None


def _hf_document(obj) -> dict:
    if hasattr(obj, "backend_tokenizer"):  # a transformers fast tokenizer
        obj = obj.backend_tokenizer
    if hasattr(obj, "to_str"):
        return json.loads(obj.to_str())
    raise TokenizerError(f"expected a tokenizers.Tokenizer or a transformers fast tokenizer, got {type(obj).__name__}")


def from_hf(obj) -> BPETokenizer:
    """Convert a byte-level BPE ``tokenizers.Tokenizer`` (or transformers fast tokenizer)."""
    return bpe_from_hf_json(_hf_document(obj))


# ---------------------------------------------------------------------------------------------
# Files


def save_json(doc: dict, path) -> None:
    """Write ``doc`` as JSON to ``path`` atomically: serialise in memory, write a temp file in the
    same folder, then ``os.replace``. On any failure nothing is left at ``path`` or beside it."""
    path = Path(path)
    data = json.dumps(doc, ensure_ascii=False, indent=None).encode("utf-8")
    folder = path.parent
    if not folder.is_dir():
        raise TokenizerError(f"cannot save to {str(path)!r}: folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise TokenizerError(f"cannot save to {str(path)!r}: it is a folder")
    write_bytes_atomic(path, data)


def load_json(path) -> dict:
    """Read a JSON document, with a TokenizerError for a missing or malformed file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"no tokenizer file at {str(path)!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{str(path)!r} is not a JSON tokenizer file: {e}") from None


# ---------------------------------------------------------------------------------------------
# Any HF tokenizer behind the workbench interface


class HFTokenizer(Tokenizer):
    """Wrap a ``tokenizers.Tokenizer`` or a transformers tokenizer so it offers ``encode``,
    ``decode``, ``token_bytes``, ``spans`` and ``special_tokens`` like the tokenizers trained here.

    ``encode`` adds no BOS/EOS (``add_special_tokens=False``) and ``decode`` keeps special tokens,
    so ids round-trip the way they do for :class:`BPETokenizer`. Build one from files you have with
    :meth:`from_file` (a ``tokenizer.json``) or :meth:`from_pretrained` (a local model folder).
    """

    def __init__(self, hf, name: Optional[str] = None):
        self.hf = hf
        self.name = name or type(hf).__name__
        backend = getattr(hf, "backend_tokenizer", None)
        self._tok = backend if backend is not None else (hf if hasattr(hf, "encode_batch") else None)
        self._slow = self._tok is None  # a transformers "slow" (pure Python) tokenizer
        if self._slow:
            vocab = hf.get_vocab()
            self._size = len(hf)
            self.special_tokens = {s: vocab[s] for s in getattr(hf, "all_special_tokens", []) if s in vocab}
        else:
            vocab = self._tok.get_vocab(with_added_tokens=True)
            self._size = self._tok.get_vocab_size(with_added_tokens=True)
            self.special_tokens = {
                t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special
            }
        self._id_to_token = {i: s for s, i in vocab.items()}
        # Byte-level vocabularies (GPT-2 style) spell bytes with the byte-to-unicode map: detect the
        # ByteLevel decoder/pre-tokenizer in the pipeline rather than guessing from the vocabulary.
        self._byte_level = False
        if not self._slow:
            doc = json.loads(self._tok.to_str())
            self._byte_level = '"ByteLevel"' in json.dumps([doc.get("decoder"), doc.get("pre_tokenizer")])

    @classmethod
    def from_file(cls, path) -> "HFTokenizer":
        """Load a ``tokenizer.json`` with HF ``tokenizers``."""
        try:
            from tokenizers import Tokenizer as HFTok
        except ImportError as e:  # pragma: no cover
            raise TokenizerError("HFTokenizer needs the 'tokenizers' package") from e
        if not Path(path).is_file():
            raise TokenizerError(f"no tokenizer file at {str(path)!r}")
        return cls(HFTok.from_file(str(path)), name=Path(path).name)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> "HFTokenizer":
        """``transformers.AutoTokenizer.from_pretrained`` from local files only (no download)."""
        try:
            from transformers import AutoTokenizer
        except ImportError as e:  # pragma: no cover
            raise TokenizerError("HFTokenizer.from_pretrained needs the 'transformers' package") from e
        kwargs.setdefault("local_files_only", True)
        try:
            hf = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        except (OSError, ValueError) as e:
            raise TokenizerError(
                f"no tokenizer files for {str(name_or_path)!r} on this machine (local files only): {e}"
            ) from None
        return cls(hf, name=str(name_or_path))

    @property
    def vocab_size(self) -> int:
        return self._size

    def encode(self, text: str) -> list[int]:
        check_text(text)
        if self._slow:
            return list(self.hf.encode(text, add_special_tokens=False))
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        ids = self.check_ids(ids)
        return self.hf.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        (token_id,) = self.check_ids([token_id])
        s = self._id_to_token.get(token_id)
        if s is None:
            raise TokenizerError(f"token id {token_id} is not assigned in this vocabulary")
        if s in self.special_tokens:
            return s.encode("utf-8")
        if self._byte_level:
            bs = hf_str_to_bytes(s)
            if bs is not None:
                return bs
        if s.startswith("<0x") and s.endswith(">") and len(s) == 6:  # SentencePiece byte fallback
            return bytes([int(s[3:5], 16)])
        return s.replace("\u2581", " ").encode("utf-8")  # SentencePiece's word-start marker

    def spans(self, text: str):
        """Byte spans: from token bytes for byte-level vocabularies, else from HF's offsets."""
        from .base import TokenSpan

        if self._byte_level or self._slow:
            return super().spans(text)
        check_text(text)
        enc = self._tok.encode(text, add_special_tokens=False)
        # HF offsets count characters; turn them into UTF-8 byte positions.
        starts = [0]
        for ch in text:
            starts.append(starts[-1] + len(ch.encode("utf-8")))
        return [TokenSpan(i, starts[a], starts[b]) for i, (a, b) in zip(enc.ids, enc.offsets)]

    def to_dict(self) -> dict:
        raise TokenizerError("an HFTokenizer is saved with its own files (save_pretrained), not to_dict")

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r}, vocab_size={self.vocab_size})"
