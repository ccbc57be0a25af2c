"""In-context learning curves: error against the number of in-context examples, beside the optimal learner.

Papers: Bhattamishra et al., "Understanding In-Context Learning in Transformers and LLMs by Learning to Learn
Discrete Functions" (boolean function classes; transformers match the optimal learner on conjunctions and fail on
parities); Yadlowsky et al., "Pretraining Data Mixtures Enable Narrow Model Selection Capabilities in Transformer
Models" (a model learns in context the classes in its pretraining mixture and generalises poorly beyond them).

Setting: rows of :func:`~.tasks.icl_batch`, ``BOS x1_0 .. x1_{d-1} y1 ... xn_0 .. xn_{d-1} yn``, one token per
bit (a token says which bit it is and its value) and a label token after each input; a function is drawn per row
from the pretraining mixture, each label is 0 or 1 with equal chance (so the majority-label error is 0.5 for both
classes) and the input is drawn among those with that label. The loss is on the label tokens only, so the model is
trained to infer ``f`` from the prompt. Training prompts may hold some bits fixed (``min_active``: between that
many and ``d`` bits vary), easier prompts that get a small model off its plateau at chance; every evaluation
prompt varies all ``d`` bits. Each model's error at every example index ``i`` (having seen ``i`` examples) is
measured on fixed rows of each class at every checkpoint, beside :func:`optimal_error` on the same rows: the
Bayes-optimal learner (a uniform prior over the class, the sampler's input distribution, a tie counts half an
error), computed exactly by enumerating the class.

What this scale shows (shipped sweep: 4-bit inputs, 12 examples, width 64, 2 layers, 2,000 steps, two seeds,
PyTorch's initialisation (``init="torch"``) with lr 1e-3 for the transformers and 3e-3 for the recurrent model;
error over the last 8 examples, mean of the seeds; majority label 0.50, optimal learner 0.045 on conjunctions and
0.048 on parities, a learner that only copies the label of an input seen before 0.28 and 0.32). In-context learning
of conjunctions appears in every model trained on them, both seeds, and beats the copier, but no model comes near the
optimal learner. Trained on conjunctions alone the transformers end at 0.22 (0.19 and 0.24 by seed), on the mixture
at 0.21 (0.14 and 0.28); the mixture transformers are at 0.46 at step 250, 0.37 at 500 and 0.25 and 0.33 at 750 (the
curves' checkpoints). The recurrent model (state 8) on the mixture does best of all, 0.15 (0.15 and 0.14), leaving
chance sooner (0.33 and 0.36 at step 250): attention buys nothing here. Parities are not learned beyond copying, the
paper's finding: the parity-trained transformers end at 0.38 and the mixture models at 0.34 (transformer) and 0.33
(recurrent), against the copier's 0.32. The mixture effect holds only in part: the mixture transformer beats the
single-class models on the class they were not trained on (0.21 on conjunctions vs 0.36 after parities alone; 0.34
on parities vs 0.44 after conjunctions alone), but a model trained on one class is no longer at chance on the other
(0.36 and 0.44, not 0.50).

Why the sweep uses PyTorch's initialisation (measured, 2026-12): with GPT-2's (every weight ``N(0, 0.02)``, tied
head; :func:`~.trainer.build_model`) and lr 3e-3, the same sweep at 2,500 steps ended at 0.41 (conjunction-only:
one seed of two never left chance), 0.31 (mixture, leaving chance only after about 1,000 steps) and 0.31 for the
recurrent model on conjunctions, 0.43 for the parity-trained transformers on parities, and every single-class model
at 0.50 on the other class. One-seed diagnostics with ``init="torch"`` (mixture transformer, seed 0): 0.29 at 1,000
steps with lr 1e-3, 0.32 with 3e-3, 0.15 at 2,500; the conjunction-only seed that never left chance with GPT-2's
init reached 0.28 by step 500. The live run (:data:`LIVE`, 300 steps) uses the same initialisation (at lr 3e-3).

Two design choices made this visible where the first version of this lab (each input one opaque token, uniform
inputs, so 3 conjunction labels in 4 were 0) showed a null, every model answering "always 0": bit tokens with
balanced labels (:func:`~.tasks.icl_batch`), and training prompts with some bits held fixed (``min_active``). In
prototype runs without the latter (4 and 5 bits, conjunctions only), two of five began to leave chance after
1,500-1,750 steps and three had not when stopped at 1,500-2,500; with 3-bit inputs a model left it within 250 steps
but levelled off at 0.29 (conjunctions).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import TaskRangeError
from .tasks import FUNCTION_CLASSES, ICLVocab, function_table, icl_batch
from .trainer import INITS, build_model, predictions, state_numbers, train_masked, run_settings

SWEEP_DIR = Path(__file__).parent / "sweeps"

#: Named pretraining mixtures.
MIXTURES = {"conjunction": {"conjunction": 1.0}, "parity": {"parity": 1.0},
            "mixed": {"conjunction": 0.5, "parity": 0.5}}


def optimal_error(kind: str, n_bits: int, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(n,)``: the error of the Bayes-optimal learner for class ``kind`` at each example index of the rows
    ``inputs``, ``labels`` ``(R, n)`` drawn as :func:`~.tasks.icl_batch` draws them (``f`` uniform over the class;
    each label 0 or 1 with equal chance, then the input uniform among those of that label), averaged over rows.

    Before example ``i`` it has seen examples ``0 .. i-1`` and the input ``x_i``; a function ``f`` consistent with
    the examples has posterior weight proportional to ``prod_j P(x_j | f)`` over ``j <= i``, where ``P(x | f) =
    1/2 / #{x' : f(x') = f(x)}``; it answers the label with the larger weight, and a tie counts half an error. For
    parities every ``P(x | f)`` is ``2^-d`` (a plain majority vote of the consistent functions); for conjunctions an
    input is 3 times likelier under a function that labels it 1, so even the first answer is a tie only on average.
    Exact: the class is enumerated (at most 255 functions)."""
    table = function_table(kind, n_bits)  # (H, 2^d)
    ones = table.sum(1)
    # (H, 2^d): P(x | f), the probability that the sampler shows input x under f
    lik = np.where(table == 1, 0.5 / np.maximum(ones, 1)[:, None], 0.5 / np.maximum(2 ** n_bits - ones, 1)[:, None])
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    R, n = inputs.shape
    err = np.zeros(n)
    for r in range(R):
        w = np.ones(len(table))  # unnormalised posterior weight of each function (0: ruled out)
        for i in range(n):
            x = inputs[r, i]
            w = w * lik[:, x]  # seeing the input x_i
            w1, total = float(w[table[:, x] == 1].sum()), float(w.sum())
            if total == 0.0:  # labels outside the class: nothing is consistent, the learner guesses
                err[i] += 0.5
                continue
            if np.isclose(2 * w1, total, rtol=1e-12, atol=0.0):
                err[i] += 0.5
            else:
                err[i] += float((2 * w1 > total) != bool(labels[r, i]))
            w = np.where(table[:, x] == labels[r, i], w / total, 0.0)  # keep the consistent ones, renormalised
    return err / R


def lookup_error(inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(n,)``: the error at each example index of a learner that knows no function class, only memory: it gives
    an input seen before in the row that input's label, and guesses otherwise (half an error). A model that beats
    it has learned something about the class, not just to copy.

    >>> lookup_error(np.array([[3, 5, 3]]), np.array([[1, 0, 1]])).tolist()
    [0.5, 0.5, 0.0]
    """
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    R, n = inputs.shape
    err = np.full((R, n), 0.5)
    for i in range(1, n):
        same = inputs[:, :i] == inputs[:, i:i + 1]  # (R, i): earlier examples with this input
        seen = same.any(1)
        first = same.argmax(1)
        err[seen, i] = (labels[seen, first[seen]] != labels[seen, i]).astype(float)
    return err.mean(0)


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
    of always answering one label (0.5: labels are balanced); ``lookup`` ``(K, n)``: a learner that only copies
    the label of an input seen before (:func:`lookup_error`); ``train_loss`` ``(M, S)``; ``cpu_s``."""

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
    lookup: np.ndarray | None = None

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
        if self.lookup is not None:
            look = self.lookup[:, -8:].mean(-1)
            lines.append(f"{'copy an input seen before':40s} " + " ".join(f"{e:.3f}" for e in look))
        lines += [f"{lab:40s} " + " ".join(f"{e:.3f}" for e in late[i]) for i, lab in enumerate(self.labels)]
        return "\n".join(lines)


#: the defaults of a live run (about 20 CPU-seconds for the two default models): the shipped sweep's task, model and
#: initialisation (``init``: :data:`~.trainer.INITS`), 300 steps instead of 2,000, too few for in-context learning to
#: get far (measured: the conjunction model 0.35 on conjunctions, the mixture model 0.42; with GPT-2's init 0.44 and
#: 0.51); lr 3e-3 for both architectures, since in runs this short it beat the sweep's 1e-3 (0.38 and 0.45).
#: ``lr_recurrent``: the recurrent models' peak learning rate (None: ``lr``). The shipped sweep shows where longer
#: training goes
LIVE = {"n_bits": 4, "n_examples": 12, "width": 64, "n_layer": 2, "steps": 300, "batch": 32, "lr": 3e-3,
        "eval_rows": 128, "every": 100, "min_active": 2, "init": "torch", "lr_recurrent": None}


def _check(cfg: dict) -> dict:
    unknown = set(cfg) - set(LIVE)
    if unknown:
        raise TaskRangeError(f"unknown ICL settings {sorted(unknown)}; known: {sorted(LIVE)}")
    c = {**LIVE, **cfg}
    if not isinstance(c["n_bits"], int) or not 2 <= c["n_bits"] <= 8:
        raise TaskRangeError(f"n_bits must be an int in [2, 8] (one token per bit), got {c['n_bits']!r}")
    if c["min_active"] is not None and (not isinstance(c["min_active"], int)
                                        or not 2 <= c["min_active"] <= c["n_bits"]):
        raise TaskRangeError(f"min_active must be None (every bit varies) or an int in [2, n_bits = {c['n_bits']}] "
                             f"(how few bits may vary in a training prompt), got {c['min_active']!r}")
    if not isinstance(c["n_examples"], int) or not 1 <= c["n_examples"] <= 128:
        raise TaskRangeError(f"n_examples must be an int in [1, 128], got {c['n_examples']!r}")
    if c["init"] not in INITS:
        raise TaskRangeError(f"init must be one of {INITS}, got {c['init']!r}")
    if c["lr_recurrent"] is not None and (isinstance(c["lr_recurrent"], bool)
                                          or not isinstance(c["lr_recurrent"], (int, float)) or c["lr_recurrent"] <= 0):
        raise TaskRangeError(f"lr_recurrent must be None or a positive number, got {c['lr_recurrent']!r}")
    return c


def eval_rows(c: dict, kind: str):
    """The fixed evaluation rows of one class (same for every model, so curves compare on the same prompts)."""
    return icl_batch(np.random.default_rng(50_000 + FUNCTION_CLASSES.index(kind)), c["eval_rows"], c["n_examples"],
                     {kind: 1.0}, c["n_bits"])


def icl_error(model, batch) -> np.ndarray:
    """``(n,)``: the model's error at each example index of an ICL batch (argmax prediction at each ``x``)."""
    pos = batch.info["label_pos"]  # the last bit of each x_i, where its label is predicted
    return (predictions(model, batch).numpy()[:, pos] != batch.y.numpy()[:, pos]).mean(0)


def run_one(setting: ICLSetting, cfg: dict | None = None, progress=None, should_stop=None, report=None) -> dict:
    """Train one model on its pretraining mixture and measure its ICL curves: a JSON-able dict."""
    c = _check(cfg or {})
    if setting.mixture not in MIXTURES:
        raise TaskRangeError(f"unknown mixture {setting.mixture!r}; choose from {sorted(MIXTURES)}")
    mix = MIXTURES[setting.mixture]
    voc = ICLVocab(c["n_bits"])
    model = build_model(setting.arch, voc.size, voc.row_len(c["n_examples"]), width=c["width"], n_layer=c["n_layer"],
                        state_size=setting.state_size, seed=setting.seed, init=c["init"])
    lr = c["lr"] if setting.arch == "transformer" or c["lr_recurrent"] is None else c["lr_recurrent"]
    evals = [eval_rows(c, k) for k in FUNCTION_CLASSES]

    def sample(rng):
        return icl_batch(rng, c["batch"], c["n_examples"], mix, c["n_bits"], min_active=c["min_active"])

    def evaluate(m):
        return [icl_error(m, b).tolist() for b in evals]

    log = train_masked(model, sample, c["steps"], lr=lr, seed=setting.seed, every=c["every"],
                       evaluate=evaluate, progress=progress, should_stop=should_stop, report=report)
    return {"arch": setting.arch, "mixture": setting.mixture, "state_size": setting.state_size, "seed": setting.seed,
            "error": log.checkpoints[-1].metrics, "checkpoints": [ck.step for ck in log.checkpoints],
            "curve": [ck.metrics for ck in log.checkpoints], "train_loss": log.final_loss, "cpu_s": log.cpu_s,
            "steps": log.steps, "state_numbers": state_numbers(model)}


def reference(c: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The optimal learner's error ``(K, n)``, the majority-label error ``(K,)`` and the lookup learner's error
    ``(K, n)`` (:func:`lookup_error`) on the evaluation rows."""
    opt, maj, look = [], [], []
    for k in FUNCTION_CLASSES:
        b = eval_rows(c, k)
        opt.append(optimal_error(k, c["n_bits"], b.info["inputs"], b.info["labels"]))
        look.append(lookup_error(b.info["inputs"], b.info["labels"]))
        maj.append(0.5)  # labels are balanced by construction (icl_batch): always answering one label errs half
    return np.array(opt), np.array(maj), np.array(look)


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

    opt, maj, look = reference(c)
    return ICLResult(
        labels=[ICLSetting(a, mx, st).label for a, mx, st in models], arch=[m[0] for m in models],
        mixture=[m[1] for m in models], state_size=[m[2] or 0 for m in models], seeds=seeds,
        classes=list(FUNCTION_CLASSES), examples=np.arange(c["n_examples"]), error=stack("error"),
        curve=stack("curve"), checkpoints=np.array(runs[0]["checkpoints"]), optimal=opt, majority=maj,
        train_loss=stack("train_loss"), cpu_s=float(sum(r["cpu_s"] for r in runs)), settings=c, lookup=look)


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
