"""Glue between the memory experiments and :class:`widgets.MemoryLab` (headless: no ipywidgets, no bokeh).

The widget only draws: this module turns a shipped sweep (``load_<name>``) or a live result (``<name>_experiment``)
into plain series (label, x, y, dash) for its two figures, checks the widget's settings before a live run, and runs
the small live version of an experiment with progress, stop and checkpoint callbacks.

>>> [e for e in EXPERIMENTS]
['recall', 'in-context learning', 'reversal', 'answer format']
>>> check_settings("recall", ("transformer",), pairs=40, state_size=8, examples=8, steps=50)
Traceback (most recent call last):
...
workbench.memory.errors.TaskRangeError: number of pairs must be an int in [1, 16] (16 distinct keys), got 40
"""
from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path

import numpy as np

from .errors import ModelCapabilityError, TaskRangeError

#: the widget's experiment names -> the core module's name
EXPERIMENTS = {"recall": "recall", "in-context learning": "icl", "reversal": "reversal",
               "answer format": "answer_format"}
ARCHS = ("transformer", "recurrent")
#: allowed ranges of the widget's settings (the sliders allow a little more, so a bad value is a notice, not a clamp)
LIMITS = {"pairs": (1, 16), "state_size": (1, 64), "examples": (2, 128), "steps": (1, 3000)}
#: the small live versions (width 32, few evaluation rows: seconds per model at one thread)
LIVE_CFG = {
    "recall": {"width": 32, "n_layer": 2, "batch": 32, "eval_rows": 64},
    "icl": {"n_bits": 4, "width": 64, "n_layer": 2, "batch": 32, "eval_rows": 64, "min_active": 2},  # as the sweep
    "reversal": {"n_facts": 32, "width": 32, "n_layer": 2, "batch": 32, "probe_folds": 4},
    "answer_format": {"digits": 2, "width": 32, "n_layer": 2, "batch": 32, "n_test": 100},
}
LIVE_TRAIN_PROBLEMS = 500
SWEEP_DIR = Path(__file__).parent / "sweeps"  # answer format: training problems of each live model


@dataclass
class Series:
    """One line of a figure: ``label`` (the legend), ``x``, ``y`` and ``dash`` ("solid" or "dashed")."""

    label: str
    x: list
    y: list
    dash: str = "solid"


@dataclass
class View:
    """What the widget draws for one result: the main figure's series and axis titles, and the training curves."""

    main: list
    curves: list
    x_label: str
    y_label: str
    curve_label: str
    x_log: bool = False
    note: str = ""


def module(name: str):
    """The core module of one experiment (``name``: a key or value of :data:`EXPERIMENTS`)."""
    import importlib

    key = EXPERIMENTS.get(name, name)
    if key not in EXPERIMENTS.values():
        raise ModelCapabilityError(f"unknown experiment {name!r}; choose from {list(EXPERIMENTS)}")
    return importlib.import_module(f"workbench.memory.{key}")


def load_shipped(name: str, path=None):
    """The shipped sweep of one experiment (a :class:`~.errors.ShippedSweepError` says what is missing)."""
    key = EXPERIMENTS.get(name, name)
    return getattr(module(key), f"load_{key}")(path)


def _f(a) -> list:
    return [float(v) for v in np.asarray(a, dtype=float).ravel()]


def view(name: str, result, klass: str = "conjunction", prefix: str = "") -> View:
    """Series of ``result`` (a shipped or live result of experiment ``name``); ``klass``: the function class of the
    in-context-learning view; ``prefix`` goes before every label ("live: ")."""
    key = EXPERIMENTS.get(name, name)
    p = prefix
    if key == "recall":
        once, twice, curve = result.mean()[0], result.mean("accuracy_twice")[0], result.mean("curve")[0]
        main, curves = [], []
        for i, lab in enumerate(result.labels):
            main.append(Series(f"{p}{lab}, once", _f(result.pairs), _f(once[i])))
            main.append(Series(f"{p}{lab}, read twice", _f(result.pairs), _f(twice[i]), "dashed"))
            curves.append(Series(f"{p}{lab}", _f(result.checkpoints), _f(curve[i])))
        return View(main, curves, "key-value pairs in the context", "recall accuracy",
                    f"accuracy at {result.max_pairs} pairs", note=f"chance {result.chance:.3f}")
    if key == "icl":
        if klass not in result.classes:
            raise TaskRangeError(f"unknown function class {klass!r}; choose from {result.classes}")
        k = result.classes.index(klass)
        err, curve = result.mean()[0], result.mean("curve")[0]
        x = _f(result.examples)
        main = [Series(f"{p}{lab}", x, _f(err[i, k])) for i, lab in enumerate(result.labels)]
        main.append(Series(f"{p}optimal learner", x, _f(result.optimal[k]), "dashed"))
        late = min(8, len(x))
        curves = [Series(f"{p}{lab}", _f(result.checkpoints), _f(curve[i, :, k, -late:].mean(-1)))
                  for i, lab in enumerate(result.labels)]
        return View(main, curves, "in-context examples seen", f"error on {klass}",
                    f"error on {klass}, last {late} examples", note=f"majority label {result.majority[k]:.2f}")
    if key == "reversal":
        pr, pf = result.mean("probe_reverse")[0], result.mean("probe_forward")[0]
        cf, cr = result.mean("curve_forward")[0], result.mean("curve_reverse")[0]
        xb = _f(np.arange(len(result.boundaries)))
        main, curves = [], []
        for i, lab in enumerate(result.labels):
            if np.isfinite(pr[i]).any():
                main.append(Series(f"{p}{lab}, probe reverse", xb, _f(pr[i])))
                main.append(Series(f"{p}{lab}, probe forward", xb, _f(pf[i]), "dashed"))
            curves.append(Series(f"{p}{lab}, forward", _f(result.checkpoints), _f(cf[i])))
            curves.append(Series(f"{p}{lab}, reverse", _f(result.checkpoints), _f(cr[i]), "dashed"))
        return View(main, curves, "layer boundary (0 = embeddings)", "probe accuracy", "exact match",
                    note=f"probe chance {result.probe_chance:.2f}; answer chance {result.chance:.3f}")
    acc, curve = result.mean()[0], result.mean("curve")[0]
    main = [Series(f"{p}{f}", _f(result.n_train), _f(acc[i])) for i, f in enumerate(result.formats)]
    j = len(result.n_train) - 1
    curves = [Series(f"{p}{f}, {int(result.n_train[j])} problems", _f(result.checkpoints), _f(curve[i, j]))
              for i, f in enumerate(result.formats)]
    return View(main, curves, "training problems", "held-out exact match", "held-out exact match", x_log=True)


def check_settings(name: str, archs, *, pairs: int, state_size: int, examples: int, steps: int) -> None:
    """Raise the specific error of a bad live setting: a :class:`~.errors.TaskRangeError` for a value out of range,
    a :class:`~.errors.ModelCapabilityError` for an architecture that cannot do the experiment."""
    key = EXPERIMENTS.get(name, name)
    if key not in EXPERIMENTS.values():
        raise ModelCapabilityError(f"unknown experiment {name!r}; choose from {list(EXPERIMENTS)}")
    archs = tuple(archs)
    if not archs:
        raise ModelCapabilityError("choose at least one architecture (transformer, recurrent or both)")
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        raise ModelCapabilityError(f"unknown architecture {bad}; choose from {ARCHS}")
    if key == "answer_format" and "recurrent" in archs:
        raise ModelCapabilityError("the answer-format experiment trains transformers only (the paper's models); "
                                   "untick 'recurrent'")
    lo, hi = LIMITS["steps"]
    if not isinstance(steps, (int, np.integer)) or not lo <= steps <= hi:
        raise TaskRangeError(f"training budget must be an int in [{lo}, {hi}] steps, got {steps!r}")
    if key == "recall":
        lo, hi = LIMITS["pairs"]
        if not isinstance(pairs, (int, np.integer)) or not lo <= pairs <= hi:
            raise TaskRangeError(f"number of pairs must be an int in [{lo}, {hi}] ({hi} distinct keys), got {pairs!r}")
    if key == "icl":
        lo, hi = LIMITS["examples"]
        if not isinstance(examples, (int, np.integer)) or not lo <= examples <= hi:
            raise TaskRangeError(f"in-context examples must be an int in [{lo}, {hi}], got {examples!r}")
    if "recurrent" in archs and key in ("recall", "icl"):  # reversal: the recurrent model's default state
        lo, hi = LIMITS["state_size"]
        if not isinstance(state_size, (int, np.integer)) or not lo <= state_size <= hi:
            raise TaskRangeError(f"state size must be an int in [{lo}, {hi}] (key dimension per head of a width-32 "
                                 f"recurrent model), got {state_size!r}")


def run_live(name: str, archs, *, pairs: int = 6, state_size: int = 8, examples: int = 16, steps: int = 200,
             progress=None, should_stop=None, report=None):
    """The small live version of experiment ``name`` for the chosen architectures (checked first by
    :func:`check_settings`); callbacks as in :func:`workbench.memory.recall.recall_experiment`."""
    check_settings(name, archs, pairs=pairs, state_size=state_size, examples=examples, steps=steps)
    key = EXPERIMENTS.get(name, name)
    m = module(key)
    steps = int(steps)
    cfg = {**LIVE_CFG[key], "steps": steps, "every": max(1, steps // 5)}
    st = {a: (int(state_size) if a == "recurrent" else None) for a in archs}
    cb = dict(progress=progress, should_stop=should_stop, report=report)
    if key == "recall":
        cfg["max_pairs"] = int(pairs)
        return m.recall_experiment([m.RecallSetting(a, st[a]) for a in archs], cfg, **cb)
    if key == "icl":
        cfg["n_examples"] = int(examples)
        return m.icl_experiment([m.ICLSetting(a, "mixed", st[a]) for a in archs], cfg, **cb)
    if key == "reversal":
        return m.reversal_experiment([m.ReversalSetting(a, "none") for a in archs], cfg, **cb)
    return m.answer_format_experiment(n_train=(LIVE_TRAIN_PROBLEMS,), cfg=cfg, **cb)


def checkpoint_values(name: str, label, metrics, klass: str = "conjunction") -> dict:
    """``{series label: value}`` of one live checkpoint (``report(label, checkpoint)``'s metrics), labelled as
    :func:`view` labels the live curves (with ``live: `` before them)."""
    key = EXPERIMENTS.get(name, name)
    if key == "recall":
        return {f"live: {label}": float(metrics)}
    if key == "icl":
        from .tasks import FUNCTION_CLASSES

        err = np.asarray(metrics, dtype=float)[FUNCTION_CLASSES.index(klass)]
        return {f"live: {label}": float(err[-min(8, len(err)):].mean())}
    if key == "reversal":
        return {f"live: {label}, forward": float(metrics[0]), f"live: {label}, reverse": float(metrics[1])}
    fmt, n = label
    return {f"live: {fmt}, {n} problems": float(metrics)}


# --- live recall models: evaluate at another number of pairs, save and load checkpoints ------------------------------
#: architecture names of the widget -> the checkpoint's class names (:func:`workbench.models.load`)
CHECKPOINT_ARCH = {"transformer": "TinyGPT", "recurrent": "RecurrentLM"}


def run_live_recall(archs, *, pairs: int = 6, state_size: int = 8, steps: int = 200, progress=None,
                    should_stop=None, report=None):
    """The live recall experiment of :func:`run_live`, keeping the trained models: ``(RecallResult, {label:
    model})``. Each model is trained and measured by :func:`workbench.memory.recall.train_one`, as
    ``run_live("recall", ...)`` does, so the numbers are the same."""
    from . import recall

    check_settings("recall", archs, pairs=pairs, state_size=state_size, examples=LIMITS["examples"][0], steps=steps)
    c = recall._check({**LIVE_CFG["recall"], "steps": int(steps), "every": max(1, int(steps) // 5),
                       "max_pairs": int(pairs)})
    settings = [recall.RecallSetting(a, int(state_size) if a == "recurrent" else None) for a in archs]
    runs, models, total = [], {}, c["steps"] * len(settings)
    for i, s in enumerate(settings):
        if should_stop is not None and should_stop() and runs:
            break
        rec, model = recall.train_one(
            s, c, progress=None if progress is None else (lambda d, t, i=i: progress(i * c["steps"] + d, total)),
            should_stop=should_stop, report=None if report is None else (lambda ck, s=s: report(s.label, ck)))
        runs.append(rec)
        models[s.label] = model
        if rec["steps"] < c["steps"]:
            break
    return recall.assemble(runs, c), models


def recall_at(models: dict, n_pairs: int, rows: int = 64) -> dict:
    """``{label: accuracy}`` of each model on fresh recall rows of ``n_pairs`` pairs (context once). A model asked
    for rows longer than it was trained on raises :class:`~.errors.SequenceTooLongError`; a model whose vocabulary
    is not the live recall task's raises :class:`~.errors.ModelCapabilityError`."""
    from .recall import LIVE, recall_accuracy
    from .tasks import RecallVocab

    if not models:
        raise ModelCapabilityError("no live recall model yet: train (recall) or load a checkpoint first")
    voc = RecallVocab(LIVE["n_keys"], LIVE["n_values"])  # the live recall task's
    if not isinstance(n_pairs, (int, np.integer)) or not 1 <= n_pairs <= voc.n_keys:
        raise TaskRangeError(f"number of pairs must be an int in [1, {voc.n_keys}], got {n_pairs!r}")
    return {lab: recall_accuracy(m, int(n_pairs), False, rows, 40_000 + int(n_pairs), voc)[0]
            for lab, m in models.items()}


def save_models(models: dict, directory) -> list:
    """Save each model with :func:`workbench.models.save` into ``directory/<arch>-<i>``; returns the folders."""
    from ..models import save

    out = []
    for i, (lab, m) in enumerate(models.items()):
        arch = lab.split(" ")[0]
        d = Path(directory) / f"{arch}-{i}"
        save(m, d)
        out.append(d)
    return out


def load_model(directory, arch: str):
    """Load a checkpoint expected to be of ``arch`` ("transformer" or "recurrent"): a checkpoint of the other
    architecture raises :class:`workbench.models.CheckpointError` naming both."""
    from ..models import load

    if arch not in CHECKPOINT_ARCH:
        raise ModelCapabilityError(f"unknown architecture {arch!r}; choose from {ARCHS}")
    model = load(Path(directory), architecture=CHECKPOINT_ARCH[arch])
    return model.eval()
