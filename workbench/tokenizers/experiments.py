"""The experiments of the tokenization lab (``notebooks/01_tokenization.ipynb``), as plain functions.

Each returns a small dataclass (or list of them) that a notebook or widget only draws:

* :func:`compression_sweep`: bytes per token against vocabulary size, per corpus, on held-out text.
* :func:`digit_chunks`: how ``single``, ``l2r3`` and ``r2l3`` digit handling cut the same arithmetic.
* :func:`addition_experiment`: two tiny models trained on the synthetic addition task, identical except
  for the digit handling of their BPE, and their exact-match accuracy on held-out problems.
* :func:`mixture_experiment`: BPEs trained on known docs/code mixtures, and the shares recovered from
  their merge lists alone (:func:`~workbench.tokenizers.mixture.infer_mixture`).

>>> rows = compression_sweep({"toy": "the cat sat on the mat " * 200}, [256, 260, 270])
>>> [r.vocab_size for r in rows], rows[0].bytes_per_token
([256, 260, 270], 1.0)

Lesson: ``notebooks/01_tokenization.ipynb`` (2. Compression against vocabulary size; 3. Numbers; 4. What a
tokenizer reveals about its training data).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from .bpe import BPETokenizer
from .pretokenize import PreTokenizer

# ---------------------------------------------------------------------------------------------
# Compression against vocabulary size


@dataclass(frozen=True)
class CompressionPoint:
    """Bytes per token of a BPE with ``vocab_size`` ids, trained on ``corpus``'s training part and
    measured on its held-out part (``n_bytes`` bytes, ``n_tokens`` tokens)."""

    corpus: str
    vocab_size: int
    n_bytes: int
    n_tokens: int

    @property
    def bytes_per_token(self) -> float:
        return self.n_bytes / self.n_tokens if self.n_tokens else 0.0


def holdout_split(text: str, fraction: float = 0.1) -> tuple[str, str]:
    """``(train, held out)``: the last ``fraction`` of the characters is held out (contiguous, so no
    held-out sentence was seen in training)."""
    cut = int(round(len(text) * (1.0 - fraction)))
    return text[:cut], text[cut:]


def compression_sweep(
    corpora: Mapping[str, str],
    vocab_sizes: Sequence[int],
    pattern: str = "gpt2",
    holdout: float = 0.1,
) -> list[CompressionPoint]:
    """Bytes per token on held-out text for every corpus and vocabulary size.

    One BPE per corpus is trained to the largest size; a smaller vocabulary is the same tokenizer
    with only its first ``vocab_size - 256`` merges (greedy BPE training makes the merges of a smaller
    run a prefix of a larger one), applied with :meth:`BPETokenizer.encode_at`. So the sweep costs one
    training per corpus, not one per point.
    """
    sizes = sorted({int(v) for v in vocab_sizes})
    if not sizes or sizes[0] < 256:
        raise ValueError(f"vocab sizes must be >= 256 (the byte symbols), got {list(vocab_sizes)}")
    out = []
    for name, text in corpora.items():
        train, held = holdout_split(text, holdout) if holdout else (text, text)
        tok = BPETokenizer.train(train, sizes[-1], pattern=pattern, progress=False)
        n_bytes = len(held.encode("utf-8"))
        for v in sizes:
            out.append(CompressionPoint(name, v, n_bytes, len(tok.encode_at(held, v - 256))))
    return out


# ---------------------------------------------------------------------------------------------
# Comparing segmentations


def disagreeing_spans(span_lists: Sequence[Sequence]) -> set:
    """The ``(start, end)`` byte ranges that are a token in some but not all of ``span_lists`` (one
    list of :class:`~workbench.tokenizers.TokenSpan` per tokenizer, over the same text).

    A span all tokenizers share is a place where they agree on a token boundary on both sides; every
    other span marks text the tokenizers cut differently (what the lab highlights).

    >>> from workbench.tokenizers import TokenSpan as S
    >>> sorted(disagreeing_spans([[S(1, 0, 2), S(2, 2, 3)], [S(7, 0, 1), S(8, 1, 2), S(9, 2, 3)]]))
    [(0, 1), (0, 2), (1, 2)]
    """
    sets = [{(s.start, s.end) for s in spans} for spans in span_lists]
    if len(sets) < 2:
        return set()
    return set.union(*sets) - set.intersection(*sets)


def crossing_spans(span_lists: Sequence[Sequence]) -> set:
    """The ``(start, end)`` byte ranges of tokens that some other tokenizer cuts *across*: what the TokenizerLab
    outlines as "cut differently".

    A token of one tokenizer and the segmentation of another agree when the token is a run of the other's whole
    tokens (both of its edges are boundaries there) or lies inside one of the other's tokens (no boundary of the
    other falls strictly inside it). Either way one segmentation refines the other there, as a byte tokenizer
    refines every BPE, or a BPE with fewer merges refines the same BPE with more. A token crosses when neither
    holds: the other tokenizer puts a boundary inside it *and* does not start or end a token where it does, e.g.
    ``123`` of ``123|45`` against ``345`` of ``12|345`` (while ``12`` lies inside ``123``: no conflict). Unlike
    :func:`disagreeing_spans` (every token not shared by all), this marks only real conflicts, a minority of the
    text for related tokenizers.

    >>> from workbench.tokenizers import TokenSpan as S
    >>> l2r = [S(1, 0, 3), S(2, 3, 5)]                       # 123|45
    >>> r2l = [S(3, 0, 2), S(4, 2, 5)]                       # 12|345
    >>> byte = [S(i, i, i + 1) for i in range(5)]            # 1|2|3|4|5
    >>> sorted(crossing_spans([l2r, r2l])), crossing_spans([l2r, byte])
    ([(0, 3), (2, 5)], set())
    """
    import bisect

    lists = [[(int(s.start), int(s.end)) for s in spans] for spans in span_lists]
    if len(lists) < 2:
        return set()
    bounds = []
    for spans in lists:
        b = {0}
        for a, e in spans:
            b.add(a)
            b.add(e)
        bounds.append((b, sorted(b)))
    out = set()
    for k, spans in enumerate(lists):
        for a, e in spans:
            if e - a < 2:  # a one-byte token has no inside: it can never be crossed
                continue
            for j, (bset, bsorted) in enumerate(bounds):
                if j == k or (a in bset and e in bset):
                    continue
                i = bisect.bisect_right(bsorted, a)
                if i < len(bsorted) and bsorted[i] < e:  # a boundary strictly inside, and an edge not shared
                    out.add((a, e))
                    break
    return out


# ---------------------------------------------------------------------------------------------
# Digit handling


def digit_chunks(text: str, modes: Sequence[str] = ("l2r3", "r2l3", "single"), pattern: str = "gpt2") -> dict:
    """``{mode: pieces}``: how each digit mode pre-tokenizes ``text`` (merges never cross pieces).

    >>> digit_chunks("1234567+89", ["l2r3", "r2l3"])
    {'l2r3': ['123', '456', '7', '+', '89'], 'r2l3': ['1', '234', '567', '+', '89']}
    """
    return {m: PreTokenizer(pattern, m).split(text) for m in modes}


# ---------------------------------------------------------------------------------------------
# Tiny models on the addition task


@dataclass(frozen=True)
class AdditionRun:
    """One tiny model: its digit mode, tokenizer size, training time and held-out exact-match accuracy."""

    digits: str
    vocab_size: int
    params: int
    train_s: float
    final_train_loss: float
    accuracy: float
    n_test: int
    tokens_per_problem: float


@dataclass(frozen=True)
class AdditionResult:
    """Two (or more) :class:`AdditionRun` trained identically except for the digit handling."""

    runs: list
    n_digits: int
    n_train: int
    steps: int

    def accuracy(self, digits: str) -> float:
        return next(r.accuracy for r in self.runs if r.digits == digits)


def answer_accuracy(model, tok, problems) -> float:
    """Exact-match accuracy of greedy decoding on ``problems``, computed in one batched forward pass.

    Greedy decoding reproduces the answer's (canonical) tokens followed by the newline exactly when,
    at every answer position, the most likely token given the correct prefix is the correct one. So
    teacher-forced argmax checks give the greedy exact-match accuracy without a decoding loop.
    """
    import torch

    rows, starts = [], []
    for p in problems:
        # A leading newline puts each problem where training put it: right after the previous line.
        prompt = tok.encode("\n" + p.prompt)
        full = tok.encode("\n" + p.prompt + p.answer + "\n")
        # Scoring starts where the two encodings part (normally the whole prompt: the pre-tokenizer
        # cuts at "=", so the answer cannot merge into the prompt's last token).
        start = 0
        while start < min(len(prompt), len(full)) and prompt[start] == full[start]:
            start += 1
        rows.append(full)
        starts.append(max(1, start))
    width = max(len(r) for r in rows)
    x = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    with torch.no_grad():
        pred = model(x[:, :-1]).logits.argmax(-1)
    ok = 0
    for i, r in enumerate(rows):
        s = starts[i]
        ok += bool((pred[i, s - 1 : len(r) - 1] == x[i, s : len(r)]).all())
    return ok / len(rows) if rows else 0.0


def addition_experiment(
    modes: Sequence[str] = ("l2r3", "r2l3"),
    n_digits: int = 4,
    n_train: int = 20_000,
    n_test: int = 500,
    steps: int = 600,
    batch_size: int = 32,
    lr: float = 3e-3,
    config: Optional[dict] = None,
    seed: int = 0,
) -> AdditionResult:
    """Train one tiny TinyGPT per digit mode on ``a+b=c`` lines and compare held-out accuracy.

    Per mode: a BPE is trained on the training text with that digit handling and a vocabulary large
    enough to hold every chunk (so the only difference between the runs is where numbers are cut),
    then a model of the same shape is trained with the same seed, steps and batches. Operands have
    1 to ``n_digits`` digits; test problems come from another seed and exclude training problems.
    """
    import torch

    from ..data import addition_problems, addition_text
    from ..models import GPTConfig, TinyGPT
    from ..models.training import train

    cfg = dict(n_layer=2, n_head=4, n_embd=64, block_size=32, pos="rope", dropout=0.0)
    cfg.update(config or {})
    train_p = addition_problems(n_train, n_digits, seed=seed)
    seen = {(p.a, p.b) for p in train_p}
    test_p = [p for p in addition_problems(n_test * 2, n_digits, seed=seed + 1) if (p.a, p.b) not in seen][:n_test]
    text = addition_text(train_p)
    runs = []
    for mode in modes:
        # 10 + 100 + 1000 possible chunks (+ the answer's leading digits): a generous cap, training stops
        # by itself when no pair is left inside a piece.
        tok = BPETokenizer.train(text, 256 + 1200, pattern="gpt2", digits=mode, progress=False)
        ids = torch.tensor(tok.encode(text), dtype=torch.long)
        torch.manual_seed(seed)
        model = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, **cfg), tokenizer=tok, name=f"add-{mode}")
        t0 = time.perf_counter()
        hist = train(model, ids, steps, batch_size, lr, seed=seed, progress=False, eval_every=steps)
        dt = time.perf_counter() - t0
        runs.append(AdditionRun(
            digits=mode, vocab_size=tok.vocab_size, params=sum(p.numel() for p in model.parameters()),
            train_s=dt, final_train_loss=hist.train_loss[-1], accuracy=answer_accuracy(model, tok, test_p),
            n_test=len(test_p), tokens_per_problem=len(ids) / n_train,
        ))
    return AdditionResult(runs, n_digits, n_train, steps)


# ---------------------------------------------------------------------------------------------
# Data-mixture inference


@dataclass(frozen=True)
class MixtureTrial:
    """One known mixture: the true byte share of each category and the share recovered from merges."""

    true: dict
    recovered: dict
    n_merges: int

    def error(self, name: str) -> float:
        """Absolute error for one category, in share units (0.05 = 5 percentage points)."""
        return abs(self.recovered[name] - self.true[name])


def interleaved_halves(text: str, chunk: int = 2000) -> tuple[str, str]:
    """Cut ``text`` into ``chunk``-character pieces and deal them alternately into two halves: one to
    train tokenizers on, one as the category sample (similar text, never the same characters)."""
    pieces = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    return "".join(pieces[0::2]), "".join(pieces[1::2])


def mixture_experiment(
    corpora: Mapping[str, str],
    shares: Sequence[float] = (0.2, 0.5, 0.8),
    train_chars: int = 200_000,
    sample_chars: int = 230_000,
    n_merges: int = 600,
    top_k: int = 10,
) -> list[MixtureTrial]:
    """For each share ``s`` of the first category: train a BPE on ``s`` of its text and ``1 - s`` of
    the second's (``train_chars`` characters in all), then recover the shares from the merge list
    with samples the tokenizer never saw. True shares are measured in bytes, as the LP estimates.

    Defaults measured on the embedded corpora (docs vs code, true docs shares 0.2 / 0.5 / 0.8):
    recovered 0.200 / 0.470 / 0.783. Smaller samples are noisier (150 K characters and 300 merges gave
    0.222 / 0.464 / 0.743)."""
    from .mixture import infer_mixture

    names = list(corpora)
    if len(names) != 2:
        raise ValueError(f"mixture_experiment mixes exactly two corpora, got {names}")
    halves = {n: interleaved_halves(corpora[n]) for n in names}
    samples = {n: halves[n][1][:sample_chars] for n in names}
    trials = []
    for s in shares:
        k = int(round(train_chars * s))
        parts = {names[0]: halves[names[0]][0][:k], names[1]: halves[names[1]][0][: train_chars - k]}
        total = sum(len(p.encode("utf-8")) for p in parts.values())
        true = {n: len(p.encode("utf-8")) / total for n, p in parts.items()}
        tok = BPETokenizer.train("".join(parts.values()), 256 + n_merges, progress=False)
        est = infer_mixture(tok, samples, top_k=top_k)
        trials.append(MixtureTrial(true, est.weights, est.n_merges))
    return trials
