"""The plain version of byte-level BPE: the trainer and encoder of :mod:`workbench.tokenizers.bpe`, written the
naive way, to read first and to check the fast ones against.

The fast trainer (:func:`workbench.tokenizers.bpe_train.train_words`) counts equal pieces once, keeps pair
counts in a heap and updates only the words a merge touches; the fast encoder keeps a heap of candidate
merges per piece. Here every merge recounts every pair of every piece, and encoding rescans the piece for the
best pair after every merge: quadratic, and a few dozen lines. The rules are the same, so the results are
the same (``tests/unit/tokenizers/test_bpe_reference.py`` checks that on random text):

* ids: the 256 bytes in HF's alphabet order (``HF_BYTE_ORDER``), then one per new merge (no special tokens
  here);
* training picks the most frequent pair, the smallest ``(left, right)`` among equal counts;
* HF's two quirks: a merge whose bytes are already a token reuses that id (the vocabulary does not grow), and
  a pair merged before that shows up again counts on from the count it was merged with;
* encoding merges the adjacent pair of lowest rank first, leftmost among equals, one occurrence at a time.

>>> vocab, merges = train("low lower lowest " * 50, 262)
>>> [vocab[new] for _, _, new in merges]
[b'lo', b'low', b' low', b' lowe', b'st', b' lower']
>>> [vocab[i] for i in encode(" lowest", merges)]
[b' lowe', b'st']

Lesson: ``notebooks/01_tokenization.ipynb`` (1. Train a BPE and watch it).
"""
from __future__ import annotations

from collections import Counter

from .byte_level import HF_BYTE_ORDER
from .pretokenize import PreTokenizer

BYTE_ID = {b: i for i, b in enumerate(HF_BYTE_ORDER)}  # byte -> its id


def merge(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """Every occurrence of ``pair`` in ``ids``, left to right, replaced by ``new``.

    >>> merge([5, 6, 5, 6, 6], (5, 6), 9)
    [9, 9, 6]
    """
    out, i = [], 0
    while i < len(ids):
        if tuple(ids[i: i + 2]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train(text: str, vocab_size: int, pattern: str | None = "gpt2", digits: str | None = "none"):
    """``(vocab, merges)``: the tokens' bytes by id and the merges ``(left, right, new)`` in training order."""
    vocab = [bytes([b]) for b in HF_BYTE_ORDER]
    words = [[BYTE_ID[b] for b in piece.encode("utf-8")] for piece in PreTokenizer(pattern, digits).split(text)]
    merges, merged_at = [], {}  # merged_at: the count a pair had when it was merged (HF's quirk)
    while len(vocab) < vocab_size:
        counts = Counter(p for w in words for p in zip(w, w[1:]))
        if not counts:
            break
        for p in counts:
            counts[p] += merged_at.get(p, 0)
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent, then the smallest ids
        token = vocab[pair[0]] + vocab[pair[1]]
        if token in vocab:
            new = vocab.index(token)
        else:
            new = len(vocab)
            vocab.append(token)
        merges.append((pair[0], pair[1], new))
        merged_at[pair] = counts[pair]
        words = [merge(w, pair, new) for w in words]
    return vocab, merges


def encode(text: str, merges, pattern: str | None = "gpt2", digits: str | None = "none") -> list[int]:
    """Ids of ``text`` under ``merges``: each piece's bytes, then the lowest-ranked adjacent pair merged
    (leftmost first) until no pair has a merge. A pair listed twice keeps its last rank, as in HF."""
    rank = {(a, b): (r, new) for r, (a, b, new) in enumerate(merges)}
    out = []
    for piece in PreTokenizer(pattern, digits).split(text):
        ids = [BYTE_ID[b] for b in piece.encode("utf-8")]
        while True:
            found = [(rank[p][0], i) for i, p in enumerate(zip(ids, ids[1:])) if p in rank]
            if not found:
                break
            _, i = min(found)
            ids[i: i + 2] = [rank[(ids[i], ids[i + 1])][1]]
        out += ids
    return out
