// Fused sampling from logits, and speculative-decoding verification. One thread block per row.
//
// wb_sample_rows: temperature -> top-k -> top-p -> min-p -> categorical draw, without sorting.
//   logits (B, V) float32, row stride in elements; out (B,) int64.
//   Every filter is a threshold on the logit, so the kept set is {i : x_i >= tau}:
//     top-k : tau_k = k-th largest logit (ties at tau_k are all kept)
//     top-p : tau_p = logit of the token at which the descending cumulative mass of the
//             temperature-scaled, top-k-renormalised distribution first reaches top_p
//             (the crossing token is kept; ties kept)
//     min-p : keep w_i = exp((x_i - max) / t) >= min_p, i.e. p_i >= min_p * p_max
//   tau_k and tau_p are found by radix select on the order-preserving 32-bit key of each float:
//   four passes of a 256-bin histogram (counts for top-k, probability mass for top-p), each
//   pass fixing 8 more bits of the threshold. No sort, O(V) work per pass.
//   The draw is Gumbel-max: argmax_i z_i + G_i over the kept set, with z_i = (x_i - max)/t and
//   G_i = -log(-log u_i), u_i from a counter-based hash of (seed, row, i), so a given seed gives
//   the same tokens on the GPU and in the CPU reference (workbench/kernels/reference.py).
//   temperature <= 0 means greedy (first index of the maximum). A row with no finite logit gives -1.
//
// wb_verify_speculative: for each row, accept draft token g while u_g * q_g(x_g) < p_g(x_g)
//   (probability min(1, p/q)); at the first rejection draw from norm(max(0, p_g - q_g));
//   if all G drafts are accepted draw a bonus token from p_G. Draws are Gumbel-max as above.
//
// NVRTC has no host headers: constants are defined here, no <float.h> / INFINITY / FLT_MAX.

#define WB_NEG_INF (__int_as_float(0xff800000))
#define WB_THREADS 1024
#define WB_WARPS (WB_THREADS / 32)

#define WB_STREAM_SAMPLE 0ULL
#define WB_STREAM_ACCEPT 1ULL
#define WB_STREAM_RESAMPLE 2ULL

// ---- counter-based random numbers (splitmix64 finaliser), mirrored in reference.py ----
__device__ __forceinline__ unsigned long long wb_mix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
// Uniform in (0, 1) with 23 random bits: exactly representable, identical on CPU and GPU.
__device__ __forceinline__ float wb_uniform(unsigned long long seed, unsigned long long stream,
                                            unsigned long long row, unsigned long long idx) {
    unsigned long long h = wb_mix64(seed);
    h = wb_mix64(h ^ row);
    h = wb_mix64(h ^ (idx | (stream << 40)));
    return ((float)(h >> 41) + 0.5f) * 1.1920928955078125e-07f;   // 2^-23
}
__device__ __forceinline__ float wb_gumbel(unsigned long long seed, unsigned long long stream,
                                           unsigned long long row, unsigned long long idx) {
    return -logf(-logf(wb_uniform(seed, stream, row, idx)));
}

// Order-preserving map float -> uint32 (larger float, larger key).
__device__ __forceinline__ unsigned int wb_key(float x) {
    unsigned int u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// ---- block reductions (blockDim.x == WB_THREADS) ----
__device__ float wb_block_max(float x, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = x;
    __syncthreads();
    x = scratch[threadIdx.x & 31];
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ float wb_block_sum(float x, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = x;
    __syncthreads();
    x = scratch[threadIdx.x & 31];
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
// Argmax with ties going to the smaller index; index -1 for "nothing".
__device__ __forceinline__ void wb_argmax_merge(float& v, int& i, float v2, int i2) {
    if (i2 >= 0 && (i < 0 || v2 > v || (v2 == v && i2 < i))) { v = v2; i = i2; }
}
__device__ int wb_block_argmax(float v, int i, float* sv, int* si) {
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int i2 = __shfl_xor_sync(0xffffffffu, i, o);
        wb_argmax_merge(v, i, v2, i2);
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) { sv[threadIdx.x >> 5] = v; si[threadIdx.x >> 5] = i; }
    __syncthreads();
    v = sv[threadIdx.x & 31];
    i = si[threadIdx.x & 31];
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int i2 = __shfl_xor_sync(0xffffffffu, i, o);
        wb_argmax_merge(v, i, v2, i2);
    }
    return i;
}

// After a histogram pass, walk the 256 bins from the top and pick the bin where the running
// total first reaches `*need`; `*need` becomes what is still needed inside that bin.
// Run by one thread. If rounding leaves the target unreached, the lowest non-empty bin is used.
__device__ int wb_pick_bin(const float* hist, float* need) {
    float above = 0.0f;
    int lowest = -1;
    for (int bin = 255; bin >= 0; --bin) {
        const float h = hist[bin];
        if (h > 0.0f) {
            if (above + h >= *need) { *need -= above; return bin; }
            lowest = bin;
        }
        above += h;
    }
    if (lowest < 0) return 0;
    *need = 0.0f;
    return lowest;
}

// Radix select of the threshold key. mode 0: the k-th largest key (weights are counts);
// mode 1: the key at which the descending cumulative mass of w reaches `need`.
// Only elements with key >= floor_key take part.
__device__ unsigned int wb_radix_threshold(const float* x, int V, float m, float inv_t, int mode,
                                           float need, unsigned int floor_key,
                                           float* hist, float* shared_need) {
    unsigned int prefix = 0u, mask = 0u;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int bin = threadIdx.x; bin < 256; bin += blockDim.x) hist[bin] = 0.0f;
        if (threadIdx.x == 0) *shared_need = need;
        __syncthreads();
        // Logits are concentrated in few bins (the top byte is sign + exponent), so shared-memory
        // atomics on one bin would serialise. Each thread sums runs of equal bins in a register
        // and flushes only when its bin changes.
        int run_bin = -1;
        float run = 0.0f;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const float xi = x[i];
            const unsigned int key = wb_key(xi);
            if (key >= floor_key && (key & mask) == prefix) {
                const float w = (mode == 0) ? 1.0f : expf((xi - m) * inv_t);
                const int bin = (int)((key >> shift) & 255u);
                if (bin != run_bin) {
                    if (run_bin >= 0) atomicAdd(&hist[run_bin], run);
                    run_bin = bin;
                    run = 0.0f;
                }
                run += w;
            }
        }
        if (run_bin >= 0) atomicAdd(&hist[run_bin], run);
        __syncthreads();
        __shared__ unsigned int s_bin;
        if (threadIdx.x == 0) s_bin = (unsigned int)wb_pick_bin(hist, shared_need);
        __syncthreads();
        prefix |= s_bin << shift;
        mask |= 255u << shift;
        need = *shared_need;
        __syncthreads();
    }
    return prefix;
}

extern "C" __global__ void __launch_bounds__(WB_THREADS) wb_sample_rows(
    const float* __restrict__ logits, long long row_stride, int V,
    float temperature, float inv_t, int top_k, float top_p, float min_p,
    unsigned long long seed, long long* __restrict__ out)
{
    __shared__ float s_red[WB_WARPS];
    __shared__ int s_idx[WB_WARPS];
    __shared__ float s_hist[256];
    __shared__ float s_need;
    const int row = blockIdx.x;
    const float* x = logits + row * row_stride;

    // Pass 1: the maximum (and its first index, for greedy).
    float best = WB_NEG_INF;
    int best_i = -1;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float xi = x[i];
        if (xi > WB_NEG_INF) wb_argmax_merge(best, best_i, xi, i);   // skips -inf and NaN
    }
    const int arg = wb_block_argmax(best, best_i, s_red, s_idx);
    if (arg < 0) { if (threadIdx.x == 0) out[row] = -1; return; }
    const float m = x[arg];
    if (temperature <= 0.0f) { if (threadIdx.x == 0) out[row] = arg; return; }

    // top-k threshold (count radix select).
    unsigned int tau = 0u;
    if (top_k > 0 && top_k < V)
        tau = wb_radix_threshold(x, V, m, inv_t, 0, (float)top_k, 0u, s_hist, &s_need);

    // top-p threshold (mass radix select over the top-k set).
    if (top_p < 1.0f) {
        float mass = 0.0f;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const float xi = x[i];
            if (wb_key(xi) >= tau) mass += expf((xi - m) * inv_t);
        }
        mass = wb_block_sum(mass, s_red);
        const unsigned int tau_p =
            wb_radix_threshold(x, V, m, inv_t, 1, top_p * mass, tau, s_hist, &s_need);
        tau = max(tau, tau_p);
    }

    // Gumbel-max draw over the kept set.
    best = WB_NEG_INF;
    best_i = -1;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float xi = x[i];
        if (!(xi > WB_NEG_INF) || wb_key(xi) < tau) continue;
        const float z = (xi - m) * inv_t;
        if (min_p > 0.0f && expf(z) < min_p) continue;
        wb_argmax_merge(best, best_i, z + wb_gumbel(seed, WB_STREAM_SAMPLE, row, i), i);
    }
    const int tok = wb_block_argmax(best, best_i, s_red, s_idx);
    if (threadIdx.x == 0) out[row] = tok;
}

extern "C" __global__ void __launch_bounds__(WB_THREADS) wb_verify_speculative(
    const float* __restrict__ p,          // (B, G + 1, V) target probabilities, contiguous
    const float* __restrict__ q,          // (B, G, V) draft probabilities, contiguous
    const long long* __restrict__ draft,  // (B, G) draft tokens
    const float* __restrict__ accept_u,   // (B, G) uniforms, or null: drawn from the seed
    int G, int V, unsigned long long seed,
    long long* __restrict__ out_tokens,   // (B, G + 1): accepted drafts, then the new token, then -1
    long long* __restrict__ n_accepted)   // (B,)
{
    __shared__ float s_red[WB_WARPS];
    __shared__ int s_idx[WB_WARPS];
    __shared__ int s_n;
    const int row = blockIdx.x;
    const float* prow = p + (long long)row * (G + 1) * V;
    const float* qrow = q + (long long)row * G * V;

    if (threadIdx.x == 0) {
        int n = 0;
        for (; n < G; ++n) {
            const long long tok = draft[(long long)row * G + n];
            const float u = accept_u ? accept_u[(long long)row * G + n]
                                     : wb_uniform(seed, WB_STREAM_ACCEPT, row, n);
            if (!(u * qrow[(long long)n * V + tok] < prow[(long long)n * V + tok])) break;
        }
        s_n = n;
    }
    __syncthreads();
    const int n = s_n;

    // Draw from the residual max(0, p_n - q_n) after a rejection, or from p_G as the bonus.
    const float* pn = prow + (long long)n * V;
    const float* qn = (n < G) ? qrow + (long long)n * V : 0;
    float best = WB_NEG_INF;
    int best_i = -1;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float w = qn ? fmaxf(pn[i] - qn[i], 0.0f) : pn[i];
        if (w > 0.0f)
            wb_argmax_merge(best, best_i, logf(w) + wb_gumbel(seed, WB_STREAM_RESAMPLE, row, i), i);
    }
    int tok = wb_block_argmax(best, best_i, s_red, s_idx);
    if (tok < 0 && qn) {   // residual vanished in rounding: fall back to p_n
        best = WB_NEG_INF;
        best_i = -1;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const float w = pn[i];
            if (w > 0.0f)
                wb_argmax_merge(best, best_i, logf(w) + wb_gumbel(seed, WB_STREAM_RESAMPLE, row, i), i);
        }
        tok = wb_block_argmax(best, best_i, s_red, s_idx);
    }
    if (threadIdx.x == 0) n_accepted[row] = n;
    for (int g = threadIdx.x; g <= G; g += blockDim.x) {
        long long t = -1;
        if (g < n) t = draft[(long long)row * G + g];
        else if (g == n) t = tok;
        out_tokens[(long long)row * (G + 1) + g] = t;
    }
}
