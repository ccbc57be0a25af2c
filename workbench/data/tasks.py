"""Seeded synthetic tasks: k-digit addition and repeated random token sequences (for induction heads).

Lesson: ``notebooks/00_tour.ipynb``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class AdditionProblem:
    """``a + b = c``; ``prompt`` is ``"a+b="`` and ``answer`` is ``str(a + b)``."""

    a: int
    b: int

    @property
    def prompt(self) -> str:
        return f"{self.a}+{self.b}="

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def text(self) -> str:
        return self.prompt + self.answer


def addition_problems(n: int, digits: int, seed: int = 0, *, fixed_width: bool = False) -> list[AdditionProblem]:
    """``n`` problems with operands of exactly ``digits`` digits (or 0-padded range if ``fixed_width`` is False, 1..digits)."""
    if n < 0 or digits < 1:
        raise ValueError(f"need n >= 0 and digits >= 1, got n={n}, digits={digits}")
    rng = np.random.default_rng(seed)
    lo = 10 ** (digits - 1) if fixed_width else 0
    hi = 10**digits
    a = rng.integers(lo, hi, size=n)
    b = rng.integers(lo, hi, size=n)
    return [AdditionProblem(int(x), int(y)) for x, y in zip(a, b)]


def addition_text(problems, sep: str = "\n") -> str:
    """Join problems into training text, one ``a+b=c`` per line."""
    return sep.join(p.text for p in problems) + sep


def repeated_random_sequences(batch: int, length: int, vocab_size: int, seed: int = 0, *, prefix: int | None = None):
    """Token ids ``(batch, 2 * length)`` where the second half repeats the first (random tokens).

    An induction head predicts token ``t`` in the second half from where it appeared in the first.
    ``prefix`` optionally prepends a fixed token id (e.g. a BOS) to every row.
    """
    if batch < 1 or length < 1 or vocab_size < 2:
        raise ValueError(f"need batch >= 1, length >= 1, vocab_size >= 2; got {batch}, {length}, {vocab_size}")
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(0, vocab_size, (batch, length), generator=g)
    out = torch.cat([first, first], dim=1)
    if prefix is not None:
        out = torch.cat([torch.full((batch, 1), prefix, dtype=out.dtype), out], dim=1)
    return out
