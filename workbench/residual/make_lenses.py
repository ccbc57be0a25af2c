"""Retrain the shipped models' tuned lenses: ``python -m workbench.residual.make_lenses [name ...]``.

Each lens is trained on the training part of the docs corpus (the split the shipped models were trained on, see
:func:`workbench.models.make_pretrained.text_splits`) with a fixed recipe and seed, stored as float16 next to its
model (``tuned_lens.safetensors`` + ``tuned_lens.json``), and scored on held-out windows of the validation part:
the mean KL to the model's output per boundary, logit lens vs tuned lens, is printed and kept in the JSON.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ..models.make_pretrained import CORPUS, VAL_FRACTION, text_splits
from ..models.pretrained import PRETRAINED_DIR, available, load_pretrained
from .lens import boundary_names, lens_kl_by_layer
from .tuned_lens import LENS_WEIGHTS, train_tuned_lens, windows

RECIPE = dict(steps=300, lr=1e-2, seq_len=128, batch_size=8, seed=0)
STORE_DTYPE = torch.float16
HELDOUT = dict(n_windows=16, seq_len=128)


def corpus_ids(model, part: str = "train") -> torch.Tensor:
    """The docs corpus's ``"train"`` or ``"val"`` text encoded with the model's tokenizer, without a leading BOS
    (:func:`~workbench.residual.tuned_lens.windows` puts one at the start of every window)."""
    train_text, val_text = text_splits()
    tok = model.tokenizer
    ids = tok.encode(train_text if part == "train" else val_text)
    bos = getattr(tok, "bos_id", None)
    if bos is not None and ids and ids[0] == bos:
        ids = ids[1:]
    return torch.tensor(ids, dtype=torch.long)


def heldout_windows(model, n_windows: int = HELDOUT["n_windows"], seq_len: int = HELDOUT["seq_len"]) -> torch.Tensor:
    """``(n_windows, seq_len)`` windows spread evenly over the validation text: text no lens was trained on."""
    ids = corpus_ids(model, "val")
    n = seq_len - (getattr(model.tokenizer, "bos_id", None) is not None)
    starts = np.linspace(0, ids.numel() - n, n_windows).astype(int).tolist()
    return windows(model, ids, seq_len, starts)


def make(name: str, progress: bool = True) -> dict:
    """Train, round to the stored dtype, score and save the tuned lens of the shipped model ``name``; returns the
    scores ``{"logit": [...], "tuned": [...]}`` (mean held-out KL in bits per boundary)."""
    model = load_pretrained(name)
    ids = corpus_ids(model, "train")
    t0 = time.perf_counter()
    lens = train_tuned_lens(model, ids, **RECIPE)
    train_s = time.perf_counter() - t0
    with torch.no_grad():  # score what is shipped: the float16-rounded translators
        lens.A.copy_(lens.A.to(STORE_DTYPE).float())
        lens.b.copy_(lens.b.to(STORE_DTYPE).float())
    x = heldout_windows(model)
    scores = {"logit": lens_kl_by_layer(model, x).round(4).tolist(),
              "tuned": lens_kl_by_layer(model, x, lens).round(4).tolist()}
    lens.meta.update({"corpus": CORPUS, "val_fraction": VAL_FRACTION, "train_s": round(train_s, 1),
                      "threads": torch.get_num_threads(), "heldout": dict(HELDOUT), "heldout_kl_bits": scores,
                      "command": f"python -m workbench.residual.make_lenses {name}"})
    folder = PRETRAINED_DIR / name
    lens.save(folder, dtype=STORE_DTYPE)
    if progress:
        size = (folder / LENS_WEIGHTS).stat().st_size
        print(f"{name}: trained in {train_s:.1f} s, {LENS_WEIGHTS} {size / 1024:.0f} KiB; held-out KL (bits):")
        for b, lo, tu in zip(boundary_names(lens.n_layer), scores["logit"], scores["tuned"]):
            print(f"  {b:>8}  logit {lo:8.3f}  tuned {tu:8.3f}")
    return scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"shipped models (default: all of {available()})")
    args = p.parse_args(argv)
    for name in args.names or available():
        make(name)


if __name__ == "__main__":
    main()
