"""The sampling kernel's radix select, transliterated to numpy and checked against the reference.

``emulate_row`` follows ``wb_sample_rows`` / ``wb_radix_threshold`` / ``wb_pick_bin`` in
cu/sampling.cu step by step (one row, threads folded into numpy reductions, float32 arithmetic
as in the kernel). It checks the algorithm - order-preserving keys, four 8-bit histogram passes,
the running "need", top-p restricted to the top-k set, min-p, Gumbel-max - without a GPU. Keep it
in step with the kernel; the GPU tests check the kernel itself.
"""
import numpy as np
import pytest
import torch

from workbench.kernels import reference

f32 = np.float32


def key(x: np.ndarray) -> np.ndarray:
    u = x.astype(np.float32).view(np.uint32)
    return np.where(u & np.uint32(0x80000000), ~u, u | np.uint32(0x80000000)).astype(np.uint32)


def pick_bin(hist: np.ndarray, need: float):
    above = f32(0)
    lowest = -1
    for b in range(255, -1, -1):
        h = hist[b]
        if h > 0:
            if above + h >= need:
                return b, f32(need - above)
            lowest = b
        above = f32(above + h)
    return (0 if lowest < 0 else lowest), f32(0)


def radix_threshold(x, m, inv_t, mode, need, floor_key):
    keys = key(x)
    prefix, mask = np.uint32(0), np.uint32(0)
    for shift in (24, 16, 8, 0):
        sel = (keys >= floor_key) & ((keys & mask) == prefix)
        w = np.ones(int(sel.sum()), np.float32) if mode == 0 else \
            np.exp((x[sel] - m) * inv_t).astype(np.float32)
        hist = np.zeros(256, np.float32)
        np.add.at(hist, ((keys[sel] >> np.uint32(shift)) & np.uint32(255)).astype(np.int64), w)
        b, need = pick_bin(hist, need)
        prefix |= np.uint32(b) << np.uint32(shift)
        mask |= np.uint32(255) << np.uint32(shift)
    return prefix


def emulate_row(x, row, temperature, top_k, top_p, min_p, seed):
    x = x.astype(np.float32)
    V = x.size
    finite = x > -np.inf
    if not finite.any():
        return -1
    arg = int(np.argmax(np.where(finite, x, -np.inf)))
    m = x[arg]
    if temperature <= 0:
        return arg
    inv_t = f32(1.0 / temperature)
    tau = np.uint32(0)
    if top_k and 0 < top_k < V:
        tau = radix_threshold(x, m, inv_t, 0, f32(top_k), np.uint32(0))
    if top_p is not None and top_p < 1:
        keys = key(x)
        mass = np.exp((x[keys >= tau] - m) * inv_t).astype(np.float32).sum(dtype=np.float32)
        tau = max(tau, radix_threshold(x, m, inv_t, 1, f32(f32(top_p) * mass), tau))
    keep = finite & (key(x) >= tau)
    z = ((x - m) * inv_t).astype(np.float32)
    if min_p:
        keep &= np.exp(z).astype(np.float32) >= f32(min_p)
    g = reference.gumbel_noise(seed, 0, np.array([row]), np.arange(V)).numpy()
    score = np.where(keep, z + g, -np.inf)
    return int(np.argmax(score))


SETTINGS = [dict(temperature=1.0, top_k=None, top_p=None, min_p=None),
            dict(temperature=0.7, top_k=20, top_p=None, min_p=None),
            dict(temperature=1.2, top_k=None, top_p=0.9, min_p=None),
            dict(temperature=0.9, top_k=50, top_p=0.8, min_p=0.05),
            dict(temperature=1.0, top_k=1, top_p=None, min_p=None),
            dict(temperature=1.0, top_k=None, top_p=0.3, min_p=0.2)]


@pytest.mark.parametrize("kw", SETTINGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items() if b))
def test_radix_select_emulation_matches_reference(kw):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 3000, generator=g) * 3
    x[0, :2000] = -float("inf")                       # masked tokens
    x[1, :] = torch.round(x[1, :])                    # many ties
    want = reference.sample(x, seed=21, **kw)
    got = torch.tensor([emulate_row(x[r].numpy(), r, seed=21, **kw) for r in range(x.shape[0])])
    assert (got == want).double().mean().item() >= 0.98, (got != want).nonzero()


def test_thresholds_match_reference_truncation():
    """The kept set from the radix thresholds equals the reference's kept set, row by row."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, 1000, generator=g) * 2
    for kw in SETTINGS[1:4]:
        t = reference.truncate(x, temperature=kw["temperature"], top_k=kw["top_k"],
                               top_p=kw["top_p"], min_p=kw["min_p"])
        for r in range(x.shape[0]):
            row = x[r].numpy().astype(np.float32)
            m, inv_t = row.max(), f32(1.0 / kw["temperature"])
            tau = np.uint32(0)
            if kw["top_k"]:
                tau = radix_threshold(row, m, inv_t, 0, f32(kw["top_k"]), np.uint32(0))
            if kw["top_p"]:
                mass = np.exp((row[key(row) >= tau] - m) * inv_t).astype(np.float32).sum(dtype=np.float32)
                tau = max(tau, radix_threshold(row, m, inv_t, 1, f32(f32(kw["top_p"]) * mass), tau))
            keep = key(row) >= tau
            if kw["min_p"]:
                keep &= np.exp((row - m) * inv_t).astype(np.float32) >= f32(kw["min_p"])
            assert np.array_equal(keep, t.keep[r].numpy()), (kw, r)
