"""Decoding through the workbench's fused GPU kernels (``workbench.kernels``) where they apply.

The kernels do temperature, top-k, top-p and min-p (in that order, HF's) and the draw in one launch, and a
whole speculative verification in another. :func:`sample` and :func:`speculative_decode` use them
automatically when the model's logits live on a CUDA device and the kernels' back-end is CuPy, for a
pipeline the kernels can express (:func:`kernel_params`); ``draw="kernel"`` forces this path anywhere (on a
CPU it runs the kernels' torch reference, which draws the same tokens), ``draw="noise"`` the plain path.

Randomness stays keyed by (seed, position, purpose): the kernels' counter-based noise is seeded with
:meth:`NoiseStream.key`, so two strategies compared on the same seed still share their noise. The tokens
differ from the plain path's (different noise), not their distribution; tests check the distribution.

Two documented differences, both at exact boundaries: the kernels keep *every* token tied with the top-p
cut-off token, where HF's sort keeps whichever of the tied tokens it happens to order first (ties are rare in
float32 logits, less so in half precision); and the CUDA kernel sums the top-p mass in float32, while
:func:`kernel_probs` (the ``q`` and ``p`` of speculative verification) uses the float64 reference, so a token
whose cumulative mass lands within float32 rounding of ``top_p`` may be kept by one and not the other.

Lesson: ``notebooks/03_decoding.ipynb``.
"""
from __future__ import annotations

import torch

from .. import kernels
from .noise import NoiseStream
from .pipeline import Pipeline
from .processors import DecodingError

#: The stages the kernels fuse, in the order they apply them.
KERNEL_ORDER = ("temperature", "top_k", "top_p", "min_p")
DRAWS = ("auto", "kernel", "noise")


def kernel_params(pipe: Pipeline) -> dict | None:
    """Keyword arguments for ``kernels.sample`` equivalent to ``pipe``, or None when the kernels cannot
    express it (another stage, another order, a repeated stage, or ``min_tokens_to_keep`` above 1)."""
    names = [s.name for s in pipe.stages]
    if pipe.min_tokens_to_keep != 1 or len(set(names)) != len(names) or any(n not in KERNEL_ORDER for n in names):
        return None
    if names != sorted(names, key=KERNEL_ORDER.index):
        return None
    params = {s.name: s.value for s in pipe.stages}
    params.setdefault("temperature", 1.0)
    return params


def resolve_draw(draw: str, pipe: Pipeline, on_cuda: bool) -> dict | None:
    """The kernel parameters when this decoding should draw with the fused kernels, else None (also for a
    greedy pipeline, which needs no draw)."""
    if draw not in DRAWS:
        raise DecodingError(f"draw must be one of {DRAWS}, got {draw!r}")
    if draw == "noise" or pipe.greedy:
        return None
    params = kernel_params(pipe)
    if draw == "kernel":
        if params is None:
            raise DecodingError(
                f"the fused kernels apply {', '.join(KERNEL_ORDER)} (in that order, each at most once, "
                f"min_tokens_to_keep 1); {pipe!r} needs the plain path: use draw='noise' or 'auto'"
            )
        return params
    return params if params is not None and kernels.kernels_run_for(on_cuda) else None


def kernel_draw(logits: torch.Tensor, params: dict, noise: NoiseStream, position: int,
                purpose: str = "sample") -> torch.Tensor:
    """Tokens ``(B,)`` from logits ``(B, V)`` through the fused sampling kernel, seeded by (seed, position,
    purpose); row ``b`` draws from the kernel's noise row ``b``, so row 0 of a batch equals a one-row draw."""
    tok = kernels.sample(logits, seed=noise.key(position, purpose), **params)
    if bool((tok < 0).any()):
        raise DecodingError("every logit is -inf: there is no token to draw")
    return tok


def kernel_probs(logits: torch.Tensor, params: dict) -> torch.Tensor:
    """The distribution ``(..., V)`` the sampling kernel draws from (float32, on the logits' device)."""
    V = logits.size(-1)
    return kernels.truncated_probs(logits.reshape(-1, V), dtype=torch.float32, **params).reshape(logits.shape)


__all__ = ["KERNEL_ORDER", "DRAWS", "kernel_params", "resolve_draw", "kernel_draw", "kernel_probs"]
