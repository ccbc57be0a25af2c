// Just enough CUDA to run this package's own kernels (cu/*.cu) on a CPU, slowly and strictly.
//
// Included before a kernel file, which is then compiled by g++ as C++20 (see
// workbench/kernels/emulator/__init__.py). Every CUDA thread of a block is a cooperative fiber
// (ucontext) on one OS thread; blocks run one after another. Each synchronisation point hands
// control to a scheduler, which also checks that the kernel synchronises the way CUDA requires:
//   __syncthreads()            all threads of the block, at the same call site, none exited;
//   __shfl_xor_sync, mma, ldmatrix   all 32 lanes of the warp (full mask), at the same call site.
// "Call site" is the whole call path (return addresses up the fiber's stack, so the build keeps
// frame pointers): a helper that synchronises, called from two divergent branches, is two sites.
// A violation, or a deadlock, stops the launch with an error message instead of hanging, and so
// do the UBSan checks the build enables (handlers below, reported for the thread that hit them).
// __shared__ variables become function statics (shared by the fibers of a block); the Python
// side fills them with 0xFF bytes (NaN for floats) before every block, as stale shared memory.
// The PTX instructions the kernels use through inline asm (cvt to/from 16-bit floats, mma.sync
// m16n8k16, ldmatrix .x2 .trans) are implemented in wb_emu:: from the fragment layouts of the
// PTX ISA; the kernels call them under #ifdef WB_CPU_EMULATION.
#pragma once

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define WB_CPU_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x = 1, y = 1, z = 1; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
    return uint4{x, y, z, w};
}

namespace wb_emu {

enum State { READY, WAIT_WARP, WAIT_BLOCK, DONE, FAILED };

struct Fiber {
    ucontext_t ctx;
    uint3 idx;
    int linear = 0;
    State state = READY;
    uintptr_t site = 0;         // call path of the synchronisation it waits at
    uintptr_t stack_lo = 0, stack_hi = 0;
    uint64_t slot[12] = {};     // what this lane contributes to a warp collective
};

// Fiber stacks with an inaccessible guard page below each one: an overflow faults instead of
// silently corrupting the neighbouring fiber. Pages are touched only as fibers use them.
struct Stacks {
    char* base = nullptr;
    size_t page = 0, slot = 0, len = 0;
    Stacks(size_t n, size_t stack_bytes) {
        page = (size_t)sysconf(_SC_PAGESIZE);
        slot = stack_bytes + page;
        len = n * slot;
        void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) { len = 0; return; }
        base = static_cast<char*>(p);
        for (size_t i = 0; i < n; ++i)
            if (mprotect(base + i * slot, page, PROT_NONE) != 0) { munmap(base, len); base = nullptr; return; }
    }
    ~Stacks() { if (base) munmap(base, len); }
    char* stack(size_t i) const { return base + i * slot + page; }   // above slot i's guard page
};

struct Launch {
    std::vector<Fiber> fibers;
    std::unique_ptr<Stacks> stacks;
    ucontext_t scheduler;
    dim3 grid, block;
    uint3 block_idx;
    void (*entry)(void*, void**) = nullptr;
    void* fn = nullptr;
    void** args = nullptr;
    std::string error;
};

// One library is one translation unit, built with hidden visibility and -fno-gnu-unique, so these
// (and the kernels' __shared__ statics) belong to that library alone.
inline Launch* g_launch = nullptr;
inline Fiber* g_cur = nullptr;
constexpr size_t kStack = 64 * 1024;

inline void fail(const std::string& msg) {
    if (g_launch->error.empty()) g_launch->error = msg;
    g_cur->state = FAILED;
    swapcontext(&g_cur->ctx, &g_launch->scheduler);
}

inline std::string where() {
    const uint3 b = g_launch->block_idx, t = g_cur->idx;
    return " (block " + std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) +
           ", thread " + std::to_string(t.x) + "," + std::to_string(t.y) + "," + std::to_string(t.z) + ")";
}

// The call path of the current fiber: its return addresses, hashed, read by walking the frame
// pointers up to the top of its own stack.
__attribute__((noinline)) inline uintptr_t call_path() {
    uintptr_t h = 1469598103934665603ull;
    void** fp = static_cast<void**>(__builtin_frame_address(0));
    const uintptr_t lo = g_cur->stack_lo, hi = g_cur->stack_hi;
    while ((uintptr_t)fp >= lo && (uintptr_t)fp + 2 * sizeof(void*) <= hi) {
        h = (h ^ (uintptr_t)fp[1]) * 1099511628211ull;
        void** next = static_cast<void**>(fp[0]);
        if (next <= fp) break;
        fp = next;
    }
    return h;
}

// Park the current fiber at a warp- or block-wide synchronisation point.
inline void wait(State s) {
    g_cur->state = s;
    g_cur->site = call_path();
    swapcontext(&g_cur->ctx, &g_launch->scheduler);
}

__attribute__((noinline)) inline void syncthreads() { wait(WAIT_BLOCK); }

inline int lane() { return g_cur->linear & 31; }
inline Fiber& lane_fiber(int l) { return g_launch->fibers[(g_cur->linear & ~31) + l]; }

inline void check_full_mask(unsigned int mask, const char* what) {
    if (mask != 0xffffffffu)
        fail(std::string(what) + " with a partial mask is not emulated" + where());
}

template <typename T>
__attribute__((noinline)) T shfl_xor(unsigned int mask, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    check_full_mask(mask, "__shfl_xor_sync");
    std::memcpy(g_cur->slot, &v, sizeof(T));
    wait(WAIT_WARP);                             // every lane has written its value
    T r;
    std::memcpy(&r, lane_fiber((lane() ^ lane_mask) & 31).slot, sizeof(T));
    wait(WAIT_WARP);                             // every lane has read before slots are reused
    return r;
}

// ---- 16-bit floats (cvt.f32.f16, cvt.rn.f16.f32, cvt.rn.bf16.f32) ----
inline float f16_to_f32(unsigned short bits) { return (float)std::bit_cast<_Float16>(bits); }
inline unsigned short f32_to_f16(float x) { return std::bit_cast<unsigned short>((_Float16)x); }
inline float bf16_to_f32(unsigned short bits) { return std::bit_cast<float>((unsigned int)bits << 16); }
inline unsigned short f32_to_bf16(float x) {   // round to nearest even; NaN stays NaN
    unsigned int u = std::bit_cast<unsigned int>(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
inline float half_lo(unsigned int r, bool bf16) {
    return bf16 ? bf16_to_f32(r & 0xffffu) : f16_to_f32(r & 0xffffu);
}
inline float half_hi(unsigned int r, bool bf16) {
    return bf16 ? bf16_to_f32(r >> 16) : f16_to_f32(r >> 16);
}

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32: d = A B + d ----
// Fragments (PTX ISA, "Matrix fragments for mma.m16n8k16"), g = lane / 4, c = 2 * (lane % 4):
//   A: a0 = A[g][c..c+1], a1 = A[g+8][c..c+1], a2 = A[g][c+8..c+9], a3 = A[g+8][c+8..c+9]
//   B: b0 = B[c..c+1][g], b1 = B[c+8..c+9][g]        C/D: {D[g][c], D[g][c+1], D[g+8][c], D[g+8][c+1]}
// The products of 16-bit floats are exact; this sums them in double and rounds once, where the
// hardware accumulates in fp32 in an unspecified order: results can differ in the last bits.
__attribute__((noinline)) inline void mma_m16n8k16(float* d, const unsigned int* a, unsigned int b0,
                                                   unsigned int b1, bool bf16) {
    unsigned int* mine = reinterpret_cast<unsigned int*>(g_cur->slot);
    for (int i = 0; i < 4; ++i) mine[i] = a[i];
    mine[4] = b0;
    mine[5] = b1;
    wait(WAIT_WARP);
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        const unsigned int* f = reinterpret_cast<const unsigned int*>(lane_fiber(l).slot);
        const int g = l / 4, c = 2 * (l % 4);
        const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {c, c, c + 8, c + 8};
        for (int i = 0; i < 4; ++i) {
            A[rows[i]][cols[i]] = half_lo(f[i], bf16);
            A[rows[i]][cols[i] + 1] = half_hi(f[i], bf16);
        }
        B[c][g] = half_lo(f[4], bf16);
        B[c + 1][g] = half_hi(f[4], bf16);
        B[c + 8][g] = half_lo(f[5], bf16);
        B[c + 9][g] = half_hi(f[5], bf16);
    }
    wait(WAIT_WARP);
    const int g = lane() / 4, c = 2 * (lane() % 4);
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {c, c + 1, c, c + 1};
    for (int e = 0; e < 4; ++e) {
        double acc = d[e];   // products of 16-bit floats are exact; fp32 result
        for (int k = 0; k < 16; ++k) acc += (double)A[rows[e]][k] * (double)B[k][cols[e]];
        d[e] = (float)acc;
    }
}

// ---- ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 ----
// Lanes 0-7 give the row addresses of matrix 0, lanes 8-15 those of matrix 1 (8 x 16-bit each).
// With .trans, lane (g, c) receives {M[c][g], M[c+1][g]} of each matrix (low half first).
__attribute__((noinline)) inline void ldmatrix_x2_trans(const unsigned short* row_ptr, unsigned int& b0,
                                                        unsigned int& b1) {
    if (reinterpret_cast<uintptr_t>(row_ptr) % 16 != 0)
        fail("ldmatrix row address is not 16-byte aligned" + where());
    std::memcpy(g_cur->slot, &row_ptr, sizeof(row_ptr));
    wait(WAIT_WARP);
    const int g = lane() / 4, c = 2 * (lane() % 4);
    unsigned int out[2];
    for (int m = 0; m < 2; ++m) {
        const unsigned short* r0;
        const unsigned short* r1;
        std::memcpy(&r0, lane_fiber(8 * m + c).slot, sizeof(r0));
        std::memcpy(&r1, lane_fiber(8 * m + c + 1).slot, sizeof(r1));
        out[m] = (unsigned int)r0[g] | ((unsigned int)r1[g] << 16);
    }
    wait(WAIT_WARP);
    b0 = out[0];
    b1 = out[1];
}

// ---- the scheduler ----
inline void fiber_main(unsigned int hi, unsigned int lo) {
    Fiber* f = reinterpret_cast<Fiber*>(((uintptr_t)hi << 32) | lo);
    g_launch->entry(g_launch->fn, g_launch->args);
    f->state = DONE;
    swapcontext(&f->ctx, &g_launch->scheduler);
}

// Run until every fiber of the block is done. Returns false (with g_launch->error) on a failure.
inline bool run_block(Launch& L) {
    const int n = (int)L.fibers.size();
    for (int i = 0; i < n; ++i) {
        Fiber& f = L.fibers[i];
        f.state = READY;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = L.stacks->stack(i);
        f.ctx.uc_stack.ss_size = kStack;
        f.stack_lo = reinterpret_cast<uintptr_t>(L.stacks->stack(i));
        f.stack_hi = f.stack_lo + kStack;
        f.ctx.uc_link = nullptr;
        const uintptr_t p = reinterpret_cast<uintptr_t>(&f);
        makecontext(&f.ctx, (void (*)())fiber_main, 2, (unsigned int)(p >> 32), (unsigned int)p);
    }
    auto name = [](const Fiber& f) {
        return "thread " + std::to_string(f.idx.x) + "," + std::to_string(f.idx.y) + "," + std::to_string(f.idx.z);
    };
    auto in_block = [&](const std::string& msg) {
        const uint3 b = L.block_idx;
        L.error = msg + " (block " + std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) + ")";
        return false;
    };
    for (;;) {
        for (int i = 0; i < n; ++i) {
            if (L.fibers[i].state != READY) continue;
            g_cur = &L.fibers[i];
            swapcontext(&L.scheduler, &g_cur->ctx);
            if (g_cur->state == FAILED) return false;
        }
        // Release every warp whose lanes all wait at the same warp collective.
        bool released = false;
        int done = 0, at_block = 0;
        for (int w = 0; w < n; w += 32) {
            const int end = (w + 32 < n) ? w + 32 : n;
            int at_warp = 0;
            for (int i = w; i < end; ++i) {
                const State s = L.fibers[i].state;
                at_warp += s == WAIT_WARP;
                done += s == DONE;
                at_block += s == WAIT_BLOCK;
            }
            if (at_warp == 0) continue;
            if (at_warp != end - w || end - w != 32) {
                for (int i = w; i < end; ++i)
                    if (L.fibers[i].state != WAIT_WARP)
                        return in_block("warp collective (shuffle/mma/ldmatrix) reached by some lanes of warp " +
                                        std::to_string(w / 32) + " but not " + name(L.fibers[i]) +
                                        (L.fibers[i].state == DONE ? ", which has exited" : ", which waits at __syncthreads"));
                return in_block("warp collective in a partial warp (block of " + std::to_string(n) + " threads)");
            }
            for (int i = w; i < end; ++i)
                if (L.fibers[i].site != L.fibers[w].site)
                    return in_block("lanes of warp " + std::to_string(w / 32) + " wait at different warp collectives");
            for (int i = w; i < end; ++i) L.fibers[i].state = READY;
            released = true;
        }
        if (released) continue;
        if (done == n) return true;
        if (at_block == n) {
            for (int i = 1; i < n; ++i)
                if (L.fibers[i].site != L.fibers[0].site)
                    return in_block("threads wait at different __syncthreads calls: " + name(L.fibers[0]) +
                                    " and " + name(L.fibers[i]));
            for (int i = 0; i < n; ++i) L.fibers[i].state = READY;
            continue;
        }
        for (int i = 0; i < n; ++i)
            if (L.fibers[i].state == DONE)
                return in_block("__syncthreads reached by " + std::to_string(at_block) + " threads after " +
                                std::to_string(done) + " had exited, e.g. " + name(L.fibers[i]));
        return in_block("deadlock: no thread can make progress");
    }
}

using Entry = void (*)(void*, void**);
constexpr int kMaxArgs = 32;
struct Kernel {
    const char* name;
    void* fn;
    Entry entry;
    int n_args;
    int arg_sizes[kMaxArgs];
    char arg_kinds[kMaxArgs];   // 'p' pointer, 'f' floating point, 'i' integer
};
template <typename A>
constexpr char kind_of() {
    return std::is_pointer_v<A> ? 'p' : std::is_floating_point_v<A> ? 'f' : 'i';
}

template <typename... A, size_t... I>
void invoke(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}
template <typename... A>
Kernel describe(const char* name, void (*f)(A...)) {
    static_assert(sizeof...(A) <= kMaxArgs, "too many kernel parameters");
    Entry e = [](void* fp, void** args) {
        invoke(reinterpret_cast<void (*)(A...)>(fp), args, std::index_sequence_for<A...>{});
    };
    return Kernel{name, reinterpret_cast<void*>(f), e, (int)sizeof...(A), {(int)sizeof(A)...},
                  {kind_of<A>()...}};
}

// The kernels' __shared__ statics (address, bytes), found by the Python side in the symbol table.
inline std::vector<std::pair<char*, size_t>> g_shared;

inline int launch(const Kernel& k, const unsigned int* grid, const unsigned int* block, void** args,
                  char* err, int err_len) {
    Launch L;
    L.grid = dim3{grid[0], grid[1], grid[2]};
    L.block = dim3{block[0], block[1], block[2]};
    L.entry = k.entry;
    L.fn = k.fn;
    L.args = args;
    const long n = (long)block[0] * block[1] * block[2];
    int rc = 0;
    if (n < 1 || n > 1024) {
        L.error = "block of " + std::to_string(n) + " threads; CUDA allows 1 to 1024";
        rc = 2;
    } else {
        L.fibers.resize(n);
        L.stacks = std::make_unique<Stacks>((size_t)n, kStack);
        if (!L.stacks->base) {
            std::snprintf(err, (size_t)err_len, "could not map %ld fiber stacks", n);
            return 2;
        }
        for (long i = 0; i < n; ++i) {
            L.fibers[i].idx = uint3{(unsigned)(i % block[0]), (unsigned)(i / block[0] % block[1]),
                                    (unsigned)(i / ((long)block[0] * block[1]))};
            L.fibers[i].linear = (int)i;
        }
        g_launch = &L;
        for (unsigned z = 0; z < grid[2] && rc == 0; ++z)
            for (unsigned y = 0; y < grid[1] && rc == 0; ++y)
                for (unsigned x = 0; x < grid[0] && rc == 0; ++x) {
                    L.block_idx = uint3{x, y, z};
                    for (auto& [p, bytes] : g_shared) std::memset(p, 0xff, bytes);   // stale shared memory
                    if (!run_block(L)) rc = 1;
                }
        g_launch = nullptr;
        g_cur = nullptr;
    }
    if (rc && err_len > 0) std::snprintf(err, (size_t)err_len, "%s", L.error.c_str());
    return rc;
}

// ---- UBSan handlers (the build links no UBSan runtime): each report fails the current thread ----
struct SourceLocation { const char* file; unsigned int line, column; };
struct TypeDescriptor { unsigned short kind, info; char name[1]; };   // name is quoted: 'float [64]'
struct OutOfBoundsData { SourceLocation loc; const TypeDescriptor* array; const TypeDescriptor* index; };
struct TypeMismatchData { SourceLocation loc; const TypeDescriptor* type; unsigned char log_align, check_kind; };
struct ShiftData { SourceLocation loc; const TypeDescriptor* lhs; const TypeDescriptor* rhs; };
struct OverflowData { SourceLocation loc; const TypeDescriptor* type; };

inline void ubsan(const SourceLocation& loc, const std::string& what) {
    const char* slash = std::strrchr(loc.file, '/');
    std::string msg = "UBSan: " + std::string(slash ? slash + 1 : loc.file) + ":" + std::to_string(loc.line) +
                      ":" + std::to_string(loc.column) + ": " + what;
    if (!g_launch || !g_cur) {   // not inside a kernel thread: nothing to stop
        std::fprintf(stderr, "%s\n", msg.c_str());
        return;
    }
    fail(msg + where());
}

}  // namespace wb_emu

#define WB_EMU_API extern "C" __attribute__((visibility("default")))
// Hidden: bound inside this library, so a UBSan runtime elsewhere in the process cannot take them over.
#define WB_EMU_UBSAN extern "C" __attribute__((visibility("hidden")))
WB_EMU_UBSAN void __ubsan_handle_out_of_bounds(wb_emu::OutOfBoundsData* d, uintptr_t index) {
    wb_emu::ubsan(d->loc, "index " + std::to_string((long long)index) + " out of bounds for type " +
                              d->array->name);
}
WB_EMU_UBSAN void __ubsan_handle_type_mismatch_v1(wb_emu::TypeMismatchData* d, uintptr_t ptr) {
    wb_emu::ubsan(d->loc, std::string(ptr ? "misaligned" : "null") + " access of type " + d->type->name +
                              " (needs " + std::to_string(1u << d->log_align) + "-byte alignment)");
}
WB_EMU_UBSAN void __ubsan_handle_shift_out_of_bounds(wb_emu::ShiftData* d, uintptr_t, uintptr_t) {
    wb_emu::ubsan(d->loc, std::string("shift out of bounds for type ") + d->lhs->name);
}
#define WB_EMU_OVERFLOW(NAME, WHAT)                                                        \
    WB_EMU_UBSAN void NAME(wb_emu::OverflowData* d, uintptr_t, uintptr_t) {                  \
        wb_emu::ubsan(d->loc, std::string("signed integer " WHAT " overflow in type ") + d->type->name); \
    }
WB_EMU_OVERFLOW(__ubsan_handle_add_overflow, "addition")
WB_EMU_OVERFLOW(__ubsan_handle_sub_overflow, "subtraction")
WB_EMU_OVERFLOW(__ubsan_handle_mul_overflow, "multiplication")
WB_EMU_OVERFLOW(__ubsan_handle_divrem_overflow, "division")
WB_EMU_UBSAN void __ubsan_handle_negate_overflow(wb_emu::OverflowData* d, uintptr_t) {
    wb_emu::ubsan(d->loc, std::string("signed integer negation overflow in type ") + d->type->name);
}

#define threadIdx (::wb_emu::g_cur->idx)
#define blockIdx (::wb_emu::g_launch->block_idx)
#define blockDim (::wb_emu::g_launch->block)
#define gridDim (::wb_emu::g_launch->grid)

// Macros, not functions, so that each call site in the kernel is its own synchronisation site.
#define __syncthreads() ::wb_emu::syncthreads()
#define __shfl_xor_sync(mask, v, lane_mask) ::wb_emu::shfl_xor((mask), (v), (lane_mask))
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline float __uint_as_float(unsigned int u) { return std::bit_cast<float>(u); }
inline unsigned int __float_as_uint(float x) { return std::bit_cast<unsigned int>(x); }
inline float atomicAdd(float* p, float v) {   // one OS thread runs all fibers: no race
    const float old = *p;
    *p = old + v;
    return old;
}
template <typename T>
inline T min(T a, T b) { return b < a ? b : a; }
template <typename T>
inline T max(T a, T b) { return a < b ? b : a; }

// The kernel table a build exports (see WB_EMU_EXPORT in the generated main file).
#define WB_EMU_KERNEL(name) ::wb_emu::describe(#name, &name)
#define WB_EMU_EXPORT(...)                                                                      \
    static const ::wb_emu::Kernel wb_emu_table[] = {__VA_ARGS__};                               \
    WB_EMU_API int wb_emu_n_kernels() { return (int)(sizeof(wb_emu_table) / sizeof(wb_emu_table[0])); } \
    WB_EMU_API const char* wb_emu_kernel_name(int i) { return wb_emu_table[i].name; }           \
    WB_EMU_API int wb_emu_kernel_n_args(int i) { return wb_emu_table[i].n_args; }               \
    WB_EMU_API int wb_emu_kernel_arg_size(int i, int a) { return wb_emu_table[i].arg_sizes[a]; } \
    WB_EMU_API int wb_emu_kernel_arg_kind(int i, int a) { return wb_emu_table[i].arg_kinds[a]; } \
    WB_EMU_API void wb_emu_add_shared(void* p, long bytes) {                                    \
        ::wb_emu::g_shared.emplace_back(static_cast<char*>(p), (size_t)bytes);                  \
    }                                                                                           \
    WB_EMU_API int wb_emu_launch(int i, const unsigned int* grid, const unsigned int* block,    \
                                 void** args, char* err, int err_len) {                         \
        return ::wb_emu::launch(wb_emu_table[i], grid, block, args, err, err_len);              \
    }
