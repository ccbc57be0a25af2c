"""Exact next-byte probabilities from a model over BPE tokens (the "tokenization bias" and how to remove it).

A BPE model scores *tokens*. Asked for what follows a prompt that ends in the middle of a word, the naive answer
tokenises the prompt as it stands and reads the next-token distribution; but the canonical tokenisation of the
finished text would often have put the prompt's last bytes *inside* a longer token, so the naive context is one
the model rarely saw, and its predictions are biased (Phan et al. 2024, "Understanding and Mitigating Tokenization
Bias in Language Models"; "Exact Byte-Level Probabilities from Tokenized Language Models for FIM-Tasks and Model
Ensembles", 2025). The exact answer sums over every tokenisation that *covers* the prompt.

The method here (the Byte-Token Representation Lemma, written for byte-level BPE with a pre-tokenizer):

* **Covering encodings.** The byte stream a token model generates starts with ``x`` (bytes ``x[0:n]``) exactly
  when its token sequence has a shortest prefix ``t_1..t_k`` whose bytes start with ``x`` (``t_1..t_{k-1}`` end
  strictly inside ``x``). These events are disjoint, so ``P(x) = sum over covering t of P(t_1..t_k)``.
* **Canonical assumption** (stated, not proved): the model puts its mass on token sequences that are prefixes of
  *canonical* encodings (the ones the tokenizer itself produces). A sequence counts as such when it is the
  canonical encoding of its own bytes or, if those end in whitespace, the start of the canonical encoding of its
  bytes followed by a letter: GPT-2's pre-tokenizer cuts ``"\\n\\n"`` as one piece at the end of a text but as
  ``"\\n", "\\n"`` before ``"The"`` (its ``\\s+(?!\\S)`` looks ahead), and the model was trained on the latter.
  Then ``t_1..t_{k-1}`` is one of those cuts of ``x[:j]`` for some ``j < n``, and the covering encodings are
  ``cut(x[:j]) + [u]`` for each ``j``, each cut, and each token ``u`` whose bytes start with ``x[j:n]``, kept only
  when the sequence passes the same test. Other sequences are left out, so the kept mass
  :attr:`NextByte.valid_mass` can fall a little under 1; the distribution is renormalised over the 256 bytes.
* **Back-off.** Pre-tokenizer pieces are never crossed by a token, and the pieces before the prompt's last one
  do not change when text is appended (GPT-2's pattern; two pieces are backed off for other patterns). So every
  ``j`` before the last piece's start gives no canonical covering sequence, and the shared context
  ``c = encode(x[:start])`` is scored once: ``P(x) / P(c) = sum_j P(tail_j | c) * sum_u P(u | c + tail_j)``,
  ``tail_j = encode(x[start:j])``. The tokens ``u`` that start with ``x[j:n]`` are one range of the vocabulary
  sorted by bytes (a flattened trie: a binary search gives the range).
* **One batched model call.** ``c`` runs once through the KV cache, then all tails (one row per ``j``, a few
  tokens each) run as one batch on copies of that cache.

Which tokens count: special tokens, the BOS, ids the tokenizer has no text for (a padded HF embedding) never
stand for bytes, so they are left out (their probability is part of what :attr:`NextByte.valid_mass` misses).
A prompt is read as bytes; a special token's text in it is read as ordinary text. Bytes that end in the middle of
a UTF-8 character are pre-tokenized as opaque symbols (``surrogateescape``), which can cut differently from the
completed character; with ASCII text this never arises.

A model without a BOS token (``docs-bpe``) gives no distribution for its first token, so the prompt must hold
a whole pre-token piece before the one it ends in (``"import o"``, not ``"imp"``); :func:`byte_logprob` scores
such a text from the end of its first piece on.

Lesson: ``notebooks/01_tokenization.ipynb`` (6. Byte-level probabilities from a BPE model).

>>> from workbench.models import load_pretrained
>>> m = load_pretrained("docs-bpe")
>>> nb = next_byte_distribution(m, "The function retur")
>>> nb.top(1)[0][0], round(nb.prob("n"), 2) > round(nb.naive_prob("n"), 2)  # doctest: +SKIP
('n', True)
"""
from __future__ import annotations

import bisect
import copy
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .base import Tokenizer, TokenizerError
from .byte import ByteTokenizer
from .bpe import BPETokenizer

SUPPORTED = ("ByteTokenizer", "BPETokenizer (byte-level BPE)", "HFTokenizer over a byte-level BPE (GPT-2 style)")


class ByteProbError(ValueError):
    """Bad input to the byte-level probability functions (an empty prompt, an unsupported tokenizer, ...)."""


# ---------------------------------------------------------------------------------------------------------------
# The tokenizer seen as bytes


class ByteView:
    """A byte-level tokenizer seen as bytes: canonical encoding of any byte string, each id's bytes, the
    vocabulary sorted by bytes (a flattened trie), and where the last pre-token piece of a byte string starts.

    ``token_bytes[i]`` is None for ids that stand for no bytes here (special tokens, BOS, unassigned ids); ids
    from ``tokenizer.vocab_size`` up (a padded model embedding) are outside the table and never counted.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.bos_id: Optional[int] = getattr(tokenizer, "bos_id", None)
        if isinstance(tokenizer, ByteTokenizer):
            self.bpe = None
            self.token_bytes: list[Optional[bytes]] = [bytes([b]) for b in range(256)]
            self.token_bytes += [None] * (tokenizer.vocab_size - 256)
        else:
            self.bpe = as_byte_level_bpe(tokenizer)
            specials = set(self.bpe.special_tokens.values())
            self.token_bytes = [None if (i in specials or b is None or not b) else b
                                for i, b in enumerate(self.bpe.vocab)]
        order = sorted((b, i) for i, b in enumerate(self.token_bytes) if b is not None)
        #: byte strings of the counted ids, sorted (tokens sharing a prefix are one contiguous range)
        self.sorted_bytes = [b for b, _ in order]
        self.sorted_ids = np.array([i for _, i in order], dtype=np.int64)
        self._piece_cache: dict[bytes, list[int]] = {}
        self._valid_cache: dict[bytes, dict[int, bool]] = {}
        pre = self.bpe.pretokenizer if self.bpe is not None else None
        #: how many pre-token pieces to back off: 1 for GPT-2's pattern, 2 for any other (GPT-4's
        #: ``[^\r\n\p{L}\p{N}]?\p{L}+`` can glue a punctuation piece to the letters that follow it)
        self.back_pieces = 1 if pre is None or (pre.pattern_name == "gpt2" and pre.digits_name in ("none", "single")) \
            else 2
        self.r2l = pre is not None and pre.digits_name == "r2l3"

    @property
    def byte_level_is_identity(self) -> bool:
        return self.bpe is None

    def prefix_range(self, prefix: bytes) -> tuple[int, int]:
        """``[lo, hi)`` in :attr:`sorted_bytes` of the tokens whose bytes start with ``prefix``.

        >>> v = ByteView(ByteTokenizer())
        >>> v.prefix_range(b"a"), v.prefix_range(b"ab")
        ((97, 98), (98, 98))
        """
        lo = bisect.bisect_left(self.sorted_bytes, prefix)
        if not prefix:
            return 0, len(self.sorted_bytes)
        # the first byte string after every string that starts with ``prefix``
        hi = bisect.bisect_left(self.sorted_bytes, _successor(prefix), lo)
        return lo, hi

    def encode_bytes(self, data: bytes) -> list[int]:
        """The canonical encoding of any byte string: what the tokenizer does to the text, with bytes that are
        not valid UTF-8 pre-tokenized as opaque symbols; special tokens' text is read as plain text."""
        if self.bpe is None:
            return list(data)
        out: list[int] = []
        for piece in self.pieces(data):
            ids = self._piece_cache.get(piece)
            if ids is None:
                ids = self._piece_cache[piece] = self.bpe._bpe(piece)
            out.extend(ids)
        return out

    def pieces(self, data: bytes) -> list[bytes]:
        """The pre-token pieces of ``data`` as bytes."""
        if self.bpe is None:
            return [data[i:i + 1] for i in range(len(data))]
        text = data.decode("utf-8", errors="surrogateescape")
        return [p.encode("utf-8", errors="surrogateescape") for p in self.bpe.pretokenizer.split(text)]

    def backoff(self, data: bytes) -> int:
        """The byte offset from which the encoding of ``data`` may change when bytes are appended: the start
        of its last pre-token piece (:attr:`back_pieces` pieces back, and a whole trailing digit run when
        digits are chunked right to left). A byte tokenizer never re-cuts: the end of ``data``."""
        if self.bpe is None:
            return len(data)
        pieces = self.pieces(data)
        k = min(len(pieces), self.back_pieces)
        if self.r2l:
            while k < len(pieces) and pieces[-k - 1].strip().isdigit() and pieces[-k].strip().isdigit():
                k += 1
        return len(data) - sum(len(p) for p in pieces[len(pieces) - k:])

    def is_canonical_after(self, tail: bytes, tail_ids: Sequence[int], token_id: int) -> bool:
        """True when ``tail_ids + [token_id]`` is a prefix of the canonical encoding of some text that starts with
        ``tail + bytes(token_id)`` (``tail`` starts at a stable piece boundary): the canonical encoding of those
        bytes themselves, or, when they end in whitespace, of those bytes followed by a letter. The second case is
        the pre-tokenizer's look-ahead (GPT-2's ``\\s+(?!\\S)``): ``"\\n\\n"`` alone is one piece, but
        before ``"The"`` it is cut ``"\\n", "\\n"``, and the model was trained on such cuts."""
        key = (tail, tuple(tail_ids))
        memo = self._valid_cache.get(key)
        if memo is None:
            if len(self._valid_cache) > 4096:
                self._valid_cache.clear()
            memo = self._valid_cache[key] = {}
        ok = memo.get(token_id)
        if ok is None:
            want = list(tail_ids) + [token_id]
            data = tail + self.token_bytes[token_id]
            ok = self.encode_bytes(data) == want
            if not ok and data[-1:].isspace():
                ok = self.encode_bytes(data + b"a")[:len(want)] == want
            memo[token_id] = ok
        return ok

    def tail_cuts(self, tail: bytes) -> list[list[int]]:
        """The token sequences that can stand for ``tail`` (from a stable boundary) in a canonical encoding of a
        longer text: its own canonical encoding and, when it ends in whitespace, the cut it gets before a letter."""
        cuts = [self.encode_bytes(tail)]
        if tail[-1:].isspace():
            ids = self.encode_bytes(tail + b"a")
            n = 0
            for k, i in enumerate(ids):
                n += len(self.token_bytes[i] or b"")
                if n == len(tail):
                    if ids[:k + 1] != cuts[0]:
                        cuts.append(ids[:k + 1])
                    break
                if n > len(tail):
                    break
        return cuts


def _successor(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string that starts with ``prefix``."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b"\xff" * (len(prefix) + 64)  # nothing in a vocabulary sorts after this
    p[-1] += 1
    return bytes(p)


def as_byte_level_bpe(tokenizer) -> BPETokenizer:
    """``tokenizer`` as a :class:`BPETokenizer` (an HF byte-level BPE is converted), or a :class:`ByteProbError`
    that names the supported kinds."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer
    from .hf_interop import HFTokenizer, from_hf

    if isinstance(tokenizer, HFTokenizer):
        if not getattr(tokenizer, "_byte_level", False):
            raise ByteProbError(f"{tokenizer!r} is not a byte-level tokenizer (no ByteLevel step in its pipeline): "
                                f"byte probabilities need one of {', '.join(SUPPORTED)}")
        try:
            return from_hf(tokenizer.hf)
        except (TokenizerError, ValueError, KeyError, TypeError) as e:
            raise ByteProbError(f"{tokenizer!r} could not be read as a byte-level BPE ({e}); supported: "
                                f"{', '.join(SUPPORTED)}") from None
    raise ByteProbError(f"byte probabilities need a byte-level tokenizer; {type(tokenizer).__name__} is not one. "
                        f"Supported: {', '.join(SUPPORTED)}")


def byte_view(model_or_tokenizer) -> ByteView:
    """The :class:`ByteView` of a model's tokenizer (cached on the tokenizer)."""
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    if tok is None or not isinstance(tok, Tokenizer):
        raise ByteProbError(f"this model has no workbench tokenizer (got {type(tok).__name__}); byte probabilities "
                            f"need one of {', '.join(SUPPORTED)}")
    view = tok.__dict__.get("_wb_byte_view")
    if view is None or len(view.token_bytes) != tok.vocab_size:
        view = tok.__dict__["_wb_byte_view"] = ByteView(tok)
    return view


# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class NextByte:
    """The next-byte distribution after ``prompt`` (bytes).

    ``probs`` ``(256,)``: the exact distribution (renormalised over the bytes; see the module docstring).
    ``naive_probs`` ``(256,)``: the naive one: tokenise the prompt as it stands, take the next-token distribution,
    and add each token's probability to its first byte (special and textless ids left out, renormalised).
    ``valid_mass``: ``sum_b P(x b) / P(x)`` under the canonical assumption, i.e. how much of the model's mass
    stayed on canonical sequences (1.0 for a model that never leaves them). ``backoff``: the byte where the
    shared context ends; ``n_contexts``: how many contexts were scored (one per byte from ``backoff`` to the end).
    ``prefix_prob``: ``P(prompt[backoff:] | prompt[:backoff])``, the probability that the byte stream continues
    the shared context with the prompt's last bytes.
    """

    prompt: bytes
    probs: np.ndarray
    naive_probs: np.ndarray
    valid_mass: float
    backoff: int
    n_contexts: int
    prefix_prob: float = float("nan")

    @staticmethod
    def _byte(b: Union[int, str, bytes]) -> int:
        if isinstance(b, str):
            b = b.encode("utf-8")
        if isinstance(b, (bytes, bytearray)):
            if len(b) != 1:
                raise ByteProbError(f"ask for one byte, got {bytes(b)!r} ({len(b)} bytes)")
            return b[0]
        if not 0 <= int(b) < 256:
            raise ByteProbError(f"a byte is in [0, 256), got {b}")
        return int(b)

    def prob(self, b) -> float:
        """The exact probability of next byte ``b`` (an int, a one-byte str or bytes)."""
        return float(self.probs[self._byte(b)])

    def naive_prob(self, b) -> float:
        return float(self.naive_probs[self._byte(b)])

    def top(self, k: int = 10, naive: bool = False) -> list[tuple[str, float]]:
        """The ``k`` most likely next bytes as ``(label, probability)``, labels from :func:`byte_label`."""
        p = self.naive_probs if naive else self.probs
        order = np.argsort(-p, kind="stable")[:k]
        return [(byte_label(int(b)), float(p[b])) for b in order]

    @property
    def entropy_bits(self) -> float:
        p = self.probs[self.probs > 0]
        return float(-(p * np.log2(p)).sum())


@dataclass
class ByteLogProb:
    """``log P(text[start:] | text[:start])`` in nats under the byte-level distribution, with each byte's term.

    ``start`` is 0 for a model with a BOS; without one, the end of the text's first pre-token piece (the first
    token has no distribution). ``terms[k]`` is the log-probability of byte ``start + k``.
    """

    text: bytes
    start: int
    terms: np.ndarray
    total: float = field(init=False)

    def __post_init__(self):
        self.total = float(np.sum(self.terms))

    @property
    def n_bytes(self) -> int:
        return len(self.terms)

    @property
    def bits_per_byte(self) -> float:
        return -self.total / max(1, self.n_bytes) / math.log(2)


def byte_label(b: int) -> str:
    """A printable label for a byte: the character for printable ASCII (space as ``·``), else ``<0xNN>``."""
    if b == 0x20:
        return "·"
    if b == 0x0A:
        return "⏎"
    if 0x21 <= b <= 0x7E:
        return chr(b)
    return f"<0x{b:02X}>"


# ---------------------------------------------------------------------------------------------------------------
# The computation


def _as_bytes(text) -> bytes:
    if isinstance(text, str):
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ByteProbError(f"text contains a lone surrogate at character {e.start}: only valid Unicode "
                                "(or bytes) can be scored") from None
    if isinstance(text, (bytes, bytearray)):
        return bytes(text)
    raise ByteProbError(f"expected the prompt as str or bytes, got {type(text).__name__}")


@dataclass
class _Contexts:
    """One row per split point ``j`` in ``[backoff, n]``: the tail bytes ``x[backoff:j]``, their canonical ids,
    and after one model call, ``log P(tail | c)`` and the next-token log-probabilities after ``c + tail``."""

    shared: list[int]
    starts: list[int]
    tails: list[bytes]
    tail_ids: list[list[int]]
    log_w: Optional[np.ndarray] = None  # (R,)
    logp: Optional[np.ndarray] = None  # (R, V)


def _contexts(view: ByteView, x: bytes, backoff: int) -> _Contexts:
    shared = view.encode_bytes(x[:backoff])
    if view.bos_id is not None:
        shared = [view.bos_id] + shared
    if not shared:
        raise ByteProbError(
            f"the prompt {x!r} is a single pre-token piece and this model has no BOS token, so nothing predicts "
            "its first token: give a prompt with a whole word (piece) before the last one, e.g. 'import o'")
    starts, tails, tail_ids = [], [], []
    for j in range(backoff, len(x) + 1):
        for cut in view.tail_cuts(x[backoff:j]) if j > backoff else [[]]:
            starts.append(j)
            tails.append(x[backoff:j])
            tail_ids.append(cut)
    return _Contexts(shared, starts, tails, tail_ids)


def _block_size(model) -> int:
    return int(getattr(getattr(model, "config", None), "block_size", 0) or 1 << 30)


class _Scorer:
    """Runs the model for :class:`_Contexts`: the shared context through a KV cache, then all tails as one batch on
    a copy of that cache. Across calls (``byte_logprob`` walks a text byte by byte) the cache is kept and only
    the new shared tokens are fed, as long as the new shared context extends the cached one."""

    def __init__(self, model):
        self.model = model
        self.ids: list[int] = []
        self.cache = None
        self.last = None  # logits after the cached tokens

    @torch.no_grad()
    def score(self, ctx: _Contexts) -> None:
        """Fill ``ctx.log_w`` ``(R,)`` and ``ctx.logp`` ``(R, V)``."""
        from ..models.kv_cache import KVCache

        model = self.model
        R = len(ctx.tails)
        L = max(len(t) for t in ctx.tail_ids)
        block = _block_size(model)
        shared = ctx.shared[-max(1, block - L):]
        device = getattr(model, "device", None)
        rows = torch.zeros((R, L), dtype=torch.long)
        for r, t in enumerate(ctx.tail_ids):
            rows[r, :len(t)] = torch.as_tensor(t, dtype=torch.long)
        cache = None
        if hasattr(model, "new_cache"):
            n = len(self.ids)
            if self.cache is not None and shared[:n] == self.ids and len(shared) + L <= self.cache.max_len and n:
                cache = self.cache
            else:
                cache = model.new_cache(1, max_len=min(block, len(shared) + L + 256))
                self.ids, self.last = [], None
                if not isinstance(cache, KVCache):
                    cache = None
        if cache is not None:
            new = shared[len(self.ids):]
            if new:
                self.last = model.step(torch.as_tensor([new], dtype=torch.long, device=device), cache).logits[0, -1]
                self.ids = list(shared)
            self.cache = cache
            last = self.last.float()
            if L:
                batch = copy.copy(cache)  # reorder replaces the copy's tensors; the kept cache is untouched
                batch.reorder(torch.zeros(R, dtype=torch.long, device=cache.k.device))
                tail_logits = model.step(rows.to(device), batch).logits.float()  # (R, L, V)
        else:  # any other model: one plain batched forward of shared + tail rows (right-padded: causal)
            shared_t = torch.as_tensor([shared], dtype=torch.long)
            full = torch.cat([shared_t.expand(R, -1), rows], dim=1)
            logits = model.forward(full.to(device)).logits.float()
            last = logits[0, len(shared) - 1]
            tail_logits = logits[:, len(shared):]
        V = last.shape[-1]
        first_np = torch.log_softmax(last.double(), -1).cpu().numpy()
        logp = np.empty((R, V))
        log_w = np.zeros(R)
        tail_lp = torch.log_softmax(tail_logits.double(), -1).cpu().numpy() if L else None
        for r, t in enumerate(ctx.tail_ids):
            if not t:
                logp[r] = first_np
                continue
            lw = first_np[t[0]]
            for k in range(1, len(t)):
                lw += tail_lp[r, k - 1, t[k]]
            log_w[r] = lw
            logp[r] = tail_lp[r, len(t) - 1]
        ctx.log_w, ctx.logp = log_w, logp


def _naive(view: ByteView, logp: np.ndarray) -> np.ndarray:
    """Next-token probabilities (one row, model vocabulary) added up by each token's first byte."""
    p = np.exp(logp)
    out = np.zeros(256)
    ids = view.sorted_ids
    first = np.frombuffer(b"".join(view.sorted_bytes[k][:1] for k in range(len(ids))), dtype=np.uint8)
    np.add.at(out, first, p[ids])
    s = out.sum()
    return out / s if s > 0 else out


def _exact(view: ByteView, x: bytes, ctx: _Contexts) -> tuple[np.ndarray, float]:
    """``(S, prefix)``: ``S[b] = P(x b) / P(c)`` for each byte and ``prefix = P(x) / P(c)`` (canonical covers)."""
    n = len(x)
    scores = np.zeros(256)
    prefix = 0.0
    w = np.exp(ctx.log_w)
    sb, sid = view.sorted_bytes, view.sorted_ids
    for r, j in enumerate(ctx.starts):
        if w[r] == 0.0:
            continue
        rest = x[j:]
        lo, hi = view.prefix_range(rest)
        tail, tail_ids, p_row = ctx.tails[r], ctx.tail_ids[r], ctx.logp[r]
        for k in range(lo, hi):
            tid = int(sid[k])
            if not view.is_canonical_after(tail, tail_ids, tid):
                continue
            p = w[r] * math.exp(p_row[tid])
            b = sb[k]
            if len(b) > len(rest):
                scores[b[len(rest)]] += p
            if j < n:
                prefix += p
    return scores, prefix


def next_byte_distribution(model, text: Union[str, bytes]) -> NextByte:
    """The exact distribution over the byte after ``text`` for a model with a byte-level tokenizer, and the
    naive one beside it; see the module docstring for the method and its assumption.

    ``text``: a non-empty str (read as its UTF-8 bytes) or bytes (may end mid-character).
    """
    view = byte_view(model)
    x = _as_bytes(text)
    if not x:
        raise ByteProbError("the prompt is empty: give at least one byte of text to continue (the next-byte "
                            "distribution of an empty prompt needs a BOS token and is not defined here)")
    return _next_byte(model, view, x, 0)


def _next_byte(model, view: ByteView, x: bytes, given: int, scorer: Optional[_Scorer] = None) -> NextByte:
    """:func:`next_byte_distribution` with the tokens of ``x[:given]`` taken as given (never re-cut)."""
    backoff = max(view.backoff(x), given)
    ctx = _contexts(view, x, backoff)
    (scorer or _Scorer(model)).score(ctx)
    scores, prefix = _exact(view, x, ctx)
    total = scores.sum()
    if not total > 0:
        raise ByteProbError(f"no canonical token sequence continues {x!r} with non-zero probability")
    naive_row = next(r for r, j in enumerate(ctx.starts) if j == len(x))  # encode(x): the naive tokenisation
    naive = _naive(view, ctx.logp[naive_row])
    return NextByte(prompt=x, probs=scores / total, naive_probs=naive,
                    valid_mass=float(total / prefix) if prefix > 0 else float("nan"),
                    backoff=backoff, n_contexts=len(ctx.starts), prefix_prob=float(prefix))


def byte_logprob(model, text: Union[str, bytes], start: Optional[int] = None) -> ByteLogProb:
    """The log-probability (nats) of ``text`` under the model's byte-level distribution: the sum of
    ``log P(x_k | x_<k)`` over the bytes from ``start`` on, each term from :func:`next_byte_distribution`.

    ``start`` defaults to 0 with a BOS token, else to the end of the text's first pre-token piece (the first
    token has no distribution in a model without a BOS). The tokens of ``text[:start]`` are taken as given: the
    result is ``log P(text[start:] | encode(text[:start]))``.
    """
    view = byte_view(model)
    x = _as_bytes(text)
    if not x:
        raise ByteProbError("the text is empty: there is nothing to score")
    if start is None:
        start = default_start(view, x)
    if not 0 <= start < len(x):
        raise ByteProbError(f"start {start} is outside the text's {len(x)} bytes")
    if start == 0 and view.bos_id is None:
        raise ByteProbError("this model has no BOS token, so its first token has no distribution: start must be "
                            "at least the end of the text's first pre-token piece")
    if view.bpe is None:  # every byte is a token: one forward pass scores the whole text
        return ByteLogProb(text=x, start=start, terms=_byte_model_terms(model, view, x, start))
    terms = np.empty(len(x) - start)
    scorer = _Scorer(model)
    for k in range(start, len(x)):
        if k == 0:
            terms[0] = _first_byte_logprob(model, view, x[0])
            continue
        nb = _next_byte(model, view, x[:k], start, scorer)
        p = nb.probs[x[k]]
        terms[k - start] = math.log(p) if p > 0 else -math.inf
    return ByteLogProb(text=x, start=start, terms=terms)


def default_start(view: ByteView, x: bytes) -> int:
    """0 with a BOS; otherwise the end of the first pre-token piece of ``x``."""
    if view.bos_id is not None:
        return 0
    return len(view.pieces(x)[0]) if view.bpe is not None else 1


@torch.no_grad()
def _first_byte_logprob(model, view: ByteView, b: int) -> float:
    """``log P(first byte = b)`` after the BOS alone: the tokens starting with ``b`` that are canonical alone."""
    logits = model.forward(torch.as_tensor([[view.bos_id]], dtype=torch.long)).logits[0, -1].double()
    logp = torch.log_softmax(logits, -1).numpy()
    scores = np.zeros(256)
    for k, tid in enumerate(view.sorted_ids):
        if view.is_canonical_after(b"", [], int(tid)):
            scores[view.sorted_bytes[k][0]] += math.exp(logp[tid])
    return math.log(scores[b] / scores.sum())


@torch.no_grad()
def _byte_model_terms(model, view: ByteView, x: bytes, start: int) -> np.ndarray:
    """Each byte's log-probability from a byte-tokenizer model, in windows of its context that overlap by half (so
    every byte after the first window has at least half a context before it; each window starts with the BOS, if
    there is one): the model's softmax renormalised over the 256 byte ids."""
    block = _block_size(model)
    bos = [] if view.bos_id is None else [view.bos_id]
    out = np.empty(len(x) - start)
    k = start
    while k < len(x):
        lo = 0 if k < block - len(bos) else k - (block - len(bos)) // 2
        ids = bos + list(x[lo:min(len(x), lo + block - len(bos))])
        logits = model.forward(torch.as_tensor([ids], dtype=torch.long)).logits[0, :, :256].double()
        logp = torch.log_softmax(logits, -1).numpy()
        # position q of ``ids`` predicts byte lo + q + 1 - len(bos) (the last position: the byte after the window)
        end = min(len(x), lo + len(ids) - len(bos) + 1)
        for b in range(k, end):
            q = b - lo + len(bos) - 1
            out[b - start] = logp[q, x[b]]
        k = end
    return out


# ---------------------------------------------------------------------------------------------------------------
# The lesson's measurement: naive against exact by where the prompt ends

#: Where ``python -m workbench.tokenizers.byte_probs`` writes the numbers notebook 01 reads.
RESULT_FILE = __import__("pathlib").Path(__file__).parent / "results" / "next_byte_bias.json"

PROMPT_ENDS = {
    "mid-word": lambda a, b: a.isalpha() and b.isalpha(),
    "end of a word": lambda a, b: a.isalpha() and b == " ",
    "after a space": lambda a, b: a == " " and b.isalpha(),
    "after a newline": lambda a, b: a == "\n",
}


def bias_by_prompt_end(model, text: str, per_kind: int = 12, context: int = 120, seed: int = 0) -> dict:
    """For prompts cut from ``text`` at random places of each kind in :data:`PROMPT_ENDS` (the kind is read from
    the characters on either side of the cut): the mean total-variation distance between the naive and the exact
    next-byte distributions, and the mean probability each gives the byte that really follows."""
    import random

    rng = random.Random(seed)
    groups: dict[str, list[int]] = {k: [] for k in PROMPT_ENDS}
    tries = 0
    while min(len(v) for v in groups.values()) < per_kind:
        tries += 1
        if tries > 1_000_000:
            raise ByteProbError("the text has too few places of some kind of prompt end")
        e = rng.randrange(context, len(text) - 1)
        for kind, test in PROMPT_ENDS.items():
            if test(text[e - 1], text[e]) and len(groups[kind]) < per_kind:
                groups[kind].append(e)
    out = {}
    for kind, ends in groups.items():
        tv, p_exact, p_naive = [], [], []
        for e in ends:
            nb = next_byte_distribution(model, text[e - context:e])
            b = text[e].encode("utf-8")[0]
            tv.append(0.5 * float(np.abs(nb.probs - nb.naive_probs).sum()))
            p_exact.append(float(nb.probs[b]))
            p_naive.append(float(nb.naive_probs[b]))
        out[kind] = {"n": len(ends), "total_variation": float(np.mean(tv)), "p_true_exact": float(np.mean(p_exact)),
                     "p_true_naive": float(np.mean(p_naive))}
    return out


def main(argv=None) -> dict:
    """Measure :func:`bias_by_prompt_end` for ``docs-bpe`` on held-out text and write :data:`RESULT_FILE`."""
    import argparse
    import json

    from ..models import load_pretrained
    from ..models.make_pretrained import text_splits

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--per-kind", type=int, default=30)
    p.add_argument("--out", default=str(RESULT_FILE))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    _, val = text_splits()
    res = {"model": "docs-bpe", "context_chars": 120, "groups": bias_by_prompt_end(load_pretrained("docs-bpe"), val,
                                                                                      a.per_kind),
           "command": "python -m workbench.tokenizers.byte_probs"}
    path = __import__("pathlib").Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
