"""One model-layout layer: the named points of any workbench model, found by introspection, and one way to hook them.

Everything above ``workbench/models`` (attention capture, value vectors, head ablation, long-context variants, the
residual-stream lab) reaches a model's insides only through :func:`layout_of` and :meth:`ModelLayout.hooks`.

Named points (in the spirit of TransformerLens's hook points); shapes for batch ``B``, ``T`` new tokens, ``S`` keys:

==========================  ====================================================================================
``embed``                   the residual stream entering block 0 (token + position embeddings) ``(B, T, D)``
``blocks.{i}.resid_pre``    the residual stream entering block ``i`` ``(B, T, D)``
``blocks.{i}.resid_post``   the residual stream leaving block ``i`` ``(B, T, D)``
``blocks.{i}.attn.q``       queries after RoPE and any query norm ``(B, H, T, Dh)``
``blocks.{i}.attn.k``       keys after RoPE ``(B, n_kv, S, Dh)`` (cached keys included)
``blocks.{i}.attn.v``       values ``(B, n_kv, S, Dh)``
``blocks.{i}.attn.pattern`` attention probabilities ``(B, H, T, S)`` (HF models; computed only when hooked)
``blocks.{i}.attn.z``       the heads' outputs before ``W_O`` ``(B, T, H, Dh)``: a hook may return an edited copy
``blocks.{i}.attn.out``     the attention block's output, ``z W_O + b`` ``(B, T, D)``
``blocks.{i}.mlp.out``      the MLP's output ``(B, T, D)`` (where the block has one MLP module)
``final_norm``              the final norm's output, the unembedding's input ``(B, T, D)``
``logits``                  the unembedding's output ``(B, T, V)``
==========================  ====================================================================================

For an HF model nothing is looked up by family: one short forward pass runs with the workbench's own attention
function registered in ``transformers``' ``AttentionInterface`` (every decoder family of transformers 5 calls it with
post-RoPE queries and keys, values, its scale, sliding window and soft-cap), and the parts are found by data flow:
the attention modules are the ones that call it, the blocks the ``ModuleList`` whose items hold them, ``W_O`` the
linear layer whose input equals the heads' outputs, the final norm the module whose output enters the unembedding.
A model whose attention does not call the interface gets :class:`LayoutError` naming its class and the missing part.

While hooks are active (and only then) the model runs that attention function, which computes
``softmax(Q K^T * scaling + mask)`` itself (soft-cap and grouped-query heads included), so it can also apply a
long-context mask policy (:meth:`ModelLayout.hooks` ``mask=``) to any family.

>>> from workbench.models import TinyGPT, GPTConfig
>>> lay = layout_of(TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, pos="rope")))
>>> lay.n_layer, lay.n_head, lay.head_dim, lay.positions
(2, 2, 16, 'rope')
"""
from __future__ import annotations

import contextlib
import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .interface import ModelError


class LayoutError(ModelError):
    """A model's parts could not be found (names the model class and the missing part)."""


ATTN_IMPL = "workbench"


def _root(model) -> torch.nn.Module:
    if isinstance(model, torch.nn.Module):
        return model
    m = getattr(model, "hf", None)
    if isinstance(m, torch.nn.Module):
        return m
    raise LayoutError(f"{type(model).__name__} has no torch module: wrap an HF model with from_hf or use a TinyGPT")


def _in_out(mod: torch.nn.Module) -> torch.Tensor:
    """``M`` ``(in, out)`` with ``mod(x) = x @ M (+ bias)``: ``weight^T`` for ``nn.Linear``, ``weight`` for GPT-2's
    ``Conv1D``."""
    if isinstance(mod, torch.nn.Linear):
        return mod.weight.T
    if type(mod).__name__ == "Conv1D":
        return mod.weight
    raise LayoutError(f"unexpected projection type {type(mod).__name__} (need nn.Linear or Conv1D)")


def _tensor_of(x):
    """The hidden-state tensor of a module output (a tensor, or the first item of a tuple / ModelOutput)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return None


def _replace_tensor(out, new):
    if isinstance(out, torch.Tensor):
        return new
    return (new, *out[1:]) if isinstance(out, tuple) else [new, *out[1:]]


# -- the attention function every HF family calls while hooks are active ---------------------------------------------

@dataclass
class _Session:
    """What one ``hooks()`` block asks of the attention function."""

    layer_of: dict  # id(attention module) -> layer
    fns: dict  # point name -> fn
    mask: Callable | None = None  # (q_pos (T,), k_pos (S,)) -> bool (T, S), and-ed with causal + the layer's window
    positions: Callable | None = None  # (layer, T, S) -> (q_pos, k_pos) absolute positions; default S - T + arange
    seen: dict = field(default_factory=dict)  # layer -> kwargs seen (scaling, sliding_window, softcap)


_local = threading.local()


def _sessions_for(module) -> tuple[list[_Session], int | None]:
    """Every active session (outermost first) that knows ``module``, and its layer: nested ``hooks()`` blocks
    compose (an ablation outside, a mask policy inside, both apply)."""
    found, layer = [], None
    for s in getattr(_local, "stack", []):
        i = s.layer_of.get(id(module))
        if i is not None:
            found.append(s)
            layer = i
    return found, layer


def _apply(sessions, name, t):
    for s in sessions:
        fn = s.fns.get(name)
        if fn is not None:
            r = fn(t)
            t = t if r is None else r
    return t


def _workbench_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``softmax(Q K^T * scaling + mask) V`` for query ``(B, H, T, Dh)``, key/value ``(B, n_kv, S, Dh)``; returns
    ``(out (B, T, H, Dh), probs or None)`` as transformers' attention functions do."""
    sessions, layer = _sessions_for(module)
    if kwargs.get("s_aux") is not None:
        raise LayoutError(f"{type(module).__name__}: learned attention sinks (s_aux) are not supported")
    B, H, T, Dh = query.shape
    S = key.size(2)
    scaling = Dh ** -0.5 if scaling is None else float(scaling)
    window = kwargs.get("sliding_window")
    softcap = kwargs.get("softcap")
    pre = f"blocks.{layer}.attn."
    for s in sessions:
        s.seen[layer] = {"scaling": scaling, "sliding_window": int(window) if window else None,
                         "softcap": float(softcap) if softcap else None, "n_kv": key.size(1), "head_dim": Dh}
    query = _apply(sessions, pre + "q", query)
    key = _apply(sessions, pre + "k", key)
    value = _apply(sessions, pre + "v", value)
    positions = next((s.positions for s in reversed(sessions) if s.positions is not None), None)
    if positions is not None:
        q_pos, k_pos = positions(layer, T, S)
    else:
        k_pos = torch.arange(S, device=query.device)
        q_pos = k_pos[S - T:]
    allowed = k_pos[None, :] <= q_pos[:, None]
    if window:  # the layer's own sliding window (Mistral, Gemma 2/3, ...)
        allowed = allowed & (k_pos[None, :] > q_pos[:, None] - int(window))
    for s in sessions:
        if s.mask is not None:
            allowed = allowed & s.mask(q_pos, k_pos)
    if attention_mask is not None and attention_mask.dim() == 4:  # a padding mask from the caller, if any
        pad = attention_mask[:, :, :, :S]
        allowed = allowed & (pad if pad.dtype == torch.bool else pad > torch.finfo(pad.dtype).min / 2)
    rep = H // key.size(1)
    k = key.repeat_interleave(rep, dim=1) if rep > 1 else key
    v = value.repeat_interleave(rep, dim=1) if rep > 1 else value
    hooked_pattern = any(pre + "pattern" in s.fns for s in sessions)
    if softcap or hooked_pattern or kwargs.get("output_attentions", False):
        scores = (query @ k.transpose(-2, -1)) * scaling
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = scores.float().softmax(-1).to(query.dtype)
        probs = _apply(sessions, pre + "pattern", probs)
        out = probs @ v
    else:
        probs = None
        out = F.scaled_dot_product_attention(query, k, v, attn_mask=allowed, scale=scaling)
    out = _apply(sessions, pre + "z", out.transpose(1, 2).contiguous())  # (B, T, H, Dh)
    return out, probs


def _register_attention():
    from transformers import AttentionInterface

    if ATTN_IMPL not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_IMPL, _workbench_attention)


@contextlib.contextmanager
def _attention_impl(root: torch.nn.Module):
    """Within the block, every attention module of ``root`` runs :func:`_workbench_attention`."""
    _register_attention()
    cfgs = {id(m.config): m.config for m in root.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")}
    before = {k: c._attn_implementation for k, c in cfgs.items()}
    for c in cfgs.values():
        c._attn_implementation = ATTN_IMPL
    try:
        yield
    finally:
        for k, c in cfgs.items():
            c._attn_implementation = before[k]


# -- layouts -----------------------------------------------------------------------------------------------------------

@dataclass
class ModelLayout:
    """Where a model's parts are. Build with :func:`layout_of`.

    ``blocks``, ``attn``, ``w_o`` (the module whose input is the heads' outputs), ``mlp`` (one module per block, or
    None): one per layer. ``positions``: ``rope``, ``absolute``, ``alibi`` or ``none``. ``sliding_window``,
    ``softcap``, ``scaling``: per layer, as the model's attention uses them.
    """

    kind: str  # "tinygpt" or "hf"
    root: torch.nn.Module
    blocks: list
    attn: list
    w_o: list
    mlp: list
    embed: torch.nn.Module
    unembed: torch.nn.Module
    final_norm: torch.nn.Module | None
    n_head: int
    n_kv: int
    head_dim: int
    d_model: int
    positions: str
    scaling: list
    sliding_window: list
    softcap: list
    model_class: str = ""

    @property
    def n_layer(self) -> int:
        return len(self.blocks)

    def points(self) -> list[str]:
        """Every named point of this model (see the module docstring)."""
        names = ["embed"]
        for i in range(self.n_layer):
            p = f"blocks.{i}."
            names += [p + "resid_pre", p + "attn.q", p + "attn.k", p + "attn.v", p + "attn.z", p + "attn.out"]
            if self.kind == "hf":
                names.append(p + "attn.pattern")
            if self.mlp[i] is not None:
                names.append(p + "mlp.out")
            names.append(p + "resid_post")
        if self.final_norm is not None:
            names.append("final_norm")
        return names + ["logits"]

    def w_out(self, layer: int) -> torch.Tensor:
        """``W_O`` of one layer as ``(H, Dh, D)``: head ``h`` writes ``z_h @ W_O[h]`` into the residual stream."""
        M = _in_out(self.w_o[layer]).detach()  # (H * Dh, D)
        return M.reshape(self.n_head, self.head_dim, M.size(1))

    def w_out_bias(self, layer: int) -> torch.Tensor | None:
        b = getattr(self.w_o[layer], "bias", None)
        return None if b is None else b.detach()

    @contextlib.contextmanager
    def hooks(self, fns: dict | None = None, mask: Callable | None = None, positions: Callable | None = None):
        """Run the model with ``fns`` (point name -> ``fn(tensor)``, which may return an edited tensor) attached,
        and the attention ``mask`` (``(q_pos (T,), k_pos (S,)) -> bool (T, S)``, which further restricts causal
        attention and the layer's own sliding window) and, for HF models, ``positions`` (``(layer, T, S) -> (q_pos, k_pos)``); everything is removed on exit."""
        fns = dict(fns or {})
        known = set(self.points())
        for name in fns:
            if name not in known:
                raise LayoutError(f"{self.model_class} has no point {name!r}; points look like "
                                  f"'blocks.0.attn.z' (see ModelLayout.points())")
        handles = []
        try:
            self._attach_module_hooks(fns, handles)
            with contextlib.ExitStack() as stack:
                if self.kind == "hf":
                    attn_fns = {k: v for k, v in fns.items() if ".attn." in k and not k.endswith(".attn.out")}
                    session = _Session({id(a): i for i, a in enumerate(self.attn)}, attn_fns, mask, positions)
                    stack.enter_context(_attention_impl(self.root))
                    stack.enter_context(_pushed(session))
                else:
                    self._tiny_attention_hooks(fns, mask, handles, stack)
                yield self
        finally:
            for h in handles:
                h.remove()

    # -- hook plumbing ----------------------------------------------------------------------------------------
    def _attach_module_hooks(self, fns, handles):
        def out_hook(fn):
            def hook(mod, args, out):
                t = _tensor_of(out)
                r = fn(t)
                return None if r is None else _replace_tensor(out, r)
            return hook

        def in_hook(fn):
            def hook(mod, args, kwargs):
                if args:
                    r = fn(args[0])
                    return None if r is None else ((r, *args[1:]), kwargs)
                key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
                r = fn(kwargs[key])
                return None if r is None else (args, {**kwargs, key: r})
            return hook

        for name, fn in fns.items():
            parts = name.split(".")
            if name == "embed":
                handles.append(self.blocks[0].register_forward_pre_hook(in_hook(fn), with_kwargs=True))
            elif name == "final_norm":
                handles.append(self.final_norm.register_forward_hook(out_hook(fn)))
            elif name == "logits":
                handles.append(self.unembed.register_forward_hook(out_hook(fn)))
            elif parts[0] == "blocks":
                i, what = int(parts[1]), ".".join(parts[2:])
                if what == "resid_pre":
                    handles.append(self.blocks[i].register_forward_pre_hook(in_hook(fn), with_kwargs=True))
                elif what == "resid_post":
                    handles.append(self.blocks[i].register_forward_hook(out_hook(fn)))
                elif what == "attn.out":
                    handles.append(self.w_o[i].register_forward_hook(out_hook(fn)))
                elif what == "mlp.out":
                    handles.append(self.mlp[i].register_forward_hook(out_hook(fn)))

    def _tiny_attention_hooks(self, fns, mask, handles, stack):
        H, Dh = self.n_head, self.head_dim
        for i in range(self.n_layer):
            p = f"blocks.{i}.attn."
            if p + "pattern" in fns:
                raise LayoutError(f"TinyGPT has no {p}pattern point: its probabilities come from q and k "
                                  "(workbench.attention.AttentionProbe), or forward(capture=True)")
            for part in ("q", "k", "v"):
                fn = fns.get(p + part)
                if fn is not None:
                    mod = getattr(self.attn[i], "hook_" + part)
                    handles.append(mod.register_forward_hook(lambda m, args, out, fn=fn: fn(out)))
            fn = fns.get(p + "z")
            if fn is not None:
                def pre(mod, args, fn=fn):
                    y = args[0]
                    r = fn(y.view(*y.shape[:-1], H, Dh))
                    return None if r is None else (r.reshape(y.shape), *args[1:])
                handles.append(self.w_o[i].register_forward_pre_hook(pre))
        if mask is not None:
            old = self.root.mask_fn
            self.root.mask_fn = mask
            stack.callback(setattr, self.root, "mask_fn", old)


@contextlib.contextmanager
def _pushed(session: _Session):
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(session)
    try:
        yield
    finally:
        stack.remove(session)


_LAYOUTS: "weakref.WeakKeyDictionary[torch.nn.Module, ModelLayout]" = weakref.WeakKeyDictionary()


def layout_of(model) -> ModelLayout:
    """The :class:`ModelLayout` of a TinyGPT or a ``from_hf`` model (found once, then cached per model)."""
    root = _root(model)
    lay = _LAYOUTS.get(root)
    reason = getattr(root, "no_attention_reason", None)  # a model without attention says why (RecurrentLM)
    if lay is None and reason:
        raise LayoutError(f"{type(root).__name__} has no attention layout: {reason}")
    if lay is None:
        from .tinygpt import TinyGPT

        lay = _tiny_layout(root) if isinstance(root, TinyGPT) else _hf_layout(model, root)
        _LAYOUTS[root] = lay
    return lay


def _tiny_layout(m) -> ModelLayout:
    c = m.config
    L = c.n_layer
    return ModelLayout(
        "tinygpt", m, list(m.blocks), [b.attn for b in m.blocks], [b.attn.proj for b in m.blocks],
        [b.mlp for b in m.blocks], m.wte, m.lm_head, m.ln_f, c.n_head, c.n_head, c.head_dim, c.n_embd,
        {"learned": "absolute"}.get(c.pos, c.pos), [c.head_dim ** -0.5] * L, [None] * L, [None] * L, "TinyGPT")


@torch.no_grad()
def _hf_layout(model, root) -> ModelLayout:
    cls = type(root).__name__
    try:
        _register_attention()
    except ImportError:
        raise LayoutError(f"{cls}: finding an HF model's parts needs transformers") from None
    n_layer = getattr(getattr(model, "config", None), "n_layer", None)
    # 1. one short forward pass with the workbench attention function: which modules call it, in order
    called: list = []
    session = _Session({}, {})
    modules = {id(m): m for m in root.modules()}

    def find_caller(module):
        if id(module) not in session.layer_of:
            session.layer_of[id(module)] = len(called)
            called.append(module)
        return session, session.layer_of[id(module)]

    # every module may be an attention module until it calls the function: register all, then keep the callers
    class _Lazy(dict):
        def get(self, key, default=None):
            if key in modules:
                return find_caller(modules[key])[1]
            return default

    session.layer_of = _Lazy()
    z_seen: dict = {}

    def z_recorder(i):
        def fn(t):
            z_seen[i] = t.detach().reshape(*t.shape[:2], -1)
        return fn

    # z recorders are keyed by layer index, which is only known when a module calls: wrap fns lazily
    class _Fns(dict):
        def get(self, key, default=None):
            if key.endswith(".attn.z"):
                return z_recorder(int(key.split(".")[1]))
            return default

        def __contains__(self, key):
            return False

    session.fns = _Fns()
    # forward pre-hooks on every linear layer (W_O candidates), on every module (rotary kwargs), and forward hooks on
    # every module (final norm): data flow decides
    lin_inputs: dict = {}
    outputs: dict = {}
    rotary: set = set()
    handles = []
    unembed = root.get_output_embeddings() if hasattr(root, "get_output_embeddings") else None
    embed = root.get_input_embeddings() if hasattr(root, "get_input_embeddings") else None
    if unembed is None or embed is None:
        raise LayoutError(f"{cls} has no input/output embeddings (get_input_embeddings/get_output_embeddings): "
                          "the workbench needs a causal LM with an unembedding head")
    unembed_in: list = []
    for name, mod in root.named_modules():
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D":
            handles.append(mod.register_forward_pre_hook(
                lambda m, args, n=name: lin_inputs.setdefault(n, args[0].detach()) if args else None))
        handles.append(mod.register_forward_pre_hook(
            lambda m, args, kwargs, n=name: rotary.add(n) if isinstance(kwargs.get("position_embeddings"), tuple)
            else None, with_kwargs=True))
        handles.append(mod.register_forward_hook(
            lambda m, args, out, n=name: outputs.__setitem__(n, out) if isinstance(out, torch.Tensor) else None))
    handles.append(unembed.register_forward_pre_hook(lambda m, args: unembed_in.append(args[0].detach())))
    dev = next(root.parameters()).device
    ids = torch.arange(5, device=dev)[None] % max(1, int(getattr(model.config, "vocab_size", 5)))
    try:
        with _attention_impl(root), _pushed(session):
            root(input_ids=ids, use_cache=False)
    except LayoutError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here means the layout cannot be found this way
        raise LayoutError(f"{cls}: a probing forward pass with the workbench attention function failed: "
                          f"{type(e).__name__}: {e}") from None
    finally:
        for h in handles:
            h.remove()
    if not called:
        raise LayoutError(
            f"{cls}: its attention modules do not call transformers' attention interface (ALL_ATTENTION_FUNCTIONS), "
            "so queries, keys and head outputs cannot be found; attention capture falls back to the eager switch")
    if n_layer is not None and len(called) != n_layer:
        raise LayoutError(f"{cls}: {len(called)} attention calls in one forward pass for {n_layer} layers")
    names = {id(m): n for n, m in root.named_modules()}
    attn_names = [names[id(a)] for a in called]
    # 2. the blocks: the ModuleList whose i-th item holds the i-th attention module
    blocks = None
    for n, mod in root.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == len(called):
            prefix = n + "."
            if all(attn_names[i].startswith(f"{prefix}{i}.") for i in range(len(called))):
                blocks = list(mod)
                block_names = [f"{n}.{i}" for i in range(len(called))]
                break
    if blocks is None:
        raise LayoutError(f"{cls}: no ModuleList of blocks holds its attention modules {attn_names[:2]}...")
    # 3. W_O: the linear layer inside the attention module (or block) whose input is the heads' outputs
    w_o = []
    for i, a in enumerate(attn_names):
        z = z_seen.get(i)
        found = None
        for scope in (a + ".", block_names[i] + "."):
            for n, x in lin_inputs.items():
                if n.startswith(scope) and z is not None and x.shape == z.shape and torch.allclose(x, z, atol=1e-6):
                    found = dict(root.named_modules())[n]
                    break
            if found is not None:
                break
        if found is None:
            raise LayoutError(f"{cls}: no linear layer in {a} takes the heads' outputs (the output projection W_O)")
        w_o.append(found)
    seen = session.seen
    q0 = seen[0]
    H = _in_out(w_o[0]).size(0) // q0["head_dim"]
    D = _in_out(w_o[0]).size(1)
    # 4. the final norm: the module outside the blocks whose output enters the unembedding
    final_norm = None
    if unembed_in:
        x = unembed_in[-1]
        all_mods = dict(root.named_modules())
        cands = [all_mods[n] for n, out in outputs.items()
                 if n and out.shape == x.shape and not any(n.startswith(b + ".") for b in block_names)
                 and not any(True for _ in all_mods[n].children()) and torch.equal(out.detach(), x)]
        norms = [m for m in cands if "norm" in type(m).__name__.lower()]
        final_norm = (norms or cands or [None])[-1]  # None: the family unembeds the last block's output directly
    # 5. positions and MLPs
    if any(n in rotary for n in attn_names):
        positions = "rope"
    elif any(isinstance(m, torch.nn.Embedding) and m is not embed for m in root.modules()):
        positions = "absolute"
    else:
        positions = "none"
    mlp = []
    for b in blocks:
        cand = [m for n, m in b.named_children() if "mlp" in type(m).__name__.lower()] or \
            [m for n, m in b.named_children() if n in ("mlp", "feed_forward", "ffn")]
        mlp.append(cand[0] if len(cand) == 1 else None)  # None: the MLP is not one module (OPT's fc1/fc2)
    L = len(blocks)
    return ModelLayout(
        "hf", root, blocks, list(called), w_o, mlp, embed, unembed, final_norm, H, seen[0]["n_kv"], q0["head_dim"], D,
        positions, [seen[i]["scaling"] for i in range(L)], [seen[i]["sliding_window"] for i in range(L)],
        [seen[i]["softcap"] for i in range(L)], cls)


__all__ = ["LayoutError", "ModelLayout", "layout_of"]
