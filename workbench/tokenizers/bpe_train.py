"""The BPE trainer's engine: learn merges from counted pieces, updating pair counts incrementally.

The plain version is :func:`workbench.tokenizers.reference.train` (every pair recounted before every merge);
the tests check this one against it. :meth:`workbench.tokenizers.bpe.BPETokenizer.train` cuts the text into
counted pieces and calls :func:`train_words`; the tie rule and HF's two quirks are described in
:mod:`workbench.tokenizers.bpe`.

Lesson: ``notebooks/01_tokenization.ipynb`` (1. Train a BPE and watch it).
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

@dataclass(frozen=True)
class MergeStep:
    """One training merge: ``left + right -> new_id``, how often the pair occurred (``count``), the
    new token's bytes, and the corpus length in tokens after applying it (``n_tokens``)."""

    rank: int
    left: int
    right: int
    new_id: int
    count: int
    token: bytes
    n_tokens: int

    @property
    def pair(self) -> tuple[int, int]:
        return (self.left, self.right)


def merge_word(w: list[int], a: int, b: int, new: int, changes: list) -> Optional[list[int]]:
    """Merge every ``(a, b)`` in ``w`` left to right; append ``(pair, +-1)`` count changes for the
    neighbours to ``changes``. Returns the new word, or None if ``w`` holds no ``(a, b)``."""
    n = len(w)
    try:
        i = w.index(a, 0, n - 1)
    except ValueError:
        return None
    out = w[:i]
    merged = False
    while i < n:
        x = w[i]
        if x == a and i + 1 < n and w[i + 1] == b:
            if out:
                prev = out[-1]
                changes.append(((prev, a), -1))
                changes.append(((prev, new), 1))
            if i + 2 < n:
                nxt = w[i + 2]
                changes.append(((b, nxt), -1))
                changes.append(((new, nxt), 1))
            out.append(new)
            merged = True
            i += 2
        else:
            out.append(x)
            i += 1
    return out if merged else None


def train_words(
    word_counts: dict[bytes, int],
    vocab: list[bytes],
    byte_ids: list[int],
    vocab_size: int,
    progress=None,
    aliases: Optional[dict[bytes, int]] = None,
) -> tuple[list[tuple[int, int, int]], list[MergeStep]]:
    """Learn merges from ``{piece bytes: count}``; extends ``vocab`` in place.

    ``vocab`` starts as the specials plus the 256 byte symbols and ``byte_ids[b]`` is byte ``b``'s id.
    ``aliases`` maps byte strings to existing ids a merge result must reuse (see :func:`special_aliases`).
    Returns ``(merges, trace)`` where each merge is ``(left, right, new_id)``.
    """
    vocab_index = {vocab[i]: i for i in byte_ids}
    vocab_index.update(aliases or {})
    words: list[list[int]] = []
    counts: list[int] = []
    for piece, c in word_counts.items():
        words.append([byte_ids[x] for x in piece])
        counts.append(c)
    n_tokens = sum(len(w) * c for w, c in zip(words, counts))

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set] = defaultdict(set)
    for wi, w in enumerate(words):
        c = counts[wi]
        for p in zip(w, w[1:]):
            pair_counts[p] += c
            where[p].add(wi)
    # Max-heap by (count, then smallest pair) via heapq's min-heap on (-count, left, right).
    # Entries carry the set of words to visit; stale counts are refreshed when popped.
    seq = 0
    heap = []
    for p, pos in where.items():
        heap.append((-pair_counts[p], p[0], p[1], seq, pos))
        seq += 1
    heapq.heapify(heap)
    where = None

    merges: list[tuple[int, int, int]] = []
    trace: list[MergeStep] = []
    pop, push = heapq.heappop, heapq.heappush
    while len(vocab) < vocab_size and heap:
        negc, a, b, _, pos = pop(heap)
        cur = pair_counts[(a, b)]
        if -negc != cur:
            push(heap, (-cur, a, b, seq, pos))
            seq += 1
            continue
        if cur < 1:
            break
        token = vocab[a] + vocab[b]
        new = vocab_index.get(token)
        if new is None:
            new = len(vocab)
            vocab.append(token)
            vocab_index[token] = new
            if progress is not None:
                progress.update(1)
        merges.append((a, b, new))

        changes: list = []
        new_where: dict[tuple[int, int], set] = {}
        merged_tokens = 0
        for wi in pos:
            w = words[wi]
            before = len(changes)
            nw = merge_word(w, a, b, new, changes)
            if nw is None:
                continue
            c = counts[wi]
            merged_tokens += (len(w) - len(nw)) * c
            words[wi] = nw
            for k in range(before, len(changes)):
                p, d = changes[k]
                pair_counts[p] += d * c
                if d > 0:
                    s = new_where.get(p)
                    if s is None:
                        new_where[p] = {wi}
                    else:
                        s.add(wi)
        for p, ws in new_where.items():
            cnt = pair_counts[p]
            if cnt > 0:
                push(heap, (-cnt, p[0], p[1], seq, ws))
                seq += 1
        n_tokens -= merged_tokens
        trace.append(MergeStep(len(merges) - 1, a, b, new, cur, token, n_tokens))
    return merges, trace
