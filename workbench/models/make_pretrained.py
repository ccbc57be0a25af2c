"""Retrain the shipped models: ``python -m workbench.models.make_pretrained docs-byte docs-byte-draft``.

Each recipe is fixed (corpus, split, shape, steps, seed), so the command remakes the shipped weights.
The validation loss in bits per byte is printed and stored in the checkpoint's metadata.

``docs-bpe`` / ``docs-bpe-draft`` are the same kind of pair on a byte-level BPE (:data:`BPE_TOKENIZER`)
trained on the training part of the same split, so bits per byte compare directly with the byte models.

Lesson: ``notebooks/01_tokenization.ipynb`` (5. Byte vs BPE models).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ..data import load_corpus, train_val_split
from ..tokenizers import BPETokenizer, ByteTokenizer
from .checkpoint import save
from .config import GPTConfig
from .pretrained import PRETRAINED_DIR
from .tinygpt import TinyGPT
from .training import evaluate, train

# The byte pair is trained with a BOS token at position 0 of every training and validation window
# (``bos=True``: the tokenizer is ByteTokenizer(bos=True), whose encode puts the BOS in front of every text).
# The BOS gives the model a fixed first token to park attention on: an attention sink, as in StreamingLLM.
RECIPES = {
    "docs-byte": dict(config=dict(n_layer=4, n_head=4, n_embd=128, block_size=256, pos="rope", dropout=0.05),
                      steps=1500, batch_size=16, lr=2e-3, bos=True),
    "docs-byte-draft": dict(config=dict(n_layer=1, n_head=2, n_embd=64, block_size=256, pos="rope", dropout=0.0),
                            steps=1200, batch_size=16, lr=3e-3, bos=True),
}
CORPUS, VAL_FRACTION, SEED = "python-docs", 0.1, 1234

# BPE-tokenised pair: the byte recipes above are untouched; these carry tokenizer="bpe".
RECIPES.update({
    "docs-bpe": dict(config=dict(n_layer=4, n_head=4, n_embd=128, block_size=256, pos="rope", dropout=0.1),
                     steps=800, batch_size=16, lr=2e-3, tokenizer="bpe"),
    "docs-bpe-draft": dict(config=dict(n_layer=1, n_head=2, n_embd=64, block_size=256, pos="rope", dropout=0.0),
                           steps=1000, batch_size=16, lr=3e-3, tokenizer="bpe"),
})
#: The fixed BPE the docs-bpe pair shares (trained on the training text only, never on validation).
BPE_TOKENIZER = dict(vocab_size=1024, pattern="gpt2", digits="none", special_tokens=("<|endoftext|>",))


def byte_splits(bos: bool = True):
    """The docs corpus as byte ids, split 90/10 into train and validation (the split every test uses).

    Returns ``(tokenizer, train ids, val ids)``; the ids are the plain bytes (no BOS inside them), and the
    tokenizer is the shipped byte models' one: ``ByteTokenizer(bos=True)`` unless ``bos=False``. Score
    a BOS model with ``evaluate(model, val_ids, bos=tokenizer.bos_id)``.
    """
    ids = torch.tensor(ByteTokenizer().encode(load_corpus(CORPUS)), dtype=torch.long)
    train_ids, val_ids = train_val_split(ids, VAL_FRACTION)
    return ByteTokenizer(bos=bos), train_ids, val_ids


def text_splits():
    """The docs corpus as (train text, validation text), cut at the same byte as :func:`byte_splits`
    (moved forward to the next character boundary if that byte is inside a UTF-8 character)."""
    data = load_corpus(CORPUS).encode("utf-8")
    train_b, _ = train_val_split(data, VAL_FRACTION)
    cut = len(train_b)
    while cut < len(data) and (data[cut] & 0xC0) == 0x80:
        cut += 1
    return data[:cut].decode("utf-8"), data[cut:].decode("utf-8")


def bpe_splits():
    """The BPE of :data:`BPE_TOKENIZER` trained on the training text, and both texts encoded with it.

    Deterministic (BPE training breaks ties by a fixed rule), so docs-bpe and docs-bpe-draft get the same
    tokenizer. Returns ``(tokenizer, train ids, val ids)``.
    """
    train_text, val_text = text_splits()
    tok = BPETokenizer.train(train_text, progress=False, **BPE_TOKENIZER)
    train_ids = torch.tensor(tok.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text), dtype=torch.long)
    return tok, train_ids, val_ids


def val_bits_per_byte(model, val_ids, tokenizer) -> tuple[float, float]:
    """``(mean nats per token, bits per UTF-8 byte)`` of ``model`` on ``val_ids``.

    :func:`evaluate` scores consecutive windows of ``block_size`` tokens (each token after the first,
    up to the last whole window); bits/byte divides those tokens' total nats by the number of UTF-8
    bytes they stand for, then by ln 2. For a byte tokenizer this equals ``nats / ln 2``; for BPE it is
    what makes models with different tokenizers comparable (per token numbers are not).
    """
    val_ids = torch.as_tensor(val_ids, dtype=torch.long)
    nats = evaluate(model, val_ids)
    block = min(model.config.block_size, len(val_ids) - 1)
    n_scored = ((len(val_ids) - 1) // block) * block
    scored = val_ids[1 : n_scored + 1].tolist()
    n_bytes = sum(tokenizer.token_lengths(scored))
    return nats, nats * n_scored / n_bytes / math.log(2)


def bits_per_byte(nats_per_token: float) -> float:
    """For a byte-level model one token is one byte: bits/byte = nats / ln 2."""
    return nats_per_token / math.log(2)


def make(name: str, out_dir=PRETRAINED_DIR, progress: bool = True):
    recipe = RECIPES[name]
    if recipe.get("tokenizer") == "bpe":
        return make_bpe(name, out_dir, progress)
    tok, train_ids, val_ids = byte_splits(bos=recipe.get("bos", False))
    torch.manual_seed(SEED)
    model = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, **recipe["config"]), tokenizer=tok, name=name)
    t0 = time.perf_counter()
    hist = train(model, train_ids, recipe["steps"], recipe["batch_size"], recipe["lr"], val_ids=val_ids,
                 seed=SEED, progress=progress, desc=name, bos=tok.bos_id)
    train_s = time.perf_counter() - t0
    val = evaluate(model, val_ids, bos=tok.bos_id)
    meta = {"corpus": CORPUS, "val_fraction": VAL_FRACTION, "val_loss_nats": val, "val_bpb": bits_per_byte(val),
            "train_s": train_s, "steps": recipe["steps"], "batch_size": recipe["batch_size"],
            "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
            "bos": tok.bos_id is not None,
            "command": f"python -m workbench.models.make_pretrained {name}"}
    save(model, out_dir / name, dtype=torch.float16, meta=meta)
    print(f"{name}: val loss {val:.4f} nats/byte = {meta['val_bpb']:.4f} bits/byte, "
          f"{meta['params']:,} params, trained in {meta['train_s']:.0f} s")
    return model, meta


def make_bpe(name: str, out_dir=PRETRAINED_DIR, progress: bool = True):
    """Train and save one of the BPE recipes (the tokenizer is retrained first: about a second)."""
    recipe = RECIPES[name]
    t0 = time.perf_counter()
    tok, train_ids, val_ids = bpe_splits()
    torch.manual_seed(SEED)
    model = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, **recipe["config"]), tokenizer=tok, name=name)
    train(model, train_ids, recipe["steps"], recipe["batch_size"], recipe["lr"], val_ids=val_ids,
          seed=SEED, progress=progress, desc=name)
    val, bpb = val_bits_per_byte(model, val_ids, tok)
    meta = {"corpus": CORPUS, "val_fraction": VAL_FRACTION, "val_loss_nats": val, "val_bpb": bpb,
            "train_s": time.perf_counter() - t0, "steps": recipe["steps"], "batch_size": recipe["batch_size"],
            "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
            "tokenizer": {k: list(v) if isinstance(v, tuple) else v for k, v in BPE_TOKENIZER.items()},
            "val_tokens": len(val_ids), "train_tokens": len(train_ids),
            "command": f"python -m workbench.models.make_pretrained {name}"}
    save(model, out_dir / name, dtype=torch.float16, meta=meta)
    print(f"{name}: val loss {val:.4f} nats/token = {bpb:.4f} bits/byte, "
          f"{meta['params']:,} params, trained in {meta['train_s']:.0f} s")
    return model, meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("names", nargs="*", default=list(RECIPES), help=f"which of {list(RECIPES)}")
    p.add_argument("--out", default=None, help="folder to write into (default: the shipped models' folder)")
    args = p.parse_args(argv)
    for n in args.names:
        if n not in RECIPES:
            p.error(f"unknown model {n!r}; choose from {list(RECIPES)}")
        make(n, out_dir=PRETRAINED_DIR if args.out is None else Path(args.out))


if __name__ == "__main__":
    main()
