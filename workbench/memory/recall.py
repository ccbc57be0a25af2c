"""Associative recall: where a fixed-size recurrent state stops remembering what attention still can.

Papers: Arora et al., "Just read twice: closing the recall gap for recurrent language models" (and Zoology's
multi-query associative recall, MQAR); Chen et al., "Stuffed Mamba" (state capacity). Claim: a recurrent model must
squeeze every key-value pair into a state of fixed size, so its recall falls as the pairs outgrow the state, while
attention looks each key up and keeps recalling; a larger state moves the fall later; repeating the context ("read
twice") closes part of the gap, because on the second pass the model already knows which keys exist; and the set
order matters for the recurrent model: told first which keys will be asked ("queries first"), it can keep only
those pairs.

Setting: rows of :func:`~.tasks.recall_batch` with distinct keys and ``n`` queries drawn with replacement (with
every key asked once, later queries can be answered by elimination, "a value not yet answered", and small models
learn that shortcut first: it gives H_n / n, 0.75 / 0.52 / 0.41 at 2 / 4 / 6 pairs, near what the previous version
of this sweep measured (transformer 0.75 / 0.45 / 0.31), and a transformer trained 800 steps on 2 pairs answered the
last query every time and the first by a coin flip, 0.51). Each model is trained on batches of ``max_pairs`` pairs
(half of them) or of 1 to ``max_pairs`` pairs (optionally growing, ``curriculum``), in three layouts (:data:`LAYOUTS`:
context once, read twice, queries first with ``queries`` keys asked); with ``dense`` the read-twice rows also score
the values of the second copy (the same lookup, more targets). Scored on fresh rows at each number of pairs of
:func:`eval_pairs` in each layout, the queries-first accuracy against its control (the same number of queries in the
standard order), and split by the position of the queried pair. Chance is ``1 / n_values``. What this scale shows
is in the shipped sweep's summary (:func:`load_recall`, :attr:`RecallResult.summary`), measured, not assumed.

Why earlier versions of this sweep learned nothing (measured, 2026-12): the initialisation and the learning rate,
not the task. A plain 2-layer PyTorch transformer (learned positions, PyTorch's default layer init, untied head,
Adam at 1e-3) learned the lookup at 8 pairs of these rows in under 500 steps; the same loop on the memory lab's
TinyGPT did not in 2,000. Bisected on the plain model: GPT-2's initialisation alone (every weight ``N(0, 0.02)``)
or a tied head alone (with ``N(0, 1)`` embeddings) kept it on the plateau for 1,000 steps, and small Linear weights
or small embeddings each sufficed to; TinyGPT (RoPE) with PyTorch's init and an untied head learned it in under 500
steps. At width 64 the 0.02 that GPT-2 chose for width 768 makes attention scores, and each token's own embedding
next to what the layers add, tiny, and the induction head forms late. The learning rate matters too: with
PyTorch's init, :func:`~.trainer.train_masked`'s schedule at 3e-3 stayed at 0.25 for 1,500 steps, at 1e-3 it
reached 0.996 by step 1,250. Hence ``init="torch"`` (:func:`~.trainer.build_model`) and a learning rate per
architecture (``lr`` 1e-3 for attention, ``lr_recurrent`` 3e-3, as Zoology sweeps it per model: the recurrent
model with a state of 16 stayed on its plateau for 1,500 steps at 1e-3 and left it at 3e-3; for a seed that stays
there (state 1, seed 1), 1e-2 or a curriculum over the pairs did not help in 2,000-3,000
steps).

What this scale shows (shipped sweep: 3 seeds, 3,000 steps of 32 rows, width 64, 2 layers, up to 8 pairs, 16 keys
and 16 values, recurrent states of 1 and 16 per head; 940 CPU-seconds): the recall gap reproduces. Accuracy
(context once, mean of seeds) at 1 / 2 / 3 / 4 / 6 / 8 pairs: transformer 1.00 at every count in every seed
(learned between steps 500 and 1,000); recurrent with d_state 1: 1.00 / 0.61 / 0.47 / 0.39 / 0.32 / 0.29; with
d_state 16: 1.00 / 0.76 / 0.60 / 0.53 / 0.42 / 0.34. The gap to attention opens at the first count above one pair
(2 pairs: 0.39 for d_state 1, 0.24 for d_state 16) and widens with the pairs (0.71 and 0.66 at 8). A larger state
helps where the recurrent model learns at all, which is seed luck at this budget: with d_state 16 two seeds of
three left the copy level (0.88 / 0.75 / 0.70 / 0.52 / 0.41 and 0.81 / 0.64 / 0.56 / 0.44 / 0.37 at 2-8 pairs),
with d_state 1 one of three (0.74 / 0.57 / 0.47 / 0.39 / 0.34); the others stayed where copying one of the context's
values gives (0.55-0.58 at 2 pairs, 0.26-0.27 at 8), so the seed spread of the recurrent means is large (up to
0.18). Those that learned recall the first and the last pairs best (d_state 16, 8 pairs: 0.48-0.52 for the first,
0.39-0.57 for the last, about 0.3 in the middle). Reading twice did not help (-0.04 to +0.01 for the recurrent
models, the transformer already at 1.00), nor did listing the 2 asked keys first (-0.05 to +0.01 against the same
queries in the standard order): neither the read-twice nor the set-order claim reproduces here, although rows of
both layouts were a share of training.
The live lab (width 32, 150 steps by default) trains far shorter than the 500-1,000 steps the transformer needed
here: a way to try the settings, not a check of this sweep.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelCapabilityError, TaskRangeError
from .tasks import RecallVocab, recall_batch, recall_length
from .trainer import build_model, predictions, run_settings, state_numbers, train_masked

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
    read twice, per model, seed (``seeds``) and number of pairs; ``accuracy_first`` ``(M, S, P)``: with the
    ``min(queries, n)`` queried keys listed before the pairs, and ``accuracy_head`` its control (context once, the
    same number of queries); ``by_position`` ``(M, S, max_pairs)``: accuracy at ``max_pairs`` pairs (context once)
    by the position of the queried pair (0 = first in the context); ``checkpoints`` ``(C,)`` steps and ``curve``
    ``(M, S, C)``: accuracy at ``max_pairs`` during training; ``train_loss`` ``(M, S)``; ``chance``; ``cpu_s``
    (all training together)."""

    labels: list
    arch: list
    state_size: list
    seeds: list
    pairs: np.ndarray
    accuracy: np.ndarray
    accuracy_twice: np.ndarray
    accuracy_first: np.ndarray
    accuracy_head: np.ndarray
    by_position: np.ndarray
    checkpoints: np.ndarray
    curve: np.ndarray
    train_loss: np.ndarray
    chance: float
    max_pairs: int
    queries: int = 1
    cpu_s: float = 0.0
    settings: dict = field(default_factory=dict)

    def mean(self, what: str = "accuracy") -> tuple[np.ndarray, np.ndarray]:
        """Mean over seeds and the sample spread (ddof 1; 0 with one seed) of ``accuracy``, ``accuracy_twice``,
        ``accuracy_first``, ``accuracy_head``, ``by_position`` or ``curve``: two ``(M, ...)`` arrays."""
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

    def order_gain(self) -> np.ndarray:
        """``(M, P)``: mean accuracy with the queried keys listed first minus the same number of queries in the
        standard order (the set order's effect)."""
        return self.mean("accuracy_first")[0] - self.mean("accuracy_head")[0]

    def gap_opens(self, margin: float = 0.1) -> list:
        """Per model, the fewest pairs at which the attention model's mean accuracy leads it by more than
        ``margin`` (None where it never does, and for attention itself)."""
        g = self.gap()
        return [next((int(p) for p, v in zip(self.pairs, g[i]) if v > margin), None) for i in range(len(g))]

    def summary(self) -> str:
        """A few lines of what was measured: accuracy once / twice / queries first (with its control) at each
        number of pairs, per model, and where the gap to attention opens."""
        once, twice = self.mean()[0], self.mean("accuracy_twice")[0]
        first, head = self.mean("accuracy_first")[0], self.mean("accuracy_head")[0]
        lines = [f"pairs: {self.pairs.tolist()} (chance {self.chance:.3f}; {len(self.seeds)} seed(s); queries "
                 f"first: {self.queries} keys asked)"]

        def row(v):
            return " ".join(f"{a:.2f}" for a in v)

        try:
            opens = self.gap_opens()
        except ModelCapabilityError:
            opens = [None] * len(self.labels)
        for i, lab in enumerate(self.labels):
            lines.append(f"{lab:20s} once  {row(once[i])}")
            lines.append(f"{'':20s} twice {row(twice[i])}")
            lines.append(f"{'':20s} first {row(first[i])} (same queries, standard order {row(head[i])})")
            if opens[i] is not None:
                lines.append(f"{'':20s} gap to attention > 0.1 from {opens[i]} pairs")
        return "\n".join(lines)


#: Defaults of the live experiment (seconds at one thread per model) and of the shipped sweep (see make_sweeps).
#: ``queries``: how many keys the queries-first rows ask (and their standard-order control); ``curriculum``: the
#: share of the steps over which the most pairs a batch may hold grows from 1 to ``max_pairs``; ``dense``: in
#: read-twice training rows also score each value of the second copy (the same lookup, n more targets a row);
#: ``init``: the models' initialisation (:data:`~.trainer.INITS`; with GPT-2's ``"gpt2"`` no model learned the
#: lookup); ``lr_recurrent``: the recurrent models' peak learning rate (None: ``lr``), since the best rate differs
#: by architecture (Zoology sweeps it per model).
LIVE = {"max_pairs": 6, "n_keys": 16, "n_values": 16, "width": 32, "n_layer": 2, "steps": 300, "batch": 32,
        "lr": 1e-3, "eval_rows": 128, "every": 100, "queries": 2, "curriculum": 0.0, "dense": True, "init": "torch",
        "lr_recurrent": 3e-3}
#: The row layouts a model is trained on, with the share of batches each gets: the context once, read twice, and
#: the queried keys first (``queries`` of them asked).
LAYOUTS = {"once": 0.4, "twice": 0.3, "first": 0.3}


def _check(cfg: dict) -> dict:
    out = dict(LIVE)
    unknown = set(cfg) - set(LIVE)
    if unknown:
        raise TaskRangeError(f"unknown recall settings {sorted(unknown)}; known: {sorted(LIVE)}")
    out.update(cfg)
    if not isinstance(out["max_pairs"], int) or not 1 <= out["max_pairs"] <= out["n_keys"]:
        raise TaskRangeError(f"max_pairs must be an int in [1, n_keys={out['n_keys']}] (keys are distinct), got "
                             f"{out['max_pairs']!r}")
    if not isinstance(out["queries"], int) or isinstance(out["queries"], bool) or out["queries"] < 1:
        raise TaskRangeError(f"queries (keys the queries-first rows ask, at most the pairs in the row) must be an "
                             f"int >= 1, got {out['queries']!r}")
    if not isinstance(out["dense"], bool):
        raise TaskRangeError(f"dense must be True or False, got {out['dense']!r}")
    if out["lr_recurrent"] is not None and not (isinstance(out["lr_recurrent"], (int, float))
                                                and out["lr_recurrent"] > 0):
        raise TaskRangeError(f"lr_recurrent must be None or a positive number, got {out['lr_recurrent']!r}")
    if not isinstance(out["curriculum"], (int, float)) or not 0.0 <= out["curriculum"] < 1.0:
        raise TaskRangeError(f"curriculum (share of the steps over which the pairs grow) must be in [0, 1), got "
                             f"{out['curriculum']!r}")
    return out


def eval_pairs(max_pairs: int) -> list[int]:
    """The numbers of pairs scored: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to and including ``max_pairs``."""
    out, p = [], 1
    while p < max_pairs:
        out.append(p)
        p = p + 1 if p < 4 else (p * 3 // 2 if p & (p - 1) == 0 else p * 4 // 3)
    return out + [max_pairs]


def block_length(max_pairs: int, queries: int) -> int:
    """The longest row a model of the experiment is trained on (and so may be scored on): ``max_pairs`` pairs read
    twice, or queries first."""
    return max(recall_length(max_pairs, read_twice=True), recall_length(max_pairs, queries_first=True,
                                                                        n_queries=min(queries, max_pairs)))


def _scores(model, n_pairs: int, layout: str, rows: int, seed: int, vocab: RecallVocab, max_pairs: int | None,
            n_queries: int | None = None):
    if max_pairs is not None and not 1 <= n_pairs <= max_pairs:
        raise TaskRangeError(f"n_pairs must be in [1, {max_pairs}] (the model was trained with up to {max_pairs} "
                             f"pairs), got {n_pairs}")
    if layout not in LAYOUTS:
        raise TaskRangeError(f"unknown recall layout {layout!r}; choose from {list(LAYOUTS)}")
    b = recall_batch(np.random.default_rng(seed), rows, n_pairs, vocab, layout == "twice", layout == "first",
                     n_queries, distinct_queries=False)
    pred = predictions(model, b).numpy()
    qpos = b.info["query_pos"]
    ok = np.take_along_axis(pred, qpos, 1) == np.take_along_axis(b.y.numpy(), qpos, 1)  # (B, m) in query order
    return ok, b.info["pair"]


def recall_accuracy(model, n_pairs: int, read_twice: bool, rows: int, seed: int, vocab: RecallVocab,
                    max_pairs: int | None = None, queries_first: bool = False,
                    n_queries: int | None = None) -> tuple[float, np.ndarray]:
    """Share of queries answered right on ``rows`` fresh rows of ``n_pairs`` pairs (read twice, or with the
    ``n_queries`` queried keys first), and ``(n_pairs,)`` accuracy by the position of the queried pair in the
    context (NaN for a pair never asked). ``max_pairs`` (the most the model was trained with) guards against
    asking for more pairs than the model ever saw."""
    layout = "first" if queries_first else ("twice" if read_twice else "once")
    ok, pair = _scores(model, n_pairs, layout, rows, seed, vocab, max_pairs, n_queries)
    hit, seen = np.zeros(n_pairs), np.zeros(n_pairs)
    np.add.at(hit, pair.ravel(), ok.ravel())
    np.add.at(seen, pair.ravel(), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(ok.mean()), np.where(seen > 0, hit / np.maximum(seen, 1), np.nan)


def measure(model, c: dict, vocab: RecallVocab) -> dict:
    """Score a trained model at every number of pairs of :func:`eval_pairs` (``n`` queries drawn with replacement,
    as in training): ``accuracy`` (context once), ``accuracy_twice`` (read twice), ``accuracy_first``
    (``m = min(queries, n)`` keys asked, listed before the pairs), ``accuracy_head`` (its control: context once,
    the first ``m`` queries of the once rows, which a causal model answers exactly as it would a row asking only
    those) and ``by_position`` at ``max_pairs`` (per pair, over the times it was asked)."""
    mp, rows = c["max_pairs"], c["eval_rows"]
    out = {"pairs": eval_pairs(mp), "accuracy": [], "accuracy_twice": [], "accuracy_first": [], "accuracy_head": []}
    out["by_position"] = []
    for p in out["pairs"]:
        m = min(c["queries"], p)
        ok, pair = _scores(model, p, "once", rows, 20_000 + p, vocab, mp)
        out["accuracy"].append(float(ok.mean()))
        out["accuracy_head"].append(float(ok[:, :m].mean()))
        out["accuracy_twice"].append(float(_scores(model, p, "twice", rows, 30_000 + p, vocab, mp)[0].mean()))
        out["accuracy_first"].append(float(_scores(model, p, "first", rows, 50_000 + p, vocab, mp, m)[0].mean()))
        if p == mp:
            hit, seen = np.zeros(p), np.zeros(p)
            np.add.at(hit, pair.ravel(), ok.ravel())
            np.add.at(seen, pair.ravel(), 1)
            out["by_position"] = (hit / np.maximum(seen, 1)).tolist()
    return out


def most_pairs(step: int, steps: int, max_pairs: int, curriculum: float) -> int:
    """The most pairs a training batch may hold at ``step``: grows linearly from 1 to ``max_pairs`` over the first
    ``curriculum`` share of the steps (all of them at once when 0), so attention can learn the lookup on short
    rows first."""
    if curriculum <= 0:
        return max_pairs
    return max(1, min(max_pairs, int(np.ceil(max_pairs * (step + 1) / (curriculum * steps)))))


def sampler(c: dict, vocab: RecallVocab):
    """``sample(rng) -> TaskBatch`` for :func:`~.trainer.train_masked` (one call per step): half the batches at the
    most pairs allowed now (the most scored queries), half of any number up to it; the layout drawn by
    :data:`LAYOUTS` (queries-first rows ask ``min(queries, n)`` keys); queries drawn with replacement (so no
    query can be answered by elimination, see :func:`~.tasks.recall_batch`)."""
    names, probs = list(LAYOUTS), np.array(list(LAYOUTS.values()))
    step = [0]

    def sample(rng):
        top = most_pairs(step[0], c["steps"], c["max_pairs"], c["curriculum"])
        step[0] += 1
        n = top if rng.random() < 0.5 else int(rng.integers(1, top + 1))
        layout = names[rng.choice(len(names), p=probs)]
        b = recall_batch(rng, c["batch"], n, vocab, layout == "twice", layout == "first",
                         min(c["queries"], n) if layout == "first" else None, distinct_queries=False)
        if layout == "twice" and c["dense"]:  # the second copy's values: the key before each was seen in copy 1
            pos = 2 * n + 2 + 2 * np.arange(n)
            b.y[:, pos] = b.x[:, pos + 1]
        return b

    return sample


def train_one(setting: RecallSetting, cfg: dict | None = None, progress=None, should_stop=None, report=None):
    """Train one model of the recall experiment and measure it: ``(record, model)``, the record JSON-able (what a
    sweep stores) and the trained model (kept by the live lab for Evaluate and Save)."""
    c = _check(cfg or {})
    voc = RecallVocab(c["n_keys"], c["n_values"])
    mp = c["max_pairs"]
    model = build_model(setting.arch, voc.size, block_length(mp, c["queries"]), width=c["width"],
                        n_layer=c["n_layer"], state_size=setting.state_size, seed=setting.seed, init=c["init"])

    def evaluate(m):
        return recall_accuracy(m, mp, False, c["eval_rows"], 10_000 + setting.seed, voc, mp)[0]

    lr = c["lr"] if setting.arch == "transformer" or c["lr_recurrent"] is None else c["lr_recurrent"]
    log = train_masked(model, sampler(c, voc), c["steps"], lr=lr, seed=setting.seed, every=c["every"],
                       evaluate=evaluate, progress=progress, should_stop=should_stop, report=report)
    rec = {"arch": setting.arch, "state_size": setting.state_size, "seed": setting.seed, **measure(model, c, voc),
           "checkpoints": [ck.step for ck in log.checkpoints], "curve": [ck.metrics for ck in log.checkpoints],
           "train_loss": log.final_loss, "cpu_s": log.cpu_s, "state_numbers": state_numbers(model),
           "steps": log.steps}
    return rec, model


def run_one(setting: RecallSetting, cfg: dict | None = None, progress=None, should_stop=None, report=None) -> dict:
    """Train one model of the recall experiment and measure it: a JSON-able dict (the record a sweep stores)."""
    return train_one(setting, cfg, progress, should_stop, report)[0]


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
        accuracy=stack("accuracy"), accuracy_twice=stack("accuracy_twice"), accuracy_first=stack("accuracy_first"),
        accuracy_head=stack("accuracy_head"), by_position=stack("by_position"),
        checkpoints=np.array(first["checkpoints"]), curve=stack("curve"), train_loss=stack("train_loss"),
        chance=1.0 / c["n_values"], max_pairs=c["max_pairs"], queries=c["queries"],
        cpu_s=float(sum(r["cpu_s"] for r in runs)), settings=c)


def recall_experiment(settings=(RecallSetting("transformer"), RecallSetting("recurrent", 1),
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
                     ("arch", "state_size", "seed", "pairs", "accuracy", "accuracy_twice", "accuracy_first",
                      "accuracy_head", "by_position", "checkpoints", "curve", "train_loss", "cpu_s"))
    return assemble(doc["runs"], doc["settings"]["cfg"])
