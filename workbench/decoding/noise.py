"""Common random numbers: one seeded noise stream per (seed, position, purpose).

Sampling a token is ``argmax_i p_i / E_i`` with ``E_i ~ Exp(1)`` independent (the exponential race, the same
as the Gumbel-max trick): token ``i`` wins with probability exactly ``p_i``. The noise for generating position
``t`` depends only on ``(seed, t, purpose)`` and not on how many random numbers were drawn before, so two
strategies run on the same prompt and seed see identical noise and differ only because of the strategy:
with the same distributions they pick the same tokens, and the first step where they differ is where the
strategies' distributions first disagree enough to change the winner.

>>> ns = NoiseStream(0)
>>> bool((ns.exponential(5, (3, 16)) == NoiseStream(0).exponential(5, (3, 16))).all())
True

Lesson: ``notebooks/03_decoding.ipynb`` (3. Inside one sampled step; 6. Same prompt, same noise).
"""
from __future__ import annotations

import torch

_MASK = (1 << 64) - 1
_PURPOSES = {"sample": 1, "accept": 2, "residual": 3, "draft": 4, "beam": 5}


def _mix(x: int) -> int:
    """splitmix64 finaliser: decorrelates nearby integer keys."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class NoiseStream:
    """Seeded noise keyed by position and purpose (``"sample"``, ``"accept"``, ``"residual"``, ...)."""

    def __init__(self, seed: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self._gen = torch.Generator()

    def key(self, position: int, purpose: str = "sample") -> int:
        """The 63-bit key of (seed, position, purpose): it seeds this stream's generator and the fused kernels."""
        return _mix(_mix(_mix(self.seed & _MASK) ^ int(position)) ^ _PURPOSES[purpose]) & ((1 << 63) - 1)

    def generator(self, position: int, purpose: str = "sample") -> torch.Generator:
        self._gen.manual_seed(self.key(position, purpose))
        return self._gen

    def exponential(self, position: int, shape, purpose: str = "sample") -> torch.Tensor:
        """``E ~ Exp(1)`` of ``shape`` for generating ``position``."""
        return torch.empty(shape).exponential_(1.0, generator=self.generator(position, purpose))

    def uniform(self, position: int, shape, purpose: str = "accept") -> torch.Tensor:
        """``U ~ Uniform[0, 1)`` of ``shape`` (speculative acceptance tests)."""
        return torch.rand(shape, generator=self.generator(position, purpose), dtype=torch.float32)


def sample_with_noise(probs: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """The exponential race: ``argmax_i probs_i / E_i`` over the last dim ``(..., V) -> (...)``.

    Tokens with probability 0 never win (unless every probability is 0, which callers rule out).
    ``E == 0`` has probability zero but is guarded to avoid 0/0.
    """
    return (probs / E.clamp_min(1e-30)).argmax(dim=-1)


__all__ = ["NoiseStream", "sample_with_noise"]
