"""Remake the data lab's shipped sweeps in ``sweeps/`` (selection, mixing, distill, traps).

``python -m workbench.datalab.make_sweeps [name ...] [--store DIR] [--dask N]``: every run goes through
:func:`workbench.scaling.sweep.run_sweep` (one micro model, one thread, a store of finished runs: interrupt and
rerun with the same ``--store`` to resume; ``--dask N`` trains on a local Dask cluster of N workers, and any
``concurrent.futures`` executor works the same from Python: :func:`make`). Each sweep file is written atomically
and validated on load by ``load_<name>``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from .recipes import MICRO_CONFIG, SWEEP_DIR, sweep_runs, write_sweep_file

NAMES = ("selection", "mixing", "distill", "traps")
STEPS = 250
BATCH_SIZE = 16
LR = 3e-3
SEEDS = (0, 1, 2)
COMMAND = "python -m workbench.datalab.make_sweeps"


def _runs(records, keys=("steps", "train_loss", "val_loss", "cpu_s")):
    out = []
    for rec in records:
        e = rec.extra
        out.append({**{k: v for k, v in e["recipe"].items() if k != "kind"}, **{k: e[k] for k in keys}})
    return out


def recipes(name: str) -> list:
    """The run recipes of one shipped sweep."""
    if name == "selection":
        return [{"kind": "selection", "band": b, "seed": s} for b in ("low", "middle", "high", "random")
                for s in SEEDS]
    if name == "mixing":
        from .mixing import FIT_DOCS, HELDOUT_DOCS

        return [{"kind": "mixing", "proportions": [a, round(1 - a, 10)], "seed": s}
                for a in sorted(FIT_DOCS + HELDOUT_DOCS) for s in SEEDS[:1]]
    if name == "distill":
        from .distill import ARMS

        return [{"kind": "distill", "teachers": list(t), "alpha": al, "temperature": tp, "seed": s}
                for _, t, al, tp in ARMS for s in SEEDS]
    if name == "traps":
        return [{"kind": "traps", "copies": c, "seed": s} for c in (0, 1, 3, 10, 30, 100) for s in SEEDS[:1]]
    raise SystemExit(f"unknown sweep {name!r}; choose from {NAMES}")


def make(name: str, store, out_dir=SWEEP_DIR, executor=None, progress: bool = True, steps: int = STEPS,
         limit: int | None = None) -> Path:
    """Run (or resume from ``store``) one shipped sweep and write ``out_dir/<name>.json``.

    executor: any ``concurrent.futures.Executor`` (None: here); steps and limit (the first ``limit`` recipes
    only) shrink it for tests and quick looks; the shipped files use the defaults.
    """
    todo = recipes(name)[:limit]
    records = sweep_runs(todo, store=Path(store) / name, steps=steps, batch_size=BATCH_SIZE, lr=LR,
                         executor=executor, progress=progress)
    settings = {"config": MICRO_CONFIG, "steps": steps, "batch_size": BATCH_SIZE, "lr": LR,
                "cpu_s": sum(r.extra["cpu_s"] for r in records)}
    if name == "selection":
        from .selection import docs_chunk_scores

        runs = _runs(records, ("steps", "train_loss", "val_loss", "cpu_s", "n_chunks", "score_range"))
        settings |= {"reference": "docs-byte-draft", "chunk": 256, "fraction": 1 / 3,
                     "scores": [round(float(x), 5) for x in docs_chunk_scores()[1]]}
    elif name == "mixing":
        from .mixing import DOMAINS, HELDOUT_DOCS

        runs = _runs(records, ("steps", "train_loss", "val_loss", "domain_loss", "cpu_s"))
        settings |= {"domains": [list(d) for d in DOMAINS], "heldout": [[a, round(1 - a, 10)] for a in HELDOUT_DOCS],
                     "target_weights": [0.5, 0.5], "pool_tokens": 300_000}
    elif name == "distill":
        from .distill import ARMS, teacher_losses

        arm = {(tuple(t), a, tp): n for n, t, a, tp in ARMS}
        runs = _runs(records)
        for r in runs:
            r["arm"] = arm[(tuple(r["teachers"]), r["alpha"], r["temperature"])]
        settings |= {"teacher_loss": teacher_losses(["docs-byte", "docs-byte-draft"])}
    else:
        from .traps import N_EXAMPLES, N_TRAPS, TRAP_LEN, reference_losses

        runs = _runs(records, ("steps", "train_loss", "val_loss", "cpu_s", "member_loss", "nonmember_loss",
                               "canonical_logprob", "shuffled_logprob", "p_value"))
        ref_m, ref_n = reference_losses()
        settings |= {"reference": "docs-byte-draft", "n_traps": N_TRAPS, "trap_len": TRAP_LEN,
                     "n_examples": N_EXAMPLES, "ref_member_loss": ref_m.tolist(), "ref_nonmember_loss": ref_n.tolist()}
    path = Path(out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sweep_file(path, name, settings, runs, f"{COMMAND} {name}")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=list(NAMES), help=f"which sweeps (default all: {NAMES})")
    ap.add_argument("--store", default=None, help="results store directory (default: a temporary one)")
    ap.add_argument("--out", default=str(SWEEP_DIR))
    ap.add_argument("--dask", type=int, default=0, help="train on a local Dask cluster of this many workers")
    args = ap.parse_args(argv)
    store = args.store or tempfile.mkdtemp(prefix="datalab_sweeps_")
    client = None
    if args.dask:
        from dask.distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=args.dask, threads_per_worker=1, processes=True))
    try:
        for name in args.names:
            t0 = time.perf_counter()
            path = make(name, store, args.out, executor=client.get_executor() if client else None)
            print(f"{name}: wrote {path} ({time.perf_counter() - t0:.0f} s); store {store}", flush=True)
    finally:
        if client is not None:
            client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
