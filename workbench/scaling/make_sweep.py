"""Remake the precomputed TinyGPT sweep shipped in ``replays/tinygpt_sweep.csv``.

``python -m workbench.scaling.make_sweep [--store DIR] [--out CSV]``: 5 model sizes (about 3e3 to 8e5
non-embedding parameters, 2.4 decades) x 4 token budgets (2^17 to 2^20 byte tokens of the embedded
``python-docs`` corpus) = 20 runs, one thread each. The store makes it resumable: interrupt it and run it
again to finish.

Lesson: ``notebooks/04_scaling_laws.ipynb``.
"""
from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

#: (n_layer, n_head, n_embd) of the shipped sweep.
SIZES = ((1, 2, 16), (2, 2, 32), (2, 4, 64), (3, 4, 96), (4, 4, 128))
#: Training tokens of the shipped sweep.
BUDGETS = (2 ** 17, 2 ** 18, 2 ** 19, 2 ** 20)
BLOCK_SIZE = 64
BATCH_SIZE = 16
LR = 3e-3
SEED = 0
CORPUS = "python-docs"
COLUMNS = ("key", "n_layer", "n_head", "n_embd", "block_size", "N", "N_total", "D", "C", "steps",
           "batch_size", "lr", "seed", "train_loss", "val_loss", "wall_s", "corpus_id")


def sweep_configs():
    from workbench.models import GPTConfig

    return [GPTConfig(vocab_size=257, n_layer=l, n_head=h, n_embd=d, block_size=BLOCK_SIZE)
            for l, h, d in SIZES]


def write_csv(records, path) -> None:
    """Write sweep records as the shipped CSV (one row per run)."""
    rows = []
    for r in records:
        row = {k: getattr(r, k) for k in COLUMNS if hasattr(r, k)}
        row.update({k: r.config[k] for k in ("n_layer", "n_head", "n_embd", "block_size")})
        rows.append(row)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


def main(argv=None) -> int:
    from .sweep import run_sweep

    ap = argparse.ArgumentParser(prog="python -m workbench.scaling.make_sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="results store directory (default: a temporary one)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "replays" / "tinygpt_sweep.csv"))
    args = ap.parse_args(argv)
    store = args.store or tempfile.mkdtemp(prefix="tinygpt_sweep_")
    res = run_sweep(sweep_configs(), BUDGETS, CORPUS, store, batch_size=BATCH_SIZE, lr=LR, seed=SEED)
    write_csv(res.records, args.out)
    total = sum(r.wall_s for r in res.records)
    print(f"{len(res.records)} runs ({len(res.trained)} trained now), training time {total:.0f} s; "
          f"store {store}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
