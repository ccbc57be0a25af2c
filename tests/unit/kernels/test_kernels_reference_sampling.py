"""The sampling reference against the analytic truncated distribution (and a chi-square test
that is shown to catch wrong samplers)."""
import math

import numpy as np
import pytest
import torch

from workbench import kernels
from workbench.kernels import reference
from workbench.kernels.reference import chi_square_pvalue


def plain_truncated(row, temperature=1.0, top_k=None, top_p=None, min_p=None):
    """The textbook definition, one row, plain Python floats."""
    x = [float(v) for v in row]
    V = len(x)
    if temperature == 0:
        out = [0.0] * V
        out[max(range(V), key=lambda i: (x[i], -i))] = 1.0
        return out
    mx = max(x)
    z = [(xi - mx) / temperature for xi in x]
    keep = [xi > -math.inf for xi in x]
    if top_k:
        kth = sorted(x, reverse=True)[top_k - 1]
        keep = [kp and xi >= kth for kp, xi in zip(keep, x)]
    if top_p is not None and top_p < 1:
        w = [math.exp(zi) if kp else 0.0 for zi, kp in zip(z, keep)]
        total, cum = sum(w), 0.0
        for i in sorted(range(V), key=lambda i: -x[i]):
            cum += w[i]
            if cum >= top_p * total:
                tau = x[i]
                break
        keep = [kp and xi >= tau for kp, xi in zip(keep, x)]
    if min_p:
        keep = [kp and math.exp(zi) >= min_p for kp, zi in zip(keep, z)]
    w = [math.exp(zi) if kp else 0.0 for zi, kp in zip(z, keep)]
    return [wi / sum(w) for wi in w]


def toy_logits(V=24, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(V, generator=g) * scale


SETTINGS = [
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=5),
    dict(temperature=1.3, top_p=0.8),
    dict(temperature=1.0, min_p=0.1),
    dict(temperature=0.8, top_k=10, top_p=0.9, min_p=0.05),
    dict(temperature=2.0, top_k=1),
    dict(temperature=1.0, top_p=0.05),
]
IDS = [",".join(f"{k}={v}" for k, v in s.items()) for s in SETTINGS]


@pytest.mark.parametrize("kw", SETTINGS + [dict(temperature=0.0)], ids=IDS + ["greedy"])
def test_truncated_probs_match_textbook(kw):
    x = torch.stack([toy_logits(seed=s) for s in range(6)])
    got = kernels.truncated_probs(x, **kw)
    for r in range(x.shape[0]):
        want = plain_truncated(x[r].tolist(), **kw)
        assert np.allclose(got[r].numpy(), want, atol=1e-6), (r, kw)


def test_top_p_keeps_the_crossing_token_and_ties():
    x = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.1), math.log(0.1)]])
    keep = kernels.truncated_probs(x, top_p=0.6) > 0
    assert keep.tolist() == [[True, True, False, False]]          # 0.5 < 0.6 <= 0.8
    keep = kernels.truncated_probs(x, top_p=0.85) > 0
    assert keep.tolist() == [[True, True, True, True]]            # crossing at a tie: both kept
    keep = kernels.truncated_probs(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), top_k=2) > 0
    assert keep.tolist() == [[False, True, True, False]]
    keep = kernels.truncated_probs(torch.tensor([[1.0, 2.0, 1.0, 0.0]]), top_k=2) > 0
    assert keep.tolist() == [[True, True, True, False]]           # tie at the k-th value


def test_top_p_applies_after_top_k_renormalisation():
    p = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    # top_k=2 leaves (0.4, 0.3) -> renormalised (0.571, 0.429); top_p=0.5 then keeps only the first.
    out = kernels.truncated_probs(p.log(), top_k=2, top_p=0.5)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("kw", SETTINGS, ids=IDS)
def test_samples_follow_truncated_distribution(kw):
    """Chi-square: 40k draws (one per row of identical logits) against the exact distribution."""
    row = toy_logits(V=24, seed=7)
    x = row.expand(40_000, -1)
    tok = kernels.sample(x, seed=12345, **kw)
    probs = torch.tensor(plain_truncated(row.tolist(), **kw))
    assert chi_square_pvalue(tok, probs) > 0.01


def _wrong_half_gumbel(x, seed, **kw):
    """A plausible bug: Gumbel noise scaled by 0.5 (samples from a sharpened distribution)."""
    t = reference.truncate(x, **kw)
    B, V = x.shape
    g = reference.gumbel_noise(seed, 0, np.arange(B)[:, None], np.arange(V)[None, :])
    return torch.where(t.keep, t.z + 0.5 * g, torch.tensor(-math.inf)).argmax(-1)


def _wrong_forgets_temperature(x, seed, **kw):
    return kernels.sample(x, seed=seed, **{**kw, "temperature": 1.0})


def _wrong_drops_crossing_token(x, seed, **kw):
    probs = kernels.truncated_probs(x[:1], **kw)[0]
    order = torch.argsort(probs, descending=True)
    cum = torch.cumsum(probs[order], 0)
    cross = int(torch.searchsorted(cum, kw["top_p"] * cum[-1]))
    bad = probs.clone()
    bad[order[cross]] = 0
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(bad / bad.sum(), x.shape[0], replacement=True, generator=g)


@pytest.mark.parametrize("wrong", [_wrong_half_gumbel, _wrong_forgets_temperature,
                                   _wrong_drops_crossing_token])
def test_chi_square_catches_wrong_samplers(wrong):
    """The same test rejects deliberately wrong samplers: it has power."""
    kw = dict(temperature=0.7, top_p=0.9)
    row = toy_logits(V=24, seed=7)
    tok = wrong(row.expand(40_000, -1), 12345, **kw)
    probs = torch.tensor(plain_truncated(row.tolist(), **kw))
    assert chi_square_pvalue(tok, probs) < 1e-6


def test_seeded_and_deterministic():
    x = torch.randn(8, 1000)
    a = kernels.sample(x, temperature=1.0, seed=1)
    assert torch.equal(a, kernels.sample(x, temperature=1.0, seed=1))
    assert not torch.equal(a, kernels.sample(x, temperature=1.0, seed=2))
    assert a.dtype == torch.int64 and a.shape == (8,)


def test_greedy_and_masked_tokens():
    x = torch.tensor([[0.0, 5.0, 5.0, 1.0], [-math.inf, -math.inf, 0.0, -math.inf],
                      [-math.inf] * 4])
    assert kernels.sample(x, temperature=0).tolist() == [1, 2, -1]
    tok = kernels.sample(x[1:2].expand(500, -1), temperature=1.0, seed=3)
    assert set(tok.tolist()) == {2}


def test_low_precision_logits_are_accepted():
    x = torch.randn(4, 300)
    for dt in (torch.float16, torch.bfloat16):
        tok = kernels.sample(x.to(dt), temperature=1.0, top_k=20, seed=5)
        assert tok.shape == (4,) and bool((tok >= 0).all())


def test_uniform_noise_is_pinned():
    """The CPU and GPU random streams must stay bit-identical: pin a few values."""
    u = reference.uniform_noise(0, 0, [[0], [1]], [[0, 1, 2]])
    assert u.shape == (2, 3)
    assert bool(((u > 0) & (u < 1)).all())
    again = reference.uniform_noise(0, 0, [[0], [1]], [[0, 1, 2]])
    assert torch.equal(u, again)
    # the 23-bit construction: every value is (n + 0.5) / 2**23 exactly
    n = u.double() * 2 ** 23 - 0.5
    assert torch.equal(n, n.round())
    big = reference.uniform_noise(99, 0, np.zeros(200_000, dtype=np.int64), np.arange(200_000))
    assert abs(float(big.mean()) - 0.5) < 0.005 and abs(float(big.var()) - 1 / 12) < 0.002


def test_wrong_variant_marker_is_in_the_kernel_source():
    """The GPU power test builds a wrong kernel by editing this exact text."""
    assert "z + wb_gumbel(" in kernels.kernel_source("sampling.cu")
