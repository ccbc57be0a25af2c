"""Byte-level BPE: train it (and watch every merge), encode with it, decode it.

Worked example::

    >>> tok = BPETokenizer.train("low lower lowest " * 50, vocab_size=262, pattern="gpt2")
    >>> [tok.token_bytes(new_id) for _, _, new_id in tok.merges]
    [b'lo', b'low', b' low', b' lowe', b'st', b' lower']
    >>> [tok.token_bytes(i) for i in tok.encode(" lowest")]
    [b' lowe', b'st']
    >>> tok.trace[0]  # 'l' + 'o', seen 150 times; the corpus is 700 tokens long afterwards
    MergeStep(rank=0, left=75, right=78, new_id=256, count=150, token=b'lo', n_tokens=700)
    >>> tok.decode(tok.encode("hé ☃ 123")) == "hé ☃ 123"
    True

Id layout (the same as HF ``tokenizers``, so trained models are interchangeable): special tokens
first (``0 .. k-1``), then the 256 byte symbols ordered by the code point of their GPT-2
byte-to-unicode character (``!`` .. ``~`` first, so ``"!"`` is id ``k``), then one id per new merge.
Use :meth:`~BPETokenizer.token_bytes` rather than assuming byte ``b`` has id ``b``.

Training (:meth:`BPETokenizer.train`): the text is cut into pieces (:mod:`.pretokenize`), equal
pieces are counted once with a multiplicity, and pair counts are kept in a dict that each merge
updates incrementally: only the words that contain the merged pair are touched, and only the
pairs next to a merge change (the whole corpus is never recounted); the engine is
:mod:`.bpe_train`, and :mod:`.reference` is the same trainer and encoder written the naive way (read it
first). The byte map and the special-token checks are in :mod:`.byte_level`; reading and writing
``tokenizer.json`` in :mod:`.hf_interop` (the ``save``/``load``/``to_hf`` methods below only delegate).

Tie-break rule (deterministic): the pair with the highest count wins; among equal counts the pair
``(left id, right id)`` that is smallest wins, comparing left ids first. With the id layout above
that means: tokens created earlier beat later ones, and among raw bytes the one whose GPT-2
character has the lower code point wins. This is exactly HF's ``BpeTrainer`` rule, which is why the
merges agree one for one (see ``tests/unit/tokenizers/test_bpe_parity.py``).

Two HF quirks are reproduced on purpose, for parity: (1) when a merge produces a byte string that
is already in the vocabulary (``(ab, c)`` and later ``(a, bc)``), the existing id is reused, the merge
is still recorded, and the vocabulary does not grow; (2) a merged pair's own count is not reset,
so if that pair reappears later its count starts from the old value.

Decoding policy: the bytes of all ids are joined and decoded as UTF-8 with ``errors="replace"``;
ids that stop mid-character give one U+FFFD per maximal invalid byte run (the same as HF's
``from_utf8_lossy``).

Lesson: ``notebooks/01_tokenization.ipynb`` (1. Train a BPE and watch it).
"""
from __future__ import annotations

import heapq
from collections import Counter
from typing import Iterable, Optional, Sequence, Union

from .base import Tokenizer, TokenizerError, check_text, register
from .bpe_train import MergeStep, train_words
from .byte_level import (  # noqa: F401  (re-exported: the byte map's names were defined here before)
    BYTE_TO_CHAR, CHAR_TO_BYTE, HF_BYTE_ORDER, bytes_to_hf_str, bytes_to_unicode, check_special_tokens,
    hf_str_to_bytes, special_aliases, special_splitter,
)
from .pretokenize import PreTokenizer

@register("bpe")
class BPETokenizer(Tokenizer):
    """A byte-level BPE tokenizer: a vocabulary of byte strings, an ordered merge list, a
    pre-tokenizer, and special tokens. Build one with :meth:`train`, :meth:`load` or
    :func:`~workbench.tokenizers.hf_interop.from_hf`; see the module docstring for an example.

    ``vocab[i]`` is token ``i``'s bytes (a special token's UTF-8 text); ``merges`` is a list of
    ``(left, right, new_id)`` in training order (the rank is the index); ``trace`` the per-merge
    record of training (empty for a loaded tokenizer).
    """

    #: pieces whose encoding is remembered (a dict cleared when it grows past this size)
    cache_size = 200_000

    def __init__(
        self,
        vocab: Sequence[Optional[bytes]],
        merges: Sequence[tuple[int, int, int]] = (),
        special_tokens: Optional[dict[str, int]] = None,
        pattern: Optional[str] = "gpt2",
        digits: Optional[str] = "none",
        trace: Sequence[MergeStep] = (),
    ):
        self.vocab: list[Optional[bytes]] = list(vocab)
        self.special_tokens = dict(special_tokens or {})
        check_special_tokens(self.special_tokens)
        self.pretokenizer = PreTokenizer(pattern, digits)
        self.trace = list(trace)
        special_ids = set(self.special_tokens.values())
        index: dict[bytes, int] = {}
        for i, bs in enumerate(self.vocab):
            if bs is not None and len(bs) == 1 and i not in special_ids:
                index.setdefault(bs, i)
        self.byte_ids = []
        for b in range(256):
            i = index.get(bytes([b]))
            if i is None:
                raise TokenizerError(f"vocabulary has no token for byte {b:#04x}: not a byte-level BPE")
            self.byte_ids.append(i)
        n = len(self.vocab)
        aliases = special_aliases(self.special_tokens)
        self.merges: list[tuple[int, int, int]] = []
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, m in enumerate(merges):
            a, b, new = (int(x) for x in m)
            if not (0 <= a < n and 0 <= b < n and 0 <= new < n):
                raise TokenizerError(f"merge {rank} {(a, b, new)} refers to an id outside [0, {n})")
            if self.vocab[a] is None or self.vocab[b] is None or (
                self.vocab[new] != self.vocab[a] + self.vocab[b]
                and aliases.get(self.vocab[a] + self.vocab[b]) != new
            ):
                raise TokenizerError(f"merge {rank} {(a, b, new)}: token {new} is not token {a} + token {b}")
            self.merges.append((a, b, new))
            self._ranks[(a, b)] = (rank, new)  # a repeated pair keeps its last rank, as in HF
        for s, i in self.special_tokens.items():
            if not 0 <= i < n:
                raise TokenizerError(f"special token {s!r} has id {i} outside [0, {n})")
            self.vocab[i] = s.encode("utf-8")
        self._special_by_id = {i: s for s, i in self.special_tokens.items()}
        self._special_re = special_splitter(list(self.special_tokens))
        self._cache: dict[str, list[int]] = {}
        self._lens: Optional[list[int]] = None

    # -- training -----------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: Union[str, Iterable[str]],
        vocab_size: int,
        pattern: Optional[str] = "gpt2",
        digits: Optional[str] = "none",
        special_tokens: Sequence[str] = (),
        progress: Optional[bool] = None,
    ) -> "BPETokenizer":
        """Train a new tokenizer on ``text`` (a string, or an iterable of strings pre-tokenized
        separately) until it has ``vocab_size`` ids (specials included) or no pair is left.

        Special tokens get ids ``0 .. k-1`` and are matched whole when encoding. In the training
        text (as in HF's trainer) the text is cut at each special token, and each occurrence counts
        as one unsplit word of its characters, so its characters still shape the merges: strip
        document separators first if that is unwanted. Occurrences of a special token with a
        character outside GPT-2's byte-level alphabet (a space, say) are skipped instead. ``progress``:
        True/False forces the tqdm bar on/off; None shows it once a run takes over a second.
        """
        specials = check_special_tokens(special_tokens)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TokenizerError(f"vocab_size must be an int, got {vocab_size!r}")
        if vocab_size < 256 + len(specials):
            raise TokenizerError(
                f"vocab_size {vocab_size} is below 256 byte symbols + {len(specials)} special tokens "
                f"= {256 + len(specials)}"
            )
        pre = PreTokenizer(pattern, digits)
        texts = [text] if isinstance(text, str) else list(text)
        splitter = special_splitter(specials)
        word_counts: Counter = Counter()
        special_words: Counter = Counter()
        for t in texts:
            check_text(t)
            if splitter is None:
                if t:
                    word_counts.update(pre.split(t))
                continue
            pos = 0
            for m in splitter.finditer(t):
                if m.start() > pos:
                    word_counts.update(pre.split(t[pos : m.start()]))
                special_words[m.group()] += 1
                pos = m.end()
            if pos < len(t):
                word_counts.update(pre.split(t[pos:]))
        if not word_counts and not special_words:
            raise TokenizerError("cannot train on an empty corpus: the text has no characters")

        vocab: list[bytes] = [s.encode("utf-8") for s in specials]
        byte_ids = [0] * 256
        for b in HF_BYTE_ORDER:
            byte_ids[b] = len(vocab)
            vocab.append(bytes([b]))
        byte_counts = Counter({w.encode("utf-8"): c for w, c in word_counts.items()})
        for sp, c in special_words.items():
            # As in HF: a special token in the training text is one word of its own, never split by
            # the pattern, read character by character through the byte-level map. (A special with a
            # character outside that map, like a space, is skipped: HF would add the raw character
            # to its base alphabet, shifting every byte's id; see the parity tests.)
            if all(ch in CHAR_TO_BYTE for ch in sp):
                byte_counts[bytes(CHAR_TO_BYTE[ch] for ch in sp)] += c

        n_merges = vocab_size - len(vocab)
        bar = None
        if progress is not False and n_merges > 0:
            from tqdm.auto import tqdm

            # progress=None: the bar appears only once a run has taken more than a second.
            bar = tqdm(total=n_merges, desc="BPE merges", unit="merge", leave=False,
                       delay=0 if progress else 1.0)
        try:
            merges, trace = train_words(
                byte_counts, vocab, byte_ids, vocab_size, progress=bar,
                aliases=special_aliases({s: i for i, s in enumerate(specials)}),
            )
        finally:
            if bar is not None:
                bar.close()
        return cls(
            vocab,
            merges,
            {s: i for i, s in enumerate(specials)},
            pattern=pre.pattern if pre.pattern_name == "custom" else pre.pattern_name,
            digits=pre.digits_name,
            trace=trace,
        )

    # -- the Tokenizer interface ----------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _bpe(self, piece: bytes, max_rank: Optional[int] = None) -> list[int]:
        """Apply merges to one piece: repeatedly merge the adjacent pair of lowest rank (leftmost
        on ties). Only merges with rank < ``max_rank`` are used when it is given."""
        byte_ids = self.byte_ids
        sym = [byte_ids[b] for b in piece]
        n = len(sym)
        if n < 2:
            return sym
        ranks = self._ranks
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            r = ranks.get((sym[i], sym[i + 1]))
            if r is not None and (max_rank is None or r[0] < max_rank):
                heap.append((r[0], i, r[1]))
        if not heap:
            return sym
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            rank, i, new = pop(heap)
            if not alive[i]:
                continue
            j = nxt[i]
            if j >= n:
                continue
            r = ranks.get((sym[i], sym[j]))
            if r is None or r[1] != new:  # stale entry: the pair here changed since it was pushed
                continue
            sym[i] = new
            alive[j] = False
            k = nxt[j]
            nxt[i] = k
            if k < n:
                prv[k] = i
            p = prv[i]
            if p >= 0:
                r = ranks.get((sym[p], new))
                if r is not None and (max_rank is None or r[0] < max_rank):
                    push(heap, (r[0], p, r[1]))
            if k < n:
                r = ranks.get((new, sym[k]))
                if r is not None and (max_rank is None or r[0] < max_rank):
                    push(heap, (r[0], i, r[1]))
        return [s for s, a in zip(sym, alive) if a]

    def _encode_chunk(self, text: str, out: list[int]) -> None:
        cache = self._cache
        ext = out.extend
        for piece in self.pretokenizer.split(text):
            ids = cache.get(piece)
            if ids is None:
                ids = self._bpe(piece.encode("utf-8"))
                if len(cache) >= self.cache_size:
                    cache.clear()
                cache[piece] = ids
            ext(ids)

    def encode(self, text: str) -> list[int]:
        """Text to ids: special tokens are matched first, the rest is pre-tokenized and each piece
        encoded with the merges (repeated pieces come from a cache)."""
        check_text(text)
        out: list[int] = []
        if self._special_re is None:
            self._encode_chunk(text, out)
            return out
        pos = 0
        for m in self._special_re.finditer(text):
            if m.start() > pos:
                self._encode_chunk(text[pos : m.start()], out)
            out.append(self.special_tokens[m.group()])
            pos = m.end()
        if pos < len(text):
            self._encode_chunk(text[pos:], out)
        return out

    def encode_at(self, text: str, n_merges: int) -> list[int]:
        """Encode ``text`` using only the first ``n_merges`` merges (for scrubbing through training)."""
        check_text(text)
        n_merges = max(0, int(n_merges))
        out: list[int] = []
        for piece in self.pretokenizer.split(text):
            out.extend(self._bpe(piece.encode("utf-8"), max_rank=n_merges))
        return out

    def pair_counts_at(self, text: str, n_merges: int, top: int = 10) -> list[tuple[bytes, bytes, int]]:
        """The ``top`` most frequent adjacent pairs in ``text`` after the first ``n_merges`` merges,
        as ``(left bytes, right bytes, count)`` (pairs never span pre-tokenizer pieces, as in
        training). With the training text and ``n_merges = k``, the first pair is merge ``k``'s pair
        (ties broken by the training rule), so a merge scrubber can show what competed at each step."""
        check_text(text)
        n_merges = max(0, int(n_merges))
        counts: Counter = Counter()
        for piece, c in Counter(self.pretokenizer.split(text)).items():
            ids = self._bpe(piece.encode("utf-8"), max_rank=n_merges)
            for p in zip(ids, ids[1:]):
                counts[p] += c
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, int(top))]
        return [(self.vocab[a], self.vocab[b], c) for (a, b), c in best]

    def token_lengths(self, ids: Sequence[int]) -> list[int]:
        lens = self._lens
        if lens is None:
            lens = self._lens = [len(b) if b is not None else 0 for b in self.vocab]
        try:
            return [lens[i] for i in ids]
        except (IndexError, TypeError):
            self.check_ids(ids)
            raise

    def token_bytes(self, token_id: int) -> bytes:
        (token_id,) = self.check_ids([token_id])
        bs = self.vocab[token_id]
        if bs is None:
            raise TokenizerError(f"token id {token_id} is not assigned in this vocabulary")
        return bs

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text; see the module docstring for the replacement policy mid-character."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The raw bytes of ``ids`` joined (no UTF-8 decoding)."""
        ids = self.check_ids(ids)
        vocab = self.vocab
        try:
            return b"".join([vocab[i] for i in ids])
        except TypeError:
            bad = next(i for i in ids if vocab[i] is None)
            raise TokenizerError(f"token id {bad} is not assigned in this vocabulary") from None

    # -- inspection -------------------------------------------------------------------------------

    @property
    def pattern(self) -> str:
        """Pre-tokenization pattern name (``gpt2``, ``gpt4``, ``none``) or the custom regex."""
        p = self.pretokenizer
        return p.pattern if p.pattern_name == "custom" else p.pattern_name

    @property
    def digits(self) -> str:
        return self.pretokenizer.digits_name

    def merge_list(self) -> list[tuple[bytes, bytes]]:
        """The merges as byte strings, in rank order."""
        return [(self.vocab[a], self.vocab[b]) for a, b, _ in self.merges]

    # -- persistence --------------------------------------------------------------------------------

    def to_hf_json(self) -> dict:
        """This tokenizer as a HF ``tokenizer.json`` document (a dict)."""
        from .hf_interop import bpe_to_hf_json

        return bpe_to_hf_json(self)

    def to_dict(self) -> dict:
        return {"workbench_kind": "bpe", "tokenizer_json": self.to_hf_json()}

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        from .hf_interop import bpe_from_hf_json

        if "tokenizer_json" not in d:
            raise TokenizerError("BPE tokenizer dict has no 'tokenizer_json' entry")
        return bpe_from_hf_json(d["tokenizer_json"])

    def to_hf(self):
        """A ``tokenizers.Tokenizer`` giving the same ids (needs the ``tokenizers`` package)."""
        from .hf_interop import to_hf

        return to_hf(self)

    @classmethod
    def from_hf(cls, hf_tokenizer) -> "BPETokenizer":
        """Convert a byte-level BPE ``tokenizers.Tokenizer`` (or a transformers fast tokenizer)."""
        from .hf_interop import from_hf

        return from_hf(hf_tokenizer)

    def save(self, path) -> None:
        """Write a HF ``tokenizer.json`` (atomically: nothing appears at ``path`` unless it succeeds)."""
        from .hf_interop import save_json

        save_json(self.to_hf_json(), path)

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        """Read a ``tokenizer.json`` written by :meth:`save` or by HF ``tokenizers``."""
        from .hf_interop import load_json, bpe_from_hf_json

        return bpe_from_hf_json(load_json(path))

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"pattern={self.pretokenizer.pattern_name!r}, digits={self.digits!r}, "
            f"special_tokens={list(self.special_tokens)})"
        )
