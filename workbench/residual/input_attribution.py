"""Input attribution: how much each prompt token contributed to the log-probability of one predicted token.

Three methods, one result type (:class:`InputAttribution`, one score per input token):

* ``gradient_x_input``: ``sum_d  e[t, d] * d log p(target) / d e[t, d]`` at the input.
* ``integrated_gradients``: ``sum_d (e - b)[t, d] * integral_0^1 d log p / d e (b + a (e - b)) da`` (Sundararajan
  et al. 2017), the integral approximated by a quadrature rule; by completeness the scores sum to
  ``log p(target | e) - log p(target | b)`` up to the quadrature error.
* ``occlusion``: replace one input token at a time (all replacements in one batch) and record how much the target's
  log-probability drops, as the replacement step of ReAGent (Zhao & Shan 2024) does.

``e`` is the output of the model's token-embedding module (``layout_of(model).embed``: ``nn.Embedding`` for most
families, Gemma's scaled embedding); position embeddings, if any, are added after it and are not attributed. This is
the layer Captum's ``LayerIntegratedGradients(forward_fn, layer=<that module>)`` attributes to, so
:func:`integrated_gradients` with ``method="gausslegendre"`` (Captum's default rule) equals Captum's result.

>>> from workbench.models import TinyGPT, GPTConfig
>>> from workbench.tokenizers import ByteTokenizer
>>> m = TinyGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=257), ByteTokenizer()).eval()
>>> a = integrated_gradients(m, "hello", target="!", steps=32)
>>> a.scores.shape, a.target_token, abs(a.completeness_gap) < 1e-3
((5,), '!', True)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from ..models.layout import layout_of
from .errors import OutOfRangeError, ResidualError
from .run import check_index, encode

METHODS = ("grad_x_input", "integrated_gradients", "occlusion")
RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


class TargetTokenError(ResidualError):
    """A target the tokenizer cannot produce: text that is not exactly one token, or an id without text."""


@dataclass
class InputAttribution:
    """One score per prompt token for the log-probability of ``target_id`` predicted at ``position``.

    ``ids`` ``(T,)`` and ``tokens`` (printable labels) are the prompt; ``scores`` ``(T,)`` (for the gradient methods
    summed over the embedding dimension; positive = the token raised the target's log-probability). ``output`` is
    ``log p(target)`` at the input; ``baseline_output`` the same at the integrated-gradients baseline (else None).
    """

    method: str
    ids: np.ndarray
    tokens: list
    scores: np.ndarray
    target_id: int
    position: int
    output: float
    baseline_output: float | None = None
    target_token: str = ""
    steps: int | None = None
    rule: str | None = None

    @property
    def completeness_gap(self) -> float | None:
        """``scores.sum() - (output - baseline_output)`` for integrated gradients (the quadrature error), else None."""
        if self.baseline_output is None:
            return None
        return float(self.scores.sum()) - (self.output - self.baseline_output)


# -- quadrature --------------------------------------------------------------------------------------------------------

def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` ``(steps,)`` approximating ``integral_0^1 f(a) da ~= sum_k w_k f(a_k)``.

    ``gausslegendre``: Gauss-Legendre nodes mapped to [0, 1] (Captum's default, exact for polynomials of degree
    ``2 steps - 1``); ``riemann_trapezoid``: the trapezoid rule on ``steps`` equally spaced points including both ends
    (weights ``1/(steps-1)``, halved at the ends, summing to 1; Captum's rule of that name uses ``1/steps`` instead,
    so its result is ``(steps - 1) / steps`` times this one); ``riemann_left/right/middle``: ``steps`` boxes of width
    ``1/steps``.
    """
    steps = int(steps)
    if rule not in RULES:
        raise ResidualError(f"unknown integration rule {rule!r}: use one of {list(RULES)}")
    if steps < (2 if rule == "riemann_trapezoid" else 1):
        raise ResidualError(f"steps must be at least {2 if rule == 'riemann_trapezoid' else 1} for {rule}, got {steps}")
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (x + 1.0), 0.5 * w
    if rule == "riemann_trapezoid":
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), w
    k = np.arange(steps, dtype=np.float64)
    shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return (k + shift) / steps, np.full(steps, 1.0 / steps)


# -- running the model on edited embeddings, with gradients ------------------------------------------------------------

@contextlib.contextmanager
def _eval_mode(root: torch.nn.Module):
    """Dropout off for the duration (attribution of a model in training mode would be random); restored after."""
    was = root.training
    root.eval()
    try:
        yield
    finally:
        root.train(was)


def _forward_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, T, V)`` from the model's torch module, with autograd on (the HF adapter's ``forward`` turns it
    off outside training)."""
    lay = layout_of(model)
    if lay.kind == "hf":
        return lay.root(input_ids=ids, use_cache=False).logits
    return lay.root(ids).logits


def token_embeddings(model, ids: torch.Tensor) -> torch.Tensor:
    """The token-embedding module's output ``(B, T, D)`` for ids ``(B, T)`` (no gradient)."""
    with torch.no_grad():
        return layout_of(model).embed(ids).detach()


def log_probs_at(model, ids: torch.Tensor, position: int, embeds: torch.Tensor | None = None) -> torch.Tensor:
    """``log_softmax`` of the logits at ``position``, ``(B, V)`` float, for ids ``(B, T)``; with ``embeds``
    ``(B, T, D)`` the token-embedding module's output is replaced by them (gradients flow back to ``embeds``)."""
    lay = layout_of(model)
    handle = None
    if embeds is not None:
        handle = lay.embed.register_forward_hook(lambda mod, args, out: embeds.to(out.dtype))
    try:
        with _eval_mode(lay.root):
            logits = _forward_logits(model, ids)
    finally:
        if handle is not None:
            handle.remove()
    return logits[:, position].float().log_softmax(-1)


# -- arguments ---------------------------------------------------------------------------------------------------------

def _single_token(model, text: str, what: str) -> int:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise TargetTokenError(f"this model has no tokenizer: give the {what} as a token id")
    if not text:
        raise TargetTokenError(f"the {what} text is empty: give text that encodes to exactly one token")
    ids = list(tok.encode(text))
    bos = getattr(tok, "bos_id", None)
    if bos is not None and ids[:1] == [bos]:
        ids = ids[1:]
    if len(ids) != 1:
        raise TargetTokenError(f"the {what} {text!r} encodes to {len(ids)} tokens {ids}: give text that is exactly "
                               "one token of this tokenizer, or a token id")
    return ids[0]


def resolve_token(model, token, what: str = "target") -> int:
    """A token id from an id or from text that encodes to exactly one token; an id outside the model's vocabulary is
    an :class:`OutOfRangeError`, one the tokenizer has no text for a :class:`TargetTokenError`."""
    if isinstance(token, str):
        return _single_token(model, token, what)
    if isinstance(token, (bool, float)) or not isinstance(token, (int, np.integer, torch.Tensor)):
        raise TargetTokenError(f"the {what} must be a token id or text, got {type(token).__name__}")
    tid = int(token)
    V = int(model.config.vocab_size)
    if not 0 <= tid < V:
        raise OutOfRangeError(f"{what} token id {tid} is out of range [0, {V})")
    tok = getattr(model, "tokenizer", None)
    if tok is not None and hasattr(tok, "is_decodable") and not tok.is_decodable(tid):
        raise TargetTokenError(f"{what} token id {tid} has no text in this tokenizer (a padded or unassigned id), "
                               "so the tokenizer can never produce it: pick an id the tokenizer can decode")
    return tid


def _token_strs(model, ids) -> list:
    tok = getattr(model, "tokenizer", None)
    if tok is None or not hasattr(tok, "token_str"):
        return [str(int(i)) for i in ids]
    return [tok.token_str(int(i)) for i in ids]


def _prepare(model, text_or_ids, target, position):
    ids = encode(model, text_or_ids)
    pos = check_index("position", position, ids.size(1))
    if target is None:
        with torch.no_grad():
            tid = int(log_probs_at(model, ids, pos).argmax(-1)[0])
    else:
        tid = resolve_token(model, target)
    return ids, pos, tid


def _result(model, method, ids, scores, tid, pos, output, baseline_output=None, **kw) -> InputAttribution:
    flat = ids[0].tolist()
    return InputAttribution(method, np.asarray(flat, dtype=np.int64), _token_strs(model, flat),
                            np.asarray(scores, dtype=np.float64), tid, pos, float(output),
                            None if baseline_output is None else float(baseline_output),
                            _token_strs(model, [tid])[0], **kw)


# -- the three methods -------------------------------------------------------------------------------------------------

def gradient_x_input(model, text_or_ids, target=None, position: int = -1) -> InputAttribution:
    """Gradient x input on the token embeddings: ``scores[t] = sum_d e[t, d] * d log p(target) / d e[t, d]`` for the
    target token (an id or one-token text; default the model's greedy prediction) predicted at ``position``
    (default -1: the token after the prompt)."""
    ids, pos, tid = _prepare(model, text_or_ids, target, position)
    e = token_embeddings(model, ids).float().requires_grad_(True)
    lp = log_probs_at(model, ids, pos, e)[0, tid]
    (g,) = torch.autograd.grad(lp, e)
    return _result(model, "grad_x_input", ids, (g * e).sum(-1)[0].detach().cpu().numpy(), tid, pos, lp.item())


def baseline_embeddings(model, ids: torch.Tensor, baseline) -> torch.Tensor:
    """The integrated-gradients starting point ``(1, T, D)``: ``"zeros"`` (zero token embeddings), a token (id or
    one-token text: that token's embedding at every position, like a pad baseline), or a tensor ``(T, D)``."""
    e = token_embeddings(model, ids)
    if isinstance(baseline, str) and baseline == "zeros":
        return torch.zeros_like(e, dtype=torch.float32)
    if isinstance(baseline, torch.Tensor) and baseline.dim() >= 2:
        b = baseline.detach().float().reshape(-1, *baseline.shape[-2:])
        if tuple(b.shape[1:]) != tuple(e.shape[1:]) or b.size(0) != 1:
            raise ResidualError(f"a baseline tensor must have shape {tuple(e.shape[1:])} (tokens, width), "
                                f"got {tuple(baseline.shape)}")
        return b.to(e.device)
    tid = resolve_token(model, baseline, "baseline token")
    return token_embeddings(model, torch.full_like(ids, tid)).float()


def integrated_gradients(model, text_or_ids, target=None, position: int = -1, baseline="zeros", steps: int = 64,
                         method: str = "gausslegendre", batch_size: int = 16) -> InputAttribution:
    """Integrated gradients of ``log p(target)`` at ``position`` on the token embeddings, from ``baseline`` (see
    :func:`baseline_embeddings`) to the input along a straight line, with ``steps`` points of the quadrature
    ``method`` (see :func:`quadrature`), ``batch_size`` points per forward/backward pass.

    Completeness: ``scores.sum() ~= output - baseline_output`` (``completeness_gap`` is the difference; it shrinks
    as ``steps`` grows). With ``method="gausslegendre"`` this is Captum's ``LayerIntegratedGradients`` on the
    embedding module with the same baseline and ``n_steps``.

    Baselines: zero embeddings suit models that add position embeddings after the token embeddings (GPT-2, OPT).
    In a pre-norm model without them (RoPE: Llama, docs-byte) the straight path from zero is ``a * e`` and the
    first norm undoes the scale, so the output jumps within a tiny interval near ``a = 0``, which no few-point rule
    resolves (on docs-byte the gap is about 1 nat at 64 steps, 0.1 at 256, of a 12.8 nat change). Use a token
    baseline there (``baseline=" "`` or a pad id: gap under 1e-4 at 64 steps) and watch ``completeness_gap``.
    """
    ids, pos, tid = _prepare(model, text_or_ids, target, position)
    alphas, weights = quadrature(method, steps)
    if int(batch_size) < 1:
        raise ResidualError(f"batch_size must be at least 1, got {batch_size}")
    x = token_embeddings(model, ids).float()
    base = baseline_embeddings(model, ids, baseline)
    diff = x - base
    total = torch.zeros_like(x)
    T = ids.size(1)
    for lo in range(0, len(alphas), int(batch_size)):
        a = torch.as_tensor(alphas[lo:lo + batch_size], dtype=torch.float32, device=x.device).view(-1, 1, 1)
        w = torch.as_tensor(weights[lo:lo + batch_size], dtype=torch.float32, device=x.device).view(-1, 1, 1)
        pts = (base + a * diff).requires_grad_(True)
        lp = log_probs_at(model, ids.expand(len(a), T), pos, pts)[:, tid]
        (g,) = torch.autograd.grad(lp.sum(), pts)
        total += (g * w).sum(0, keepdim=True)
    with torch.no_grad():
        ends = log_probs_at(model, ids.expand(2, T), pos, torch.cat([x, base]))[:, tid]
    scores = (total * diff).sum(-1)[0].cpu().numpy()
    return _result(model, "integrated_gradients", ids, scores, tid, pos, ends[0].item(), ends[1].item(),
                   steps=int(steps), rule=method)


def occlusion(model, text_or_ids, target=None, position: int = -1, replacement=None,
              batch_size: int = 64) -> InputAttribution:
    """Replace one prompt token at a time and score it by the drop in ``log p(target)`` at ``position``:
    ``scores[t] = output - log p(target | token t replaced)`` (positive = the token supported the target; tokens after
    ``position`` cannot matter and score 0).

    ``replacement``: a token id or one-token text, a list of them (the drop is averaged over the replacements), or
    None: the space token where the tokenizer has one, else id 0. All replacements run in batches of ``batch_size``.
    """
    ids, pos, tid = _prepare(model, text_or_ids, target, position)
    if replacement is None:
        reps = [_default_replacement(model)]
    elif isinstance(replacement, (list, tuple)):
        if not replacement:
            raise ResidualError("replacement is an empty list: give at least one token")
        reps = [resolve_token(model, r, "replacement") for r in replacement]
    else:
        reps = [resolve_token(model, replacement, "replacement")]
    T = ids.size(1)
    rows = []
    for r in reps:
        v = ids.repeat(T, 1)
        v[torch.arange(T, device=v.device), torch.arange(T, device=v.device)] = r
        rows.append(v)
    variants = torch.cat(rows)  # (R * T, T): row r*T + t has token t replaced by reps[r]
    with torch.no_grad():
        out = log_probs_at(model, ids, pos)[0, tid].item()
        lps = torch.cat([log_probs_at(model, variants[lo:lo + batch_size], pos)[:, tid]
                         for lo in range(0, variants.size(0), int(batch_size))])
    scores = out - lps.view(len(reps), T).mean(0)
    return _result(model, "occlusion", ids, scores.cpu().numpy(), tid, pos, out)


def _default_replacement(model) -> int:
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        try:
            return _single_token(model, " ", "replacement")
        except TargetTokenError:
            pass
    return 0


_FUNCS = {"grad_x_input": gradient_x_input, "integrated_gradients": integrated_gradients, "occlusion": occlusion}


def attribute(model, text_or_ids, method: str = "integrated_gradients", **kw) -> InputAttribution:
    """Dispatch by ``method`` name (one of :data:`METHODS`); ``kw`` go to that function."""
    if method not in _FUNCS:
        raise ResidualError(f"unknown attribution method {method!r}: use one of {list(METHODS)}")
    return _FUNCS[method](model, text_or_ids, **kw)


def attribute_generation(model, text, max_new_tokens: int, method: str = "integrated_gradients",
                         **kw) -> list[InputAttribution]:
    """Generate ``max_new_tokens`` greedily and attribute each generated token to everything before it (the prompt
    and the tokens generated so far): one :class:`InputAttribution` per new token, with growing ``ids``."""
    if method not in _FUNCS:
        raise ResidualError(f"unknown attribution method {method!r}: use one of {list(METHODS)}")
    n = int(max_new_tokens)
    if n < 1:
        raise ResidualError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    ids = encode(model, text)
    if ids.size(1) + n - 1 > int(model.config.block_size):
        raise ResidualError(f"{ids.size(1)} prompt tokens plus {n} new ones do not fit the model's context of "
                            f"{model.config.block_size}")
    out = []
    for _ in range(n):
        a = _FUNCS[method](model, ids, target=None, position=-1, **kw)
        out.append(a)
        ids = torch.cat([ids, torch.tensor([[a.target_id]], device=ids.device)], dim=1)
    return out


__all__ = ["InputAttribution", "METHODS", "RULES", "TargetTokenError", "attribute", "attribute_generation",
           "baseline_embeddings", "gradient_x_input", "integrated_gradients", "log_probs_at", "occlusion",
           "quadrature", "resolve_token", "token_embeddings"]
