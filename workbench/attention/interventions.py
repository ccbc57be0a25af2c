"""Interventions: ablate attention heads and measure the next-token log-probabilities; diff two captures.

A head's output is ``z[:, :, h]`` at the layout's ``blocks.{i}.attn.z`` point (the heads' outputs before ``W_O``,
found for TinyGPT and any HF family by :mod:`workbench.models.layout`). Zero ablation sets it to 0; mean ablation replaces it, at every position, by its mean over the positions of the clean run
on the same input (or on ``reference`` ids).

Lesson: ``notebooks/02_attention.ipynb`` (4 · The Attention lab).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from .capture import AttentionCapture, encode_input, token_labels
from .errors import AttentionError, ContextLengthError, IndexOutOfRangeError, check_layer_head
from .variants import as_policy, use_policy
from .metrics import METRICS, head_metrics

MODES = ("zero", "mean")


def _parse_heads(model, heads) -> list[tuple[int, int]]:
    L, H = model.config.n_layer, model.config.n_head
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, (int, np.integer)) for x in heads):
        heads = [heads]
    out = []
    for lh in heads:
        try:
            layer, head = (int(x) for x in lh)
        except (TypeError, ValueError):
            raise AttentionError(f"heads must be (layer, head) pairs, got {lh!r}") from None
        check_layer_head(L, H, layer, head)
        out.append((layer, head))
    return out


def _layout(model):
    from workbench.models.layout import LayoutError, layout_of

    try:
        return layout_of(model)
    except LayoutError as e:
        raise AttentionError(f"head ablation needs the model's layout: {e}") from None


@contextmanager
def ablated(model, heads, mode: str = "zero", means: dict | None = None):
    """Within the block, the given ``(layer, head)`` pairs are ablated at the layout's ``blocks.{i}.attn.z`` point
    (``means[layer]``: ``(H, Dh)`` for mean ablation)."""
    if mode not in MODES:
        raise AttentionError(f"mode must be one of {MODES}, got {mode!r}")
    pairs = _parse_heads(model, heads)
    by_layer: dict[int, list[int]] = {}
    for layer, h in pairs:
        by_layer.setdefault(layer, []).append(h)

    def make(layer, hs):
        def edit(z):  # (B, T, H, Dh)
            z = z.clone()
            for h in hs:
                z[:, :, h] = 0.0 if mode == "zero" else means[layer][h].to(z.dtype)
            return z
        return edit

    with _layout(model).hooks({f"blocks.{layer}.attn.z": make(layer, hs) for layer, hs in by_layer.items()}):
        yield


@torch.no_grad()
def head_output_means(model, ids: torch.Tensor, policy=None) -> dict[int, torch.Tensor]:
    """Mean over positions of each layer's head outputs on ``ids``: ``{layer: (H, Dh)}``."""
    lay = _layout(model)
    means = {}
    fns = {f"blocks.{i}.attn.z": (lambda z, i=i: means.__setitem__(i, z.reshape(-1, *z.shape[2:]).mean(0)))
           for i in range(lay.n_layer)}
    with lay.hooks(fns):
        _logits(model, ids, policy)
    return means


def _logits(model, ids: torch.Tensor, policy=None) -> torch.Tensor:
    """Logits ``(T, V)``; beyond the context the model runs under ``policy`` (a TinyGPT through a long enough
    cache, an HF model through the workbench attention function)."""
    from .variants import _is_hf, hf_forward_logits

    dev = getattr(model, "device", None)
    x = ids[None].to(dev) if isinstance(dev, torch.device) else ids[None]
    T, ctx = x.size(1), model.config.block_size
    if T > ctx and policy is None:
        raise ContextLengthError(
            f"{T} tokens exceed the model's context of {ctx} and no long-context policy was given: pass policy=..."
        )
    if policy is None:
        return model.forward(x).logits[0].float()
    if _is_hf(model):
        return hf_forward_logits(model, x, as_policy(policy))[0].float()
    with use_policy(model, policy):
        if T <= ctx:
            return model.forward(x).logits[0].float()
        if getattr(model.config, "pos", "learned") not in ("rope", "alibi"):
            raise ContextLengthError(f"{T} tokens exceed the context of {ctx}; learned positions stop there")
        return model.forward(x, cache=model.new_cache(1, max_len=T)).logits[0].float()


@dataclass
class AblationResult:
    """Next-token log-probabilities ``(V,)`` at ``position`` before and after ablating ``heads``.

    ``delta = ablated - base``; ``kl`` = KL(base || ablated) in nats; ``top``: the ``k`` tokens with the largest
    |delta| as ``(token id, label, base logp, ablated logp)``.
    """

    heads: list[tuple[int, int]]
    mode: str
    position: int
    base: np.ndarray
    ablated: np.ndarray
    delta: np.ndarray
    kl: float
    top: list = field(default_factory=list)

    @property
    def base_top(self) -> int:
        return int(self.base.argmax())

    @property
    def ablated_top(self) -> int:
        return int(self.ablated.argmax())


@torch.no_grad()
def ablate_heads(model, text_or_ids, heads, mode: str = "zero", position: int = -1, reference=None,
                 k: int = 10, policy=None) -> AblationResult:
    """Ablate ``heads`` (a ``(layer, head)`` pair or a list of them) and compare next-token log-probs ``(V,)``.

    position: the query position whose prediction is compared (default the last). mode: ``zero`` or ``mean``
    (mean over positions of the clean run on ``reference``, default the same input). policy: an attention
    variant (needed beyond the context).
    """
    ids = encode_input(model, text_or_ids)
    T = ids.numel()
    if not -T <= position < T:
        raise IndexOutOfRangeError(f"position {position} is out of range for {T} tokens")
    pairs = _parse_heads(model, heads)
    if mode not in MODES:
        raise AttentionError(f"mode must be one of {MODES}, got {mode!r}")
    means = head_output_means(model, encode_input(model, reference) if reference is not None else ids, policy) \
        if mode == "mean" else None
    base = _logits(model, ids, policy)[position].log_softmax(-1)
    with ablated(model, pairs, mode, means):
        abl = _logits(model, ids, policy)[position].log_softmax(-1)
    delta = abl - base
    kl = float((base.exp() * (base - abl)).sum())
    order = delta.abs().argsort(descending=True)[:k].tolist()
    labels = token_labels(model, order)
    top = [(i, s, float(base[i]), float(abl[i])) for i, s in zip(order, labels)]
    return AblationResult(pairs, mode, position % T, base.cpu().numpy(), abl.cpu().numpy(),
                          delta.cpu().numpy(), kl, top)


@torch.no_grad()
def ablation_scan(model, text_or_ids, target: int | None = None, mode: str = "zero", position: int = -1,
                  policy=None) -> np.ndarray:
    """Change in log p(``target``) at ``position`` when each head alone is ablated, ``(L, H)``.

    ``target`` defaults to the clean model's top prediction.
    """
    ids = encode_input(model, text_or_ids)
    base = _logits(model, ids, policy)[position].log_softmax(-1)
    if target is None:
        target = int(base.argmax())
    means = head_output_means(model, ids, policy) if mode == "mean" else None
    L, H = model.config.n_layer, model.config.n_head
    out = np.zeros((L, H))
    for layer in range(L):
        for h in range(H):
            with ablated(model, [(layer, h)], mode, means):
                lp = _logits(model, ids, policy)[position].log_softmax(-1)
            out[layer, h] = float(lp[target] - base[target])
    return out


@dataclass
class CaptureDiff:
    """``b - a`` for two captures of the same layers and heads.

    ``delta``: ``(L', H', T', T')`` over the common first ``T'`` tokens (both captures must start at query 0);
    ``max_abs``: ``(L', H')``; ``metrics``: each per-head metric's difference ``(L', H')`` (full captures);
    ``same_tokens``: whether the common prefix has the same ids (False for two different prompts).
    """

    delta: np.ndarray
    max_abs: np.ndarray
    metrics: dict
    same_tokens: bool
    T: int
    layers: tuple
    heads: tuple


def diff_captures(a: AttentionCapture, b: AttentionCapture) -> CaptureDiff:
    """Difference of two captures (two prompts, two models of one shape, or two checkpoints of one run)."""
    if a.layers != b.layers or a.heads != b.heads:
        raise AttentionError(
            f"captures differ in layers/heads ({a.layers}/{a.heads} vs {b.layers}/{b.heads}): capture both alike"
        )
    if a.q_start != 0 or b.q_start != 0:
        raise AttentionError("diff_captures needs captures of every query (no window)")
    T = min(a.T, b.T)
    delta = b.probs[:, :, :T, :T] - a.probs[:, :, :T, :T]
    ma, mb = head_metrics(a), head_metrics(b)
    metrics = {}
    for name in METRICS:
        va, vb = getattr(ma, name), getattr(mb, name)
        if va is not None and vb is not None:
            metrics[name] = vb - va
    return CaptureDiff(delta, np.abs(delta).reshape(*delta.shape[:2], -1).max(-1), metrics,
                       bool(np.array_equal(a.ids[:T], b.ids[:T])), T, a.layers, a.heads)
