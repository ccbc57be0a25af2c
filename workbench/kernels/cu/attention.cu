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

#define WB_NEG_INF (__int_as_float(0xff800000))
#define WB_LOG2E 1.4426950408889634f
#define WB_TPR 4     // threads per query row
#define WB_BN 32     // keys per tile

struct wb_f16 { unsigned short bits; };
struct wb_bf16 { unsigned short bits; };

__device__ __forceinline__ float wb_to_f32(float x) { return x; }
__device__ __forceinline__ float wb_to_f32(wb_f16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}
__device__ __forceinline__ float wb_to_f32(wb_bf16 x) {
    return __uint_as_float(((unsigned int)x.bits) << 16);
}
__device__ __forceinline__ void wb_store(float* dst, float x) { *dst = x; }
__device__ __forceinline__ void wb_store(wb_f16* dst, float x) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    dst->bits = h;
}
__device__ __forceinline__ void wb_store(wb_bf16* dst, float x) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
    dst->bits = h;
}

__device__ __forceinline__ bool wb_visible(int pos, int j, int causal, int window, int sinks) {
    if (causal && j > pos) return false;
    if (window > 0 && pos - j >= window && j >= sinks) return false;
    return true;
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
        if (window > 0 && j0 >= sinks && j0 + BN - 1 <= first_pos - window) continue;

        __syncthreads();   // previous V tile fully consumed (and sQ written on the first pass)
        for (int idx = tid; idx < BN * D; idx += blockDim.x) {
            int r = idx / D, d = idx % D;
            sKV[r][d] = (j0 + r < Tk) ? wb_to_f32(kb[(long long)(j0 + r) * k_st + d]) : 0.0f;
        }
        __syncthreads();

        // S = Q K^T for this row's CPT columns, masked.
        float s[CPT];
        float tile_max = WB_NEG_INF;
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
            const int jj = sub + WB_TPR * c;
            const int j = j0 + jj;
            float dot = 0.0f;
#pragma unroll 16
            for (int d = 0; d < D; ++d) dot = fmaf(sQ[row][d], sKV[jj][d], dot);
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
        for (int idx = tid; idx < BN * D; idx += blockDim.x) {
            int r = idx / D, d = idx % D;
            sKV[r][d] = (j0 + r < Tk) ? wb_to_f32(vb[(long long)(j0 + r) * v_st + d]) : 0.0f;
        }
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
        if (window > 0 && j0 >= sinks && j0 + BN - 1 <= first_pos - window) continue;
        __syncthreads();
        for (int idx = tid; idx < BN * D; idx += blockDim.x) {
            int r = idx / D, d = idx % D;
            sKV[r][d] = (j0 + r < Tk) ? wb_to_f32(kb[(long long)(j0 + r) * k_st + d]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int c = 0; c < CPT; ++c) {
            const int jj = sub + WB_TPR * c;
            const int j = j0 + jj;
            float dot = 0.0f;
#pragma unroll 16
            for (int d = 0; d < D; ++d) dot = fmaf(sQ[row][d], sKV[jj][d], dot);
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
