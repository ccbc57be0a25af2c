"""Remake the memory lab's shipped sweeps in ``sweeps/`` (recall, icl, reversal, answer_format).

``python -m workbench.memory.make_sweeps [name ...] [--store DIR]``: every model is one run of
:func:`workbench.scaling.sweep.run_sweep` (a recipe per model, :func:`train_recipe` as the trainer, one thread),
so a store of finished runs makes it resumable: interrupt it and rerun with the same ``--store``. The tasks make
their own rows, so the sweep's corpus is a placeholder (``run_sweep`` wants one) that no run reads. Each file is
written atomically and validated on load by ``load_<name>`` of its module.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from .sweepfile import write_sweep

SWEEP_DIR = Path(__file__).parent / "sweeps"
NAMES = ("recall", "icl", "reversal", "answer_format")

#: The settings of each shipped sweep: the experiment's ``cfg`` and its models.
CFG = {
    "recall": {"max_pairs": 8, "n_keys": 16, "n_values": 16, "width": 64, "n_layer": 2, "steps": 3000, "batch": 32,
               "lr": 1e-3, "lr_recurrent": 3e-3, "eval_rows": 256, "every": 500, "queries": 2, "curriculum": 0.0,
               "dense": True, "init": "torch"},
    "icl": {"n_bits": 4, "n_examples": 12, "width": 64, "n_layer": 2, "steps": 2000, "batch": 32, "lr": 1e-3,
            "lr_recurrent": 3e-3, "eval_rows": 256, "every": 250, "min_active": 2, "init": "torch"},
    "reversal": {"n_facts": 64, "width": 64, "n_layer": 2, "steps": 600, "batch": 64, "lr": 3e-3, "every": 100,
                 "probe_folds": 4},
    "answer_format": {"digits": 2, "width": 64, "n_layer": 2, "steps": 1500, "batch": 64, "lr": 3e-3, "every": 100,
                      "n_test": 300},
}
STATE_SIZES = (1, 16)  # the recall sweep's recurrent key dimensions per head
TRAIN_SIZES = (250, 1000, 3000)
SEEDS = (0,)
#: the ICL sweep's seeds (its models are cheap enough for two, and when in-context learning appears varies by seed)
ICL_SEEDS = (0, 1)
#: the recall sweep's seeds (three: whether a recurrent model leaves its plateau within the budget varies by seed)
RECALL_SEEDS = (0, 1, 2)
#: the answer-format sweep's seeds (two: at 1,000 problems the plain format's accuracy varies widely by seed)
ANSWER_SEEDS = (0, 1)


def seeds(name: str) -> tuple:
    """The seeds of one shipped sweep."""
    return {"icl": ICL_SEEDS, "recall": RECALL_SEEDS, "answer_format": ANSWER_SEEDS}.get(name, SEEDS)


def recipes(name: str) -> list:
    """The model recipes of one shipped sweep (JSON-able dicts; ``experiment`` names the module)."""
    if name == "recall":
        models = [{"arch": "transformer", "state_size": None}] + [{"arch": "recurrent", "state_size": s}
                                                                  for s in STATE_SIZES]
    elif name == "icl":
        models = ([{"arch": "transformer", "mixture": m, "state_size": None} for m in ("conjunction", "parity", "mixed")]
                  + [{"arch": "recurrent", "mixture": "mixed", "state_size": 8}])
    elif name == "reversal":
        models = [{"arch": "transformer", "augmentation": a} for a in ("none", "token_reverse", "entity_reverse")]
    elif name == "answer_format":
        models = [{"fmt": f, "n_train": n} for f in ("plain", "reversed", "scratchpad") for n in TRAIN_SIZES]
    else:
        raise SystemExit(f"unknown sweep {name!r}; choose from {NAMES}")
    return [{"experiment": name, "cfg": CFG[name], **m, "seed": s} for m in models for s in seeds(name)]


def run_recipe(recipe: dict) -> dict:
    """Train and measure the model one recipe describes: the experiment module's record."""
    from . import answer_format, icl, recall, reversal

    r = dict(recipe)
    name, cfg, seed = r.pop("experiment"), r.pop("cfg"), r.pop("seed")
    if name == "recall":
        return recall.run_one(recall.RecallSetting(r["arch"], r["state_size"], seed), cfg)
    if name == "icl":
        return icl.run_one(icl.ICLSetting(r["arch"], r["mixture"], r["state_size"], seed), cfg)
    if name == "reversal":
        return reversal.run_one(reversal.ReversalSetting(r["arch"], r["augmentation"], seed), cfg)
    if name == "answer_format":
        return answer_format.run_one(answer_format.FormatSetting(r["fmt"], r["n_train"], seed), cfg)
    raise ValueError(f"unknown experiment {name!r}; choose from {NAMES}")


def train_recipe(spec, ids, progress: bool = False):
    """``run_sweep``'s trainer: run ``spec.recipe`` at ``spec.threads`` threads and return a ``RunRecord`` whose
    ``extra`` is the experiment's record. ``ids`` (the placeholder corpus) is not read; ``N``, ``D`` and ``C`` are 0
    (these are not scaling runs)."""
    import torch

    from workbench.scaling.sweep import RunRecord

    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        t0 = time.perf_counter()
        rec = run_recipe(spec.recipe)
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return RunRecord(key=spec.key, config=spec.config, N=0, N_total=0, D=0, C=0.0, steps=int(rec["steps"]),
                     batch_size=spec.batch_size, lr=spec.lr, seed=int(spec.recipe["seed"]),
                     train_loss=float(rec["train_loss"]), val_loss=None, wall_s=wall, corpus_id=spec.corpus_id,
                     extra=rec)


def make(name: str, store, out_dir=SWEEP_DIR, executor=None, progress: bool = True) -> Path:
    """Run (or resume from ``store``) one shipped sweep and write ``out_dir/<name>.json``."""
    from workbench.scaling.sweep import run_sweep

    rs = recipes(name)
    res = run_sweep([{"experiment": name}], [1], np.arange(16), Path(store) / name, executor,
                    batch_size=CFG[name]["batch"], lr=CFG[name]["lr"], threads=1, progress=progress, recipes=rs,
                    trainer=train_recipe)
    runs = [r.extra for r in res.records]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    out = Path(out_dir) / f"{name}.json"
    write_sweep(out, name, {"cfg": CFG[name], "cpu_s": sum(r["cpu_s"] for r in runs), "threads": 1}, runs)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workbench.memory.make_sweeps", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=list(NAMES), help=f"sweeps to make (default all: {NAMES})")
    ap.add_argument("--store", default=None, help="results store directory (default: a temporary one)")
    args = ap.parse_args(argv)
    store = args.store or tempfile.mkdtemp(prefix="memory_sweeps_")
    for name in args.names:
        t0 = time.perf_counter()
        out = make(name, store)
        print(f"{name}: wrote {out} in {time.perf_counter() - t0:.0f} s (store {store})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
