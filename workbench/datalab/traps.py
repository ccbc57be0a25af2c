"""Memorisation and contamination: copyright traps and the exchangeability test.

Claims. (1) Meeus et al. 2024, "Copyright Traps for Large Language Models": a synthetic sequence inserted n times
into the training data becomes detectable by a membership test (the loss ratio ``target loss / reference loss``,
lower for members) as n grows; their 1.3B model needed about 1,000 copies of 100-token traps, with shorter traps
barely detectable. (2) Oren et al. 2024, "Proving Test Set Contamination in Black Box Language Models": a benchmark
copied into training in its canonical order makes that order more likely than shuffled orders of the same
examples, while without contamination every order is equally likely (exchangeability), so a permutation test gives
a p-value of contamination. Here: 48-byte traps of random words and a 16-example benchmark inserted n times
(n = 0 ... 100) into ``python-docs``, the micro model trained on each; see :func:`load_traps` for what this scale shows.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import DataLabError
from .recipes import BOS, corpus_split, micro_model, read_sweep_file

NEWLINE = 10


class TrapTooLongError(DataLabError):
    """A trap (or benchmark example) longer than the model's context cannot be scored as one sequence."""


@lru_cache(maxsize=1)
def word_list() -> tuple:
    """The lowercase words (3 to 10 letters) of ``python-docs``, sorted: the alphabet of traps and examples."""
    import re

    from workbench.data import load_corpus

    return tuple(sorted(set(re.findall(r"\b[a-z]{3,10}\b", load_corpus("python-docs")))))


def random_word_sequences(count: int, length: int, seed: int = 0) -> np.ndarray:
    """``count`` sequences of exactly ``length`` bytes, random corpus words joined by spaces: ``(count, length)``
    byte ids. Every sequence of one call is of the same kind, so members and non-members differ only by chance."""
    if count < 1 or length < 1:
        raise DataLabError(f"count and length must be >= 1, got {count}, {length}")
    words = word_list()
    rng = np.random.default_rng(seed)
    out = np.empty((count, length), dtype=np.int64)
    for i in range(count):
        s = ""
        while len(s) < length:
            s += words[rng.integers(len(words))] + " "
        out[i] = np.frombuffer(s[:length].encode("ascii"), dtype=np.uint8)
    return out


def benchmark_examples(count: int = 16, seed: int = 0) -> list:
    """``count`` short question-answer examples (``"q: w w w? a: w.\\n"``, random corpus words), as byte id
    arrays: a made-up benchmark whose canonical order is the list order."""
    words = word_list()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        w = [words[rng.integers(len(words))] for _ in range(4)]
        out.append(np.frombuffer(f"q: {w[0]} {w[1]} {w[2]}? a: {w[3]}.\n".encode("ascii"), dtype=np.uint8)
                   .astype(np.int64))
    return out


def check_fits(length: int, block_size: int) -> None:
    """Raise :class:`TrapTooLongError` if a sequence of ``length`` tokens does not fit the context."""
    if length > block_size:
        raise TrapTooLongError(f"a trap of {length} tokens is longer than the model's context of {block_size} "
                               f"tokens; use traps of at most {block_size} tokens")


def insert_copies(ids, sequences, copies, seed: int = 0, sep: int = NEWLINE) -> np.ndarray:
    """``ids`` with each of ``sequences`` inserted ``copies`` times (an int, or one count per sequence) at random
    positions (uniform, from ``seed``), each copy framed by ``sep`` on both sides."""
    ids = np.asarray(ids, dtype=np.int64)
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    counts = np.broadcast_to(np.asarray(copies, dtype=int), (len(seqs),))
    if np.any(counts < 0):
        raise DataLabError(f"copies must be >= 0, got {np.asarray(copies).tolist()}")
    items = np.repeat(np.arange(len(seqs)), counts)
    if len(items) == 0:
        return ids.copy()
    rng = np.random.default_rng(seed)
    items = items[rng.permutation(len(items))]
    cuts = np.sort(rng.integers(0, len(ids) + 1, size=len(items)))
    pieces, prev = [], 0
    frame = np.array([sep], dtype=np.int64)
    for cut, i in zip(cuts, items):
        pieces += [ids[prev:cut], frame, seqs[i], frame]
        prev = cut
    pieces.append(ids[prev:])
    return np.concatenate(pieces)


def sequence_losses(model, sequences, bos: int | None = BOS) -> np.ndarray:
    """Mean loss (nats/token) of each sequence scored alone (``(n, L)`` ids; BOS first): ``(n,)``."""
    from .selection import score_chunks

    seqs = np.asarray(sequences)
    check_fits(seqs.shape[-1], model.config.block_size)
    return score_chunks(model, seqs, bos)


def membership_auc(target_members, target_nonmembers, ref_members, ref_nonmembers):
    """ROC AUC of the loss-ratio test: score ``-(target loss / reference loss)``, members labelled 1.

    Returns ``(auc, fpr, tpr)`` (sklearn's ``roc_auc_score`` and ``roc_curve``); 0.5 means no separation."""
    from sklearn.metrics import roc_auc_score, roc_curve

    rm = np.asarray(target_members, float) / np.asarray(ref_members, float)
    rn = np.asarray(target_nonmembers, float) / np.asarray(ref_nonmembers, float)
    y = np.r_[np.ones(len(rm)), np.zeros(len(rn))]
    s = -np.r_[rm, rn]
    fpr, tpr, _ = roc_curve(y, s)
    return float(roc_auc_score(y, s)), fpr, tpr


def sequence_logprob(model, ids, bos: int | None = BOS, stride: int | None = None) -> float:
    """Total log-probability (nats) of a sequence of any length, in sliding windows of the model's context.

    Each window is BOS plus up to ``block_size`` tokens (as in training with BOS); windows advance by ``stride``
    (default half the context) and each token is scored once, in the first window where it has the most context
    that window scheme gives it (the first window scores all its tokens).
    """
    import torch
    import torch.nn.functional as F

    x = np.asarray(ids, dtype=np.int64)
    B = model.config.block_size
    stride = stride or max(1, B // 2)
    L = len(x)
    starts = list(range(0, max(1, L - B + 1), stride))
    if starts[-1] + B < L:
        starts.append(L - B)
    total, covered = 0.0, 0
    was = model.training
    model.eval()
    with torch.no_grad():
        for s in starts:
            w = x[s:s + B]
            inp = np.r_[[bos], w[:-1]] if bos is not None else w[:-1]
            tgt = w if bos is not None else w[1:]
            off = s if bos is not None else s + 1                  # corpus position of tgt[0]
            logp = F.log_softmax(model(torch.as_tensor(inp)[None]).logits[0].double(), -1)
            lp = logp[torch.arange(len(tgt)), torch.as_tensor(tgt)]
            first = max(0, covered - off)
            total += float(lp[first:].sum())
            covered = off + len(tgt)
    model.train(was)
    return total


@dataclass(frozen=True)
class ExchangeabilityTest:
    """Log-probability of the canonical order, of ``n_shuffles`` random orders, and the permutation p-value
    ``(1 + #{shuffled >= canonical}) / (1 + n_shuffles)`` (smallest possible: ``1 / (1 + n_shuffles)``)."""

    canonical: float
    shuffled: np.ndarray
    p_value: float


def exchangeability_test(model, examples, n_shuffles: int = 99, seed: int = 0, bos: int | None = BOS):
    """Oren et al.'s test: is the canonical order of ``examples`` (byte id arrays) more likely than shuffles?"""
    if n_shuffles < 1:
        raise DataLabError(f"n_shuffles must be >= 1, got {n_shuffles}")
    ex = [np.asarray(e, dtype=np.int64) for e in examples]
    if len(ex) < 2:
        raise DataLabError("need at least 2 examples to shuffle")
    canon = sequence_logprob(model, np.concatenate(ex), bos)
    rng = np.random.default_rng(seed)
    shuf = np.array([sequence_logprob(model, np.concatenate([ex[i] for i in rng.permutation(len(ex))]), bos)
                     for _ in range(n_shuffles)])
    return ExchangeabilityTest(canon, shuf, float((1 + np.sum(shuf >= canon)) / (1 + n_shuffles)))


#: Trap and benchmark setting of the shipped sweep (fixed across runs, so the n = 0 run is a clean reference).
TRAP_SEED = 1234
N_TRAPS = 20
TRAP_LEN = 48
N_EXAMPLES = 16


def trap_material(n_traps: int = N_TRAPS, trap_len: int = TRAP_LEN, n_examples: int = N_EXAMPLES):
    """(members ``(n_traps, trap_len)``, non-members of the same kind, benchmark examples), all from TRAP_SEED."""
    seqs = random_word_sequences(2 * n_traps, trap_len, seed=TRAP_SEED)
    return seqs[:n_traps], seqs[n_traps:], benchmark_examples(n_examples, seed=TRAP_SEED + 1)


def trap_run(settings, *, copies: int, n_traps: int = N_TRAPS, trap_len: int = TRAP_LEN,
             n_examples: int = N_EXAMPLES, n_shuffles: int = 99, progress=None, should_stop=None) -> dict:
    """One run: ``python-docs`` (train split) with each member trap and the benchmark (in canonical order) inserted
    ``copies`` times; the micro model trained on it, then scored on members, non-members and the benchmark."""
    from .distill import train_student

    check_fits(trap_len, settings.config["block_size"])
    members, non, examples = trap_material(n_traps, trap_len, n_examples)
    train_ids, val_ids = corpus_split("python-docs")
    data = insert_copies(train_ids, list(members) + [np.concatenate(examples)], copies, seed=settings.seed)
    model = micro_model(settings.config, settings.seed)
    h = train_student(model, data, settings.steps, settings.batch_size, settings.lr, val_sets={"docs": val_ids},
                      seed=settings.seed, progress=progress, should_stop=should_stop)
    ex = exchangeability_test(model, examples, n_shuffles, seed=settings.seed)
    return {"steps": h.steps, "train_loss": h.train_loss, "val_loss": h.val_loss["docs"], "cpu_s": h.cpu_s,
            "stopped": h.stopped, "member_loss": sequence_losses(model, members).tolist(),
            "nonmember_loss": sequence_losses(model, non).tolist(), "canonical_logprob": ex.canonical,
            "shuffled_logprob": ex.shuffled.tolist(), "p_value": ex.p_value}


@lru_cache(maxsize=2)
def reference_losses(reference: str = "docs-byte-draft", n_traps: int = N_TRAPS, trap_len: int = TRAP_LEN):
    """(member, non-member) losses under a shipped reference model that never saw the traps."""
    from workbench.models import load_pretrained

    members, non, _ = trap_material(n_traps, trap_len)
    m = load_pretrained(reference)
    return sequence_losses(m, members), sequence_losses(m, non)


@dataclass
class TrapResult:
    """Membership and contamination by number of copies.

    copies ``(m,)``; seeds; auc: ``(m, seeds)`` ROC AUC of the loss ratio against the shipped reference
    (``docs-byte-draft``); auc_clean: the same against the micro model trained without copies (n = 0, same seed;
    NaN when that run is absent); roc: ``{(copies, seed): (fpr, tpr)}`` (against the reference model);
    member_ratio, nonmember_ratio: ``(m, seeds, n_traps)``; p_value ``(m, seeds)``; canonical ``(m, seeds)`` and
    shuffled ``(m, seeds, n_shuffles)`` log-probabilities of the benchmark; val_loss ``(m, seeds)``; mean and sd of
    auc and p_value over seeds ``(m,)``.
    """

    copies: np.ndarray
    seeds: list
    auc: np.ndarray
    auc_clean: np.ndarray
    roc: dict
    member_ratio: np.ndarray
    nonmember_ratio: np.ndarray
    p_value: np.ndarray
    canonical: np.ndarray
    shuffled: np.ndarray
    val_loss: np.ndarray
    auc_mean: np.ndarray
    auc_sd: np.ndarray
    p_mean: np.ndarray
    stopped: bool = False


def traps_from_runs(runs: list, ref_members, ref_nonmembers) -> TrapResult:
    """Assemble a :class:`TrapResult` from run dicts (``copies``, ``seed`` and what :func:`trap_run` returns)."""
    from .recipes import mean_and_spread

    copies, seeds, table = [], [], {}
    for r in runs:
        copies += [r["copies"]] if r["copies"] not in copies else []
        seeds += [r["seed"]] if r["seed"] not in seeds else []
        table[(r["copies"], r["seed"])] = r
    missing = [(c, s) for c in copies for s in seeds if (c, s) not in table]
    if missing:
        raise DataLabError(f"trap runs missing for (copies, seed) {missing}")
    order = np.argsort(copies, kind="stable")
    copies = [copies[i] for i in order]
    m, n = len(copies), len(seeds)
    auc, auc_clean, pv = np.zeros((m, n)), np.full((m, n), np.nan), np.zeros((m, n))
    roc, mr, nr = {}, [], []
    for i, c in enumerate(copies):
        mr.append([]), nr.append([])
        for j, s in enumerate(seeds):
            r = table[(c, s)]
            auc[i, j], fpr, tpr = membership_auc(r["member_loss"], r["nonmember_loss"], ref_members, ref_nonmembers)
            roc[(c, s)] = (fpr, tpr)
            if (0, s) in table:
                auc_clean[i, j] = membership_auc(r["member_loss"], r["nonmember_loss"], table[(0, s)]["member_loss"],
                                                 table[(0, s)]["nonmember_loss"])[0]
            pv[i, j] = r["p_value"]
            mr[-1].append(np.asarray(r["member_loss"]) / np.asarray(ref_members))
            nr[-1].append(np.asarray(r["nonmember_loss"]) / np.asarray(ref_nonmembers))
    am, asd = mean_and_spread(auc)
    pm, _ = mean_and_spread(pv)
    return TrapResult(copies=np.array(copies), seeds=seeds, auc=auc, auc_clean=auc_clean, roc=roc,
                      member_ratio=np.array(mr), nonmember_ratio=np.array(nr), p_value=pv,
                      canonical=np.array([[table[(c, s)]["canonical_logprob"] for s in seeds] for c in copies]),
                      shuffled=np.array([[table[(c, s)]["shuffled_logprob"] for s in seeds] for c in copies]),
                      val_loss=np.array([[table[(c, s)]["val_loss"][-1] for s in seeds] for c in copies]),
                      auc_mean=am, auc_sd=asd, p_mean=pm)


def run_traps(copies=(0, 10, 100), seeds=(0,), steps: int = 60, batch_size: int = 16, lr: float = 3e-3,
              trap_len: int = TRAP_LEN, n_shuffles: int = 19, progress=None, should_stop=None) -> TrapResult:
    """A live run (seconds): one micro model per copy count. progress: ``progress(done_steps, total_steps)``;
    should_stop: a callable (the copy counts finished so far are returned, ``stopped=True``)."""
    from .recipes import MICRO_CONFIG, RunSettings

    check_fits(trap_len, MICRO_CONFIG["block_size"])
    copies = list(copies)
    if not copies or min(copies) < 0:
        raise DataLabError(f"copies must be a non-empty list of counts >= 0, got {copies}")
    total = len(copies) * len(seeds) * steps
    runs, stopped = [], False
    for i, c in enumerate(copies):
        rows = []
        for j, seed in enumerate(seeds):
            base = (i * len(seeds) + j) * steps
            r = trap_run(RunSettings(MICRO_CONFIG, steps, batch_size, lr, seed), copies=c, trap_len=trap_len,
                         n_shuffles=n_shuffles, should_stop=should_stop,
                         progress=None if progress is None else (lambda d, _t, b=base: progress(b + d, total)))
            if r["stopped"]:
                stopped = True
                break
            rows.append({**r, "copies": c, "seed": seed})
        if stopped:
            break
        runs += rows
    if not runs:
        raise DataLabError("stopped before the first copy count finished; nothing to show")
    res = traps_from_runs(runs, *reference_losses(trap_len=trap_len))
    res.stopped = stopped
    return res


def load_traps(path=None) -> TrapResult:
    """The shipped trap sweep (``sweeps/traps.json``), validated."""
    from .recipes import SWEEP_DIR

    doc = read_sweep_file(path or SWEEP_DIR / "traps.json", "traps",
                          ("copies", "seed", "member_loss", "nonmember_loss", "p_value", "canonical_logprob",
                           "shuffled_logprob", "val_loss"), ("ref_member_loss", "ref_nonmember_loss"))
    st = doc["settings"]
    return traps_from_runs(doc["runs"], st["ref_member_loss"], st["ref_nonmember_loss"])
