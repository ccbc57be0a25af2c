"""MLP neurons: the hidden activation after the nonlinearity, and the corpus snippets that excite one neuron most.

A neuron's activation is the input of the MLP's down (output) projection: ``gelu(x W_fc)`` in GPT-2 and TinyGPT,
``act(gate(x)) * up(x)`` in Llama-style gated MLPs. The projection is found by data flow, never by family name:
among the linear layers of the block's MLP module (for OPT, whose ``fc1``/``fc2`` sit in the block, among the
block's linear layers outside attention), it is the last one whose output equals what the MLP writes (the MLP
module's output, or ``resid_post - resid_pre - attn.out``).

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> m = TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=257), ByteTokenizer()).eval()
>>> mlp_width(m, 0)
128
>>> r = top_activations(m, 0, 5, "the cat sat on the mat; " * 4, k=3, window=8)
>>> len(r.snippets), r.snippets[0].max_activation == max(s.max_activation for s in r.snippets)
(3, True)
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from ..models.layout import LayoutError, layout_of
from .errors import ResidualError
from .run import check_index, run_with_cache


def _is_linear(m: torch.nn.Module) -> bool:
    return isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"


_SITES: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def down_projection(model, layer: int) -> torch.nn.Module:
    """The MLP's output projection of ``layer`` (found once by data flow, then cached; see the module docstring);
    a :class:`LayoutError` when no linear layer's output equals the MLP's write."""
    lay = layout_of(model)
    layer = check_index("layer", layer, lay.n_layer)
    sites = _SITES.setdefault(lay.root, {})
    if layer in sites:
        return sites[layer][0]
    block, mlp, attn = lay.blocks[layer], lay.mlp[layer], lay.attn[layer]
    scope = mlp if mlp is not None else block
    attn_mods = {id(m) for m in attn.modules()}
    cands = [(n, m) for n, m in scope.named_modules() if _is_linear(m) and id(m) not in attn_mods
             and m is not lay.w_o[layer]]
    if not cands:
        raise LayoutError(f"{lay.model_class}: block {layer} has no linear layer outside attention (no MLP)")
    outs, ins, order = {}, {}, []
    handles = []
    for n, m in cands:
        def hook(mod, args, out, n=n):
            outs[n] = out.detach()
            ins[n] = args[0].detach()
            order.append(n)
        handles.append(m.register_forward_hook(hook))
    written = {}
    if mlp is not None:
        handles.append(mlp.register_forward_hook(lambda mod, args, out: written.__setitem__("w", out.detach())))
    p = f"blocks.{layer}."
    n = min(6, int(model.config.block_size))
    ids = (torch.arange(n) * 7 + 3)[None] % int(model.config.vocab_size)
    try:
        _, cache = run_with_cache(model, ids.to(next(lay.root.parameters()).device),
                                  [p + "resid_pre", p + "resid_post", p + "attn.out"])
    finally:
        for h in handles:
            h.remove()
    target = written.get("w")
    if target is None:
        target = cache[p + "resid_post"] - cache[p + "resid_pre"] - cache[p + "attn.out"]
    found = None
    for name in order:  # call order: the last match is the projection that writes
        o = outs[name]
        if o.numel() == target.numel():  # OPT flattens (B, T, D) to (B * T, D) around its MLP
            o = o.reshape(target.shape)
        if o.shape == target.shape and torch.allclose(o.float(), target.float(), atol=1e-5, rtol=1e-4):
            found = name
    if found is None:
        raise LayoutError(f"{lay.model_class}: no linear layer in block {layer}'s MLP "
                          f"({[c for c, _ in cands]}) outputs what the MLP writes into the residual stream")
    mod = dict(cands)[found]
    sites[layer] = (mod, int(ins[found].shape[-1]))
    return mod


def mlp_width(model, layer: int) -> int:
    """The number of neurons (hidden activations) of ``layer``'s MLP."""
    down_projection(model, layer)
    lay = layout_of(model)
    return _SITES[lay.root][check_index("layer", layer, lay.n_layer)][1]


@torch.no_grad()
def neuron_activations(model, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """Every neuron's activation at ``layer`` for ids ``(B, T)``: ``(B, T, width)`` float."""
    proj = down_projection(model, layer)
    got = {}

    def pre(mod, args):
        got["x"] = args[0].detach().float()

    h = proj.register_forward_pre_hook(pre)
    try:
        run_with_cache(model, ids, [])
    finally:
        h.remove()
    return got["x"].reshape(*ids.shape, -1)


# -- corpus windows ----------------------------------------------------------------------------------------------------

def corpus_text(corpus) -> list[str]:
    """A corpus as a list of texts: a name from ``workbench.data.EMBEDDED``, one text, or a list of texts."""
    from ..data import EMBEDDED, load_corpus

    if isinstance(corpus, str):
        texts = [load_corpus(corpus) if corpus in EMBEDDED else corpus]
    elif isinstance(corpus, (list, tuple)) and all(isinstance(t, str) for t in corpus):
        texts = list(corpus)
    else:
        raise ResidualError(f"a corpus is a name {list(EMBEDDED)}, a text, or a list of texts; "
                            f"got {type(corpus).__name__}")
    texts = [t for t in texts if t]
    if not texts:
        raise ResidualError("the corpus is empty: give at least one non-empty text")
    return texts


def token_stream(model, texts: list[str], max_tokens: int) -> list[torch.Tensor]:
    """Encode texts until ``max_tokens`` tokens: one ``(T,)`` id tensor per text (the last one cut short). Long
    texts are cut to about ``8 * max_tokens`` characters before encoding, so a big corpus costs little."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ResidualError("this model has no tokenizer: the corpus cannot be encoded")
    left, out = int(max_tokens), []
    if left < 1:
        raise ResidualError(f"max_tokens must be at least 1, got {max_tokens}")
    for t in texts:
        ids = list(tok.encode(t[: 8 * left + 64]))[:left]
        if ids:
            out.append(torch.as_tensor(ids, dtype=torch.long))
            left -= len(ids)
        if left <= 0:
            break
    return out


def windows(model, ids: torch.Tensor, size: int | None = None) -> list[tuple[int, torch.Tensor]]:
    """Cut ``(T,)`` ids into pieces that fit the context: ``[(start, piece)]``. When the tokenizer has a BOS token
    and the ids start with it, every later piece gets one too (so no piece starts without the context a model
    trained with BOS expects); ``start`` is the piece's first real token in ``ids``."""
    size = min(int(size or model.config.block_size), int(model.config.block_size))
    bos = getattr(getattr(model, "tokenizer", None), "bos_id", None)
    lead = bos is not None and len(ids) > 0 and int(ids[0]) == bos and size > 1
    out, start = [], 0
    while start < len(ids):
        if start == 0 or not lead:
            piece = ids[start:start + size]
        else:
            piece = torch.cat([ids[:1], ids[start:start + size - 1]])
        out.append((start, piece))
        start += len(piece) - (1 if start > 0 and lead else 0)
    return out


# -- top activations ---------------------------------------------------------------------------------------------------

@dataclass
class Snippet:
    """A stretch of corpus around one strong activation: ``tokens`` (labels), their ``activations`` ``(n,)``,
    ``center`` (index of the peak token in the snippet), ``max_activation``, and ``position`` (the peak's token index
    in the encoded text ``text_index``)."""

    tokens: list
    activations: np.ndarray
    center: int
    max_activation: float
    position: int
    text_index: int = 0


@dataclass
class NeuronActivations:
    """The ``k`` snippets that excite neuron ``neuron`` of ``layer``'s MLP most (strongest first), and the
    activation's distribution over the ``n_tokens`` scanned (``mean``, ``std``, ``quantiles`` at 0, .5, .9, .99, 1)."""

    layer: int
    neuron: int
    snippets: list
    n_tokens: int = 0
    mean: float = 0.0
    std: float = 0.0
    quantiles: dict = field(default_factory=dict)


@torch.no_grad()
def top_activations(model, layer: int, neuron: int, corpus="python-docs", k: int = 10, window: int = 24,
                    max_tokens: int = 20000, batch_size: int = 16) -> NeuronActivations:
    """Scan up to ``max_tokens`` tokens of ``corpus`` (see :func:`corpus_text`) and return the ``k`` strongest,
    non-overlapping activations of one neuron, each with ``window`` tokens of context (about three quarters before
    the peak, the rest after) and the neuron's activation on every one of them."""
    lay = layout_of(model)
    layer = check_index("layer", layer, lay.n_layer)
    neuron = check_index("neuron", neuron, mlp_width(model, layer))
    if int(k) < 1 or int(window) < 1:
        raise ResidualError(f"k and window must be at least 1, got k={k}, window={window}")
    texts = corpus_text(corpus)
    proj = down_projection(model, layer)
    streams = token_stream(model, texts, max_tokens)
    acts = [np.full(len(s), np.nan, dtype=np.float32) for s in streams]  # nan: a position never scored (BOS)
    pieces = [(ti, start, piece) for ti, s in enumerate(streams) for start, piece in windows(model, s)]
    got = {}
    h = proj.register_forward_pre_hook(lambda mod, args: got.__setitem__("x", args[0][..., neuron].float()))
    # (OPT feeds its MLP (B * T, width): the reshape below restores (B, T))
    dev = next(lay.root.parameters()).device
    bos = getattr(model.tokenizer, "bos_id", None)
    try:
        by_len: dict = {}
        for item in pieces:
            by_len.setdefault(len(item[2]), []).append(item)
        for group in by_len.values():
            for lo in range(0, len(group), int(batch_size)):
                chunk = group[lo:lo + batch_size]
                run_with_cache(model, torch.stack([p for _, _, p in chunk]).to(dev), [])
                a = got["x"].reshape(len(chunk), -1).cpu().numpy()
                for row, (ti, start, piece) in enumerate(chunk):
                    extra = 1 if start > 0 and bos is not None and int(piece[0]) == bos else 0
                    vals = a[row, extra:]
                    acts[ti][start:start + len(vals)] = vals
    finally:
        h.remove()
    for ti, s in enumerate(streams):  # a BOS token is context, not text: never a snippet's peak
        if bos is not None:
            acts[ti][(s == bos).numpy()] = np.nan
    flat = np.concatenate(acts)
    valid = flat[~np.isnan(flat)]
    snippets = _pick(model, streams, acts, int(k), int(window))
    q = {p: float(np.quantile(valid, p)) for p in (0.0, 0.5, 0.9, 0.99, 1.0)} if valid.size else {}
    return NeuronActivations(layer, neuron, snippets, int(valid.size), float(valid.mean()) if valid.size else 0.0,
                             float(valid.std()) if valid.size else 0.0, q)


def _pick(model, streams, acts, k, window) -> list:
    before = window - window // 4
    order = []
    for ti, a in enumerate(acts):
        pos = np.nonzero(~np.isnan(a))[0]
        order += [(float(a[p]), ti, int(p)) for p in pos]
    order.sort(key=lambda r: (-r[0], r[1], r[2]))
    chosen: list = []
    for val, ti, p in order:
        if len(chosen) == k:
            break
        if any(c.text_index == ti and abs(c.position - p) < window for c in chosen):
            continue
        lo, hi = max(0, p - before + 1), min(len(streams[ti]), p - before + 1 + window)
        ids = streams[ti][lo:hi].tolist()
        tok = model.tokenizer
        chosen.append(Snippet([tok.token_str(i) for i in ids], np.nan_to_num(acts[ti][lo:hi], nan=0.0), p - lo, val,
                              p, ti))
    return chosen


__all__ = ["NeuronActivations", "Snippet", "corpus_text", "down_projection", "mlp_width", "neuron_activations",
           "token_stream", "top_activations", "windows"]
