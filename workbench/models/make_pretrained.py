"""Retrain the shipped models: ``python -m workbench.models.make_pretrained docs-byte docs-byte-draft``.

Each recipe is fixed (corpus, split, shape, steps, seed), so the command remakes the shipped weights.
The validation loss in bits per byte is printed and stored in the checkpoint's metadata.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from ..data import load_corpus, train_val_split
from ..tokenizers import ByteTokenizer
from .checkpoint import save
from .config import GPTConfig
from .pretrained import PRETRAINED_DIR
from .tinygpt import TinyGPT
from .training import evaluate, train

RECIPES = {
    "docs-byte": dict(config=dict(n_layer=4, n_head=4, n_embd=128, block_size=256, pos="rope", dropout=0.05),
                      steps=1500, batch_size=16, lr=2e-3),
    "docs-byte-draft": dict(config=dict(n_layer=1, n_head=2, n_embd=64, block_size=256, pos="rope", dropout=0.0),
                            steps=1200, batch_size=16, lr=3e-3),
}
CORPUS, VAL_FRACTION, SEED = "python-docs", 0.1, 1234


def byte_splits():
    """The docs corpus as byte ids, split 90/10 into train and validation (the split every test uses)."""
    tok = ByteTokenizer()
    ids = torch.tensor(tok.encode(load_corpus(CORPUS)), dtype=torch.long)
    train_ids, val_ids = train_val_split(ids, VAL_FRACTION)
    return tok, train_ids, val_ids


def bits_per_byte(nats_per_token: float) -> float:
    """For a byte-level model one token is one byte: bits/byte = nats / ln 2."""
    return nats_per_token / math.log(2)


def make(name: str, out_dir=PRETRAINED_DIR, progress: bool = True):
    recipe = RECIPES[name]
    tok, train_ids, val_ids = byte_splits()
    torch.manual_seed(SEED)
    model = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, **recipe["config"]), tokenizer=tok, name=name)
    t0 = time.perf_counter()
    hist = train(model, train_ids, recipe["steps"], recipe["batch_size"], recipe["lr"], val_ids=val_ids,
                 seed=SEED, progress=progress, desc=name)
    val = evaluate(model, val_ids)
    meta = {"corpus": CORPUS, "val_fraction": VAL_FRACTION, "val_loss_nats": val, "val_bpb": bits_per_byte(val),
            "train_s": time.perf_counter() - t0, "steps": recipe["steps"], "batch_size": recipe["batch_size"],
            "params": sum(p.numel() for p in model.parameters()),
            "command": f"python -m workbench.models.make_pretrained {name}"}
    save(model, out_dir / name, dtype=torch.float16, meta=meta)
    print(f"{name}: val loss {val:.4f} nats/byte = {meta['val_bpb']:.4f} bits/byte, "
          f"{meta['params']:,} params, trained in {meta['train_s']:.0f} s")
    return model, meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("names", nargs="*", default=list(RECIPES), help=f"which of {list(RECIPES)}")
    args = p.parse_args(argv)
    for n in args.names:
        if n not in RECIPES:
            p.error(f"unknown model {n!r}; choose from {list(RECIPES)}")
        make(n)


if __name__ == "__main__":
    main()
