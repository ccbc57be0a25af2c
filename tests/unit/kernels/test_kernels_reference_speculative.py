"""Speculative verification reference: decisions against a textbook loop, and the theorem that
the emitted tokens follow the target distribution."""
import torch

from workbench import kernels
from workbench.kernels.reference import accept_uniforms, chi_square_pvalue


def make_case(B, G, V, seed=0, sharp=1.0):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(B, G + 1, V, generator=g) * sharp, -1)
    q = torch.softmax(torch.randn(B, G, V, generator=g) * sharp, -1)
    draft = torch.multinomial(q.reshape(-1, V), 1, generator=g).reshape(B, G)
    return p, q, draft


def textbook_accept_count(p, q, draft, u):
    """Leviathan et al. Alg. 1, one row at a time: accept while u < min(1, p/q)."""
    out = []
    for b in range(p.shape[0]):
        n = 0
        for g in range(draft.shape[1]):
            x = int(draft[b, g])
            if float(u[b, g]) < min(1.0, float(p[b, g, x]) / float(q[b, g, x])):
                n += 1
            else:
                break
        out.append(n)
    return torch.tensor(out)


def test_acceptance_decisions_match_textbook():
    p, q, draft = make_case(300, 4, 11, seed=1)
    u = torch.rand(300, 4, generator=torch.Generator().manual_seed(2))
    tokens, n = kernels.verify_speculative(p, q, draft, uniforms=u)
    assert torch.equal(n, textbook_accept_count(p, q, draft, u))
    for b in range(300):
        k = int(n[b])
        assert torch.equal(tokens[b, :k], draft[b, :k])
        assert bool((tokens[b, k + 1:] == -1).all())
        new = int(tokens[b, k])
        support = (p[b, k] - q[b, k]).clamp_min(0) if k < 4 else p[b, k]
        assert support[new] > 0                      # drawn from the residual (or p_G)


def test_seeded_uniforms_are_the_documented_ones():
    p, q, draft = make_case(50, 3, 9, seed=4)
    a = kernels.verify_speculative(p, q, draft, seed=77)
    b = kernels.verify_speculative(p, q, draft, seed=77, uniforms=accept_uniforms(77, 50, 3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_first_token_follows_the_target_distribution():
    """The speculative sampling theorem: every emitted token is distributed as p."""
    B, G, V = 40_000, 3, 8
    p1, q1, _ = make_case(1, G, V, seed=5, sharp=1.5)
    p, q = p1.expand(B, -1, -1).contiguous(), q1.expand(B, -1, -1).contiguous()
    g = torch.Generator().manual_seed(6)
    draft = torch.stack([torch.multinomial(q1[0, i], B, replacement=True, generator=g)
                         for i in range(G)], 1)
    tokens, n = kernels.verify_speculative(p, q, draft, seed=9)
    assert chi_square_pvalue(tokens[:, 0], p1[0, 0]) > 0.01
    # acceptance rate of the first draft is sum_x min(p, q)
    rate = float((n >= 1).double().mean())
    want = float(torch.minimum(p1[0, 0], q1[0, 0]).sum())
    assert abs(rate - want) < 4 * (want * (1 - want) / B) ** 0.5
    # bonus tokens (all G accepted) follow p_G
    full = n == G
    assert int(full.sum()) > 500
    assert chi_square_pvalue(tokens[full, G], p1[0, G]) > 0.01
    # power: resampling from p instead of the residual is caught
    bad = tokens[:, 0].clone()
    rej = n == 0
    bad[rej] = torch.multinomial(p1[0, 0], int(rej.sum()), replacement=True, generator=g)
    assert chi_square_pvalue(bad, p1[0, 0]) < 1e-6


def test_identical_models_accept_everything_and_g_zero():
    p, _, _ = make_case(20, 2, 7, seed=8)
    q = p[:, :2].contiguous()
    draft = torch.multinomial(q.reshape(-1, 7), 1, generator=torch.Generator().manual_seed(0)).reshape(20, 2)
    tokens, n = kernels.verify_speculative(p, q, draft, seed=1)
    assert bool((n == 2).all()) and bool((tokens[:, 2] >= 0).all())
    tokens, n = kernels.verify_speculative(p[:, :1], q[:, :0], draft[:, :0], seed=1)
    assert tokens.shape == (20, 1) and bool((n == 0).all()) and bool((tokens[:, 0] >= 0).all())
