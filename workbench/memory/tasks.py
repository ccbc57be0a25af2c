"""Token-level task generators of the memory lab, on small vocabularies, with loss masks.

Every generator returns a :class:`TaskBatch`: inputs ``x`` ``(B, T)`` and targets ``y`` ``(B, T)`` where ``y[b, t]``
is the token that must follow ``x[b, :t + 1]`` or :data:`IGNORE` where nothing is scored. Only answer tokens carry a
target, so a model is trained and scored on what the task asks, not on the random context (whose tokens cannot be
predicted anyway). Randomness comes from a ``numpy.random.Generator`` the caller seeds.

* :func:`recall_batch`: multi-query associative recall (Arora et al., Zoology; "Just read twice"): key-value pairs,
  then every key again as a query whose value is the target; optionally the pairs twice ("read twice") or the
  queried keys first ("queries first", the set order).
* :func:`icl_batch`: in-context learning of boolean functions (Bhattamishra et al.): examples ``x_1 .. x_d y``, one
  token per bit (naming the bit) and a label token ``y = f(x)`` (scored); ``f`` is drawn per row from a function class.
* :func:`reversal_facts` / :func:`reversal_rows`: synthetic facts "A is B" between two-token names and two-token
  attributes from small embedded lists (Berglund et al.'s reversal curse).
* :func:`addition_rows`: ``a+b=`` with the sum written plain, reversed or after a scratchpad (Lee et al.).

>>> b = recall_batch(np.random.default_rng(0), batch=2, n_pairs=3)
>>> tuple(b.x.shape), int((b.y != IGNORE).sum(1)[0])
((2, 13), 3)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from .errors import TaskRangeError

#: Target of a position that is neither trained nor scored (``F.cross_entropy(ignore_index=IGNORE)``).
IGNORE = -1


@dataclass
class TaskBatch:
    """Inputs ``x`` ``(B, T)`` long and targets ``y`` ``(B, T)`` long (:data:`IGNORE` where not scored);
    ``info``: per-task arrays a scorer needs (e.g. which pair each recall query asks)."""

    x: torch.Tensor
    y: torch.Tensor
    info: dict

    @property
    def scored(self) -> torch.Tensor:
        """``(B, T)`` bool: the positions with a target."""
        return self.y != IGNORE


def _check_int(name: str, v, lo: int, hi: int | None = None) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise TaskRangeError(f"{name} must be an int {allowed}, got {v!r}")
    return int(v)


def _batch(rows: np.ndarray, targets: np.ndarray, info: dict) -> TaskBatch:
    return TaskBatch(torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long), info)


# ---------------------------------------------------------------------------------------------------------------
# Multi-query associative recall


@dataclass(frozen=True)
class RecallVocab:
    """Token layout of the recall task: 0 BOS, 1 SEP, then ``n_keys`` key tokens, then ``n_values`` value tokens."""

    n_keys: int = 32
    n_values: int = 32

    BOS = 0
    SEP = 1

    @property
    def size(self) -> int:
        return 2 + self.n_keys + self.n_values

    def key(self, i):
        return 2 + np.asarray(i)

    def value(self, j):
        return 2 + self.n_keys + np.asarray(j)


def recall_length(n_pairs: int, read_twice: bool = False, queries_first: bool = False,
                  n_queries: int | None = None) -> int:
    """Input length of a recall row: BOS, with ``queries_first`` the ``m`` queried keys and SEP, the pairs (twice
    with ``read_twice``, each copy closed by SEP), then ``m`` query-answer pairs whose last answer is a target only
    (``m = n_queries``, default ``n_pairs``): ``1 + [m + 1] + (2n + 1)(1 + twice) + 2m - 1``."""
    m = n_pairs if n_queries is None else n_queries
    copies = 2 if read_twice else 1
    return 1 + ((m + 1) if queries_first else 0) + copies * (2 * n_pairs + 1) + 2 * m - 1


def recall_batch(rng: np.random.Generator, batch: int, n_pairs: int, vocab: RecallVocab = RecallVocab(),
                 read_twice: bool = False, queries_first: bool = False, n_queries: int | None = None,
                 distinct_queries: bool = True) -> TaskBatch:
    """``batch`` rows ``BOS k1 v1 ... kn vn SEP [k1 v1 ... kn vn SEP] q1 a1 ... qm am``: distinct keys, values
    drawn with replacement, ``m = n_queries`` (default ``n_pairs``: every key queried once) distinct keys of the
    context queried in a random order; the target at each query ``q`` is its value. ``distinct_queries=False``:
    the ``m`` queried keys drawn with replacement instead (any ``m >= 1``). With every key asked once, the last
    query (and, in part, every later one) can be answered by elimination, "the value not yet answered", which a
    model learns long before the lookup; drawing with replacement takes that shortcut away.

    ``read_twice``: the pairs twice (Arora et al.'s "just read twice"). ``queries_first``: the queried keys
    ``BOS q1 ... qm SEP`` before the pairs, in the order they will be asked (the set order of Arora et al.: a
    recurrent model that knows what will be asked can keep only those pairs).

    ``info["pair"]`` ``(B, m)``: the index (0 = first in the context) of the pair each query asks, so recall can be
    split by where the pair sat (recurrent models forget early pairs first). ``info["query_pos"]`` ``(B, m)``: the
    positions of the queries in ``x``.
    """
    n = _check_int("n_pairs", n_pairs, 1, vocab.n_keys)
    m = n if n_queries is None else _check_int("n_queries", n_queries, 1, n if distinct_queries else None)
    batch = _check_int("batch", batch, 1)
    keys = np.argsort(rng.random((batch, vocab.n_keys)), axis=1)[:, :n]  # distinct keys per row
    vals = rng.integers(0, vocab.n_values, size=(batch, n))
    if distinct_queries:
        order = np.argsort(rng.random((batch, n)), axis=1)[:, :m]  # the queried pairs, in query order
    else:
        order = rng.integers(0, n, size=(batch, m))
    ctx = np.empty((batch, 2 * n), dtype=np.int64)
    ctx[:, 0::2], ctx[:, 1::2] = vocab.key(keys), vocab.value(vals)
    sep = np.full((batch, 1), RecallVocab.SEP)
    qkeys = vocab.key(np.take_along_axis(keys, order, 1))  # (B, m)
    head = [np.full((batch, 1), RecallVocab.BOS)] + ([qkeys, sep] if queries_first else [])
    parts = head + [ctx, sep] + ([ctx, sep] if read_twice else [])
    q = np.empty((batch, 2 * m), dtype=np.int64)
    q[:, 0::2] = qkeys
    q[:, 1::2] = vocab.value(np.take_along_axis(vals, order, 1))
    full = np.concatenate(parts + [q], axis=1)
    x, nxt = full[:, :-1], full[:, 1:]
    start = full.shape[1] - 2 * m  # position of the first query in full (and in x)
    y = np.full(x.shape, IGNORE, dtype=np.int64)
    qpos = start + 2 * np.arange(m)
    y[:, qpos] = nxt[:, qpos]
    return _batch(x, y, {"pair": order, "query_pos": np.broadcast_to(qpos, (batch, m)).copy()})


# ---------------------------------------------------------------------------------------------------------------
# In-context learning of boolean functions

#: The function classes: conjunctions of two literals and parities of a non-empty subset of the bits.
FUNCTION_CLASSES = ("conjunction", "parity")


def function_table(kind: str, n_bits: int) -> np.ndarray:
    """Every function of the class as its truth table: ``(n_functions, 2 ** n_bits)`` of 0/1 (input ``x`` as an
    integer whose bit ``i`` is variable ``i``). ``conjunction``: ``l_i AND l_j`` for two distinct variables, each
    literal plain or negated (``4 C(d, 2)`` functions); ``parity``: XOR of a non-empty subset (``2 ** d - 1``).

    >>> function_table("parity", 2).tolist()
    [[0, 1, 0, 1], [0, 0, 1, 1], [0, 1, 1, 0]]
    """
    d = _check_int("n_bits", n_bits, 2, 8)
    xs = np.arange(2 ** d)
    bits = (xs[None, :] >> np.arange(d)[:, None]) & 1  # (d, 2^d)
    if kind == "parity":
        subsets = np.arange(1, 2 ** d)
        return np.array([np.bitwise_xor.reduce(bits[(s >> np.arange(d)) & 1 == 1], axis=0) for s in subsets])
    if kind == "conjunction":
        rows = []
        for i, j in itertools.combinations(range(d), 2):
            for si, sj in itertools.product((1, 0), repeat=2):
                rows.append((bits[i] == si) & (bits[j] == sj))
        return np.array(rows, dtype=np.int64)
    raise TaskRangeError(f"unknown function class {kind!r}; choose from {FUNCTION_CLASSES}")


@dataclass(frozen=True)
class ICLVocab:
    """Token layout of the ICL task, one token per bit: token ``2 j + b`` says "bit ``j`` of this input is ``b``"
    (``j`` in ``0 .. d-1``), then the outputs ``Y0 = 2d`` and ``Y1 = 2d + 1``, then ``BOS = 2d + 2``.

    Why a bit's token names its index: the transformer's positions are rotary, which move queries and keys but not
    values, so what one position reads from another carries the token alone. With only "0" and "1" tokens a head that
    gathers an input's bits would learn how many are 1 but not which; naming the bit lets one head collect a whole
    input (and a label token collect its example's input), the first step of any learner of boolean functions.

    >>> v = ICLVocab(3)
    >>> int(v.bit(2, 1)), v.y0, v.bos, v.size
    (5, 6, 8, 9)
    """

    n_bits: int = 5

    def bit(self, j, b):
        """The token of "bit ``j`` is ``b``" (arrays broadcast)."""
        return 2 * np.asarray(j) + np.asarray(b)

    @property
    def y0(self) -> int:
        return 2 * self.n_bits

    @property
    def bos(self) -> int:
        return 2 * self.n_bits + 2

    @property
    def size(self) -> int:
        return 2 * self.n_bits + 3

    @property
    def example_len(self) -> int:
        """Tokens per example: ``d`` bits and the label."""
        return self.n_bits + 1

    def row_len(self, n_examples: int) -> int:
        """Input length of a row of ``n_examples`` examples: ``BOS`` plus ``n (d + 1)`` tokens, less the last
        label, which is a target only: ``n (d + 1)``."""
        return n_examples * self.example_len

    def label_positions(self, n_examples: int) -> np.ndarray:
        """``(n,)``: the input positions whose next token is a label, i.e. the last bit of each example (BOS is
        position 0): ``i (d + 1) + d``."""
        return np.arange(n_examples) * self.example_len + self.n_bits


def icl_rows(inputs: np.ndarray, labels: np.ndarray, n_bits: int) -> np.ndarray:
    """Whole rows ``(B, 1 + n (d + 1))``, ``BOS x1_0 .. x1_{d-1} y1 ... xn_0 .. xn_{d-1} yn``, from integer inputs
    ``(B, n)`` (bit ``j`` of ``x``, least significant first, is written as token ``2 j + bit``) and 0/1 labels
    ``(B, n)`` (written ``Y0 + label``); :func:`icl_read` is its inverse.

    >>> icl_rows(np.array([[5, 2]]), np.array([[1, 0]]), 3).tolist()
    [[8, 1, 2, 5, 7, 0, 3, 4, 6]]
    """
    voc = ICLVocab(_check_int("n_bits", n_bits, 2, 8))
    inputs, labels = np.asarray(inputs, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if inputs.ndim != 2 or inputs.min(initial=0) < 0 or inputs.max(initial=0) >= 2 ** n_bits:
        raise TaskRangeError(f"inputs must be (rows, examples) ints in [0, {2 ** n_bits}) for {n_bits} bits")
    if labels.shape != inputs.shape or not np.isin(labels, (0, 1)).all():
        raise TaskRangeError(f"labels must be 0/1 of the inputs' shape {inputs.shape}, got shape {labels.shape}")
    B, n = inputs.shape
    ex = np.empty((B, n, n_bits + 1), dtype=np.int64)
    ex[:, :, :n_bits] = voc.bit(np.arange(n_bits), (inputs[:, :, None] >> np.arange(n_bits)) & 1)
    ex[:, :, n_bits] = voc.y0 + labels
    return np.concatenate([np.full((B, 1), voc.bos), ex.reshape(B, -1)], axis=1)


def icl_read(rows: np.ndarray, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The integer inputs ``(B, n)`` and 0/1 labels ``(B, n)`` written in whole rows of :func:`icl_rows`; a row
    that is not BOS then whole examples (bit ``j``'s token in place ``j``, a label after the bits) raises
    :class:`~.errors.TaskRangeError`."""
    voc = ICLVocab(_check_int("n_bits", n_bits, 2, 8))
    rows = np.asarray(rows)
    if rows.ndim != 2 or (rows.shape[1] - 1) % (n_bits + 1) or (rows[:, 0] != voc.bos).any():
        raise TaskRangeError(f"rows must be BOS then whole examples of {n_bits + 1} tokens, got shape {rows.shape}")
    ex = rows[:, 1:].reshape(len(rows), -1, n_bits + 1)
    bits, ys = ex[:, :, :n_bits] - 2 * np.arange(n_bits), ex[:, :, n_bits] - voc.y0
    if not np.isin(bits, (0, 1)).all() or not np.isin(ys, (0, 1)).all():
        raise TaskRangeError(f"each example must be the tokens of bits 0 .. {n_bits - 1} in order (2j or 2j + 1), "
                             f"then a label token ({voc.y0} or {voc.y0 + 1})")
    return (bits << np.arange(n_bits)).sum(-1), ys


def icl_batch(rng: np.random.Generator, batch: int, n_examples: int, mixture: dict, n_bits: int = 5,
              min_active: int | None = None) -> TaskBatch:
    """``batch`` rows of :func:`icl_rows` (input length ``n (d + 1)``; the last label is a target only): per row a
    class drawn with probability ``mixture[class]``, a function drawn uniformly from it; per example a label drawn
    0 or 1 with equal chance, then an input uniform among those ``f`` gives that label. The only targets are the
    labels, ``Y0 + f(x_i)`` at the last bit of each ``x_i``.

    ``min_active`` (training only; None: every bit varies): each row draws how many of its ``d`` bits vary,
    ``k`` uniform in ``[min_active, d]``; the other bits keep one random value through the whole row, and ``f``
    is drawn among the class's functions of the ``k`` varying bits. Prompts with fewer varying bits are easier
    (a ``k``-bit task written in ``d``-bit rows); mixing them in gives a small model a way out of the long plateau
    at chance that full ``d``-bit prompts alone hold it on, as the curriculum over input dimensions of Garg et
    al. ("What Can Transformers Learn In-Context?") does.

    Why balanced labels: under uniform inputs a two-literal conjunction is 1 on a quarter of them, so a prompt holds
    few positive examples and "always 0" is already right 3 times in 4; a small model then sits at that prior (the
    first version of this lab did). Bhattamishra et al. likewise skew the input distribution of conjunctions towards
    positive examples. For parities, which are 1 on half the inputs, this is the uniform distribution. The input
    then says something about ``f`` (an input of label 1 is likelier under a function with fewer 1s), which
    :func:`workbench.memory.icl.optimal_error` takes into account.

    ``info``: ``inputs`` ``(B, n)`` ints, ``labels`` ``(B, n)`` 0/1, ``kind`` ``(B,)`` class index into
    :data:`FUNCTION_CLASSES`, ``function`` ``(B,)`` row of :func:`function_table`, ``label_pos`` ``(n,)`` the
    scored positions (:meth:`ICLVocab.label_positions`).

    >>> b = icl_batch(np.random.default_rng(0), 2, 3, {"conjunction": 1.0}, n_bits=4)
    >>> tuple(b.x.shape), b.info["label_pos"].tolist(), int(b.scored.sum())
    ((2, 15), [4, 9, 14], 6)
    """
    n = _check_int("n_examples", n_examples, 1, 256)
    batch = _check_int("batch", batch, 1)
    probs = mixture_probs(mixture)
    voc = ICLVocab(_check_int("n_bits", n_bits, 2, 8))
    tables = [function_table(k, n_bits) for k in FUNCTION_CLASSES]
    if min_active is not None:
        min_active = _check_int("min_active", min_active, 2, n_bits)
    kind = rng.choice(len(FUNCTION_CLASSES), size=batch, p=probs)
    allowed = np.ones(2 ** n_bits, dtype=bool)  # the inputs a row may show (all, unless some bits are held)
    if min_active is None:
        fn = np.array([rng.integers(0, len(tables[k])) for k in kind])
    else:
        supports = [function_support(tables[k], n_bits) for k in range(len(FUNCTION_CLASSES))]
        fn, allowed = np.empty(batch, dtype=np.int64), np.empty((batch, 2 ** n_bits), dtype=bool)
        for r, k in enumerate(kind):
            held = rng.permutation(n_bits)[:n_bits - int(rng.integers(min_active, n_bits + 1))]
            mask, value = int(sum(1 << int(j) for j in held)), int(rng.integers(0, 2 ** n_bits))
            fn[r] = rng.choice(np.flatnonzero(~supports[k][:, held].any(1)))
            allowed[r] = (np.arange(2 ** n_bits) & mask) == (value & mask)
    ys = rng.integers(0, 2, size=(batch, n))  # balanced labels, then an input of that label
    xs = np.empty((batch, n), dtype=np.int64)
    for r, (k, f) in enumerate(zip(kind, fn)):
        ok = allowed if allowed.ndim == 1 else allowed[r]
        pools = [np.flatnonzero((tables[k][f] == v) & ok) for v in (0, 1)]
        u = rng.random(n)
        for v in (0, 1):
            m = ys[r] == v
            xs[r, m] = pools[v][(u[m] * len(pools[v])).astype(np.int64)]
    full = icl_rows(xs, ys, n_bits)
    pos = voc.label_positions(n)
    x, y = full[:, :-1], np.full((batch, voc.row_len(n)), IGNORE, dtype=np.int64)
    y[:, pos] = full[:, pos + 1]
    return _batch(x, y, {"inputs": xs, "labels": ys, "kind": kind, "function": fn, "label_pos": pos})


def function_support(table: np.ndarray, n_bits: int) -> np.ndarray:
    """``(H, d)`` bool: which bits each function of ``table`` ``(H, 2^d)`` depends on (flipping the bit changes
    its value on some input).

    >>> function_support(function_table("parity", 2), 2).tolist()
    [[True, False], [False, True], [True, True]]
    """
    xs = np.arange(2 ** n_bits)
    return np.stack([(table != table[:, xs ^ (1 << j)]).any(1) for j in range(n_bits)], 1)


def mixture_probs(mixture: dict) -> np.ndarray:
    """The class probabilities of a mixture ``{class: weight}`` in :data:`FUNCTION_CLASSES` order (normalised)."""
    if not isinstance(mixture, dict) or not mixture:
        raise TaskRangeError(f"mixture must be a non-empty dict {{class: weight}} over {FUNCTION_CLASSES}, "
                             f"got {mixture!r}")
    bad = [k for k in mixture if k not in FUNCTION_CLASSES]
    if bad:
        raise TaskRangeError(f"unknown function classes {bad} in the mixture; choose from {FUNCTION_CLASSES}")
    w = np.array([float(mixture.get(k, 0.0)) for k in FUNCTION_CLASSES])
    if (w < 0).any() or w.sum() <= 0 or not np.isfinite(w).all():
        raise TaskRangeError(f"mixture weights must be finite, >= 0 and not all 0, got {mixture!r}")
    return w / w.sum()


# ---------------------------------------------------------------------------------------------------------------
# Reversal curse

FIRST_NAMES = ("Ada", "Boris", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Keiko",
               "Lars", "Mira", "Nils", "Olga", "Pavel")
SURNAMES = ("Abbott", "Brandt", "Costa", "Duval", "Engel", "Fischer", "Garcia", "Holm", "Ivanov", "Jansen", "Kowalski",
            "Lund", "Moreau", "Novak", "Ortiz", "Petrov")
ADJECTIVES = ("amber", "brave", "calm", "dusty", "eager", "fuzzy", "golden", "hollow", "icy", "jolly", "keen",
              "lazy", "misty", "noble", "odd", "quiet")
NOUNS = ("anchor", "badger", "candle", "dragon", "ember", "falcon", "garden", "harbor", "island", "jacket", "kettle",
         "lantern", "meadow", "needle", "otter", "pepper")


@dataclass(frozen=True)
class ReversalVocab:
    """Token layout: 0 BOS, 1 REV (starts a row of augmented, reversed text), 2 IS, 3 DOT, then first names,
    surnames, adjectives and nouns (16 each)."""

    BOS = 0
    REV = 1
    IS = 2
    DOT = 3

    @property
    def size(self) -> int:
        return 4 + len(FIRST_NAMES) + len(SURNAMES) + len(ADJECTIVES) + len(NOUNS)

    def names(self) -> list[str]:
        """Token strings by id."""
        return ["<bos>", "<rev>", "is", "."] + list(FIRST_NAMES + SURNAMES + ADJECTIVES + NOUNS)


@dataclass
class ReversalFacts:
    """``n`` facts "A is B": ``a`` ``(n, 2)`` and ``b`` ``(n, 2)`` token ids (name = first, surname; attribute =
    adjective, noun), all names distinct and all attributes distinct; ``both`` ``(n,)`` bool: trained in both
    directions (the model sees that reversal exists); the others are trained forward only and tested reversed."""

    a: np.ndarray
    b: np.ndarray
    both: np.ndarray


def reversal_facts(n_facts: int, seed: int = 0, both_fraction: float = 0.5) -> ReversalFacts:
    """``n_facts`` random facts, the first ``both_fraction`` of them marked as trained in both directions."""
    n = _check_int("n_facts", n_facts, 4, len(FIRST_NAMES) * len(SURNAMES))
    if not 0.0 <= both_fraction < 1.0:
        raise TaskRangeError(f"both_fraction must be in [0, 1), got {both_fraction}")
    rng = np.random.default_rng(seed)
    k = len(FIRST_NAMES)
    a_idx = rng.choice(k * k, size=n, replace=False)
    b_idx = rng.choice(k * k, size=n, replace=False)
    a = np.stack([4 + a_idx // k, 4 + k + a_idx % k], 1)
    b = np.stack([4 + 2 * k + b_idx // k, 4 + 3 * k + b_idx % k], 1)
    both = np.arange(n) < int(round(both_fraction * n))
    return ReversalFacts(a, b, both)


#: Augmentations of the forward-only facts: none; the fact's tokens in reverse order (``REV B2 B1 is A2 A1 .``);
#: the entities swapped, each kept whole (``REV B1 B2 is A1 A2 .``). Both augmented rows start with REV, a marker
#: the test prompts (which start with BOS) never carry: the model must carry the fact over from the marked text.
AUGMENTATIONS = ("none", "token_reverse", "entity_reverse")


def reversal_rows(facts: ReversalFacts, augmentation: str = "none") -> np.ndarray:
    """The training rows ``(R, 7)``: every fact forward (``BOS A1 A2 is B1 B2 .``), the ``both`` facts also
    backward (``BOS B1 B2 is A1 A2 .``), and the forward-only facts augmented as ``augmentation`` says."""
    if augmentation not in AUGMENTATIONS:
        raise TaskRangeError(f"unknown augmentation {augmentation!r}; choose from {AUGMENTATIONS}")
    V = ReversalVocab

    def rows(start, left, right):
        n = len(left)
        return np.concatenate([np.full((n, 1), start), left, np.full((n, 1), V.IS), right, np.full((n, 1), V.DOT)], 1)

    out = [rows(V.BOS, facts.a, facts.b), rows(V.BOS, facts.b[facts.both], facts.a[facts.both])]
    fwd = ~facts.both
    if augmentation == "token_reverse":
        out.append(rows(V.REV, facts.b[fwd][:, ::-1], facts.a[fwd][:, ::-1]))
    elif augmentation == "entity_reverse":
        out.append(rows(V.REV, facts.b[fwd], facts.a[fwd]))
    return np.concatenate(out).astype(np.int64)


def rows_batch(rows: np.ndarray, score_from: int = 0) -> TaskBatch:
    """Next-token inputs and targets of whole rows ``(R, T + 1)``: every next token from position ``score_from``
    on is a target."""
    x, y = rows[:, :-1].copy(), rows[:, 1:].copy()
    y[:, :score_from] = IGNORE
    return _batch(x, y, {})


# ---------------------------------------------------------------------------------------------------------------
# Addition answer formats

#: How the sum is written: most significant digit first; least significant first; a scratchpad of
#: (digit, carry) per position from the right, then the sum most significant first.
FORMATS = ("plain", "reversed", "scratchpad")


@dataclass(frozen=True)
class AdditionVocab:
    """Digits 0-9 are tokens 0-9; then ``+`` 10, ``=`` 11, BOS 12, EOS 13, ``;`` 14 (ends a scratchpad)."""

    PLUS = 10
    EQ = 11
    BOS = 12
    EOS = 13
    SEMI = 14
    size = 15


def _digits(v: np.ndarray, width: int) -> np.ndarray:
    """``(n, width)`` decimal digits of ``v``, most significant first (zero-padded)."""
    return (v[:, None] // 10 ** np.arange(width - 1, -1, -1)[None, :]) % 10


def addition_rows(a: np.ndarray, b: np.ndarray, digits: int, fmt: str) -> tuple[np.ndarray, int]:
    """Rows ``BOS a + b = <answer> EOS`` for operands of ``digits`` digits (zero-padded) and the index where the
    answer starts (after ``=``). ``plain``: the ``digits + 1`` digits of the sum, most significant first;
    ``reversed``: least significant first; ``scratchpad``: for each position from the right the sum digit and
    the carry out, then ``;``, then the plain sum.

    >>> addition_rows(np.array([57]), np.array([68]), 2, "scratchpad")[0].tolist()
    [[12, 5, 7, 10, 6, 8, 11, 5, 1, 2, 1, 14, 1, 2, 5, 13]]
    """
    d = _check_int("digits", digits, 1, 6)
    if fmt not in FORMATS:
        raise TaskRangeError(f"unknown answer format {fmt!r}; choose from {FORMATS}")
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.min(initial=0) < 0 or b.min(initial=0) < 0 or max(a.max(initial=0), b.max(initial=0)) >= 10 ** d:
        raise TaskRangeError(f"operands must be in [0, {10 ** d}) for {d} digits")
    V = AdditionVocab
    s = _digits(a + b, d + 1)
    if fmt == "plain":
        ans = s
    elif fmt == "reversed":
        ans = s[:, ::-1]
    else:
        ad, bd = _digits(a, d)[:, ::-1], _digits(b, d)[:, ::-1]  # least significant first
        steps, carry = [], np.zeros(len(a), dtype=np.int64)
        for i in range(d):
            t = ad[:, i] + bd[:, i] + carry
            carry = t // 10
            steps += [t % 10, carry]
        ans = np.concatenate([np.stack(steps, 1), np.full((len(a), 1), V.SEMI), s], 1)
    n = len(a)
    head = np.concatenate([np.full((n, 1), V.BOS), _digits(a, d), np.full((n, 1), V.PLUS), _digits(b, d),
                           np.full((n, 1), V.EQ)], 1)
    rows = np.concatenate([head, ans, np.full((n, 1), V.EOS)], 1)
    return rows.astype(np.int64), head.shape[1]


def read_sum(answer: np.ndarray, digits: int, fmt: str) -> np.ndarray:
    """The sums written in generated ``answer`` tokens ``(n, L)`` (everything after ``=``) in format ``fmt``; -1
    where the tokens are not a well-formed answer."""
    d = digits + 1
    if fmt == "plain":
        dig = answer[:, :d]
    elif fmt == "reversed":
        dig = answer[:, :d][:, ::-1]
    else:
        dig = answer[:, 2 * digits + 1: 2 * digits + 1 + d]
    ok = (dig >= 0).all(1) & (dig <= 9).all(1) & (dig.shape[1] == d)
    val = (dig * 10 ** np.arange(d - 1, -1, -1)[None, :]).sum(1)
    return np.where(ok, val, -1)
