"""Direct logit attribution: how much the embeddings, each attention head and each MLP write straight into one logit.

The residual stream at a position is a sum of writes: the embeddings, every head's ``z_h W_O[h]`` (through the
block's post-attention norm, frozen, where the family has one), every MLP's write, and constant biases. The final
norm with its scale frozen at the measured value (:mod:`.linear_norm`) is linear, so each write's share of the
target's logit (or of the target-minus-contrast logit difference) is ``L(write) . W_U[target]``, and the shares add
up to the model's own logit. Gemma 2's final logit soft-cap ``cap * tanh(z / cap)`` is frozen the same way, at the
ratio it had for the real logit.

An MLP's write is measured, not modelled: ``resid_post - resid_pre - attention write``, which holds for OPT (no
single MLP module), for parallel attention + MLP (GPT-NeoX, Phi) and for post-MLP norms alike.

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> m = TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=257), ByteTokenizer()).eval()
>>> a = direct_logit_attribution(m, "hello", "!")
>>> a.labels[:3], a.labels[-2:]
(['embed', 'L0H0', 'L0H1'], ['L1 MLP', 'bias'])
>>> abs(float(a.values.sum()) - a.total) < 1e-4
True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.layout import LayoutError, layout_of
from .errors import OutOfRangeError, ResidualError
from .linear_norm import freeze, post_attention_norms
from .run import check_index, encode, head_of, run_with_cache

KINDS = ("embed", "head", "mlp", "bias")


@dataclass
class Attribution:
    """Direct logit attribution of one position. ``values`` ``(C,)``: each component's share of ``total`` (the
    model's logit for ``target_id``, or its difference with ``contrast_id``), in the order ``embed``, then per
    layer its heads and its MLP, then one ``bias`` (every constant: norm and unembedding biases, ``W_O`` biases);
    ``values.sum() == total`` within 1e-4. ``layer``/``head`` ``(C,)`` are -1 where they do not apply."""

    labels: list
    kind: list
    layer: np.ndarray
    head: np.ndarray
    values: np.ndarray
    total: float
    target_id: int
    contrast_id: int | None
    position: int
    target_text: str = ""
    contrast_text: str = ""
    tokens: list | None = None  # the prompt's tokens as printable labels

    def by_layer(self, kind: str = "head") -> np.ndarray:
        """The values of one ``kind`` as a ``(n_layer, n_head)`` (heads) or ``(n_layer,)`` (MLPs) array."""
        sel = np.array([k == kind for k in self.kind])
        if kind == "head":
            L, H = int(self.layer[sel].max()) + 1, int(self.head[sel].max()) + 1
            return self.values[sel].reshape(L, H)
        return self.values[sel]


def _token_label(tok, i: int) -> str:
    return tok.token_str(i) if tok is not None and hasattr(tok, "token_str") else f"<id {i}>"


def _auto_prefix(tok) -> list:
    """The ids a tokenizer puts before every text (a BOS), found as the encoding of the empty text."""
    try:
        return [int(i) for i in tok.encode("")]
    except Exception:  # noqa: BLE001 - a tokenizer that refuses empty text adds nothing we can see
        return []


def resolve_token(model, token, what: str = "target") -> int:
    """A token given as text (must encode to exactly one token, after any BOS the tokenizer always adds) or as an
    id (must be in the model's vocabulary and, when the model has a tokenizer, have text there) -> its id.
    Otherwise :class:`ResidualError` (text) or :class:`OutOfRangeError` (id), naming what was given and what is
    allowed."""
    tok = getattr(model, "tokenizer", None)
    vocab = int(model.config.vocab_size)
    if isinstance(token, str):
        if tok is None:
            raise ResidualError(f"the {what} {token!r} is text but this model has no tokenizer: give a token id")
        ids = list(tok.encode(token))
        prefix = _auto_prefix(tok)  # a BOS the tokenizer adds to every text is not part of the answer
        if prefix and ids[:len(prefix)] == prefix and len(ids) > len(prefix):
            ids = ids[len(prefix):]
        if len(ids) != 1:
            shown = [_token_label(tok, i) for i in ids]
            raise ResidualError(f"the {what} {token!r} encodes to {len(ids)} tokens {shown}, not one: give text that "
                                "is a single token (often with its leading space) or a token id")
        return int(ids[0])
    if isinstance(token, torch.Tensor):
        if token.numel() != 1:
            raise ResidualError(f"the {what} must be one token, got a tensor of {token.numel()} elements")
        token = token.item()
    if isinstance(token, (bool, float)) or not isinstance(token, (int, np.integer)):
        raise ResidualError(f"the {what} must be text or an int token id, got {type(token).__name__}")
    i = int(token)
    if not 0 <= i < vocab:
        raise OutOfRangeError(f"the {what} id {i} is out of range: the model's vocabulary has ids 0..{vocab - 1}")
    if tok is not None and hasattr(tok, "is_decodable") and not tok.is_decodable(i):
        raise OutOfRangeError(f"the {what} id {i} has no text in the tokenizer (ids 0..{tok.vocab_size - 1} do; the "
                              f"model's embedding is padded to {vocab} rows): the model cannot be asked about it")
    return i


@dataclass
class _Writes:
    """The residual stream at one position split into writes ``(C-1, D)`` (float64) and one constant ``(D,)``."""

    vectors: torch.Tensor
    constant: torch.Tensor
    labels: list
    kind: list
    layer: list
    head: list
    resid: torch.Tensor  # the final residual at the position (D,), before the final norm
    logits: torch.Tensor  # the model's own logits at the position (V,)


def _check_close(what: str, mine: torch.Tensor, real: torch.Tensor, model_class: str):
    err = float((mine - real.double()).abs().max())
    if err > 1e-4 * (1.0 + float(real.abs().max())):
        raise LayoutError(f"{model_class}: {what} does not add up to the model's own value (off by {err:.3g}); "
                          "direct logit attribution cannot split this model")


@torch.no_grad()
def residual_writes(model, ids: torch.Tensor, position: int) -> _Writes:
    """Split the final residual stream at ``position`` of ``ids`` ``(1, T)`` into its writes (see the module
    docstring), checking on the way that the heads add up to the attention output and that every frozen
    post-attention norm reproduces its real output."""
    lay = layout_of(model)
    post = post_attention_norms(model)
    L, H = lay.n_layer, lay.n_head
    points = ["embed"]
    for i in range(L):
        points += [f"blocks.{i}.resid_pre", f"blocks.{i}.attn.z", f"blocks.{i}.attn.out", f"blocks.{i}.resid_post"]
    logits, cache = run_with_cache(model, ids, points)
    p = position
    vecs = [cache["embed"][0, p].double()]
    labels, kind, layer, head = ["embed"], ["embed"], [-1], [-1]
    constant = torch.zeros_like(vecs[0])
    for i in range(L):
        z = cache[f"blocks.{i}.attn.z"][0, p].double()  # (H, Dh)
        W = lay.w_out(i).double().to(z.device)  # (H, Dh, D)
        heads = torch.einsum("hd,hdD->hD", z, W)
        b = lay.w_out_bias(i)
        b = torch.zeros_like(heads[0]) if b is None else b.double().to(z.device)
        out = cache[f"blocks.{i}.attn.out"][0, p]
        _check_close(f"layer {i}'s heads (z_h W_O[h] + b_O)", heads.sum(0) + b, out, lay.model_class)
        if post[i] is not None:
            fz = freeze(post[i], out, f"post-attention norm of layer {i}")
            heads, b = fz.linear(heads), fz.linear(b) + fz.bias
            write = heads.sum(0) + b
            real = post[i](out.reshape(1, 1, -1)).reshape(-1)
            _check_close(f"layer {i}'s frozen post-attention norm", write, real, lay.model_class)
        else:
            write = out.double()
        mlp = (cache[f"blocks.{i}.resid_post"][0, p].double() - cache[f"blocks.{i}.resid_pre"][0, p].double()
               - write)
        vecs += list(heads) + [mlp]
        constant = constant + b
        labels += [f"L{i}H{h}" for h in range(H)] + [f"L{i} MLP"]
        kind += ["head"] * H + ["mlp"]
        layer += [i] * (H + 1)
        head += list(range(H)) + [-1]
    resid = cache[f"blocks.{L - 1}.resid_post"][0, p]
    return _Writes(torch.stack(vecs), constant, labels, kind, layer, head, resid, logits[0, p])


@torch.no_grad()
def direct_logit_attribution(model, text_or_ids, target, contrast=None, position: int = -1) -> Attribution:
    """Each component's direct share of the logit of ``target`` (text of one token, or an id) at ``position`` of the
    prompt, or of ``logit(target) - logit(contrast)``; see :class:`Attribution`. A model whose final norm or
    unembedding cannot be found (or does not reproduce its logits) raises :class:`LayoutError`."""
    ids = encode(model, text_or_ids)
    T = ids.size(1)
    p = check_index("position", position, T)
    t_id = resolve_token(model, target, "target")
    c_id = None if contrast is None else resolve_token(model, contrast, "contrast")
    lay = layout_of(model)
    hd = head_of(model)
    w = residual_writes(model, ids, p)
    fz = freeze(hd.final_norm, w.resid, "final norm")
    normed = fz.linear(w.resid) + fz.bias
    U = hd.unembed.weight.detach()  # (V, D)
    ub = getattr(hd.unembed, "bias", None)
    want = [t_id] + ([] if c_id is None else [c_id])
    raw = U[want].double() @ normed + (0.0 if ub is None else ub.detach()[want].double())
    if hd.softcap is not None:  # frozen at the measured ratio capped / raw, per logit
        capped = torch.tanh(raw / hd.softcap) * hd.softcap
        ratio = torch.where(raw == 0, torch.ones_like(raw), capped / raw)
    else:
        ratio = torch.ones_like(raw)
    sign = torch.tensor([1.0, -1.0][:len(want)], dtype=torch.float64, device=raw.device)
    direction = (sign * ratio) @ U[want].double()  # (D,)
    values = fz.linear(w.vectors) @ direction
    bias = (fz.linear(w.constant) + fz.bias) @ direction
    if ub is not None:
        bias = bias + (sign * ratio) @ ub.detach()[want].double()
    logits = w.logits.double()  # the model's own, for the total and the check
    total = float(logits[t_id] - (0.0 if c_id is None else logits[c_id]))
    vals = torch.cat([values, bias.reshape(1)]).cpu().numpy()
    err = abs(float(vals.sum()) - total)
    if err > 1e-4 * max(1.0, abs(total)):
        raise LayoutError(f"{lay.model_class}: the components add up to {float(vals.sum()):.6g}, the model's logit "
                          f"is {total:.6g}: the final norm or the unembedding is not what direct attribution assumes")
    tok = getattr(model, "tokenizer", None)
    return Attribution(
        labels=w.labels + ["bias"], kind=w.kind + ["bias"], layer=np.array(w.layer + [-1]),
        head=np.array(w.head + [-1]), values=vals, total=total, target_id=t_id, contrast_id=c_id, position=p,
        target_text=_token_label(tok, t_id), contrast_text="" if c_id is None else _token_label(tok, c_id),
        tokens=[_token_label(tok, int(i)) for i in ids[0].tolist()])


__all__ = ["Attribution", "KINDS", "direct_logit_attribution", "resolve_token", "residual_writes"]
