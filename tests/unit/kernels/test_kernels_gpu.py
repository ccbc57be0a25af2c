"""Kernels against the references on a real GPU. Skipped cleanly without one.

Run on a GPU machine:  pip install -e .[gpu,dev] && pytest -m gpu tests/unit/kernels
"""
import math

import pytest
import torch

from workbench import kernels
from workbench.kernels.backend import probe_cupy
from workbench.kernels.reference import chi_square_pvalue

_usable, _reason, _device = probe_cupy()
GPU_OK = _usable and torch.cuda.is_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not GPU_OK, reason=f"no GPU for the cupy kernels: {_reason}"
                       + ("" if torch.cuda.is_available() else "; torch sees no CUDA device")),
]
TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}


def rand_qkv(B, H, Tq, Tk, D, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda T: torch.randn(B, H, T, D, generator=g, device="cuda").to(dtype)  # noqa: E731
    return mk(Tq), mk(Tk), mk(Tk)


def test_backend_is_cupy_here():
    assert kernels.backend_info().name == "cupy"
    assert kernels.backend_info().device


@pytest.mark.parametrize("impl,dtype", [("mma", torch.float16), ("mma", torch.bfloat16),
                                        ("simt", torch.float16), ("simt", torch.bfloat16),
                                        ("simt", torch.float32)], ids=str)
@pytest.mark.parametrize("D", [64, 128, 32])
@pytest.mark.parametrize("B,H,Tq,Tk", [(1, 1, 1, 1), (2, 3, 77, 77), (1, 2, 200, 200),
                                       (1, 2, 513, 513), (2, 2, 1, 300), (1, 2, 45, 130)])
@pytest.mark.parametrize("mask", [dict(), dict(window=50), dict(window=33, sinks=4),
                                  dict(causal=False)], ids=["causal", "window", "sinks", "full"])
def test_attention_kernel_matches_reference(impl, dtype, D, B, H, Tq, Tk, mask):
    """Both kernels (tensor-core "mma" and SIMT) against the float32 reference."""
    from workbench.kernels import cupy_ops

    if mask.get("causal") is False and Tq != Tk:
        pytest.skip("non-causal case covered at Tq == Tk")
    q, k, v = rand_qkv(B, H, Tq, Tk, D, dtype, seed=Tq * 7 + D)
    got, _ = cupy_ops.attention(q, k, v, impl=impl, **mask)
    # the float32 truth from the same (rounded) inputs; the kernel's error includes its final rounding
    want = kernels.attention(q.float(), k.float(), v.float(), backend="reference", **mask)
    assert got.dtype == dtype and got.shape == (B, H, Tq, D)
    err = (got.float() - want.float()).abs().max().item()
    assert err <= TOL[dtype], f"max abs error {err:.3g} > {TOL[dtype]}"


@pytest.mark.parametrize("mask", [dict(), dict(window=40, sinks=2)])
def test_attention_probs_of_selected_heads(mask):
    q, k, v = rand_qkv(2, 4, 150, 150, 64, torch.float32, seed=3)
    out, probs = kernels.attention(q, k, v, return_probs_heads=[3, 1], backend="cupy", **mask)
    ref_out, ref_probs = kernels.attention(q, k, v, return_probs_heads=[3, 1],
                                           backend="reference", **mask)
    assert probs.shape == (2, 2, 150, 150) and probs.dtype == torch.float32
    assert (probs - ref_probs).abs().max().item() < 1e-5
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2, 150, device="cuda"), atol=1e-4)
    assert (out - ref_out).abs().max().item() < 1e-5


def test_public_attention_uses_tensor_cores_for_half():
    from workbench.kernels import cupy_ops

    assert cupy_ops.attention_impl(torch.float16, None) == "mma"
    assert cupy_ops.attention_impl(torch.float16, [0]) == "simt"
    assert cupy_ops.attention_impl(torch.float32, None) == "simt"
    q, k, v = rand_qkv(1, 2, 100, 100, 64, torch.float16)
    got = kernels.attention(q, k, v, backend="cupy")
    want = kernels.attention(q.float(), k.float(), v.float(), backend="reference")
    assert (got.float() - want).abs().max().item() <= 2e-3


@pytest.mark.parametrize("impl", ["mma", "simt"])
def test_attention_unaligned_rows(impl):
    """Row stride 65 (not a multiple of 8): the mma kernel takes its scalar-load path."""
    from workbench.kernels import cupy_ops

    base = torch.randn(3, 1, 2, 90, 65, device="cuda", dtype=torch.float16)
    q, k, v = (t[..., :64] for t in base)
    assert q.stride(2) == 65
    got, _ = cupy_ops.attention(q, k, v, impl=impl, window=20, sinks=2)
    want = kernels.attention(*(t.float().contiguous() for t in (q, k, v)), window=20, sinks=2,
                             backend="reference")
    assert (got.float() - want).abs().max().item() <= 2e-3


def test_attention_strided_views_without_copy():
    x = torch.randn(3, 2, 100, 4, 64, device="cuda", dtype=torch.float16)   # (qkv, B, T, H, D)
    q, k, v = (t.transpose(1, 2) for t in x)
    got = kernels.attention(q, k, v, backend="cupy")
    want = kernels.attention(*(t.float().contiguous() for t in (q, k, v)), backend="reference")
    assert (got.float() - want.float()).abs().max().item() <= 2e-3


def test_attention_memory_is_linear_in_T():
    q, k, v = rand_qkv(1, 8, 4096, 4096, 64, torch.float16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    kernels.attention(q, k, v, backend="cupy")
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < 4 * q.numel() * q.element_size()       # no (T x T) score matrix


# ---------------------------------------------------------------- sampling
SETTINGS = [dict(temperature=1.0), dict(temperature=0.7, top_k=50), dict(temperature=1.2, top_p=0.9),
            dict(temperature=1.0, min_p=0.05), dict(temperature=0.8, top_k=40, top_p=0.8, min_p=0.02),
            dict(temperature=0.0)]


@pytest.mark.parametrize("kw", SETTINGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("V", [1000, 32000, 128256])
def test_sampling_kernel_matches_reference(kw, V):
    """Same thresholds and the same random stream: the same tokens, up to rare rounding ties."""
    g = torch.Generator(device="cuda").manual_seed(V)
    x = torch.randn(64, V, generator=g, device="cuda") * 3
    got = kernels.sample(x, seed=11, backend="cupy", **kw)
    want = kernels.sample(x, seed=11, backend="reference", **kw)
    agree = (got == want).double().mean().item()
    assert agree >= 0.97, f"only {agree:.1%} of rows agree"
    probs = kernels.truncated_probs(x, **kw)
    assert bool((probs.gather(1, got[:, None]) > 0).all())   # every draw is inside the kept set


@pytest.mark.parametrize("kw", SETTINGS[:5])
def test_sampling_kernel_chi_square(kw):
    row = torch.randn(60, generator=torch.Generator().manual_seed(1)) * 2
    x = row.cuda().expand(50_000, -1)
    tok = kernels.sample(x, seed=2024, backend="cupy", **kw)
    probs = kernels.truncated_probs(row[None], **kw)[0]
    assert chi_square_pvalue(tok.cpu(), probs) > 0.01


def test_wrong_kernel_variant_is_caught():
    """Power: the same chi-square test rejects a kernel whose Gumbel noise is halved."""
    from workbench.kernels import cupy_ops

    src = kernels.kernel_source("sampling.cu")
    wrong = src.replace("z + wb_gumbel(", "z + 0.5f * wb_gumbel(")
    assert wrong != src
    kw = dict(temperature=0.9, top_p=0.9)
    row = torch.randn(60, generator=torch.Generator().manual_seed(1)) * 2
    x = row.cuda().expand(50_000, -1).contiguous()
    tok = cupy_ops.sample(x, seed=2024, source=wrong, **kw)
    probs = kernels.truncated_probs(row[None], **kw)[0]
    assert chi_square_pvalue(tok.cpu(), probs) < 1e-6


def test_sampling_edge_rows():
    x = torch.tensor([[0.0, 5.0, 5.0, 1.0], [-math.inf, -math.inf, 0.0, -math.inf],
                      [-math.inf] * 4], device="cuda")
    assert kernels.sample(x, temperature=0, backend="cupy").tolist() == [1, 2, -1]
    assert kernels.sample(x, temperature=1.0, top_p=0.5, backend="cupy").tolist()[1:] == [2, -1]
    y = torch.randn(8, 500, device="cuda", dtype=torch.float16)
    assert torch.equal(kernels.sample(y, seed=4, backend="cupy"), kernels.sample(y, seed=4, backend="cupy"))


# ---------------------------------------------------------------- speculative verification
@pytest.mark.parametrize("G", [0, 1, 4, 8])
@pytest.mark.parametrize("given_u", [True, False])
def test_verification_kernel_matches_reference(G, given_u):
    B, V = 128, 5000
    g = torch.Generator(device="cuda").manual_seed(G)
    p = torch.softmax(torch.randn(B, G + 1, V, generator=g, device="cuda") * 2, -1)
    q = torch.softmax(torch.randn(B, G, V, generator=g, device="cuda") * 2, -1)
    q = 0.5 * q + 0.5 * p[:, :G]                                   # realistic agreement
    draft = (torch.multinomial(q.reshape(-1, V), 1, generator=g).reshape(B, G) if G
             else torch.zeros(B, 0, dtype=torch.int64, device="cuda"))
    u = torch.rand(B, G, generator=g, device="cuda") if given_u else None
    tok, n = kernels.verify_speculative(p, q, draft, seed=5, uniforms=u, backend="cupy")
    rtok, rn = kernels.verify_speculative(p, q, draft, seed=5, uniforms=u, backend="reference")
    assert torch.equal(n, rn)
    assert (tok == rtok).double().mean().item() >= 0.97


def test_verification_kernel_follows_target_distribution():
    B, G, V = 40_000, 3, 8
    g = torch.Generator().manual_seed(5)
    p1 = torch.softmax(torch.randn(1, G + 1, V, generator=g) * 1.5, -1)
    q1 = torch.softmax(torch.randn(1, G, V, generator=g) * 1.5, -1)
    draft = torch.stack([torch.multinomial(q1[0, i], B, replacement=True, generator=g)
                         for i in range(G)], 1)
    p, q = p1.expand(B, -1, -1).cuda(), q1.expand(B, -1, -1).cuda()
    tokens, n = kernels.verify_speculative(p, q, draft.cuda(), seed=9, backend="cupy")
    assert chi_square_pvalue(tokens[:, 0].cpu(), p1[0, 0]) > 0.01
