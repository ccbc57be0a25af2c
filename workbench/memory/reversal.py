"""The reversal curse: a model trained on "A is B" answers "A is ?" but not "B is ?".

Papers: Berglund et al., "The Reversal Curse" and "Are We Falling in a Middle-Intelligence Trap? An Analysis and
Mitigation of the Reversal Curse" (claim: causal next-token training stores a fact in one direction; forward
accuracy is high while reverse accuracy stays near chance, even when other facts were seen in both directions;
training on reordered text, a permutation of the fact's parts, closes part of the gap).

Setting: ``n_facts`` facts between two-token names (first name, surname) and two-token attributes (adjective,
noun), from the embedded lists of :mod:`.tasks`; rows ``BOS A1 A2 is B1 B2 .`` trained on every token. Half of the
facts also appear reversed (``BOS B1 B2 is A1 A2 .``), so the model sees that reversal exists; the other half are
trained forward only and tested both ways. The augmentations (:data:`~.tasks.AUGMENTATIONS`) add, for the
forward-only facts, a reordered copy that starts with a REV marker the test prompts never carry. Accuracy is exact
match of both answer tokens under greedy decoding (teacher-forced argmax, which is the same thing for two tokens).
Chance for the reverse question is one in the number of names (guessing a trained name).

The probe asks whether the reverse fact is linearly present even when the model cannot say it: at the ``is`` of the
reverse prompt ``BOS B1 B2 is``, a logistic regression per layer boundary reads one bit of the answer's name (its
first name in the first or second half of the list), cross-validated over the forward-only facts. The same probe on
the forward prompt reads a bit of the attribute: it is the positive control.

What this scale shows (shipped sweep, one seed, 600 steps, width 64, 2 layers, 64 facts): the curse reproduces.
Without augmentation, forward 1.00 and reverse 0.00 on the forward-only facts (chance 1/64), although the facts
trained both ways are recalled reversed at 1.00; token-order reversal of the augmented copies does not help (reverse
0.00); entity-preserving reversal (the reverse fact itself, under the REV marker) reaches 0.81. The probe finds the
reverse fact's name bit at chance without augmentation (0.47 / 0.56 / 0.56 at embed / block 0 / block 1, majority
0.53; 32 facts, 4 folds, so about +-0.1 is noise), while the forward control rises to 0.91 at the last boundary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import ModelCapabilityError, TaskRangeError
from .tasks import AUGMENTATIONS, FIRST_NAMES, ADJECTIVES, ReversalVocab, reversal_facts, reversal_rows, rows_batch
from .trainer import build_model, predictions, train_masked, run_settings

SWEEP_DIR = Path(__file__).parent / "sweeps"

LIVE = {"n_facts": 64, "width": 64, "n_layer": 2, "steps": 600, "batch": 64, "lr": 3e-3, "every": 100,
        "probe_folds": 4}


def _check(cfg: dict) -> dict:
    unknown = set(cfg) - set(LIVE)
    if unknown:
        raise TaskRangeError(f"unknown reversal settings {sorted(unknown)}; known: {sorted(LIVE)}")
    c = {**LIVE, **cfg}
    if not isinstance(c["n_facts"], int) or not 8 <= c["n_facts"] <= 256:
        raise TaskRangeError(f"n_facts must be an int in [8, 256] (16 x 16 names), got {c['n_facts']!r}")
    return c


def direction_accuracy(model, facts, which: np.ndarray, reverse: bool) -> float:
    """Exact-match accuracy of the facts selected by ``which`` asked forward (``BOS A1 A2 is`` -> ``B1 B2``) or in
    reverse (``BOS B1 B2 is`` -> ``A1 A2``)."""
    V = ReversalVocab
    left, right = (facts.b, facts.a) if reverse else (facts.a, facts.b)
    left, right = left[which], right[which]
    n = len(left)
    if n == 0:
        raise TaskRangeError("no facts selected to score")
    rows = np.concatenate([np.full((n, 1), V.BOS), left, np.full((n, 1), V.IS), right, np.full((n, 1), V.DOT)], 1)
    b = rows_batch(rows, score_from=3)  # targets: the two answer tokens (and the dot)
    pred = predictions(model, b).numpy()
    return float((pred[:, 3:5] == rows[:, 4:6]).all(1).mean())


@torch.no_grad()
def is_residuals(model, facts, which: np.ndarray, reverse: bool) -> np.ndarray:
    """The residual stream at the ``is`` of the prompts ``BOS X1 X2 is``: ``(L + 1, N, D)`` (needs capture)."""
    if not getattr(model, "supports_capture", False):
        raise ModelCapabilityError(f"{type(model).__name__} does not capture its residual stream: the reversal "
                                   "probe reads residuals, so it needs a model with capture (TinyGPT)")
    left = (facts.b if reverse else facts.a)[which]
    n = len(left)
    ids = torch.as_tensor(np.concatenate([np.full((n, 1), ReversalVocab.BOS), left,
                                          np.full((n, 1), ReversalVocab.IS)], 1))
    out = model(ids, capture=True)
    if out.residuals is None:
        raise ModelCapabilityError(f"{type(model).__name__} returned no residuals with capture=True")
    return out.residuals[:, :, -1].numpy()


def probe_accuracy(X: np.ndarray, y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """``(L + 1,)``: cross-validated accuracy (stratified ``folds``) of a logistic regression on standardised
    features reading ``y`` from ``X[l]`` ``(N, D)`` at each boundary ``l``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if np.bincount(y).min() < folds:
        raise TaskRangeError(f"too few facts of each label ({np.bincount(y).tolist()}) for {folds}-fold probing: "
                             "use more facts")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return np.array([cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
                                     X[l], y, cv=cv).mean() for l in range(X.shape[0])])


@dataclass(frozen=True)
class ReversalSetting:
    """One model: architecture, augmentation of the forward-only facts, seed."""

    arch: str = "transformer"
    augmentation: str = "none"
    seed: int = 0

    @property
    def label(self) -> str:
        return f"{self.arch}, augmentation {self.augmentation}"


@dataclass
class ReversalResult:
    """Forward and reverse accuracy of each model (rows: ``labels``, ``arch``, ``augmentation``) and seed.

    ``forward``, ``reverse`` ``(M, S)``: exact match on the forward-only facts asked both ways; ``both_reverse``
    ``(M, S)``: reverse accuracy on the facts trained in both directions (memorisation check); ``checkpoints``
    ``(C,)`` and ``curve_forward``, ``curve_reverse`` ``(M, S, C)``; ``probe_reverse``, ``probe_forward``
    ``(M, S, L + 1)``: cross-validated probe accuracy per layer boundary (``boundaries``), ``probe_chance`` the
    majority-label share; ``chance``: one over the number of names."""

    labels: list
    arch: list
    augmentation: list
    seeds: list
    forward: np.ndarray
    reverse: np.ndarray
    both_reverse: np.ndarray
    checkpoints: np.ndarray
    curve_forward: np.ndarray
    curve_reverse: np.ndarray
    probe_reverse: np.ndarray
    probe_forward: np.ndarray
    boundaries: list
    probe_chance: float
    chance: float
    train_loss: np.ndarray
    cpu_s: float = 0.0
    settings: dict = field(default_factory=dict)

    def mean(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean over seeds and sample spread (ddof 1; 0 with one seed) of any per-seed field."""
        v = np.asarray(getattr(self, what), dtype=float)
        sd = v.std(axis=1, ddof=1) if v.shape[1] > 1 else np.zeros_like(v[:, 0])
        return v.mean(axis=1), sd

    def summary(self) -> str:
        f, r, b = self.mean("forward")[0], self.mean("reverse")[0], self.mean("both_reverse")[0]
        pr, pf = self.mean("probe_reverse")[0], self.mean("probe_forward")[0]
        lines = [f"chance (reverse) {self.chance:.3f}; probe chance {self.probe_chance:.2f}; boundaries "
                 f"{self.boundaries}"]
        for i, lab in enumerate(self.labels):
            lines.append(f"{lab:40s} forward {f[i]:.2f} reverse {r[i]:.2f} (both-way facts reversed {b[i]:.2f}); "
                         f"probe reverse {np.round(pr[i], 2).tolist()} forward {np.round(pf[i], 2).tolist()}")
        return "\n".join(lines)


def run_one(setting: ReversalSetting, cfg: dict | None = None, progress=None, should_stop=None, report=None) -> dict:
    """Train one model on the facts with its augmentation and measure both directions and the probes."""
    c = _check(cfg or {})
    if setting.augmentation not in AUGMENTATIONS:
        raise TaskRangeError(f"unknown augmentation {setting.augmentation!r}; choose from {AUGMENTATIONS}")
    facts = reversal_facts(c["n_facts"], seed=0)  # the same facts for every model; the seed varies the training
    rows = reversal_rows(facts, setting.augmentation)
    model = build_model(setting.arch, ReversalVocab().size, rows.shape[1] - 1, width=c["width"],
                        n_layer=c["n_layer"], seed=setting.seed)
    fwd = ~facts.both

    def sample(rng):
        return rows_batch(rows[rng.integers(0, len(rows), size=c["batch"])], score_from=0)

    def evaluate(m):
        return [direction_accuracy(m, facts, fwd, False), direction_accuracy(m, facts, fwd, True)]

    log = train_masked(model, sample, c["steps"], lr=c["lr"], seed=setting.seed, every=c["every"],
                       evaluate=evaluate, progress=progress, should_stop=should_stop, report=report)
    name_bit = ((facts.a[fwd, 0] - 4) >= len(FIRST_NAMES) // 2).astype(int)
    attr_bit = ((facts.b[fwd, 0] - 4 - 2 * len(FIRST_NAMES)) >= len(ADJECTIVES) // 2).astype(int)
    out = {"arch": setting.arch, "augmentation": setting.augmentation, "seed": setting.seed,
           "forward": log.checkpoints[-1].metrics[0], "reverse": log.checkpoints[-1].metrics[1],
           "both_reverse": direction_accuracy(model, facts, facts.both, True),
           "checkpoints": [ck.step for ck in log.checkpoints],
           "curve_forward": [ck.metrics[0] for ck in log.checkpoints],
           "curve_reverse": [ck.metrics[1] for ck in log.checkpoints],
           "train_loss": log.final_loss, "cpu_s": log.cpu_s, "steps": log.steps,
           "probe_chance": float(max(name_bit.mean(), 1 - name_bit.mean()))}
    if getattr(model, "supports_capture", False):
        out["probe_reverse"] = probe_accuracy(is_residuals(model, facts, fwd, True), name_bit,
                                              c["probe_folds"]).tolist()
        out["probe_forward"] = probe_accuracy(is_residuals(model, facts, fwd, False), attr_bit,
                                              c["probe_folds"]).tolist()
    else:
        out["probe_reverse"] = out["probe_forward"] = [float("nan")] * (c["n_layer"] + 1)
    return out


def assemble(runs: list, cfg: dict) -> ReversalResult:
    """Stack per-model records (from :func:`run_one`) into a :class:`ReversalResult`."""
    c = _check(cfg)
    models = list(dict.fromkeys((r["arch"], r["augmentation"]) for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["arch"], r["augmentation"], r["seed"]): r for r in runs}
    missing = [m + (s,) for m in models for s in seeds if m + (s,) not in by]
    if missing:
        raise TaskRangeError(f"reversal runs missing for {missing}: every model needs every seed")

    def stack(key):
        return np.array([[by[m + (s,)][key] for s in seeds] for m in models], dtype=float)

    n_names = c["n_facts"]
    return ReversalResult(
        labels=[ReversalSetting(a, g).label for a, g in models], arch=[m[0] for m in models],
        augmentation=[m[1] for m in models], seeds=seeds, forward=stack("forward"), reverse=stack("reverse"),
        both_reverse=stack("both_reverse"), checkpoints=np.array(runs[0]["checkpoints"]),
        curve_forward=stack("curve_forward"), curve_reverse=stack("curve_reverse"),
        probe_reverse=stack("probe_reverse"), probe_forward=stack("probe_forward"),
        boundaries=["embed"] + [f"block {i}" for i in range(c["n_layer"])],
        probe_chance=float(runs[0]["probe_chance"]), chance=1.0 / n_names, train_loss=stack("train_loss"),
        cpu_s=float(sum(r["cpu_s"] for r in runs)), settings=c)


def reversal_experiment(settings=tuple(ReversalSetting("transformer", a) for a in AUGMENTATIONS),
                        cfg: dict | None = None, progress=None, should_stop=None, report=None) -> ReversalResult:
    """The live experiment: train each :class:`ReversalSetting` (defaults :data:`LIVE`) and measure it; callbacks as
    in :func:`workbench.memory.recall.recall_experiment` (checkpoint metrics are ``[forward, reverse]``)."""
    c = _check(cfg or {})
    settings = list(settings)
    if not settings:
        raise TaskRangeError("give at least one ReversalSetting")
    runs = run_settings(settings, c["steps"], run_one, c, progress=progress, should_stop=should_stop, report=report)
    return assemble(runs, c)


def load_reversal(path=None) -> ReversalResult:
    """The shipped reversal sweep (``sweeps/reversal.json``), validated."""
    from .sweepfile import read_sweep

    doc = read_sweep(path or SWEEP_DIR / "reversal.json", "reversal",
                     ("arch", "augmentation", "seed", "forward", "reverse", "both_reverse", "checkpoints",
                      "curve_forward", "curve_reverse", "probe_reverse", "probe_forward", "train_loss", "cpu_s"))
    return assemble(doc["runs"], doc["settings"]["cfg"])
