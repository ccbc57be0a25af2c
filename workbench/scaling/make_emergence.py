"""Remake the shipped emergence sweep in ``replays/emergence_addition.json``.

``python -m workbench.scaling.make_emergence [--out JSON]``: trains TinyGPTs of seven sizes (about 900 to
340,000 non-embedding parameters) on 2-digit addition (byte tokens, 20,000 seeded training problems, one
per row, loss on the answer only: :func:`~workbench.scaling.emergence.train_on_answers`) for the same
1,000 steps of 64 problems, then scores each one four ways (exact match, per-token accuracy, token edit
distance, log-probability of the answer; :func:`~workbench.scaling.emergence.score_addition`) on
500 held-out problems (operand pairs never seen in training). Three seeds (each seed draws its own
training set, held-out set, initialisation and batch order); the JSON holds each seed's scores and their
mean and standard error over seeds. One thread; about five minutes on 2 cores. The JSON is rewritten after
every model, so an interrupted run keeps what it finished.

Lesson: ``notebooks/04_scaling_laws.ipynb``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

#: (n_layer, n_head, n_embd) of the shipped emergence sweep, smallest first.
SIZES = ((1, 1, 8), (1, 2, 16), (1, 2, 24), (2, 2, 32), (2, 4, 48), (2, 4, 64), (3, 4, 96))
DIGITS = 2
STEPS = 1000
BATCH_SIZE = 64
BLOCK_SIZE = 16
LR = 3e-3
N_TRAIN = 20000
N_TEST = 500
OBJECTIVE = "answer"
SEEDS = (0, 1, 2)
METRICS = ("exact_match", "token_accuracy", "edit_distance", "answer_logprob")
OUT = Path(__file__).parent / "replays" / "emergence_addition.json"


def _summary(rows: list[dict]) -> dict:
    """Mean of each metric over seeds and its standard error (spread over seeds / sqrt(seeds))."""
    import numpy as np

    out = {}
    sem = {}
    for k in METRICS:
        v = np.array([r[k] for r in rows], dtype=float)
        out[k] = float(v.mean())
        sem[k] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    out["sem"] = sem
    return out


def main(argv=None) -> int:
    import torch

    from workbench.models import GPTConfig

    from .emergence import emergence_sweep

    ap = argparse.ArgumentParser(prog="python -m workbench.scaling.make_emergence",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="how many of the seeds 0, 1, 2 to run")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    settings = dict(digits=DIGITS, steps=args.steps, n_train=N_TRAIN, n_test=N_TEST, batch_size=BATCH_SIZE,
                    lr=LR, objective=OBJECTIVE)
    seeds = SEEDS[:args.seeds]
    doc = {"format": "workbench.scaling.emergence", "version": 1,
           "command": "python -m workbench.scaling.make_emergence",
           "settings": {**settings, "block_size": BLOCK_SIZE, "seeds": list(seeds)}, "models": []}
    runs: dict = {}
    for seed in seeds:                      # seed-major: an interrupted run still has every size once
        for l, h, d in SIZES:
            cfg = GPTConfig(vocab_size=257, n_layer=l, n_head=h, n_embd=d, block_size=BLOCK_SIZE)
            t0 = time.perf_counter()
            p = emergence_sweep([cfg], progress=False, seed=seed, **settings)[0]
            s = p.scores
            row = {"seed": seed, "final_train_loss": p.final_train_loss, "exact_match": s.exact_match,
                   "token_accuracy": s.token_accuracy, "edit_distance": s.edit_distance,
                   "answer_logprob": s.answer_logprob, "wall_s": time.perf_counter() - t0}
            runs.setdefault((l, h, d), {"N": p.N, "rows": []})["rows"].append(row)
            doc["models"] = [{"n_layer": k[0], "n_head": k[1], "n_embd": k[2], "N": v["N"], "n_test": N_TEST,
                              **_summary(v["rows"]), "seeds": v["rows"]} for k, v in runs.items()]
            Path(args.out).write_text(json.dumps(doc, indent=1))
            print(f"seed {seed} N={p.N:>7} exact={s.exact_match:.3f} tok_acc={s.token_accuracy:.3f} "
                  f"edit={s.edit_distance:.3f} logp={s.answer_logprob:.3f} ({row['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
