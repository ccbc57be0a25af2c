"""The kernels' own CUDA source, run on the CPU by the emulator, against the references.

The comparisons of test_kernels_gpu.py on smaller shapes, through the same launchers
(workbench.kernels.cupy_ops send CPU tensors to the emulator). They check the kernels' indexing, tiling,
masking, barriers, warp shuffles and tensor-core fragment bookkeeping as written in the .cu files; they say
nothing about the hardware (see workbench/kernels/emulator). The last section shows that the emulator's own
checks catch what they claim to. Skipped when g++ cannot build the emulator.
"""
import math
import subprocess

import numpy as np
import pytest
import torch

from workbench import kernels
from workbench.kernels import cupy_ops, emulator
from workbench.kernels.emulator import EmulationError

_ok, _why = emulator.available()
pytestmark = pytest.mark.skipif(not _ok, reason=f"CPU emulator unavailable: {_why}")
TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}


def rand_qkv(B, H, Tq, Tk, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, D, generator=g).to(dtype) for T in (Tq, Tk, Tk))


def reference_attention(q, k, v, **mask):
    return kernels.attention(q.float(), k.float(), v.float(), backend="reference", **mask)


# ---------------------------------------------------------------- attention
@pytest.mark.parametrize("impl,dtype", [("mma", torch.float16), ("mma", torch.bfloat16),
                                        ("simt", torch.float16), ("simt", torch.bfloat16),
                                        ("simt", torch.float32)], ids=str)
@pytest.mark.parametrize("D", [16, 64, 128])
@pytest.mark.parametrize("B,H,Tq,Tk", [(1, 1, 1, 1), (2, 1, 77, 77), (1, 1, 130, 130), (1, 2, 1, 150),
                                       (1, 1, 45, 130)])
@pytest.mark.parametrize("mask", [dict(), dict(window=50), dict(window=33, sinks=4), dict(causal=False)],
                         ids=["causal", "window", "sinks", "full"])
def test_attention_kernel_matches_reference(impl, dtype, D, B, H, Tq, Tk, mask):
    if mask.get("causal") is False and Tq != Tk:
        pytest.skip("non-causal case covered at Tq == Tk")
    q, k, v = rand_qkv(B, H, Tq, Tk, D, dtype, seed=Tq * 7 + D)
    got, _ = cupy_ops.attention(q, k, v, impl=impl, **mask)
    want = reference_attention(q, k, v, **mask)
    assert got.dtype == dtype and got.shape == (B, H, Tq, D)
    err = (got.float() - want).abs().max().item()
    assert err <= TOL[dtype], f"max abs error {err:.3g} > {TOL[dtype]}"


@pytest.mark.parametrize("mask", [dict(), dict(window=40, sinks=2)])
def test_attention_probs_of_selected_heads(mask):
    q, k, v = rand_qkv(2, 4, 90, 90, 32, torch.float32, seed=3)
    out, probs = kernels.attention(q, k, v, return_probs_heads=[3, 1], backend="emulator", **mask)
    ref_out, ref_probs = kernels.attention(q, k, v, return_probs_heads=[3, 1], backend="reference", **mask)
    assert probs.shape == (2, 2, 90, 90) and probs.dtype == torch.float32
    assert (probs - ref_probs).abs().max().item() < 1e-5
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2, 90), atol=1e-4)
    assert (out - ref_out).abs().max().item() < 1e-5


def test_public_attention_takes_the_tensor_core_kernel_for_half(monkeypatch):
    seen = []
    real = cupy_ops._function
    monkeypatch.setattr(cupy_ops, "_function", lambda file, kernel, *a: seen.append(kernel) or real(file, kernel, *a))
    q, k, v = rand_qkv(1, 2, 100, 100, 64, torch.float16)
    got = kernels.attention(q, k, v, backend="emulator")
    assert seen == ["wb_attn_mma_f16_d64"]
    assert (got.float() - reference_attention(q, k, v)).abs().max().item() <= 2e-3


@pytest.mark.parametrize("impl", ["mma", "simt"])
def test_attention_unaligned_rows(impl):
    """Row stride 65 (not a multiple of 8): the mma kernel takes its scalar-load path."""
    base = torch.randn(3, 1, 2, 90, 65, dtype=torch.float16, generator=torch.Generator().manual_seed(1))
    q, k, v = (t[..., :64] for t in base)
    assert q.stride(2) == 65 and not cupy_ops._aligned16(q, k, v)
    got, _ = cupy_ops.attention(q, k, v, impl=impl, window=20, sinks=2)
    want = reference_attention(*(t.contiguous() for t in (q, k, v)), window=20, sinks=2)
    assert (got.float() - want).abs().max().item() <= 2e-3


def test_attention_strided_views_without_copy():
    x = torch.randn(3, 2, 100, 4, 64, dtype=torch.float16, generator=torch.Generator().manual_seed(2))
    q, k, v = (t.transpose(1, 2) for t in x)   # (B, H, T, D) views of a (B, T, H, D) layout
    got = kernels.attention(q, k, v, backend="emulator")
    want = reference_attention(*(t.contiguous() for t in (q, k, v)))
    assert (got.float() - want).abs().max().item() <= 2e-3


# ---------------------------------------------------------------- sampling
SETTINGS = [dict(temperature=1.0), dict(temperature=0.7, top_k=50), dict(temperature=1.2, top_p=0.9),
            dict(temperature=1.0, min_p=0.05), dict(temperature=0.8, top_k=40, top_p=0.8, min_p=0.02),
            dict(temperature=0.0)]


@pytest.mark.parametrize("kw", SETTINGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("V", [1000, 32000])
def test_sampling_kernel_matches_reference(kw, V):
    """Same thresholds and the same random stream: the same tokens."""
    x = torch.randn(8, V, generator=torch.Generator().manual_seed(V)) * 3
    got = kernels.sample(x, seed=11, backend="emulator", **kw)
    want = kernels.sample(x, seed=11, backend="reference", **kw)
    assert got.tolist() == want.tolist()


def test_sampling_kernel_top_p_threshold_is_exact():
    """Rows built so the top-p crossing token sits right at the boundary: the kernel's radix select keeps
    exactly the reference's set (every draw inside it, the same tokens)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, 300, generator=g) * 2
    for top_p in (0.3, 0.5, 0.75, 0.95, 0.999):
        got = kernels.sample(x, temperature=0.9, top_p=top_p, seed=3, backend="emulator")
        want = kernels.sample(x, temperature=0.9, top_p=top_p, seed=3, backend="reference")
        assert got.tolist() == want.tolist()
        probs = kernels.truncated_probs(x, temperature=0.9, top_p=top_p)
        assert bool((probs.gather(1, got[:, None]) > 0).all())


def test_sampling_agreement_has_power():
    """A kernel whose Gumbel noise is halved draws other tokens: the agreement test above would fail."""
    src = kernels.kernel_source("sampling.cu")
    wrong = src.replace("z + wb_gumbel(", "z + 0.5f * wb_gumbel(")
    assert wrong != src
    x = torch.randn(32, 60, generator=torch.Generator().manual_seed(1)) * 2
    got = cupy_ops.sample(x, temperature=0.9, top_p=0.9, seed=2024, source=wrong)
    want = kernels.sample(x, temperature=0.9, top_p=0.9, seed=2024, backend="reference")
    assert (got == want).double().mean().item() < 0.9


def test_sampling_edge_rows():
    x = torch.tensor([[0.0, 5.0, 5.0, 1.0], [-math.inf, -math.inf, 0.0, -math.inf], [-math.inf] * 4])
    assert kernels.sample(x, temperature=0, backend="emulator").tolist() == [1, 2, -1]
    assert kernels.sample(x, temperature=1.0, top_p=0.5, backend="emulator").tolist()[1:] == [2, -1]
    y = torch.randn(4, 500, dtype=torch.float16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kernels.sample(y, seed=4, backend="emulator"), kernels.sample(y, seed=4, backend="reference"))


# ---------------------------------------------------------------- speculative verification
@pytest.mark.parametrize("G", [0, 1, 4, 8])
@pytest.mark.parametrize("given_u", [True, False])
def test_verification_kernel_matches_reference(G, given_u):
    B, V = 12, 700
    g = torch.Generator().manual_seed(G)
    p = torch.softmax(torch.randn(B, G + 1, V, generator=g) * 2, -1)
    q = torch.softmax(torch.randn(B, G, V, generator=g) * 2, -1)
    q = 0.5 * q + 0.5 * p[:, :G]                                   # realistic agreement
    draft = (torch.multinomial(q.reshape(-1, V), 1, generator=g).reshape(B, G) if G
             else torch.zeros(B, 0, dtype=torch.int64))
    u = torch.rand(B, G, generator=g) if given_u else None
    tok, n = kernels.verify_speculative(p, q, draft, seed=5, uniforms=u, backend="emulator")
    rtok, rn = kernels.verify_speculative(p, q, draft, seed=5, uniforms=u, backend="reference")
    assert n.tolist() == rn.tolist() and tok.tolist() == rtok.tolist()
    if G:
        assert 0 < n.sum() < B * G   # both acceptances and rejections were exercised


# ---------------------------------------------------------------- the emulator's own checks
def run(src, name, grid, block, *args):
    emulator.load(src, "probe").get_function(name)(grid, block, args)


BASE = """
__device__ __attribute__((noinline)) void wait_all() { __syncthreads(); }
extern "C" __global__ void k(float* out, int n) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    BODY
}
"""


def probe(body):
    return BASE.replace("BODY", body)


def test_a_correct_probe_kernel_runs():
    out = torch.zeros(64)
    run(probe("s[t] = t; __syncthreads(); out[t] = s[63 - t] + __shfl_xor_sync(0xffffffffu, (float)t, 1);"),
        "k", (1,), (64,), out, np.int32(64))
    t = np.arange(64)
    assert out.tolist() == list(map(float, (63 - t) + (t ^ 1)))


@pytest.mark.parametrize("body,message", [
    ("if (t < 16) __syncthreads(); out[t] = 1;", "__syncthreads reached by 16 threads after 48 had exited"),
    ("if (t < 16) { __syncthreads(); out[t] = 1; } else { out[t] = 2; __syncthreads(); out[t] += n; }",
     "different __syncthreads calls"),
    # the divergent barriers last in the kernel (a sibling call would make them one jump)
    ("if (t < 16) { out[t] = 1; __syncthreads(); } else { out[t] = 2; __syncthreads(); }",
     "different __syncthreads calls"),
    ("if (t < 16) { out[t] = 1; wait_all(); } else { out[t] = 2; wait_all(); }", "different __syncthreads calls"),
    ("float x = 0; if (t % 32 < 8) x = __shfl_xor_sync(0xffffffffu, 1.0f, 1); out[t] = x;",
     "warp collective .* but not thread 8,0,0, which has exited"),
    ("out[t] = __shfl_xor_sync(0x0000ffffu, 1.0f, 1);", "partial mask"),
    # one barrier, inside a helper, reached from two divergent call sites
    ("if (t < 16) { wait_all(); out[t] = 1; } else { out[t] = 2; wait_all(); out[t] += n; }",
     "different __syncthreads calls"),
    ("out[t + n] = 1;", "wrote outside argument 0: up to 256 bytes past the end"),
    ("out[t - 2] = 1;", "wrote outside argument 0: up to 8 bytes before"),
    ("if (t == 0) ((long long*)out)[n / 2] = -1;", "wrote outside argument 0: up to 8 bytes past the end"),
    ("out[t] = s[t + 64 * n];", r"UBSan: probe.cu:6:\d+: index 4096 out of bounds for type 'float \[64\]' "
                                r"\(block 0,0,0, thread 0,0,0\)"),
    ("out[t] = (float)(n * 2147483647);", "UBSan: .*signed integer multiplication overflow"),
])
def test_emulator_catches_kernel_bugs(body, message):
    with pytest.raises(EmulationError, match=message):
        run(probe(body), "k", (1,), (64,), torch.zeros(64), np.int32(64))


@pytest.mark.parametrize("body", [
    "if (t < 16) s[t] = 1; __syncthreads(); if (t < 16) out[t] = s[t + 1]; else out[t] = 3;",
    "float a = 0; if (t < n) a = out[t]; __syncthreads(); if (t < n) out[t] = a;",
    "for (int i = 0; i < 4; ++i) { if (t < 16) s[t] = i; __syncthreads(); if (t < 16) out[t] += s[t]; "
    "__syncthreads(); }",
    "if (t < 16) out[t] = 1; wait_all(); if (t < 16) out[t] += 1;",
])
def test_barriers_after_conditional_code_are_one_barrier(body):
    """Correct kernels whose barrier sits between thread-dependent branches: the build must not copy the
    barrier call into each branch (jump threading), which would look like divergence."""
    run(probe(body), "k", (1,), (64,), torch.zeros(64), np.int32(16))


def test_canaries_read_as_nan_in_every_float_dtype():
    raw = np.resize(emulator._CANARY, 64)
    for dtype in (np.float16, np.float32, np.float64):
        assert np.isnan(raw.view(dtype)).all(), dtype
    bf16_as_f32 = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    assert np.isnan(bf16_as_f32).all()
    assert -1 not in raw.view(np.int64) and -1 not in raw.view(np.int32)


def test_every_violation_is_reported_not_only_the_first():
    src = probe("out[t] = s[t + 64 * n];")
    for _ in range(2):
        with pytest.raises(EmulationError, match="out of bounds"):
            run(src, "k", (1,), (64,), torch.zeros(64), np.int32(64))


def test_stale_shared_memory_reads_as_nan():
    """Shared memory is 0xFF-filled before every block: reading it unwritten gives NaN, as a reminder that
    on a GPU it holds whatever the previous block left."""
    out = torch.zeros(2, 64)
    run(probe("out[blockIdx.x * 64 + t] = s[t]; s[t] = 1.0f;"), "k", (2,), (64,), out, np.int32(64))
    assert torch.isnan(out).all()


def test_real_kernel_mutations_are_caught():
    """Small slips in the real kernels make the comparisons fail: a wrong ldmatrix row (the tensor-core
    P V product) and a missing histogram reset (the radix select reads stale shared memory)."""
    att = kernels.kernel_source("attention.cu")
    wrong_ld = att.replace("(kk * 16 + (lane % 16)) * SK", "(kk * 16 + (lane % 8)) * SK")
    assert wrong_ld != att
    q, k, v = rand_qkv(1, 1, 64, 64, 16, torch.float16)
    fn = emulator.load(wrong_ld, "attention-mutant").get_function("wb_attn_mma_f16_d16")
    out = torch.empty_like(q)
    i32, i64 = np.int32, np.int64
    strides = [i64(s) for t in (q, k, v) for s in t.stride()[:3]]
    as16 = [t.view(torch.int16) for t in (q, k, v, out)]
    fn((1, 1, 1), (128,), (*as16, i32(1), i32(64), i32(64), *strides, np.float32(0.25), i32(1), i32(0),
                           i32(0), i32(1)))
    assert (out.float() - reference_attention(q, k, v)).abs().max().item() > 0.05

    smp = kernels.kernel_source("sampling.cu")
    wrong_hist = smp.replace("for (int bin = threadIdx.x; bin < 256; bin += blockDim.x) hist[bin] = 0.0f;", "")
    assert wrong_hist != smp
    x = torch.randn(8, 400, generator=torch.Generator().manual_seed(0)) * 3
    got = cupy_ops.sample(x, temperature=1.0, top_k=20, seed=1, source=wrong_hist)
    assert got.tolist() != kernels.sample(x, temperature=1.0, top_k=20, seed=1, backend="reference").tolist()


def test_arguments_and_geometry_are_checked():
    fn = emulator.load(kernels.kernel_source("sampling.cu"), "sampling").get_function("wb_sample_rows")
    x, out = torch.zeros(1, 4), torch.zeros(1, dtype=torch.int64)
    good = [x, np.int64(4), np.int32(4), np.float32(1), np.float32(1), np.int32(0), np.float32(1), np.float32(0),
            np.uint64(0), out]
    fn((1,), (1024,), tuple(good))
    with pytest.raises(EmulationError, match="takes 10 arguments, got 2"):
        fn((1,), (1024,), (x, np.int64(4)))
    for i, bad, message in [(2, np.int64(4), "argument 2: 8 bytes given for a 4-byte parameter"),
                            (2, np.float32(4), "argument 2: float32 given for a integer parameter"),
                            (3, np.int32(1), "argument 3: int32 given for a floating-point parameter"),
                            (1, x, "argument 1: a tensor given for a non-pointer parameter"),
                            (0, np.uint64(8), "argument 0: a pointer parameter takes a tensor or a null")]:
        args = list(good)
        args[i] = bad
        with pytest.raises(EmulationError, match=message):
            fn((1,), (1024,), tuple(args))
    for grid, block in [((0,), (1024,)), ((1, 70000), (1024,)), ((1,), (1025,)), ((1,), (1, 1, 65)),
                        ((1,), (64, 32))]:
        with pytest.raises(EmulationError, match="outside CUDA's limits"):
            fn(grid, block, tuple(good))


def test_every_kernel_is_built_and_its_shared_memory_found():
    from tests.unit.kernels.test_kernels_launch_args import SIGS

    names = set()
    for file in ("attention.cu", "sampling.cu"):
        mod = emulator.load(kernels.kernel_source(file), file.split(".")[0])
        names |= set(mod.kernels)
        assert mod.shared, f"no __shared__ statics found in {file}"
        # none is a GNU-unique symbol, which would bind process-wide and be shared with a variant library
        nm = subprocess.run(["nm", "--defined-only", mod.path], capture_output=True, text=True).stdout
        assert not [ln for ln in nm.splitlines() if ln.split()[-1] in mod.shared and ln.split()[1] == "u"]
    assert names == set(SIGS)
