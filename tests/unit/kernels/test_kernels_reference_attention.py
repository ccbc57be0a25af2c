"""The attention reference (online softmax over key blocks) against the plain formula."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from workbench import kernels
from workbench.kernels import reference


def plain_attention(q, k, v, causal=True, window=None, sinks=0):
    """softmax(Q K^T / sqrt(d) + mask) V in float64, mask built element by element."""
    Tq, Tk, D = q.shape[-2], k.shape[-2], q.shape[-1]
    mask = torch.zeros(Tq, Tk, dtype=torch.float64)
    for i in range(Tq):
        p = Tk - Tq + i
        for j in range(Tk):
            ok = (not causal or j <= p) and (window is None or p - j < window or j < sinks)
            if not ok:
                mask[i, j] = -math.inf
    s = q.double() @ k.double().transpose(-1, -2) / math.sqrt(D) + mask
    probs = torch.softmax(s, dim=-1)
    return probs @ v.double(), probs


def rand_qkv(B, H, Tq, Tk, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Tq, D, generator=g).to(dtype)
    k = torch.randn(B, H, Tk, D, generator=g).to(dtype)
    v = torch.randn(B, H, Tk, D, generator=g).to(dtype)
    return q, k, v


CASES = [
    dict(causal=True),
    dict(causal=False),
    dict(causal=True, window=5),
    dict(causal=True, window=7, sinks=2),
    dict(causal=True, window=1, sinks=4),
    dict(causal=True, window=1000, sinks=1),
]


@pytest.mark.parametrize("mask", CASES, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()))
@pytest.mark.parametrize("T", [1, 17, 64, 65, 130])   # ragged: not multiples of the tile size
def test_reference_matches_plain_formula(mask, T):
    q, k, v = rand_qkv(2, 2, T, T, 16, seed=T)
    want, want_p = plain_attention(q, k, v, **mask)
    out, probs = kernels.attention(q, k, v, return_probs_heads=[1], backend="reference", **mask)
    assert out.dtype == torch.float32 and out.shape == q.shape
    assert (out.double() - want).abs().max() < 1e-5
    assert probs.shape == (2, 1, T, T)
    assert (probs.double() - want_p[:, 1:2]).abs().max() < 1e-6


@pytest.mark.parametrize("mask", CASES[:1] + CASES[3:4])
@pytest.mark.parametrize("Tq,Tk", [(1, 50), (7, 50), (33, 97)])
def test_decode_step_against_cache(mask, Tq, Tk):
    """Tq < Tk: queries are the last Tq positions (a step against a KV cache)."""
    q, k, v = rand_qkv(1, 3, Tq, Tk, 32, seed=Tk)
    want, _ = plain_attention(q, k, v, **mask)
    out = kernels.attention(q, k, v, backend="reference", **mask)
    assert (out.double() - want).abs().max() < 1e-5


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_low_precision_inputs(dtype, tol):
    q, k, v = rand_qkv(1, 2, 45, 45, 64, dtype=dtype)
    want, _ = plain_attention(q, k, v)
    out = kernels.attention(q, k, v, backend="reference")
    assert out.dtype == dtype
    assert (out.double() - want).abs().max() < tol


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 40), extra=st.integers(0, 20), window=st.one_of(st.none(), st.integers(1, 12)),
       sinks=st.integers(0, 5), block=st.sampled_from([1, 3, 16, 64]))
def test_block_size_does_not_matter(T, extra, window, sinks, block):
    q, k, v = rand_qkv(1, 1, T, T + extra, 16, seed=T + 100 * extra)
    want, _ = plain_attention(q, k, v, window=window, sinks=sinks)
    out, _ = reference.attention(q, k, v, window=window, sinks=sinks, block_n=block)
    assert (out.double() - want).abs().max() < 1e-5


def test_mask_helper_shapes_and_semantics():
    m = kernels.attention_mask(3, 6, window=2, sinks=1)
    # queries at positions 3, 4, 5
    assert m.tolist() == [
        [True, False, True, True, False, False],
        [True, False, False, True, True, False],
        [True, False, False, False, True, True],
    ]


def test_online_softmax_walkthrough_matches_softmax():
    x = torch.tensor([1.0, 3.0, -2.0, 0.5, 4.0, 2.0, -1.0])
    probs, steps = reference.online_softmax(x, block=3)
    assert torch.allclose(probs, torch.softmax(x.double(), 0))
    assert [s["m"] for s in steps] == [3.0, 4.0, 4.0]
    assert steps[-1]["l"] == pytest.approx(float(torch.exp(x.double() - 4).sum()))


def test_naive_attention_matches_plain_formula():
    q, k, v = rand_qkv(1, 1, 20, 20, 16)
    want, want_p = plain_attention(q, k, v, window=4, sinks=1)
    out, probs = reference.naive_attention(q, k, v, window=4, sinks=1)
    assert (out.double() - want).abs().max() < 1e-5
    assert (probs.double() - want_p).abs().max() < 1e-6
