"""Answer format in addition: the same sums written plain, reversed, or after a scratchpad.

Paper: Lee et al., "Teaching Arithmetic to Small Transformers". Claim: writing the sum least significant digit
first (the order in which carries are computed) makes addition far easier to learn than the plain order, with a sharp
transition in accuracy against the number of training examples; a scratchpad of per-digit steps helps further.

Setting: ``digits``-digit operands (zero-padded), rows ``BOS a + b = <answer> EOS`` of
:func:`~.tasks.addition_rows`, loss on the answer tokens only; ``n_train`` distinct training problems, a fixed
number of steps for every size (so small sets are seen many times), and exact match of the greedily decoded sum on
held-out problems. Contrast: the tokenization lesson's digit-chunking experiment
(:func:`workbench.tokenizers.experiments.addition_experiment`, notebook 01) changed where numbers are cut into BPE
tokens and measured no effect at toy scale (both models at or below 1%). Here every digit is its own token and only
the order of the answer changes, which is a different question: whether the model must compute the carry before it
writes the digit that depends on it.

What this scale shows (shipped sweep: two seeds, 1,500 steps, width 64, 2 layers, 2-digit operands, 300 held-out
problems; 423 CPU-seconds): exact match at 250 / 1,000 / 3,000 training problems, mean of the seeds (seed 0, seed 1):
plain 0.08 / 0.67 (0.96, 0.38) / 0.97; reversed 0.08 / 0.97 (0.98, 0.95) / 0.64 (1.00, 0.27); scratchpad 0.10 /
1.00 / 1.00. The reversed format's sharp transition reproduces in part: from 250 to 1,000 problems it jumps from
memorising (0.07, 0.10) to adding (0.95 or more in both seeds), where the plain format gets there in one seed of two
(0.96 and 0.38) and needs 3,000 problems to be reliable. The scratchpad is best, 1.00 from 1,000 problems on. At
3,000 one reversed run failed to fit its training set at all within the steps (final training loss 0.42 nats
against 0.00 for the other seed), an optimisation failure rather than a property of the format, so the reversed
mean there (0.64) says little. With 250 problems no format generalises (0.03-0.18). An earlier version of this
sweep trained 600 steps (one seed) and showed no reversed advantage: plain 0.16 / 0.22 / 0.65, reversed 0.04 /
0.28 / 0.02, scratchpad 0.01 / 0.60 / 0.84; the runs had not converged. Unlike the digit-chunking null, the answer
format does move accuracy here (at 1,000 problems: reversed 0.97 and scratchpad 1.00 against plain 0.67).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import TaskRangeError
from .tasks import FORMATS, AdditionVocab, addition_rows, read_sum, rows_batch
from .trainer import build_model, check_length, train_masked, run_settings

SWEEP_DIR = Path(__file__).parent / "sweeps"

LIVE = {"digits": 2, "width": 64, "n_layer": 2, "steps": 400, "batch": 64, "lr": 3e-3, "every": 100, "n_test": 300}


def _check(cfg: dict) -> dict:
    unknown = set(cfg) - set(LIVE)
    if unknown:
        raise TaskRangeError(f"unknown answer-format settings {sorted(unknown)}; known: {sorted(LIVE)}")
    c = {**LIVE, **cfg}
    if not isinstance(c["digits"], int) or not 1 <= c["digits"] <= 5:
        raise TaskRangeError(f"digits must be an int in [1, 5], got {c['digits']!r}")
    return c


def problems(n_train: int, n_test: int, digits: int, seed: int = 0):
    """``(train_a, train_b, test_a, test_b)``: ``n_train`` distinct problems and ``n_test`` others, none of them in
    the training set."""
    space = 10 ** (2 * digits)
    if not isinstance(n_train, int) or not 1 <= n_train <= space // 2:
        raise TaskRangeError(f"n_train must be an int in [1, {space // 2}] for {digits}-digit operands (at most half "
                             f"of the {space} problems, the rest for testing), got {n_train!r}")
    rng = np.random.default_rng(seed)
    pick = rng.choice(space, size=n_train + n_test, replace=False)
    tr, te = pick[:n_train], pick[n_train:]
    return tr // 10 ** digits, tr % 10 ** digits, te // 10 ** digits, te % 10 ** digits


@torch.no_grad()
def greedy_answers(model, a: np.ndarray, b: np.ndarray, digits: int, fmt: str) -> np.ndarray:
    """The model's greedy continuation after ``=`` (as many tokens as the format's answer) ``(n, L)``."""
    rows, start = addition_rows(a, b, digits, fmt)
    L = rows.shape[1] - 1 - start  # answer tokens without the EOS
    x = torch.as_tensor(rows[:, :start])
    check_length(model, rows_batch(rows))
    model.eval()
    for _ in range(L):
        x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return x[:, start:].numpy()


def exact_match(model, a, b, digits: int, fmt: str) -> float:
    """Share of problems whose greedily written sum (read back from the format) is right."""
    got = read_sum(greedy_answers(model, a, b, digits, fmt), digits, fmt)
    return float((got == np.asarray(a) + np.asarray(b)).mean())


@dataclass(frozen=True)
class FormatSetting:
    """One model: answer format, number of training problems, seed."""

    fmt: str
    n_train: int
    seed: int = 0


@dataclass
class AnswerFormatResult:
    """Exact-match accuracy by format (``formats``, rows) and number of training problems (``n_train`` ``(N,)``).

    ``accuracy`` ``(F, N, S)`` on held-out problems per seed (``seeds``); ``checkpoints`` ``(C,)`` and ``curve``
    ``(F, N, S, C)``; ``train_loss`` ``(F, N, S)``; ``cpu_s``."""

    formats: list
    n_train: np.ndarray
    seeds: list
    accuracy: np.ndarray
    checkpoints: np.ndarray
    curve: np.ndarray
    train_loss: np.ndarray
    cpu_s: float = 0.0
    settings: dict = field(default_factory=dict)

    def mean(self, what: str = "accuracy") -> tuple[np.ndarray, np.ndarray]:
        """Mean over seeds and sample spread (ddof 1; 0 with one seed)."""
        v = np.asarray(getattr(self, what), dtype=float)
        sd = v.std(axis=2, ddof=1) if v.shape[2] > 1 else np.zeros_like(v[:, :, 0])
        return v.mean(axis=2), sd

    def summary(self) -> str:
        acc = self.mean()[0]
        lines = [f"n_train {self.n_train.tolist()}"]
        lines += [f"{f:11s} " + " ".join(f"{a:.2f}" for a in acc[i]) for i, f in enumerate(self.formats)]
        return "\n".join(lines)


def run_one(setting: FormatSetting, cfg: dict | None = None, progress=None, should_stop=None, report=None) -> dict:
    """Train one model on ``n_train`` problems in one format and measure held-out exact match."""
    c = _check(cfg or {})
    if setting.fmt not in FORMATS:
        raise TaskRangeError(f"unknown answer format {setting.fmt!r}; choose from {FORMATS}")
    d = c["digits"]
    ta, tb, ea, eb = problems(setting.n_train, c["n_test"], d, seed=0)  # same problems for every format
    rows, start = addition_rows(ta, tb, d, setting.fmt)
    model = build_model("transformer", AdditionVocab.size, rows.shape[1] - 1, width=c["width"], n_layer=c["n_layer"],
                        seed=setting.seed)

    def sample(rng):
        return rows_batch(rows[rng.integers(0, len(rows), size=c["batch"])], score_from=start - 1)

    log = train_masked(model, sample, c["steps"], lr=c["lr"], seed=setting.seed, every=c["every"],
                       evaluate=lambda m: exact_match(m, ea, eb, d, setting.fmt), progress=progress,
                       should_stop=should_stop, report=report)
    return {"fmt": setting.fmt, "n_train": setting.n_train, "seed": setting.seed,
            "accuracy": log.checkpoints[-1].metrics, "checkpoints": [ck.step for ck in log.checkpoints],
            "curve": [ck.metrics for ck in log.checkpoints], "train_loss": log.final_loss, "cpu_s": log.cpu_s,
            "steps": log.steps}


def assemble(runs: list, cfg: dict) -> AnswerFormatResult:
    """Stack per-model records (from :func:`run_one`) into an :class:`AnswerFormatResult`."""
    c = _check(cfg)
    fmts = [f for f in FORMATS if any(r["fmt"] == f for r in runs)]
    sizes = sorted({r["n_train"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["fmt"], r["n_train"], r["seed"]): r for r in runs}
    missing = [(f, n, s) for f in fmts for n in sizes for s in seeds if (f, n, s) not in by]
    if missing:
        raise TaskRangeError(f"answer-format runs missing for {missing}: every format needs every size and seed")

    def stack(key):
        return np.array([[[by[(f, n, s)][key] for s in seeds] for n in sizes] for f in fmts], dtype=float)

    return AnswerFormatResult(formats=fmts, n_train=np.array(sizes), seeds=seeds, accuracy=stack("accuracy"),
                              checkpoints=np.array(runs[0]["checkpoints"]), curve=stack("curve"),
                              train_loss=stack("train_loss"), cpu_s=float(sum(r["cpu_s"] for r in runs)), settings=c)


def answer_format_experiment(formats=FORMATS, n_train=(250, 1000), cfg: dict | None = None, seed: int = 0,
                             progress=None, should_stop=None, report=None) -> AnswerFormatResult:
    """The live experiment: one model per (format, number of training problems); callbacks as in
    :func:`workbench.memory.recall.recall_experiment` (``report((fmt, n_train), checkpoint)``, metric = accuracy).
    Stopping early returns the formats whose sizes all finished."""
    c = _check(cfg or {})
    settings = [FormatSetting(f, int(n), seed) for f in formats for n in n_train]
    if not settings:
        raise TaskRangeError("give at least one format and one training size")
    runs = run_settings(settings, c["steps"], run_one, c, key=lambda s: (s.fmt, s.n_train), keep_partial=False,
                        progress=progress, should_stop=should_stop, report=report)
    if not runs:
        raise TaskRangeError("stopped before the first model finished: nothing to show")
    done = [f for f in dict.fromkeys(r["fmt"] for r in runs)
            if sum(r["fmt"] == f for r in runs) == len(tuple(n_train))]
    return assemble([r for r in runs if r["fmt"] in done] or runs[:1], c)


def load_answer_format(path=None) -> AnswerFormatResult:
    """The shipped answer-format sweep (``sweeps/answer_format.json``), validated."""
    from .sweepfile import read_sweep

    doc = read_sweep(path or SWEEP_DIR / "answer_format.json", "answer_format",
                     ("fmt", "n_train", "seed", "accuracy", "checkpoints", "curve", "train_loss", "cpu_s"))
    return assemble(doc["runs"], doc["settings"]["cfg"])
