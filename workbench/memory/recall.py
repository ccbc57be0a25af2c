"""Associative recall: where a fixed-size recurrent state stops remembering what attention still can.

Papers: Arora et al., "Just read twice: closing the recall gap for recurrent language models" (and Zoology's
multi-query associative recall, MQAR); Chen et al., "Stuffed Mamba" (state capacity). Claim: a recurrent model must
squeeze every key-value pair into a state of fixed size, so its recall falls as the pairs outgrow the state, while
attention looks each key up and keeps recalling; a larger state moves the fall later; repeating the context ("read
twice") closes part of the gap, because on the second pass the model already knows which keys exist; and for the
recurrent model the order matters (pairs seen long ago are lost first).

Setting: rows of :func:`~.tasks.recall_batch` (distinct keys, every key queried once), each model trained on rows of
``max_pairs`` pairs (half the batches) or of 1 to ``max_pairs`` pairs, half of the rows in the read-twice layout, then scored on fresh rows for each
number of pairs in both layouts, and split by the position of the queried pair in the context. Chance is
``1 / n_values``. What this scale shows is in the shipped sweep's summary (:func:`load_recall`,
:attr:`RecallResult.summary`), measured, not assumed.

What this scale shows (shipped sweep, one seed, 800 steps, width 64, 2 layers, up to 6 pairs, 16 keys and 16
values): the gap does NOT reproduce. Accuracy (context once) at 1 / 2 / 4 / 6 pairs: transformer 1.00 / 0.75 / 0.45 /
0.31; recurrent with d_state 2: 1.00 / 0.73 / 0.58 / 0.48; with d_state 16: 1.00 / 0.76 / 0.55 / 0.48. The
transformer had not learned the lookup in this budget (its accuracy is flat over the pair's position, about 0.3,
and still rising slowly over checkpoints), state size made no difference at 6 pairs (the smallest state, 4 heads x
2 x 16 = 128 numbers per layer, is not yet full), reading twice changed nothing (within 0.05 either way), and the
recurrent models show no recency effect in ``by_position``. Longer training, more pairs and a smaller state are
what the claim needs; the live version lets a student try them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelCapabilityError, TaskRangeError
from .tasks import RecallVocab, recall_batch, recall_length
from .trainer import build_model, predictions, state_numbers, train_masked, run_settings

SWEEP_DIR = Path(__file__).parent / "sweeps"


@dataclass(frozen=True)
class RecallSetting:
    """One model of the recall experiment: architecture, recurrent state size (None for attention), seed."""

    arch: str
    state_size: int | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        return self.arch if self.state_size is None else f"{self.arch} (state {self.state_size})"


@dataclass
class RecallResult:
    """Recall accuracy of each model (rows: ``labels``, with ``arch`` and ``state_size``; 0 for attention) against
    ``pairs`` ``(P,)``.

    ``accuracy`` and ``accuracy_twice`` ``(M, S, P)``: the share of queries answered right with the context once and
    read twice, per model, seed (``seeds``) and number of pairs; ``by_position`` ``(M, S, max_pairs)``: accuracy at
    ``max_pairs`` pairs (context once) by the position of the queried pair (0 = first in the context);
    ``checkpoints`` ``(C,)`` steps and ``curve`` ``(M, S, C)``: accuracy at ``max_pairs`` during training;
    ``train_loss`` ``(M, S)``; ``chance``; ``cpu_s`` (all training together)."""

    labels: list
    arch: list
    state_size: list
    seeds: list
    pairs: np.ndarray
    accuracy: np.ndarray
    accuracy_twice: np.ndarray
    by_position: np.ndarray
    checkpoints: np.ndarray
    curve: np.ndarray
    train_loss: np.ndarray
    chance: float
    max_pairs: int
    cpu_s: float = 0.0
    settings: dict = field(default_factory=dict)

    def mean(self, what: str = "accuracy") -> tuple[np.ndarray, np.ndarray]:
        """Mean over seeds and the sample spread (ddof 1; 0 with one seed) of ``accuracy``, ``accuracy_twice``,
        ``by_position`` or ``curve``: two ``(M, ...)`` arrays."""
        v = np.asarray(getattr(self, what), dtype=float)
        sd = v.std(axis=1, ddof=1) if v.shape[1] > 1 else np.zeros_like(v[:, 0])
        return v.mean(axis=1), sd

    def gap(self) -> np.ndarray:
        """``(M, P)``: the attention model's mean accuracy minus each model's (0 for attention itself)."""
        acc = self.mean()[0]
        ref = acc[[i for i, a in enumerate(self.arch) if a == "transformer"]]
        if not len(ref):
            raise ModelCapabilityError("no transformer in this result: the recall gap is measured against one")
        return ref[0][None, :] - acc

    def twice_gain(self) -> np.ndarray:
        """``(M, P)``: mean accuracy with the context read twice minus once."""
        return self.mean("accuracy_twice")[0] - self.mean()[0]

    def summary(self) -> str:
        """A few lines of what was measured: accuracy once / twice at each number of pairs, per model."""
        once, twice = self.mean()[0], self.mean("accuracy_twice")[0]
        lines = [f"pairs: {self.pairs.tolist()} (chance {self.chance:.3f})"]
        for i, lab in enumerate(self.labels):
            lines.append(f"{lab:26s} once " + " ".join(f"{a:.2f}" for a in once[i]) +
                         " | twice " + " ".join(f"{a:.2f}" for a in twice[i]))
        return "\n".join(lines)


#: Defaults of the live experiment (seconds at one thread per model) and of the shipped sweep (see make_sweeps).
LIVE = {"max_pairs": 6, "n_keys": 16, "n_values": 16, "width": 32, "n_layer": 2, "steps": 300, "batch": 32,
        "lr": 3e-3, "eval_rows": 128, "every": 100}


def _check(cfg: dict) -> dict:
    out = dict(LIVE)
    unknown = set(cfg) - set(LIVE)
    if unknown:
        raise TaskRangeError(f"unknown recall settings {sorted(unknown)}; known: {sorted(LIVE)}")
    out.update(cfg)
    if not isinstance(out["max_pairs"], int) or not 1 <= out["max_pairs"] <= out["n_keys"]:
        raise TaskRangeError(f"max_pairs must be an int in [1, n_keys={out['n_keys']}] (keys are distinct), got "
                             f"{out['max_pairs']!r}")
    return out


def eval_pairs(max_pairs: int) -> list[int]:
    """The numbers of pairs scored: 1, 2, 4, ... up to and including ``max_pairs``."""
    p, out = 1, []
    while p < max_pairs:
        out.append(p)
        p *= 2
    return out + [max_pairs]


def recall_accuracy(model, n_pairs: int, read_twice: bool, rows: int, seed: int, vocab: RecallVocab,
                    max_pairs: int | None = None) -> tuple[float, np.ndarray]:
    """Share of queries answered right on ``rows`` fresh rows of ``n_pairs`` pairs, and ``(n_pairs,)`` accuracy by
    the position of the queried pair in the context. ``max_pairs`` (the most the model was trained with) guards
    against asking for more pairs than the model ever saw."""
    if max_pairs is not None and not 1 <= n_pairs <= max_pairs:
        raise TaskRangeError(f"n_pairs must be in [1, {max_pairs}] (the model was trained with up to {max_pairs} "
                             f"pairs), got {n_pairs}")
    b = recall_batch(np.random.default_rng(seed), rows, n_pairs, vocab, read_twice)
    pred = predictions(model, b).numpy()
    qpos = b.info["query_pos"]
    ok = np.take_along_axis(pred, qpos, 1) == np.take_along_axis(b.y.numpy(), qpos, 1)  # (B, n) in query order
    by_pair = np.zeros(n_pairs)
    np.add.at(by_pair, b.info["pair"].ravel(), ok.ravel())
    return float(ok.mean()), by_pair / rows


def run_one(setting: RecallSetting, cfg: dict | None = None, progress=None, should_stop=None, report=None) -> dict:
    """Train one model of the recall experiment and measure it: a JSON-able dict (the record a sweep stores)."""
    c = _check(cfg or {})
    voc = RecallVocab(c["n_keys"], c["n_values"])
    block = recall_length(c["max_pairs"], read_twice=True)
    model = build_model(setting.arch, voc.size, block, width=c["width"], n_layer=c["n_layer"],
                        state_size=setting.state_size, seed=setting.seed)
    mp = c["max_pairs"]

    def sample(rng):  # half the batches at the most pairs (the most scored queries), half of any size
        n = mp if rng.random() < 0.5 else int(rng.integers(1, mp + 1))
        return recall_batch(rng, c["batch"], n, voc, bool(rng.random() < 0.5))

    def evaluate(m):
        return recall_accuracy(m, mp, False, c["eval_rows"], 10_000 + setting.seed, voc, mp)[0]

    log = train_masked(model, sample, c["steps"], lr=c["lr"], seed=setting.seed, every=c["every"],
                       evaluate=evaluate, progress=progress, should_stop=should_stop, report=report)
    pairs = eval_pairs(mp)
    once = [recall_accuracy(model, p, False, c["eval_rows"], 20_000 + p, voc, mp) for p in pairs]
    twice = [recall_accuracy(model, p, True, c["eval_rows"], 30_000 + p, voc, mp)[0] for p in pairs]
    return {"arch": setting.arch, "state_size": setting.state_size, "seed": setting.seed, "pairs": pairs,
            "accuracy": [a for a, _ in once], "accuracy_twice": twice, "by_position": once[-1][1].tolist(),
            "checkpoints": [ck.step for ck in log.checkpoints], "curve": [ck.metrics for ck in log.checkpoints],
            "train_loss": log.final_loss, "cpu_s": log.cpu_s, "state_numbers": state_numbers(model),
            "steps": log.steps}


def assemble(runs: list, cfg: dict) -> RecallResult:
    """Stack per-model records (from :func:`run_one`) into a :class:`RecallResult`, models in first-seen order,
    seeds sorted. Every model must have the same seeds and the same checkpoints."""
    c = _check(cfg)
    models = list(dict.fromkeys((r["arch"], r["state_size"]) for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["arch"], r["state_size"], r["seed"]): r for r in runs}
    missing = [(a, s, sd) for a, s in models for sd in seeds if (a, s, sd) not in by]
    if missing:
        raise TaskRangeError(f"recall runs missing for {missing}: every model needs every seed")

    def stack(key):
        return np.array([[by[(a, s, sd)][key] for sd in seeds] for a, s in models], dtype=float)

    first = runs[0]
    return RecallResult(
        labels=[RecallSetting(a, s).label for a, s in models], arch=[a for a, _ in models],
        state_size=[s or 0 for _, s in models], seeds=seeds, pairs=np.array(first["pairs"]),
        accuracy=stack("accuracy"), accuracy_twice=stack("accuracy_twice"), by_position=stack("by_position"),
        checkpoints=np.array(first["checkpoints"]), curve=stack("curve"), train_loss=stack("train_loss"),
        chance=1.0 / c["n_values"], max_pairs=c["max_pairs"], cpu_s=float(sum(r["cpu_s"] for r in runs)),
        settings=c)


def recall_experiment(settings=(RecallSetting("transformer"), RecallSetting("recurrent", 4),
                                RecallSetting("recurrent", 16)), cfg: dict | None = None, progress=None,
                      should_stop=None, report=None) -> RecallResult:
    """The live experiment: train each :class:`RecallSetting` (small defaults: :data:`LIVE`, a few seconds per
    model at one thread) and measure it. ``progress(done, total)`` counts steps over all models; ``report(label,
    checkpoint)`` gets each checkpoint as it arrives; ``should_stop()`` stops after the current model's checkpoint
    and returns what finished (at least one model must)."""
    c = _check(cfg or {})
    settings = list(settings)
    if not settings:
        raise TaskRangeError("give at least one RecallSetting")
    runs = run_settings(settings, c["steps"], run_one, c, progress=progress, should_stop=should_stop, report=report)
    return assemble(runs, c)


def load_recall(path=None) -> RecallResult:
    """The shipped recall sweep (``sweeps/recall.json``), validated."""
    from .sweepfile import read_sweep

    doc = read_sweep(path or SWEEP_DIR / "recall.json", "recall",
                     ("arch", "state_size", "seed", "pairs", "accuracy", "accuracy_twice", "by_position",
                      "checkpoints", "curve", "train_loss", "cpu_s"))
    return assemble(doc["runs"], doc["settings"]["cfg"])
