"""A norm with its scale frozen at a measured input: the linear map that makes a residual stream's parts add up.

LayerNorm and RMSNorm (with or without a gain, Gemma's ``1 + w``, a bias or not) all have the form
``N(x) = centre(x) * g / sigma(x) + b``. With ``sigma`` frozen at the value it had for the real input ``x``, the map
``L(c) = centre(c) * g / sigma`` is linear, so for ``x = sum_i c_i``: ``N(x) = sum_i L(c_i) + b`` exactly. Direct logit
attribution pushes every component through the final norm (and through post-attention norms, Gemma 2/3, OLMo 2)
this way.

The form is found by probing the module, never by its class or family: ``b = N(0)``; it centres when
``N(x + k) == N(x)`` for a constant ``k``; the gain ``g`` comes from one large probe vector (where ``eps`` is
negligible); ``sigma`` is measured at the real ``x``; and ``L(x) + b == N(x)`` is checked every time.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..models.layout import LayoutError, layout_of


@dataclass
class NormForm:
    """What a norm does, probed once: ``centres`` (subtracts the mean), ``gain`` ``(D,)`` and ``bias`` ``(D,)``
    (float64)."""

    centres: bool
    gain: torch.Tensor
    bias: torch.Tensor


@dataclass
class FrozenNorm:
    """A norm linearised at one input: :meth:`linear` is ``L(c) = centre(c) * gain / scale`` for ``c`` ``(..., D)``;
    ``norm(x) == linear(x) + bias``. ``scale`` is the norm's ``sigma`` measured at ``x`` (1 for no norm)."""

    form: NormForm
    scale: float

    @property
    def bias(self) -> torch.Tensor:
        return self.form.bias

    def linear(self, c: torch.Tensor) -> torch.Tensor:
        c = c.double()
        if self.form.centres:
            c = c - c.mean(-1, keepdim=True)
        return c * self.form.gain / self.scale


_FORMS: "weakref.WeakKeyDictionary[torch.nn.Module, NormForm]" = weakref.WeakKeyDictionary()


def _name(norm) -> str:
    return type(norm).__name__


@torch.no_grad()
def norm_form(norm: torch.nn.Module, d_model: int) -> NormForm:
    """Probe ``norm`` (a module mapping ``(..., D)`` to ``(..., D)``) for its :class:`NormForm`; cached per module."""
    f = _FORMS.get(norm)
    if f is not None:
        return f
    p = next(norm.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else torch.device("cpu")

    def run(x):
        return norm(x.to(dtype).to(device)[None, None]).reshape(-1).double()

    bias = run(torch.zeros(d_model))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(d_model, generator=g, dtype=torch.float64)
    centres = bool(torch.allclose(run(x + 5.0), run(x), atol=1e-4, rtol=1e-3))
    # a large probe with no zero entries after centring: +-1 alternating, times a big scale (eps is negligible)
    s = torch.ones(d_model, dtype=torch.float64)
    s[1::2] = -1.0
    s[0] = 2.0  # makes the mean nonzero and no centred entry zero for any D
    v = 1e3 * s
    vc = v - v.mean() if centres else v
    sigma = vc.pow(2).mean().sqrt()
    gain = (run(v) - bias) * sigma / vc
    f = NormForm(centres, gain, bias)
    _FORMS[norm] = f
    return f


@torch.no_grad()
def freeze(norm: torch.nn.Module | None, x: torch.Tensor, what: str = "norm") -> FrozenNorm:
    """The norm linearised at the real input ``x`` ``(D,)``: ``sigma`` measured there, and ``linear(x) + bias`` checked
    against ``norm(x)`` (a :class:`LayoutError` names the module when it is not of the form above). ``norm=None``
    (a family without that norm) gives the identity."""
    D = x.size(-1)
    if norm is None:
        return FrozenNorm(NormForm(False, torch.ones(D, dtype=torch.float64, device=x.device),
                                   torch.zeros(D, dtype=torch.float64, device=x.device)), 1.0)
    form = norm_form(norm, D)
    gain, bias = form.gain.to(x.device), form.bias.to(x.device)
    form_here = NormForm(form.centres, gain, bias)
    p = next(norm.parameters(), None)
    y = norm(x.reshape(1, 1, D).to(p.dtype if p is not None else x.dtype)).reshape(-1).double() - bias
    xd = x.double()
    u = (xd - xd.mean()) * gain if form.centres else xd * gain
    den = float(u @ y)
    if den == 0.0 or not torch.isfinite(y).all():
        raise LayoutError(f"the {what} ({_name(norm)}) gives no usable output at the measured input, so its scale "
                          "cannot be frozen")
    scale = float(u @ u) / den
    frozen = FrozenNorm(form_here, scale)
    err = float((frozen.linear(xd) - y).abs().max())
    tol = 1e-4 * (1.0 + float(y.abs().max()))
    if err > tol:
        raise LayoutError(f"the {what} ({_name(norm)}) is not of the form centre(x) * g / sigma(x) + b (frozen at the "
                          f"measured input it misses by {err:.3g}): its scale cannot be frozen for attribution")
    return frozen


_POST: "weakref.WeakKeyDictionary[torch.nn.Module, list]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def post_attention_norms(model) -> list:
    """Per layer, the module that normalises the attention block's output before it enters the residual stream
    (Gemma 2/3 and OLMo 2's ``post_attention_layernorm``), or None. Found by data flow on a short probe: the one leaf
    module of the block, outside the attention module, whose input equals ``attn.out`` and which changes it
    (dropout, an identity in eval mode, does not count). Cached per model."""
    from .run import _device

    lay = layout_of(model)
    found = _POST.get(lay.root)
    if found is not None:
        return found
    outs: dict = {}
    seen: list = []  # (layer, module, input, output) of every leaf module of the blocks
    handles = []
    for i, block in enumerate(lay.blocks):
        inside = {id(m) for m in lay.attn[i].modules()} | {id(lay.w_o[i])}
        for name, mod in block.named_modules():
            if id(mod) in inside or any(True for _ in mod.children()):
                continue

            def hook(m, args, kwargs, out, i=i):
                x = args[0] if args else kwargs.get("hidden_states")
                if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and out.shape == x.shape:
                    seen.append((i, m, x.detach(), out.detach()))
            handles.append(mod.register_forward_hook(hook, with_kwargs=True))
    n = min(5, int(model.config.block_size))
    ids = (torch.arange(n, device=_device(model)) % int(model.config.vocab_size))[None]
    fns = {f"blocks.{i}.attn.out": (lambda t, i=i: outs.__setitem__(i, t.detach())) for i in range(lay.n_layer)}
    try:
        with lay.hooks(fns):
            model.forward(ids)
    finally:
        for h in handles:
            h.remove()
    found = []
    for i in range(lay.n_layer):
        a = outs[i]
        cands = [m for j, m, x, y in seen if j == i and x.shape == a.shape
                 and torch.allclose(x, a, atol=1e-6) and not torch.allclose(y, x, atol=1e-6)]
        if len(cands) > 1:
            raise LayoutError(f"{lay.model_class}: {len(cands)} modules of block {i} take the attention output "
                              f"({', '.join(type(m).__name__ for m in cands)}): cannot tell which one writes it")
        found.append(cands[0] if cands else None)
    _POST[lay.root] = found
    return found


__all__ = ["FrozenNorm", "NormForm", "freeze", "norm_form", "post_attention_norms"]
