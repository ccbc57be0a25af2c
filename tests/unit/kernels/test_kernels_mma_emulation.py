"""The tensor-core attention kernel's index bookkeeping, emulated lane by lane on the CPU.

``emulate`` transliterates ``wb_attn_mma`` (cu/attention.cu) statement by statement; ``mma`` and
``ldmatrix_trans_x2`` implement the two PTX instructions from the fragment layouts in the PTX ISA
(mma.m16n8k16 A/B/C fragments; ldmatrix .m8n8 .trans). If the kernel's fragment indexing, masking
or online-softmax bookkeeping were wrong, the emulation would disagree with the reference. It does
not check the hardware itself (that is test_kernels_gpu.py); keep it in step with the kernel.
"""
import math

import numpy as np
import pytest
import torch

from workbench.kernels import reference

NEG = -np.inf
BM = BN = 64

def mma(d, a, b0, b1):
    """d: list of 32 lanes x [4 floats]; a: 32 x 4 pairs; b0,b1: 32 pairs. In-place D = A B + C."""
    A = np.zeros((16, 16)); B = np.zeros((16, 8)); C = np.zeros((16, 8))
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        A[g, 2*t:2*t+2] = a[lane][0]; A[g+8, 2*t:2*t+2] = a[lane][1]
        A[g, 2*t+8:2*t+10] = a[lane][2]; A[g+8, 2*t+8:2*t+10] = a[lane][3]
        B[2*t:2*t+2, g] = b0[lane]; B[2*t+8:2*t+10, g] = b1[lane]
        C[g, 2*t:2*t+2] = d[lane][0:2]; C[g+8, 2*t:2*t+2] = d[lane][2:4]
    Dm = A @ B + C
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        d[lane][0:2] = Dm[g, 2*t:2*t+2]; d[lane][2:4] = Dm[g+8, 2*t:2*t+2]

def ldmatrix_trans_x2(smem, row_offsets):
    M0 = np.stack([smem[row_offsets[l]:row_offsets[l]+8] for l in range(8)])
    M1 = np.stack([smem[row_offsets[l]:row_offsets[l]+8] for l in range(8, 16)])
    b0, b1 = [], []
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        b0.append((M0[2*t, g], M0[2*t+1, g])); b1.append((M1[2*t, g], M1[2*t+1, g]))
    return b0, b1

def group_reduce(vals, op):
    out = list(vals)
    for lane in range(32):
        base = lane & ~3
        out[lane] = op(vals[base:base+4])
    return out

def visible(pos, j, causal, window, sinks):
    if causal and j > pos: return False
    if window > 0 and pos - j >= window and j >= sinks: return False
    return True

def f16(x): return float(np.float16(x))

def emulate(q, k, v, causal=True, window=0, sinks=0):
    """q (Tq, D), k/v (Tk, D) float16 numpy; one (b, h)."""
    Tq, D = q.shape; Tk = k.shape[0]; SK = D + 8
    out = np.zeros((Tq, D)); offset = Tk - Tq
    scale = 1 / math.sqrt(D); qscale = scale * 1.4426950408889634
    for bx in range((Tq + BM - 1) // BM):
        q0 = bx * BM
        sK = np.zeros(BN * SK); sV = np.zeros(BN * SK)
        for r in range(BM):
            if q0 + r < Tq: sK[r*SK:r*SK+D] = q[q0 + r]
        first_pos = offset + q0; last_pos = offset + min(q0 + BM, Tq) - 1
        j_end = min(Tk, last_pos + 1) if causal else Tk
        qf = {}
        for warp in range(4):
            for lane in range(32):
                g, c = lane // 4, 2 * (lane % 4)
                for kk in range(D // 16):
                    base = (warp*16)*SK + kk*16 + c
                    ld = lambda o: (sK[o], sK[o+1])
                    qf[warp, lane, kk] = [ld(base + g*SK), ld(base + (g+8)*SK), ld(base + g*SK + 8), ld(base + (g+8)*SK + 8)]
        o = {w: [[[0.0]*4 for _ in range(D//8)] for _ in range(32)] for w in range(4)}
        m_run = {w: [[NEG, NEG] for _ in range(32)] for w in range(4)}
        l_run = {w: [[0.0, 0.0] for _ in range(32)] for w in range(4)}
        for j0 in range(0, j_end, BN):
            if window > 0 and j0 >= sinks and j0 + BN - 1 <= first_pos - window: continue
            sK[:] = 0; sV[:] = 0
            for r in range(BN):
                if j0 + r < Tk: sK[r*SK:r*SK+D] = k[j0 + r]; sV[r*SK:r*SK+D] = v[j0 + r]
            for warp in range(4):
                s = [[[0.0]*4 for _ in range(32)] for _ in range(BN // 8)]
                for nt in range(BN // 8):
                    for kk in range(D // 16):
                        a = [qf[warp, lane, kk] for lane in range(32)]
                        b0 = []; b1 = []
                        for lane in range(32):
                            g, c = lane // 4, 2 * (lane % 4)
                            kp = (nt*8 + g)*SK + kk*16 + c
                            b0.append((sK[kp], sK[kp+1])); b1.append((sK[kp+8], sK[kp+9]))
                        mma(s[nt], a, b0, b1)
                full_tile = (j0 + BN <= Tk and (not causal or j0 + BN - 1 <= first_pos)
                             and (window <= 0 or last_pos - j0 < window))
                for lane in range(32):
                    g, c = lane // 4, 2 * (lane % 4)
                    row_lo = q0 + warp*16 + g; row_hi = row_lo + 8
                    for nt in range(BN // 8):
                        for e in range(4):
                            j = j0 + nt*8 + c + (e & 1)
                            pos = offset + (row_lo if e < 2 else row_hi)
                            ok = full_tile or (j < Tk and visible(pos, j, causal, window, sinks))
                            s[nt][lane][e] = s[nt][lane][e] * qscale if ok else NEG
                for hr in range(2):
                    mx = [max(max(s[nt][lane][2*hr], s[nt][lane][2*hr+1]) for nt in range(BN//8)) for lane in range(32)]
                    mx = group_reduce(mx, max)
                    sums = []
                    alphas = []
                    for lane in range(32):
                        m_new = max(m_run[warp][lane][hr], mx[lane])
                        m_use = 0.0 if m_new == NEG else m_new
                        alphas.append(2.0 ** (m_run[warp][lane][hr] - m_use))
                        tot = 0.0
                        for nt in range(BN // 8):
                            for e in (2*hr, 2*hr+1):
                                s[nt][lane][e] = f16(2.0 ** (s[nt][lane][e] - m_use)); tot += s[nt][lane][e]
                        sums.append(tot); m_run[warp][lane][hr] = m_new
                    sums = group_reduce(sums, sum)
                    for lane in range(32):
                        l_run[warp][lane][hr] = l_run[warp][lane][hr] * alphas[lane] + sums[lane]
                        for dt in range(D // 8):
                            o[warp][lane][dt][2*hr] *= alphas[lane]; o[warp][lane][dt][2*hr+1] *= alphas[lane]
                for kk in range(BN // 16):
                    pa = [[(f16(s[2*kk][l][0]), f16(s[2*kk][l][1])), (f16(s[2*kk][l][2]), f16(s[2*kk][l][3])),
                           (f16(s[2*kk+1][l][0]), f16(s[2*kk+1][l][1])), (f16(s[2*kk+1][l][2]), f16(s[2*kk+1][l][3]))]
                          for l in range(32)]
                    for dt in range(D // 8):
                        rows = [(kk*16 + (lane % 16))*SK + dt*8 for lane in range(32)]
                        b0, b1 = ldmatrix_trans_x2(sV, rows)
                        od = [o[warp][lane][dt] for lane in range(32)]
                        mma(od, pa, b0, b1)
        for warp in range(4):
            for lane in range(32):
                g, c = lane // 4, 2 * (lane % 4)
                for hr in range(2):
                    row = q0 + warp*16 + g + 8*hr
                    if row >= Tq: continue
                    inv = 1 / l_run[warp][lane][hr] if l_run[warp][lane][hr] > 0 else 0
                    for dt in range(D // 8):
                        out[row, dt*8 + c] = f16(o[warp][lane][dt][2*hr] * inv)
                        out[row, dt*8 + c + 1] = f16(o[warp][lane][dt][2*hr+1] * inv)
    return out


@pytest.mark.parametrize("Tq,Tk,D,kw", [
    (70, 70, 32, dict()),
    (70, 70, 16, dict(window=20, sinks=3)),
    (5, 130, 32, dict()),
    (65, 65, 16, dict(causal=False)),
    (130, 130, 16, dict(window=40, sinks=2)),
    (200, 200, 16, dict()),                       # T > 2 tiles: fully visible tiles skip the mask
    (10, 200, 16, dict(window=150, sinks=1)),
])
def test_mma_kernel_emulation_matches_reference(Tq, Tk, D, kw):
    rng = np.random.default_rng(Tq + Tk + D)
    q, k, v = (rng.standard_normal((n, D)).astype(np.float16) for n in (Tq, Tk, Tk))
    got = emulate(q, k, v, causal=kw.get("causal", True), window=kw.get("window", 0),
                  sinks=kw.get("sinks", 0))
    t = lambda a: torch.tensor(a.astype(np.float32))[None, None]  # noqa: E731
    want, _ = reference.attention(t(q), t(k), t(v), causal=kw.get("causal", True),
                                  window=kw.get("window"), sinks=kw.get("sinks", 0))
    assert np.abs(got - want[0, 0].numpy()).max() < 2e-3
