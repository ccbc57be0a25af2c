"""One place that builds the tests' small models: every test file asks here instead of writing its own helper."""
from __future__ import annotations

import torch

from workbench.models import GPTConfig, TinyGPT


def tiny_gpt(tokenizer=None, *, seed: int | None = 0, train: bool = False, name: str = "tinygpt",
             **config) -> TinyGPT:
    """A random TinyGPT. ``config`` is passed to :class:`GPTConfig` (``vocab_size`` defaults to the tokenizer's,
    or GPTConfig's 257 without one); ``seed`` seeds torch first (None: leave the generator alone); the model is
    in ``eval()`` mode unless ``train``."""
    if seed is not None:
        torch.manual_seed(seed)
    if tokenizer is not None:
        config.setdefault("vocab_size", tokenizer.vocab_size)
    m = TinyGPT(GPTConfig(**config), tokenizer=tokenizer, name=name)
    return m.train() if train else m.eval()
