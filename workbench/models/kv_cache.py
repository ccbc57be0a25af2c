"""A preallocated key/value cache: one decoding step writes one slot per layer instead of recomputing.

Lesson: ``notebooks/00_tour.ipynb``.
"""
from __future__ import annotations

import torch

from .interface import ModelError


class KVCache:
    """Keys and values of every layer, ``(L, B, H, max_len, Dh)``, filled up to ``length``.

    Layers call :meth:`write` during a forward pass; the model calls :meth:`advance` once after all layers.
    """

    def __init__(self, n_layer, batch_size, n_head, head_dim, max_len, *, dtype=torch.float32, device=None):
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        self.max_len = max_len

    @property
    def batch_size(self) -> int:
        return self.k.size(1)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store ``k, v`` ``(B, H, t, Dh)`` after the cached tokens; return all keys and values so far."""
        end = self.check_room(k.size(2))
        # select + narrow: the fewest ops, since one decoding step of a small model is dominated by op dispatch
        kl, vl = self.k.select(0, layer), self.v.select(0, layer)
        kl.narrow(2, self.length, k.size(2)).copy_(k)
        vl.narrow(2, self.length, v.size(2)).copy_(v)
        return kl.narrow(2, 0, end), vl.narrow(2, 0, end)

    def check_room(self, t: int) -> int:
        """The length after ``t`` more tokens; a clear error when they do not fit."""
        end = self.length + t
        if end > self.max_len:
            raise ModelError(
                f"KV cache is full: {self.length} cached + {t} new tokens > max_len {self.max_len}; "
                "create the cache with a larger max_len or crop it"
            )
        return end

    def advance(self, t: int) -> None:
        self.length += t

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search keeps the surviving beams' histories)."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)

    def crop(self, length: int) -> None:
        """Forget everything after ``length`` tokens (speculative decoding rolls back rejected drafts)."""
        if not 0 <= length <= self.length:
            raise ModelError(f"cannot crop a cache of length {self.length} to {length}")
        self.length = length
