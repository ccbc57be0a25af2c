"""In-context learning curves: error against the number of in-context examples, beside the optimal learner.

Papers: Bhattamishra et al., "Understanding In-Context Learning in Transformers and LLMs by Learning to Learn
Discrete Functions" (boolean function classes; transformers match the optimal learner on conjunctions and fail on
parities); Yadlowsky et al., "Pretraining Data Mixtures Enable Narrow Model Selection Capabilities in Transformer
Models" (a model learns in context the classes in its pretraining mixture and generalises poorly beyond them).

Setting: rows ``BOS x1 y1 ... xn yn`` of :func:`~.tasks.icl_batch` with ``d``-bit inputs as single tokens and a
function drawn per row from the pretraining mixture; the loss is on the ``y`` tokens only, so the model is trained to
infer ``f`` from the prompt. Each model's error at every example index ``i`` (having seen ``i`` examples) is measured
on fresh rows of each class, at every checkpoint, beside :func:`optimal_error` on the same rows: the Bayes-optimal
learner under a uniform prior over the class (majority vote of the hypotheses consistent with the examples so far;
a tie counts half an error), computed exactly by enumerating the class.

What this scale shows (shipped sweep, one seed, 600 steps, width 64, 2 layers, 5-bit inputs, 24 examples): a null.
No model learned in context: every model (transformer trained on conjunctions, on parities, on the mixture;
recurrent with d_state 8 on the mixture) ends at the majority-label error (0.255 on conjunctions, 0.50 on parities,
over the last 8 examples), i.e. it always answers 0, while the optimal learner reaches 0.007 and 0.000. So the
mixture effect cannot be read off either. A likely reason beside the small budget: each input is one opaque token,
so the model must first learn the bit structure of 32 embeddings from the ICL loss alone; bits as separate tokens
(longer rows) or many more steps are the next things to try.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import TaskRangeError
from .tasks import FUNCTION_CLASSES, ICLVocab, function_table, icl_batch
from .trainer import build_model, predictions, state_numbers, train_masked, run_settings

SWEEP_DIR = Path(__file__).parent / "sweeps"

#: Named pretraining mixtures.
MIXTURES = {"conjunction": {"conjunction": 1.0}, "parity": {"parity": 1.0},
            "mixed": {"conjunction": 0.5, "parity": 0.5}}


def optimal_error(kind: str, n_bits: int, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(n,)``: the error of the Bayes-optimal learner for class ``kind`` (uniform prior over its functions) at each
    example index of the rows ``inputs``, ``labels`` ``(R, n)``, averaged over rows. Before example ``i`` it predicts
    the majority label among the functions consistent with examples ``0 .. i-1``; a tie is half an error."""
    table = function_table(kind, n_bits)  # (H, 2^d)
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    R, n = inputs.shape
    err = np.zeros(n)
    for r in range(R):
        alive = np.ones(len(table), dtype=bool)
        for i in range(n):
            votes = table[alive, inputs[r, i]]
            ones, total = int(votes.sum()), int(alive.sum())
            if total == 0:  # labels outside the class: nothing is consistent, the learner guesses
                err[i] += 0.5
                continue
            if 2 * ones == total:
                err[i] += 0.5
            else:
                err[i] += float((2 * ones > total) != bool(labels[r, i]))
            alive &= table[:, inputs[r, i]] == labels[r, i]
    return err / R


@dataclass(frozen=True)
class ICLSetting:
    """One model: architecture, recurrent state size (None for attention), pretraining mixture name, seed."""

    arch: str
    mixture: str = "mixed"
    state_size: int | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        a = self.arch if self.state_size is None else f"{self.arch} (state {self.state_size})"
        return f"{a}, trained on {self.mixture}"


@dataclass
class ICLResult:
    """Error against the number of in-context examples.

    Models (rows): ``labels``, ``arch``, ``mixture`` (its pretraining mixture's name), ``state_size`` (0 for
    attention); ``classes``: the function classes evaluated (:data:`FUNCTION_CLASSES`); ``examples`` ``(n,)``: how
    many examples precede each prediction (0 .. n-1). ``error`` ``(M, S, K, n)``: final error per model, seed,
    class and example count; ``curve`` ``(M, S, C, K, n)``: the same at each of the ``checkpoints`` ``(C,)``;
    ``optimal`` ``(K, n)``: the optimal learner of each class on the same rows; ``majority`` ``(K,)``: the error
    of always answering the class's more common label; ``train_loss`` ``(M, S)``; ``cpu_s``."""

    labels: list
    arch: list
    mixture: list
    state_size: list
    seeds: list
    classes: list
    examples: np.ndarray
    error: np.ndarray
    curve: np.ndarray
    checkpoints: np.ndarray
    optimal: np.ndarray
    majority: np.ndarray
    train_loss: np.ndarray
    cpu_s: float = 0.0
    settings: dict = field(default_factory=dict)

    def mean(self, what: str = "error") -> tuple[np.ndarray, np.ndarray]:
        """Mean over seeds and sample spread (ddof 1; 0 with one seed) of ``error`` or ``curve``."""
        v = np.asarray(getattr(self, what), dtype=float)
        sd = v.std(axis=1, ddof=1) if v.shape[1] > 1 else np.zeros_like(v[:, 0])
        return v.mean(axis=1), sd

    def late_error(self, last: int = 8) -> np.ndarray:
        """``(M, K)``: mean error over the last ``last`` example indices (the learned-in-context regime), per model
        and evaluated class: the table of the mixture effect."""
        return self.mean()[0][:, :, -last:].mean(-1)

    def summary(self) -> str:
        late = self.late_error()
        opt = self.optimal[:, -8:].mean(-1)
        lines = [f"error over the last 8 of {len(self.examples)} examples; classes {self.classes}",
                 f"{'optimal learner':40s} " + " ".join(f"{e:.3f}" for e in opt),
                 f"{'majority label':40s} " + " ".join(f"{e:.3f}" for e in self.majority)]
        lines += [f"{lab:40s} " + " ".join(f"{e:.3f}" for e in late[i]) for i, lab in enumerate(self.labels)]
        return "\n".join(lines)


LIVE = {"n_bits": 5, "n_examples": 24, "width": 64, "n_layer": 2, "steps": 300, "batch": 32, "lr": 3e-3,
        "eval_rows": 128, "every": 100}


def _check(cfg: dict) -> dict:
    unknown = set(cfg) - set(LIVE)
    if unknown:
        raise TaskRangeError(f"unknown ICL settings {sorted(unknown)}; known: {sorted(LIVE)}")
    c = {**LIVE, **cfg}
    if not isinstance(c["n_bits"], int) or not 2 <= c["n_bits"] <= 8:
        raise TaskRangeError(f"n_bits must be an int in [2, 8] (one token per input), got {c['n_bits']!r}")
    if not isinstance(c["n_examples"], int) or not 1 <= c["n_examples"] <= 128:
        raise TaskRangeError(f"n_examples must be an int in [1, 128], got {c['n_examples']!r}")
    return c


def eval_rows(c: dict, kind: str):
    """The fixed evaluation rows of one class (same for every model, so curves compare on the same prompts)."""
    return icl_batch(np.random.default_rng(50_000 + FUNCTION_CLASSES.index(kind)), c["eval_rows"], c["n_examples"],
                     {kind: 1.0}, c["n_bits"])


def icl_error(model, batch) -> np.ndarray:
    """``(n,)``: the model's error at each example index of an ICL batch (argmax prediction at each ``x``)."""
    pred = predictions(model, batch).numpy()[:, 1::2]  # the positions of the inputs x_i
    return (pred != batch.y.numpy()[:, 1::2]).mean(0)


def run_one(setting: ICLSetting, cfg: dict | None = None, progress=None, should_stop=None, report=None) -> dict:
    """Train one model on its pretraining mixture and measure its ICL curves: a JSON-able dict."""
    c = _check(cfg or {})
    if setting.mixture not in MIXTURES:
        raise TaskRangeError(f"unknown mixture {setting.mixture!r}; choose from {sorted(MIXTURES)}")
    mix = MIXTURES[setting.mixture]
    voc = ICLVocab(c["n_bits"])
    model = build_model(setting.arch, voc.size, 2 * c["n_examples"], width=c["width"], n_layer=c["n_layer"],
                        state_size=setting.state_size, seed=setting.seed)
    evals = [eval_rows(c, k) for k in FUNCTION_CLASSES]

    def sample(rng):
        return icl_batch(rng, c["batch"], c["n_examples"], mix, c["n_bits"])

    def evaluate(m):
        return [icl_error(m, b).tolist() for b in evals]

    log = train_masked(model, sample, c["steps"], lr=c["lr"], seed=setting.seed, every=c["every"],
                       evaluate=evaluate, progress=progress, should_stop=should_stop, report=report)
    return {"arch": setting.arch, "mixture": setting.mixture, "state_size": setting.state_size, "seed": setting.seed,
            "error": log.checkpoints[-1].metrics, "checkpoints": [ck.step for ck in log.checkpoints],
            "curve": [ck.metrics for ck in log.checkpoints], "train_loss": log.final_loss, "cpu_s": log.cpu_s,
            "steps": log.steps, "state_numbers": state_numbers(model)}


def reference(c: dict) -> tuple[np.ndarray, np.ndarray]:
    """The optimal learner's error ``(K, n)`` and the majority-label error ``(K,)`` on the evaluation rows."""
    opt, maj = [], []
    for k in FUNCTION_CLASSES:
        b = eval_rows(c, k)
        opt.append(optimal_error(k, c["n_bits"], b.info["inputs"], b.info["labels"]))
        p1 = function_table(k, c["n_bits"]).mean()
        maj.append(min(p1, 1 - p1))
    return np.array(opt), np.array(maj)


def assemble(runs: list, cfg: dict) -> ICLResult:
    """Stack per-model records (from :func:`run_one`) into an :class:`ICLResult`."""
    c = _check(cfg)
    models = list(dict.fromkeys((r["arch"], r["mixture"], r["state_size"]) for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["arch"], r["mixture"], r["state_size"], r["seed"]): r for r in runs}
    missing = [m + (s,) for m in models for s in seeds if m + (s,) not in by]
    if missing:
        raise TaskRangeError(f"ICL runs missing for {missing}: every model needs every seed")

    def stack(key):
        return np.array([[by[m + (s,)][key] for s in seeds] for m in models], dtype=float)

    opt, maj = reference(c)
    return ICLResult(
        labels=[ICLSetting(a, mx, st).label for a, mx, st in models], arch=[m[0] for m in models],
        mixture=[m[1] for m in models], state_size=[m[2] or 0 for m in models], seeds=seeds,
        classes=list(FUNCTION_CLASSES), examples=np.arange(c["n_examples"]), error=stack("error"),
        curve=stack("curve"), checkpoints=np.array(runs[0]["checkpoints"]), optimal=opt, majority=maj,
        train_loss=stack("train_loss"), cpu_s=float(sum(r["cpu_s"] for r in runs)), settings=c)


def icl_experiment(settings=(ICLSetting("transformer", "conjunction"), ICLSetting("transformer", "mixed")),
                   cfg: dict | None = None, progress=None, should_stop=None, report=None) -> ICLResult:
    """The live experiment: train each :class:`ICLSetting` (small defaults :data:`LIVE`) and measure it; callbacks
    as in :func:`workbench.memory.recall.recall_experiment` (``report(label, checkpoint)``, whose ``metrics`` are
    the ``(K, n)`` error lists)."""
    c = _check(cfg or {})
    settings = list(settings)
    if not settings:
        raise TaskRangeError("give at least one ICLSetting")
    runs = run_settings(settings, c["steps"], run_one, c, progress=progress, should_stop=should_stop, report=report)
    return assemble(runs, c)


def load_icl(path=None) -> ICLResult:
    """The shipped ICL sweep (``sweeps/icl.json``), validated."""
    from .sweepfile import read_sweep

    doc = read_sweep(path or SWEEP_DIR / "icl.json", "icl",
                     ("arch", "mixture", "state_size", "seed", "error", "checkpoints", "curve", "train_loss", "cpu_s"))
    return assemble(doc["runs"], doc["settings"]["cfg"])
