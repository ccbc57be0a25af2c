"""Remake the shipped addition models in ``addition_models/`` (see :mod:`workbench.scaling.addition_models`).

``python -m workbench.scaling.make_addition_models [--out DIR]``: trains seed 0 of the emergence sweep
(:mod:`workbench.scaling.make_emergence`: the same seven sizes, 20,000 two-digit problems, 1,000 steps of 64,
loss on the answer only) and saves each model as a float16 checkpoint, with its size and the greedy exact
match of the saved weights (reloaded) on the 500 held-out problems in the checkpoint's metadata. One thread;
about two minutes on an idle core.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None) -> int:
    import torch

    from workbench.data.tasks import addition_problems
    from workbench.models import GPTConfig, TinyGPT
    from workbench.models.checkpoint import load, save
    from workbench.tokenizers import ByteTokenizer

    from . import make_emergence as me
    from .addition_models import MODELS_DIR, addition_test_problems, model_name
    from .emergence import score_addition, train_on_answers
    from .sweep import _count_params

    ap = argparse.ArgumentParser(prog="python -m workbench.scaling.make_addition_models",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(MODELS_DIR))
    ap.add_argument("--steps", type=int, default=me.STEPS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seed = 0
    tok = ByteTokenizer()
    train_probs = addition_problems(me.N_TRAIN, me.DIGITS, seed=seed)
    test_probs = addition_test_problems(seed=seed)
    for l, h, d in me.SIZES:
        cfg = GPTConfig(vocab_size=257, n_layer=l, n_head=h, n_embd=d, block_size=me.BLOCK_SIZE)
        t0 = time.perf_counter()
        torch.manual_seed(seed)                       # the same initialisation as emergence_sweep
        model = TinyGPT(cfg, tokenizer=tok, name=model_name(l, h, d))
        train_on_answers(model, train_probs, tok, steps=args.steps, batch_size=me.BATCH_SIZE, lr=me.LR, seed=seed)
        model.eval()
        fp32 = score_addition(model, test_probs, tok).exact_match
        path = Path(args.out) / model_name(l, h, d)
        meta = {"N": _count_params(model)[0], "n_layer": l, "n_head": h, "n_embd": d, "seed": seed,
                "steps": args.steps, "n_test": len(test_probs), "exact_match_float32": fp32,
                "command": "python -m workbench.scaling.make_addition_models"}
        save(model, path, dtype=torch.float16, meta={**meta, "exact_match": fp32})
        em = score_addition(load(path).eval(), test_probs, tok).exact_match   # what the shipped weights do
        save(model, path, dtype=torch.float16, meta={**meta, "exact_match": em})
        print(f"{path.name}: N={meta['N']:>7} exact match {em:.3f} (float32 {fp32:.3f}), "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
