// Fused causal attention forward, FlashAttention-style (online softmax, tiled in shared memory).
//
//   out[b, h, i, :] = sum_j softmax_j( q_i . k_j * scale + mask(i, j) ) v_j
//
// Shapes (element strides are passed explicitly; the last dimension must be contiguous):
//   q   (B, H, Tq, D)      k, v  (B, H, Tk, D)      out (B, H, Tq, D), contiguous
//   probs (B, n_slots, Tq, Tk) float32, contiguous, zero-filled by the caller (optional)
// Query row i sits at absolute position  pos(i) = (Tk - Tq) + i  (queries are the last Tq keys),
// so Tq < Tk is an incremental step against a KV cache.
//
// Mask (the attention lab's masks): key j is visible from position p when
//   (!causal || j <= p)  &&  (window <= 0 || p - j < window || j < sinks)
// i.e. a sliding window of the `window` most recent keys (self included) plus `sinks` sink tokens.
//
// One thread block computes BM query rows of one (b, h). TPR = 4 threads share a row: each owns
// BN/TPR key columns of a score tile and D/TPR output dimensions. Arithmetic is fp32 (SIMT FMA);
// inputs and outputs can be fp32, fp16 or bf16. This file is compiled by CuPy with NVRTC, which
// has no host headers: no <cuda_fp16.h>, <float.h>, INFINITY or FLT_MAX. Constants and 16-bit
// conversions are defined here (PTX cvt instructions, sm_80+ for bf16).
// Under WB_CPU_EMULATION (workbench/kernels/emulator, which runs this file on a CPU) the inline
// PTX is replaced by the emulator's C++ versions of the same instructions.

#define WB_NEG_INF (__int_as_float(0xff800000))
#define WB_LOG2E 1.4426950408889634f
#define WB_TPR 4     // threads per query row
#define WB_BN 32     // keys per tile

struct wb_f16 { unsigned short bits; };
struct wb_bf16 { unsigned short bits; };

__device__ __forceinline__ float wb_to_f32(float x) { return x; }
__device__ __forceinline__ float wb_to_f32(wb_f16 x) {
#ifdef WB_CPU_EMULATION
    return wb_emu::f16_to_f32(x.bits);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
#endif
}
__device__ __forceinline__ float wb_to_f32(wb_bf16 x) {
    return __uint_as_float(((unsigned int)x.bits) << 16);
}
__device__ __forceinline__ void wb_store(float* dst, float x) { *dst = x; }
__device__ __forceinline__ void wb_store(wb_f16* dst, float x) {
#ifdef WB_CPU_EMULATION
    dst->bits = wb_emu::f32_to_f16(x);
#else
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    dst->bits = h;
#endif
}
__device__ __forceinline__ void wb_store(wb_bf16* dst, float x) {
#ifdef WB_CPU_EMULATION
    dst->bits = wb_emu::f32_to_bf16(x);
#else
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
    dst->bits = h;
#endif
}

__device__ __forceinline__ bool wb_visible(int pos, int j, int causal, int window, int sinks) {
    if (causal && j > pos) return false;
    if (window > 0 && pos - j >= window && j >= sinks) return false;
    return true;
}

// A key tile [j0, j0 + BN) that no query row of the block can see through a sliding window: every key is
// older than the window for the block's first row (the one that sees the oldest keys) and none is a sink.
__device__ __forceinline__ bool wb_tile_outside_window(int j0, int BN, int first_pos, int window, int sinks) {
    return window > 0 && j0 >= sinks && j0 + BN - 1 <= first_pos - window;
}

// Reduce across the TPR (=4) neighbouring lanes that share a query row.
__device__ __forceinline__ float wb_row_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    return x;
}
__device__ __forceinline__ float wb_row_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}

// Stage rows [j0, j0 + BN) of K or V (row stride st) in shared memory as fp32; rows past Tk are zero.
template <typename T, int D, int BN>
__device__ __forceinline__ void wb_load_tile(float (*s)[D + 1], const T* src, long long st, int j0, int Tk) {
    for (int idx = threadIdx.x; idx < BN * D; idx += blockDim.x) {
        int r = idx / D, d = idx % D;
        s[r][d] = (j0 + r < Tk) ? wb_to_f32(src[(long long)(j0 + r) * st + d]) : 0.0f;
    }
}

// q . k for one query row and one staged key row (q already scaled).
template <int D>
__device__ __forceinline__ float wb_dot(const float* q, const float* k) {
    float dot = 0.0f;
#pragma unroll 16
    for (int d = 0; d < D; ++d) dot = fmaf(q[d], k[d], dot);
    return dot;
}

template <typename T, int D, int BM>
__device__ void wb_attn_fwd(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    T* __restrict__ out, float* __restrict__ probs, const int* __restrict__ head_slot,
    int H, int Tq, int Tk,
    long long q_sb, long long q_sh, long long q_st,
    long long k_sb, long long k_sh, long long k_st,
    long long v_sb, long long v_sh, long long v_st,
    int n_slots, float scale, int causal, int window, int sinks)
{
    constexpr int BN = WB_BN;
    constexpr int CPT = BN / WB_TPR;   // score columns per thread
    constexpr int DPT = D / WB_TPR;    // output dims per thread
    // +1 padding keeps rows in different shared-memory banks.
    __shared__ float sQ[BM][D + 1];
    __shared__ float sKV[BN][D + 1];   // holds the K tile, then the V tile
    __shared__ float sP[BM][BN + 1];

    const int tid = threadIdx.x;
    const int row = tid / WB_TPR;
    const int sub = tid % WB_TPR;
    const int q0 = blockIdx.x * BM;
    const int h = blockIdx.y;
    const int b = blockIdx.z;
    const int offset = Tk - Tq;                       // absolute position of query row 0
    const int qi = q0 + row;                          // this thread's query row
    const int pos = offset + qi;
    const bool row_ok = qi < Tq;

    const T* qb = q + b * q_sb + h * q_sh;
    const T* kb = k + b * k_sb + h * k_sh;
    const T* vb = v + b * v_sb + h * v_sh;

    // Q tile, pre-multiplied by scale*log2(e) so that the softmax can use exp2.
    const float qscale = scale * WB_LOG2E;
    for (int idx = tid; idx < BM * D; idx += blockDim.x) {
        int r = idx / D, d = idx % D;
        sQ[r][d] = (q0 + r < Tq) ? wb_to_f32(qb[(long long)(q0 + r) * q_st + d]) * qscale : 0.0f;
    }

    // Which key tiles can any row of this block see?
    const int first_pos = offset + q0;
    const int last_pos = offset + min(q0 + BM, Tq) - 1;
    const int j_end = causal ? min(Tk, last_pos + 1) : Tk;

    // ---- online softmax state for this row (log2 domain) ----
    float m_i = WB_NEG_INF;   // running max of scores seen so far
    float l_i = 0.0f;         // running sum of exp2(score - m_i)
    float acc[DPT];           // running un-normalised output, dims sub + TPR * t
#pragma unroll
    for (int t = 0; t < DPT; ++t) acc[t] = 0.0f;

    for (int j0 = 0; j0 < j_end; j0 += BN) {
        // Skip tiles that are older than the window for every row and hold no sink.
        if (wb_tile_outside_window(j0, BN, first_pos, window, sinks)) continue;

        __syncthreads();   // previous V tile fully consumed (and sQ written on the first pass)
        wb_load_tile<T, D, BN>(sKV, kb, k_st, j0, Tk);
        __syncthreads();

        // S = Q K^T for this row's CPT columns, masked.
        float s[CPT];
        float tile_max = WB_NEG_INF;
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
            const int jj = sub + WB_TPR * c;
            const int j = j0 + jj;
            const float dot = wb_dot<D>(sQ[row], sKV[jj]);
            const bool ok = j < Tk && wb_visible(pos, j, causal, window, sinks);
            s[c] = ok ? dot : WB_NEG_INF;
            tile_max = fmaxf(tile_max, s[c]);
        }
        // ---- the online softmax update ----
        const float m_new = fmaxf(m_i, wb_row_max(tile_max));
        const float m_use = (m_new == WB_NEG_INF) ? 0.0f : m_new;  // row fully masked so far
        const float alpha = exp2f(m_i - m_use);                     // rescales the old state
        float tile_sum = 0.0f;
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
            const float p = exp2f(s[c] - m_use);                    // exp2(-inf) = 0
            sP[row][sub + WB_TPR * c] = p;
            tile_sum += p;
        }
        l_i = l_i * alpha + wb_row_sum(tile_sum);
        m_i = m_new;
#pragma unroll
        for (int t = 0; t < DPT; ++t) acc[t] *= alpha;

        __syncthreads();   // K tile consumed, P tile written
        wb_load_tile<T, D, BN>(sKV, vb, v_st, j0, Tk);
        __syncthreads();

        // acc += P V
        for (int jj = 0; jj < BN; ++jj) {
            const float p = sP[row][jj];
#pragma unroll
            for (int t = 0; t < DPT; ++t) acc[t] = fmaf(p, sKV[jj][sub + WB_TPR * t], acc[t]);
        }
    }

    const float inv_l = (l_i > 0.0f) ? 1.0f / l_i : 0.0f;
    if (row_ok) {
        T* orow = out + (((long long)b * H + h) * Tq + qi) * D;
#pragma unroll
        for (int t = 0; t < DPT; ++t) wb_store(&orow[sub + WB_TPR * t], acc[t] * inv_l);
    }

    // ---- optional: write the normalised probabilities of selected heads (second pass) ----
    const int slot = (head_slot != 0) ? head_slot[h] : -1;
    if (slot < 0) return;   // uniform over the block, so no barrier is skipped divergently
    const float m_use = (m_i == WB_NEG_INF) ? 0.0f : m_i;
    float* prow = probs + (((long long)b * n_slots + slot) * Tq + qi) * Tk;
    for (int j0 = 0; j0 < j_end; j0 += BN) {
        if (wb_tile_outside_window(j0, BN, first_pos, window, sinks)) continue;
        __syncthreads();
        wb_load_tile<T, D, BN>(sKV, kb, k_st, j0, Tk);
        __syncthreads();
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
            const int jj = sub + WB_TPR * c;
            const int j = j0 + jj;
            const float dot = wb_dot<D>(sQ[row], sKV[jj]);
            if (row_ok && j < Tk && wb_visible(pos, j, causal, window, sinks))
                prow[j] = exp2f(dot - m_use) * inv_l;
        }
    }
}

// Concrete entry points, one per (dtype, head dim): plain C names, so CuPy needs no
// name expressions and `nvcc -ptx` compiles every variant.
#define WB_ATTN_ENTRY(NAME, T, D, BM)                                                        \
    extern "C" __global__ void __launch_bounds__(BM * WB_TPR) NAME(                          \
        const T* q, const T* k, const T* v, T* out, float* probs, const int* head_slot,      \
        int H, int Tq, int Tk,                                                               \
        long long q_sb, long long q_sh, long long q_st,                                      \
        long long k_sb, long long k_sh, long long k_st,                                      \
        long long v_sb, long long v_sh, long long v_st,                                      \
        int n_slots, float scale, int causal, int window, int sinks)                         \
    {                                                                                        \
        wb_attn_fwd<T, D, BM>(q, k, v, out, probs, head_slot, H, Tq, Tk,                     \
                              q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st,          \
                              n_slots, scale, causal, window, sinks);                        \
    }

// Block rows per head dim (keeps static shared memory under 48 KiB): see cupy_ops.ATTN_BLOCK_M.
WB_ATTN_ENTRY(wb_attn_fwd_f32_d16, float, 16, 64)
WB_ATTN_ENTRY(wb_attn_fwd_f32_d32, float, 32, 64)
WB_ATTN_ENTRY(wb_attn_fwd_f32_d64, float, 64, 64)
WB_ATTN_ENTRY(wb_attn_fwd_f32_d128, float, 128, 32)
WB_ATTN_ENTRY(wb_attn_fwd_f16_d16, wb_f16, 16, 64)
WB_ATTN_ENTRY(wb_attn_fwd_f16_d32, wb_f16, 32, 64)
WB_ATTN_ENTRY(wb_attn_fwd_f16_d64, wb_f16, 64, 64)
WB_ATTN_ENTRY(wb_attn_fwd_f16_d128, wb_f16, 128, 32)
WB_ATTN_ENTRY(wb_attn_fwd_bf16_d16, wb_bf16, 16, 64)
WB_ATTN_ENTRY(wb_attn_fwd_bf16_d32, wb_bf16, 32, 64)
WB_ATTN_ENTRY(wb_attn_fwd_bf16_d64, wb_bf16, 64, 64)
WB_ATTN_ENTRY(wb_attn_fwd_bf16_d128, wb_bf16, 128, 32)

// =============================================================================================
// Tensor-core variant for fp16 / bf16 (sm_80+): the same algorithm, with the two matrix products
// on `mma.sync.m16n8k16` (fp16/bf16 inputs, fp32 accumulation), as in FlashAttention-2.
//
// A block has 4 warps and BM = 64 query rows; each warp owns 16 rows and keeps its Q fragment,
// its scores S (16 x BN) and its output O (16 x D) in registers. K and V tiles live in shared
// memory row-major; a K operand is one 32-bit shared load, a V operand one `ldmatrix.trans`.
// Fragment layout of m16n8k16 (g = lane / 4, c = 2 * (lane % 4)):
//   A (16x16, row):  a0 = A[g][c..c+1]   a1 = A[g+8][c..c+1]   a2 = A[g][c+8..]   a3 = A[g+8][c+8..]
//   B (16x8,  col):  b0 = B[c..c+1][g]   b1 = B[c+8..c+9][g]
//   C (16x8, fp32):  c0,c1 = C[g][c], C[g][c+1]     c2,c3 = C[g+8][c], C[g+8][c+1]
// The C fragments of two neighbouring score tiles are exactly the A fragment of P for P V, so the
// probabilities never leave registers. Selected-head probabilities are not written by this
// variant (the launcher uses the SIMT kernel above for that).
// =============================================================================================

#define WB_MMA_BM 64
#define WB_MMA_BN 64

__device__ __forceinline__ unsigned int wb_ld32(const unsigned short* p) {
    return *reinterpret_cast<const unsigned int*>(p);
}
// Pack two fp32 values into one register of two 16-bit floats (first value in the low half).
template <typename T>
__device__ __forceinline__ unsigned int wb_pack2(float lo, float hi, T) {
    T a, b;
    wb_store(&a, lo);
    wb_store(&b, hi);
    return ((unsigned int)b.bits << 16) | a.bits;
}
// The B fragment of V (16 keys x 8 dims) from row-major V in shared memory: ldmatrix .trans hands
// lane (g, c) the pair V[k0 + c][n0 + g], V[k0 + c + 1][n0 + g] (and the same 8 keys further on).
// Lanes 0..15 give the addresses of rows k0 .. k0 + 15 at column n0.
__device__ __forceinline__ void wb_ldmatrix_trans_x2(const unsigned short* row_ptr,
                                                     unsigned int& b0, unsigned int& b1) {
#ifdef WB_CPU_EMULATION
    wb_emu::ldmatrix_x2_trans(row_ptr, b0, b1);
#else
    unsigned int addr;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(addr) : "l"(row_ptr));
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                 : "=r"(b0), "=r"(b1) : "r"(addr));
#endif
}
// Round to the 16-bit type and back, so the row sum l uses exactly the weights that P V uses.
__device__ __forceinline__ float wb_round16(float x, wb_f16) {
    wb_f16 h;
    wb_store(&h, x);
    return wb_to_f32(h);
}
__device__ __forceinline__ float wb_round16(float x, wb_bf16) {
    wb_bf16 h;
    wb_store(&h, x);
    return wb_to_f32(h);
}
// d += a * b for one 16x8x16 tile.
__device__ __forceinline__ void wb_mma(float* d, const unsigned int* a, unsigned int b0,
                                       unsigned int b1, wb_f16) {
#ifdef WB_CPU_EMULATION
    wb_emu::mma_m16n8k16(d, a, b0, b1, false);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
__device__ __forceinline__ void wb_mma(float* d, const unsigned int* a, unsigned int b0,
                                       unsigned int b1, wb_bf16) {
#ifdef WB_CPU_EMULATION
    wb_emu::mma_m16n8k16(d, a, b0, b1, true);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Copy rows [row0, row0 + ROWS) x D of a 16-bit matrix into shared memory (row stride SROW);
// rows at or past n_rows are zero. vec: every row start is 16-byte aligned, so 8 elements move
// per load.
template <int ROWS, int D, int SROW>
__device__ __forceinline__ void wb_load_tile16(unsigned short* s, const unsigned short* g,
                                               long long row_stride, int row0, int n_rows, bool vec) {
    if (vec) {
        for (int idx = threadIdx.x; idx < ROWS * D / 8; idx += blockDim.x) {
            const int r = idx / (D / 8), c = (idx % (D / 8)) * 8;
            uint4 val = make_uint4(0u, 0u, 0u, 0u);
            if (row0 + r < n_rows)
                val = *reinterpret_cast<const uint4*>(g + (long long)(row0 + r) * row_stride + c);
            *reinterpret_cast<uint4*>(s + r * SROW + c) = val;
        }
    } else {
        for (int idx = threadIdx.x; idx < ROWS * D; idx += blockDim.x) {
            const int r = idx / D, c = idx % D;
            const unsigned short val = (row0 + r < n_rows) ? g[(long long)(row0 + r) * row_stride + c] : 0;
            s[r * SROW + c] = val;
        }
    }
}

template <typename T, int D>
__device__ void wb_attn_mma(
    const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
    const unsigned short* __restrict__ v, unsigned short* __restrict__ out,
    int H, int Tq, int Tk,
    long long q_sb, long long q_sh, long long q_st,
    long long k_sb, long long k_sh, long long k_st,
    long long v_sb, long long v_sh, long long v_st,
    float scale, int causal, int window, int sinks, int vec)
{
    constexpr int BM = WB_MMA_BM, BN = WB_MMA_BN;
    constexpr int SK = D + 8;    // padded row stride (16-bit elements): conflict-free reads
    __shared__ __align__(16) unsigned short sK[BN * SK];   // first holds the Q tile (BM == BN)
    __shared__ __align__(16) unsigned short sV[BN * SK];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, c = 2 * (lane % 4);
    const int q0 = blockIdx.x * BM, h = blockIdx.y, b = blockIdx.z;
    const int offset = Tk - Tq;
    const int row_lo = q0 + warp * 16 + g;    // the two query rows this thread holds
    const int row_hi = row_lo + 8;
    const T tag = T();

    const unsigned short* qb = q + b * q_sb + h * q_sh;
    const unsigned short* kb = k + b * k_sb + h * k_sh;
    const unsigned short* vb = v + b * v_sb + h * v_sh;

    // Q fragments, kept in registers for the whole loop.
    wb_load_tile16<BM, D, SK>(sK, qb, q_st, q0, Tq, vec);
    __syncthreads();
    unsigned int qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const unsigned short* base = sK + (warp * 16) * SK + kk * 16 + c;
        qf[kk][0] = wb_ld32(base + g * SK);
        qf[kk][1] = wb_ld32(base + (g + 8) * SK);
        qf[kk][2] = wb_ld32(base + g * SK + 8);
        qf[kk][3] = wb_ld32(base + (g + 8) * SK + 8);
    }

    const float qscale = scale * WB_LOG2E;
    const int first_pos = offset + q0;
    const int last_pos = offset + min(q0 + BM, Tq) - 1;
    const int j_end = causal ? min(Tk, last_pos + 1) : Tk;

    float o[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    float m_run[2] = {WB_NEG_INF, WB_NEG_INF};
    float l_run[2] = {0.0f, 0.0f};

    for (int j0 = 0; j0 < j_end; j0 += BN) {
        if (wb_tile_outside_window(j0, BN, first_pos, window, sinks)) continue;
        __syncthreads();   // everyone is done with the previous tile (or with the Q staging)
        wb_load_tile16<BN, D, SK>(sK, kb, k_st, j0, Tk, vec);
        wb_load_tile16<BN, D, SK>(sV, vb, v_st, j0, Tk, vec);
        __syncthreads();

        // S = Q K^T  (16 x BN per warp)
        float s[BN / 8][4];
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                const unsigned short* kp = sK + (nt * 8 + g) * SK + kk * 16 + c;
                wb_mma(s[nt], qf[kk], wb_ld32(kp), wb_ld32(kp + 8), tag);
            }
        }
        // scale (log2 domain) and mask; tiles that every row of the block sees in full skip the mask
        const bool full_tile = j0 + BN <= Tk && (!causal || j0 + BN - 1 <= first_pos) &&
                               (window <= 0 || last_pos - j0 < window);
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int j = j0 + nt * 8 + c + (e & 1);
                const int pos = offset + ((e < 2) ? row_lo : row_hi);
                const bool ok = full_tile || (j < Tk && wb_visible(pos, j, causal, window, sinks));
                s[nt][e] = ok ? s[nt][e] * qscale : WB_NEG_INF;
            }
        }
        // online softmax, one update per held row (hr = 0: row_lo, elements 0,1; hr = 1: row_hi, 2,3)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            float mx = WB_NEG_INF;
#pragma unroll
            for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * hr], s[nt][2 * hr + 1]));
            const float m_new = fmaxf(m_run[hr], wb_row_max(mx));
            const float m_use = (m_new == WB_NEG_INF) ? 0.0f : m_new;
            const float alpha = exp2f(m_run[hr] - m_use);
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < BN / 8; ++nt) {
                s[nt][2 * hr] = wb_round16(exp2f(s[nt][2 * hr] - m_use), tag);
                s[nt][2 * hr + 1] = wb_round16(exp2f(s[nt][2 * hr + 1] - m_use), tag);
                sum += s[nt][2 * hr] + s[nt][2 * hr + 1];
            }
            l_run[hr] = l_run[hr] * alpha + wb_row_sum(sum);
            m_run[hr] = m_new;
#pragma unroll
            for (int dt = 0; dt < D / 8; ++dt) { o[dt][2 * hr] *= alpha; o[dt][2 * hr + 1] *= alpha; }
        }
        // O += P V: the score fragments of tiles 2kk and 2kk+1 form the A fragment of P.
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            unsigned int pa[4];
            pa[0] = wb_pack2(s[2 * kk][0], s[2 * kk][1], tag);
            pa[1] = wb_pack2(s[2 * kk][2], s[2 * kk][3], tag);
            pa[2] = wb_pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], tag);
            pa[3] = wb_pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], tag);
#pragma unroll
            for (int dt = 0; dt < D / 8; ++dt) {
                unsigned int b0, b1;
                wb_ldmatrix_trans_x2(sV + (kk * 16 + (lane % 16)) * SK + dt * 8, b0, b1);
                wb_mma(o[dt], pa, b0, b1, tag);
            }
        }
    }

    // out = O / l
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int row = hr ? row_hi : row_lo;
        if (row >= Tq) continue;
        const float inv_l = (l_run[hr] > 0.0f) ? 1.0f / l_run[hr] : 0.0f;
        unsigned int* orow = reinterpret_cast<unsigned int*>(out + (((long long)b * H + h) * Tq + row) * D);
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt)
            orow[(dt * 8 + c) / 2] = wb_pack2(o[dt][2 * hr] * inv_l, o[dt][2 * hr + 1] * inv_l, tag);
    }
}

#define WB_MMA_ENTRY(NAME, T, D)                                                             \
    extern "C" __global__ void __launch_bounds__(128) NAME(                                  \
        const unsigned short* q, const unsigned short* k, const unsigned short* v,           \
        unsigned short* out, int H, int Tq, int Tk,                                          \
        long long q_sb, long long q_sh, long long q_st,                                      \
        long long k_sb, long long k_sh, long long k_st,                                      \
        long long v_sb, long long v_sh, long long v_st,                                      \
        float scale, int causal, int window, int sinks, int vec)                             \
    {                                                                                        \
        wb_attn_mma<T, D>(q, k, v, out, H, Tq, Tk, q_sb, q_sh, q_st, k_sb, k_sh, k_st,       \
                          v_sb, v_sh, v_st, scale, causal, window, sinks, vec);              \
    }

WB_MMA_ENTRY(wb_attn_mma_f16_d16, wb_f16, 16)
WB_MMA_ENTRY(wb_attn_mma_f16_d32, wb_f16, 32)
WB_MMA_ENTRY(wb_attn_mma_f16_d64, wb_f16, 64)
WB_MMA_ENTRY(wb_attn_mma_f16_d128, wb_f16, 128)
WB_MMA_ENTRY(wb_attn_mma_bf16_d16, wb_bf16, 16)
WB_MMA_ENTRY(wb_attn_mma_bf16_d32, wb_bf16, 32)
WB_MMA_ENTRY(wb_attn_mma_bf16_d64, wb_bf16, 64)
WB_MMA_ENTRY(wb_attn_mma_bf16_d128, wb_bf16, 128)
