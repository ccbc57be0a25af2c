"""Speculative decoding (Leviathan et al. 2023, Alg. 1; Chen et al. 2023), exact for any pipeline.

A cheap draft model proposes ``gamma`` tokens ``x_1..x_g`` (each sampled from its processed distribution
``q``); the target scores all of them in one call, giving ``p`` at ``g + 1`` positions. Draft ``x_i`` is
accepted with probability ``min(1, p(x_i) / q(x_i))``; at the first rejection the next token is drawn from the
residual ``norm(max(0, p - q))``; if all ``g`` are accepted one bonus token comes from ``p``. Every emitted token
is then distributed exactly as the target's processed distribution (the tests check this by chi-square).

Expected tokens per target call for a constant acceptance rate ``a``: ``(1 - a^(g+1)) / (1 - a)``; with a draft
that costs ``c`` target calls, the wall-clock speedup is ``(1 - a^(g+1)) / ((1 - a)(g c + 1))``.

Randomness comes from :class:`NoiseStream` keyed by generated position: drafts use the ``"sample"`` stream (the
one plain :func:`sample` uses, so a perfect draft reproduces plain sampling token for token), acceptance tests
the ``"accept"`` stream and residual draws the ``"residual"`` stream. The bonus token uses ``"sample"``.

Target and draft must share a vocabulary: the same number of model ids, and tokenizers whose ids mean the same
tokens (:meth:`~workbench.tokenizers.base.Tokenizer.same_vocab`, which compares the vocabularies themselves, so
two copies of one HF tokenizer loaded from different folders match). ``mask_undecodable`` removes ids without
text from both models' distributions (see :mod:`.strategies`); the output is then distributed as the target's
masked distribution.

Lesson: ``notebooks/03_decoding.ipynb`` (5. Speculative decoding).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .. import kernels
from .fused import kernel_draw, kernel_probs, resolve_draw
from .noise import NoiseStream, sample_with_noise
from .pipeline import Pipeline, as_pipeline
from .processors import DecodingError, check_logits
from .strategies import _check_eos, _decode_text, apply_mask, model_device, prepare_prompt, undecodable_index
from .trace import SpecRound, SpeculativeResult, SpeculativeStats


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """``(1 - a^(g+1)) / (1 - a)``: expected tokens emitted per target call (``g + 1`` when ``a == 1``)."""
    if not 0.0 <= alpha <= 1.0:
        raise DecodingError(f"alpha must be in [0, 1], got {alpha}")
    if alpha >= 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def expected_speedup(alpha: float, gamma: int, c: float) -> float:
    """``(1 - a^(g+1)) / ((1 - a)(g c + 1))``: predicted wall-clock speedup over plain target decoding."""
    if c < 0:
        raise DecodingError(f"cost ratio c must be >= 0, got {c}")
    return expected_tokens_per_call(alpha, gamma) / (gamma * c + 1.0)


@dataclass
class Verdict:
    """Outcome of verifying a batch of drafts. n_accepted, rejected ``(B,)``; accept_prob ``(B, G)``;
    next_dist ``(B, V)``: the residual on rejection, else the target's distribution at the bonus position."""

    n_accepted: torch.Tensor
    rejected: torch.Tensor
    accept_prob: torch.Tensor
    next_dist: torch.Tensor


def _default_accept(px: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
    """``min(1, p(x) / q(x))``; a token with ``q(x) = 0`` cannot have been drafted, guarded anyway."""
    return torch.where(qx > 0, (px / qx.clamp_min(1e-38)).clamp(max=1.0), torch.ones_like(px))


def _default_residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p - q).clamp_min(0.0)


def verify_drafts(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u: torch.Tensor, n_draft=None,
                  accept_rule: Callable | None = None, residual_rule: Callable | None = None) -> Verdict:
    """The acceptance step, batched and model-free.

    p ``(B, G + 1, V)`` target probabilities at the ``G`` draft positions and the bonus position; q ``(B, G, V)``
    draft probabilities; drafts ``(B, G)``; u ``(B, G)`` uniforms; n_draft ``(B,)`` how many drafts each row
    really has (default ``G``). ``accept_rule(px, qx)`` and ``residual_rule(p, q)`` replace the acceptance
    probability and the unnormalised residual: they exist so tests can check that a wrong rule is caught.
    A residual with zero mass (``p == q`` up to rounding, where rejection has probability ~0) falls back to ``p``.
    """
    B, G1, V = p.shape
    G = G1 - 1
    dev = p.device
    if B == 1 and G > 0 and accept_rule is None and residual_rule is None:
        return _verify_one(p, q, drafts, u, G if n_draft is None else int(n_draft.reshape(-1)[0]))
    n_draft = torch.full((B,), G, dtype=torch.long, device=dev) if n_draft is None else n_draft.to(dev).long()
    rows = torch.arange(B, device=dev)
    if G == 0:
        z = torch.zeros(B, dtype=torch.long, device=dev)
        return Verdict(z, z.bool(), p.new_zeros(B, 0), p[:, 0])
    px = p[:, :G].gather(-1, drafts[..., None]).squeeze(-1)
    qx = q.gather(-1, drafts[..., None]).squeeze(-1)
    ratio = (accept_rule or _default_accept)(px, qx)
    ok = (u < ratio) & (torch.arange(G, device=dev)[None, :] < n_draft[:, None])
    n_acc = ok.long().cumprod(dim=1).sum(dim=1)
    rejected = n_acc < n_draft
    p_at = p[rows, n_acc]
    q_at = q[rows, n_acc.clamp(max=G - 1)]
    res = (residual_rule or _default_residual)(p_at, q_at)
    mass = res.sum(-1, keepdim=True)
    res = torch.where(mass > 0, res / mass.clamp_min(1e-38), p_at)
    dist = torch.where(rejected[:, None], res, p_at)
    return Verdict(n_acc, rejected, ratio, dist)


def _verify_one(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, u: torch.Tensor | None, n_draft: int,
                decided: int | None = None) -> Verdict:
    """:func:`verify_drafts` for one sequence (speculative decoding's every round): the same float32 arithmetic
    on the same tensors, with the accept/reject walk in Python, so it is bit-for-bit the batched result in
    about a third of the tensor operations. Tests compare the two row by row. ``decided`` gives the number of
    accepted drafts instead of walking ``u`` (a round the verification kernel decided, seen by the trace)."""
    G = drafts.size(1)
    idx = drafts[0, :, None]
    ratio = _default_accept(p[0, :G].gather(-1, idx).squeeze(-1), q[0].gather(-1, idx).squeeze(-1))  # (G,)
    n = 0 if decided is None else decided
    for ui, ri in zip(u[0].tolist()[:n_draft] if decided is None else (), ratio.tolist()):
        if not ui < ri:
            break
        n += 1
    rejected = n < n_draft
    p_at = p[0, n]
    dist = p_at
    if rejected:  # n < n_draft <= G, so q has a row n
        res = _default_residual(p_at, q[0, n])
        mass = res.sum()
        if float(mass) > 0:
            dist = res / mass.clamp_min(1e-38)
    dev = p.device
    return Verdict(torch.tensor([n], device=dev), torch.tensor([rejected], device=dev), ratio[None], dist[None])


def _rows_noise(noise: NoiseStream, positions: torch.Tensor, rows: torch.Tensor, B: int, V: int | None,
                purpose: str) -> torch.Tensor:
    """Noise for ``rows`` (indices into a batch of ``B``) each at its own position: row ``b`` at position ``t``
    takes row ``b`` of the ``(B, V)`` (or ``(B,)``) draw for ``t``, so row 0 matches a single-sequence run."""
    shape = (len(rows), V) if V is not None else (len(rows),)
    out = torch.empty(shape)
    for t in torch.unique(positions).tolist():
        sel = positions == t
        if V is None:
            draw = noise.uniform(t, (B,), purpose)
        else:
            draw = noise.exponential(t, (B, V), purpose)
        out[sel] = draw[rows[sel]]
    return out


def _check_pair(target, draft):
    """Speculative decoding compares the two models' probabilities id by id: the models must have the same
    number of ids, and their tokenizers (when both have one) the same vocabulary, however each is stored."""
    vt, vd = target.config.vocab_size, draft.config.vocab_size
    if vt != vd:
        raise DecodingError(
            f"draft and target have different vocabularies ({vd} vs {vt} tokens): speculative decoding compares "
            "their probabilities token by token, so they must share one tokenizer"
        )
    tt, td = getattr(target, "tokenizer", None), getattr(draft, "tokenizer", None)
    if tt is None or td is None:
        return
    if not hasattr(tt, "same_vocab"):
        raise DecodingError(
            f"cannot compare the target's tokenizer ({type(tt).__name__}) with the draft's: it is not a workbench "
            "Tokenizer (wrap an HF tokenizer with HFTokenizer)"
        )
    diff = tt.vocab_difference(td)
    if diff is not None:
        raise DecodingError(
            f"draft and target have different vocabularies although both models have {vt} ids ({diff}): "
            "speculative decoding compares their probabilities token by token, so they must share one tokenizer"
        )


def _validate_gamma(gamma):
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
        raise DecodingError(f"gamma (draft tokens per round) must be an int >= 1, got {gamma!r}")


def _emit(seq: list, new: list, tcache, dcache) -> list:
    """Append a round's tokens and roll both caches back to the kept prefix."""
    seq = seq + new
    tcache.crop(min(tcache.length, len(seq) - 1))
    dcache.crop(min(dcache.length, len(seq) - 1))
    return seq


def _probs(pipe: Pipeline, logits: torch.Tensor, hists) -> torch.Tensor:
    """Processed probabilities of logits ``(N, V)``; ``hists[i]`` is row i's token history if the pipeline needs it."""
    if not pipe.needs_ids:
        return pipe.probs(logits)
    return torch.stack([pipe.probs(logits[i], torch.tensor(h)) for i, h in enumerate(hists)])


@dataclass
class _Tally:
    """What one run counts and times, turned into :class:`SpeculativeStats` at the end."""

    drafted: int = 0
    verified: int = 0
    accepted: int = 0
    overlap: float = 0.0      # sum over verified positions of sum_x min(p(x), q(x))
    draft_calls: int = 0
    target_calls: int = 0
    draft_s: float = 0.0      # every draft call after the prefill
    step_s: float = 0.0       # one-token draft calls, and how many
    step_calls: int = 0
    target_s: float = 0.0     # target calls after the prefill, and how many
    target_timed: int = 0
    full_s: float = 0.0       # ... of them, those of full rounds (gamma drafts), and how many
    full_calls: int = 0

    def draft_call(self, dt: float, n_fed: int, prefill: bool) -> None:
        self.draft_calls += 1
        if not prefill:
            self.draft_s += dt
        if n_fed == 1:
            self.step_s += dt
            self.step_calls += 1

    def target_call(self, dt: float, prefill: bool, full: bool) -> None:
        self.target_calls += 1
        if not prefill:
            self.target_s += dt
            self.target_timed += 1
            if full:
                self.full_s += dt
                self.full_calls += 1

    def round(self, g: int, n: int, overlap: float) -> None:
        """``g`` drafts of which ``n`` accepted: verification checked them up to the first rejection."""
        self.drafted += g
        self.verified += min(n + 1, g)
        self.accepted += n
        self.overlap += overlap

    def stats(self, gamma: int, n_tokens: int, cost_ratio: float | None, wall: float) -> SpeculativeStats:
        nan = float("nan")
        alpha = self.accepted / self.verified if self.verified else nan
        if cost_ratio is not None:
            c = float(cost_ratio)
        elif self.step_calls and self.target_timed:
            c = (self.step_s / self.step_calls) / (self.target_s / self.target_timed)
        else:
            c = nan
        a = alpha if not math.isnan(alpha) else 0.0
        return SpeculativeStats(
            gamma=gamma, target_calls=self.target_calls, drafted=self.drafted, verified=self.verified,
            accepted=self.accepted, alpha=alpha, alpha_tv=self.overlap / self.verified if self.verified else nan,
            draft_calls=self.draft_calls, tokens=n_tokens, tokens_per_call=n_tokens / max(self.target_calls, 1),
            expected_tokens_per_call=expected_tokens_per_call(a, gamma),
            c=c, expected_speedup=expected_speedup(a, gamma, c) if not math.isnan(c) else nan,
            draft_time_s=self.draft_s, target_time_s=self.target_s, wall_time_s=wall,
            draft_step_s=(self.step_s / self.step_calls if self.step_calls else
                          self.draft_s / max(self.draft_calls - 1, 1) if self.draft_calls > 1 else nan),
            verify_call_s=(self.full_s / self.full_calls if self.full_calls else
                           self.target_s / self.target_timed if self.target_timed else nan),
        )


def _drafter(pipe: Pipeline, fused, argmax_only: bool, noise: NoiseStream, V: int, dev_t):
    """The draft's per-token draw, chosen once for the run: ``draw(logits (1, V), history, position)`` gives the
    token and the distribution ``q`` (V,) it came from (None when only arg-maxes are needed)."""
    if argmax_only:
        return lambda lg, hist, t: (int(check_logits(lg).argmax()), None)
    if fused is not None:  # the fused sampling kernel: q is exactly the distribution it draws from
        def draw(lg, hist, t):
            lg = check_logits(lg.float())
            q = kernel_probs(lg, fused)[0].to(dev_t)
            return int(kernel_draw(lg, fused, noise, t)[0]), q
        return draw

    def draw(lg, hist, t):
        q = _probs(pipe, lg.float().cpu(), [hist] if pipe.needs_ids else None)[0]
        x = int(q.argmax()) if pipe.greedy else int(sample_with_noise(q, noise.exponential(t, (1, V))[0]))
        return x, q
    return draw


def _draft(draft, dcache, seq: list, g: int, pos: int, draw, mask, dev, tally: _Tally):
    """A round's ``g`` draft tokens (the first call also feeds what the draft's cache has not seen) and their q."""
    drafts, qs = [], []
    for i in range(g):
        feed = (seq + drafts)[dcache.length:]
        prefill = dcache.length == 0
        t0 = time.perf_counter()
        lg = apply_mask(draft.step(torch.tensor([feed], device=dev), dcache).logits[:, -1], mask)
        tally.draft_call(time.perf_counter() - t0, len(feed), prefill)
        x, q = draw(lg, seq + drafts, pos + i)
        drafts.append(x)
        qs.append(q)
    return drafts, qs


def _verify(lg, seq: list, drafts: list, qs: list, pos: int, pipe: Pipeline, fused, noise: NoiseStream,
            trace: bool):
    """Accept or reject a round's drafts on the target's logits ``lg`` ``(g + 1, V)``: the number accepted, the
    next token (the residual draw on a rejection, else the bonus token), the target's probabilities ``(g + 1, V)``,
    the drafts' ``(1, g, V)``, and the :class:`Verdict` (None when the kernel decided and no trace is kept)."""
    g, V = len(drafts), lg.size(-1)
    if fused is not None:
        ps = kernel_probs(check_logits(lg.float()), fused)
    else:
        ps = _probs(pipe, lg.float().cpu(), [seq + drafts[:i] for i in range(g + 1)] if pipe.needs_ids else None)
    qt = torch.stack(qs)[None] if g else ps.new_zeros(1, 0, V)
    if pipe.greedy:  # p(x)/q(x) is 0 or 1: any u in [0, 1) decides the same
        u = ps.new_full((1, g), 0.5)
    else:
        u = torch.stack([noise.uniform(pos + i, (1,), "accept")[0] for i in range(g)])[None].to(ps.device) if g \
            else ps.new_zeros(1, 0)
    dr = torch.tensor([drafts], dtype=torch.long, device=ps.device).reshape(1, g)
    if fused is not None:  # acceptance, residual and the new token in one kernel launch
        toks, n_acc = kernels.verify_speculative(ps[None], qt, dr, uniforms=u, seed=noise.key(pos, "residual"))
        n = int(n_acc[0])
        verdict = _verify_one(ps[None], qt, dr, None, g, decided=n) if trace else None  # for the trace
        return n, int(toks[0, n]), ps, qt, verdict
    verdict = verify_drafts(ps[None], qt, dr, u)
    n = int(verdict.n_accepted[0])
    if pipe.greedy:
        nxt = int(verdict.next_dist[0].argmax())
    else:
        E = noise.exponential(pos + n, (1, V), "residual" if n < g else "sample")[0]
        nxt = int(sample_with_noise(verdict.next_dist[0], E))
    return n, nxt, ps, qt, verdict


def _round_trace(pos, drafts, qs, ps, verdict, n, nxt, new, top_residual) -> SpecRound:
    rejected = n < len(drafts)
    res_top = []
    if rejected:
        top = torch.topk(verdict.next_dist[0], min(top_residual, verdict.next_dist.size(-1)))
        res_top = [(int(a), float(b)) for a, b in zip(top.indices, top.values)]
    return SpecRound(
        start=pos, draft_tokens=list(drafts), p=[float(ps[i, x]) for i, x in enumerate(drafts)],
        q=[float(qs[i][x]) for i, x in enumerate(drafts)], accept_prob=verdict.accept_prob[0].tolist(),
        accepted=[True] * n + ([False] if rejected else []), n_accepted=n, next_token=nxt,
        kind="residual" if rejected else "bonus", residual_top=res_top, emitted=list(new))


@torch.inference_mode()
def speculative_decode(target, draft, prompt_ids, max_new_tokens: int, gamma: int = 4, pipeline=None, seed: int = 0,
                       *, eos_id: int | None = None, cost_ratio: float | None = None, trace: bool = True,
                       top_residual: int = 5, draw: str = "auto", mask_undecodable: bool = False) -> SpeculativeResult:
    """Speculative decoding of one prompt on the two models' KV caches (rejected drafts are cropped away).

    ``pipeline`` processes both models' logits (temperature 0 makes it greedy speculative decoding, whose output
    equals greedy decoding of the target). ``cost_ratio`` ``c`` for the formulas defaults to the measured
    mean draft-call time over mean target-call time (prefill calls excluded). ``draw`` as in
    :func:`~workbench.decoding.sample`: with the fused kernels, drafts come from the sampling kernel and each
    round's acceptance tests and new token from the verification kernel. ``prompt_ids`` may be text (encoded
    with the target's tokenizer); ``mask_undecodable`` as in :func:`~workbench.decoding.sample`, for both
    models. Returns the tokens, one :class:`SpecRound` per round and :class:`SpeculativeStats`.
    """
    _check_pair(target, draft)
    _validate_gamma(gamma)
    pipe = as_pipeline(pipeline)
    ids = prepare_prompt(target, prompt_ids, max_new_tokens)
    prepare_prompt(draft, ids[0].cpu(), max_new_tokens)
    _check_eos(target, eos_id)
    mask = undecodable_index(target, mask_undecodable)
    noise = NoiseStream(seed)
    dev_t, dev_d = ids.device, model_device(draft)
    T, V = ids.size(1), target.config.vocab_size
    seq = ids[0].tolist()
    tcache = target.new_cache(1, max_len=T + max_new_tokens)
    dcache = draft.new_cache(1, max_len=T + max_new_tokens)
    # Greedy without a trace needs no distributions: every p and q is one-hot at its arg-max, so a draft is
    # accepted exactly when it equals the target's arg-max, and the residual is the target's arg-max.
    argmax_only = not trace and pipe.greedy and all(st.name == "temperature" for st in pipe.stages)
    fused = resolve_draw(draw, pipe, dev_t.type == "cuda" and dev_d.type == "cuda")
    draw_draft = _drafter(pipe, fused, argmax_only, noise, V, dev_t)
    tally = _Tally()
    rounds: list[SpecRound] = []
    n_gen = 0
    t_start = time.perf_counter()
    while n_gen < max_new_tokens:
        g = min(gamma, max_new_tokens - n_gen - 1)
        pos = n_gen
        drafts, qs = _draft(draft, dcache, seq, g, pos, draw_draft, mask, dev_d, tally)
        feed = (seq + drafts)[tcache.length:]
        prefill = tcache.length == 0
        t0 = time.perf_counter()
        lg = apply_mask(target.step(torch.tensor([feed], device=dev_t), tcache).logits[0, -(g + 1):], mask)
        tally.target_call(time.perf_counter() - t0, prefill, full=g == gamma)
        if argmax_only:
            best = check_logits(lg).argmax(-1).tolist()
            n = next((i for i, x in enumerate(drafts) if x != best[i]), g)
            nxt = best[n]
            overlap = n  # one-hot p and q overlap fully where they agree, not at all where they do not
        else:
            n, nxt, ps, qt, verdict = _verify(lg, seq, drafts, qs, pos, pipe, fused, noise, trace)
            n_checked = min(n + 1, g)
            overlap = float(torch.minimum(ps[:n_checked], qt[0, :n_checked]).sum()) if n_checked else 0.0
        tally.round(g, n, overlap)
        new = drafts[:n] + [nxt]
        if eos_id is not None and eos_id in new:
            new = new[: new.index(eos_id) + 1]
        if trace:
            rounds.append(_round_trace(pos, drafts, qs, ps, verdict, n, nxt, new, top_residual))
        seq = _emit(seq, new, tcache, dcache)
        n_gen += len(new)
        if eos_id is not None and new[-1] == eos_id:
            break
    tokens = seq[T:]
    stats = tally.stats(gamma, len(tokens), cost_ratio, time.perf_counter() - t_start)
    return SpeculativeResult(seq[:T], tokens, rounds, stats, _decode_text(target, tokens))


@torch.inference_mode()
def speculative_sample_batch(target, draft, prompt_ids, max_new_tokens: int, gamma: int, num_samples: int,
                             pipeline=None, seed: int = 0, *, accept_rule: Callable | None = None,
                             residual_rule: Callable | None = None, mask_undecodable: bool = False) -> torch.Tensor:
    """``num_samples`` independent speculative decodings of one prompt, batched: ``(num_samples, max_new_tokens)``.

    The same rounds as :func:`speculative_decode` (same drafting, :func:`verify_drafts`, noise keyed by position,
    row 0 reproduces ``speculative_decode(seed=seed)``), but rows drift apart in length, so each call is a full
    forward pass on right-padded rows (causal attention never sees the padding) instead of the KV cache. Meant
    for distribution checks on small models; ``accept_rule``/``residual_rule`` as in :func:`verify_drafts`.
    """
    _check_pair(target, draft)
    _validate_gamma(gamma)
    pipe = as_pipeline(pipeline)
    if pipe.needs_ids:
        raise DecodingError("speculative_sample_batch does not support history-dependent stages")
    ids = prepare_prompt(target, prompt_ids, max_new_tokens)
    mask = undecodable_index(target, mask_undecodable)
    B, T, V = num_samples, ids.size(1), target.config.vocab_size
    noise = NoiseStream(seed)
    buf = torch.zeros(B, T + max_new_tokens + gamma + 1, dtype=torch.long)
    buf[:, :T] = ids[0].cpu()
    lens = torch.full((B,), T, dtype=torch.long)
    n_gen = torch.zeros(B, dtype=torch.long)
    while True:
        act = (n_gen < max_new_tokens).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        nA = act.numel()
        ar = torch.arange(nA)
        g_b = (max_new_tokens - n_gen[act] - 1).clamp(max=gamma)
        G = int(g_b.max())
        pos = n_gen[act]
        work = buf[act].clone()
        wl = lens[act].clone()
        qs, drafts = [], []
        for i in range(G):
            Lm = int(wl.max())
            lg = apply_mask(draft.forward(work[:, :Lm].to(model_device(draft))).logits.float(), mask).cpu()
            q = pipe.probs(lg[ar, wl - 1])
            x = sample_with_noise(q, _rows_noise(noise, pos + i, act, B, V, "sample"))
            work[ar, wl] = x
            wl += 1
            qs.append(q)
            drafts.append(x)
        Lm = int(wl.max())
        lg = apply_mask(target.forward(work[:, :Lm].to(ids.device)).logits.float(), mask).cpu()
        ps = torch.stack([pipe.probs(lg[ar, (lens[act] - 1 + j).clamp(max=Lm - 1)]) for j in range(G + 1)], 1)
        if G:
            u = torch.stack([_rows_noise(noise, pos + i, act, B, None, "accept") for i in range(G)], 1)
            v = verify_drafts(ps, torch.stack(qs, 1), torch.stack(drafts, 1), u, g_b, accept_rule, residual_rule)
        else:
            v = verify_drafts(ps, ps.new_zeros(nA, 0, V), torch.zeros(nA, 0, dtype=torch.long), ps.new_zeros(nA, 0))
        n = v.n_accepted
        E_res = _rows_noise(noise, pos + n, act, B, V, "residual")
        E_smp = _rows_noise(noise, pos + n, act, B, V, "sample")
        nxt = sample_with_noise(v.next_dist, torch.where(v.rejected[:, None], E_res, E_smp))
        L0 = lens[act]
        for i in range(G):
            keep = i < n
            buf[act[keep], L0[keep] + i] = drafts[i][keep]
        buf[act, L0 + n] = nxt
        lens[act] = L0 + n + 1
        n_gen[act] += n + 1
    return buf[:, T:T + max_new_tokens]


__all__ = ["speculative_decode", "speculative_sample_batch", "verify_drafts", "Verdict",
           "expected_tokens_per_call", "expected_speedup"]
