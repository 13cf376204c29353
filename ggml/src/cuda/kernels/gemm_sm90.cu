// Prompt-sized products of f16 weights on Hopper's warpgroup tensor-core
// instructions (wgmma; this module is built for sm_90a alone):
//
//   Y[t*rows + r] = sum_k W[r][k] * X[t*cols + k]
//
// W: `rows` rows of `cols` f16 weights, row r at W + r*row_bytes (16-byte
// aligned); X: ntok x cols activations in __half (tile.cu's `to_half`);
// Y: ntok x rows f32. Same contract as tile.cu's matmul_tile_f16_n<BN>.
//
// Why: tile.cu's wmma tiles issue Ampere's warp-level mma.sync, which on
// Hopper reaches about half the tensor cores' rate however it is fed
// (305 TFLOP/s at 32768x4096 x 512 tokens, cuBLAS's wgmma twice that);
// llama.cpp's F16 prompt batches go through cuBLAS.
//
// A block of two warpgroups (256 threads) computes 128 rows x BN tokens,
// each warpgroup 64 rows with one m64nBNk16 product a K step of 16. The
// weights' and activations' K steps of 64 come by 16-byte asynchronous
// copies straight into 128B-swizzled shared-memory tiles (wgmma.cuh), in a
// ring of STAGES slots with the copies DEPTH = STAGES - 2 steps ahead, so
// that a slot is overwritten only after both warpgroups' products of two
// steps back have finished (each waits for its own products to be at most
// one step behind before the barrier that starts the next step).
#include <cuda_fp16.h>
#include <stdint.h>

#include "act.cuh"
#include "async.cuh"
#include "dynamic_shared.cuh"
#include "pdl.cuh"
#include "wgmma.cuh"

namespace sm90 {

using namespace gq;

// What a block does with its sums: stores them; adds them to Y (a
// residual: the same bits as the product stored and then added by ops.cu's
// `add`); or, its tile holding 64 outputs' gate and up rows, stores
// act(gate) * up (act.cuh's SwiGLU or GeGLU, as ops.cu's glu kernels).
enum Epilogue { STORE = 0, ADD = 1, SWIGLU = 2, GEGLU = 3, DUAL = 4 };

constexpr int BM = 128, BK = 64, THREADS = 256;

// Six slots of 128 + 128 rows; four of 128 + 256 (within Hopper's 227 KiB).
__host__ __device__ constexpr int stages(int bn) { return bn == 256 ? 4 : 6; }
__host__ __device__ constexpr int slot_bytes(int bn) { return (BM + bn) * BK * 2; }
// The ring, and room to align it to 1024 bytes.
__host__ __device__ constexpr int shared_bytes(int bn) { return stages(bn) * slot_bytes(bn) + 1024; }

// Starts the copies of `n` rows' K step `k` (64 halves a row, as 8 pieces of
// 16 bytes) into the swizzled tile `dst`. Rows past `last` read row
// `last` (their sums are never stored); pieces past `cols` are zeros.
template <int N>
__device__ __forceinline__ void fetch(const uint8_t* src, long long row_bytes, int first, int last, int cols, int k,
                                      unsigned char* dst) {
#pragma unroll
    for (int m = 0; m < N * 8 / THREADS; ++m) {
        const int p = threadIdx.x + THREADS * m;
        const int r = p >> 3, c = p & 7;
        const int gk = k * BK + c * 8;
        unsigned char* to = dst + swizzled_piece(r, c);
        if (gk < cols)
            copy16_async(to, src + min(first + r, last) * row_bytes + 2LL * gk);
        else
            *reinterpret_cast<uint4*>(to) = make_uint4(0, 0, 0, 0);
    }
}

// A GLU's 128 tile rows of K step `k`: in each warp's 16, eight outputs'
// gate rows (of Wg) then the same outputs' up rows (of Wu), outputs from
// `first` on. A thread's accumulators of tile rows lane/4 and lane/4 + 8
// are then one output's gate and up: the activation needs no exchange.
// (With the gate's 64 rows in one warpgroup and the up's in the other, the
// sums met in shared memory, and the product ran 30% slower than a plain
// one of its 128 rows.)
__device__ __forceinline__ void fetch_glu(const uint8_t* Wg, const uint8_t* Wu, long long row_bytes, int first,
                                          int last, int cols, int k, unsigned char* dst) {
#pragma unroll
    for (int m = 0; m < BM * 8 / THREADS; ++m) {
        const int p = threadIdx.x + THREADS * m;
        const int r = p >> 3, c = p & 7;
        const int gk = k * BK + c * 8, o = (r >> 4) * 8 + (r & 7);
        unsigned char* to = dst + swizzled_piece(r, c);
        if (gk < cols)
            copy16_async(to, ((r & 8) ? Wu : Wg) + min(first + o, last) * row_bytes + 2LL * gk);
        else
            *reinterpret_cast<uint4*>(to) = make_uint4(0, 0, 0, 0);
    }
}

// W (and, for a GLU, Wu) by X into Y as the epilogue says. A block's rows:
// 128 of W (a GLU's 64 outputs) from blockIdx.y.
template <int BN, int EPI>
__device__ __forceinline__ void gemm_f16(const uint8_t* __restrict__ W, const uint8_t* __restrict__ Wu,
                                         const __half* __restrict__ X, float* __restrict__ Y, int rows, int cols,
                                         long long row_bytes, int ntok) {
    constexpr int STAGES = stages(BN), DEPTH = STAGES - 2;
    GQ_DYNAMIC_SHARED(1024, unsigned char, raw);
    // The swizzle is of shared-memory addresses: the ring starts on 1024.
    unsigned char* ring = raw + ((1024 - (shared_address(raw) & 1023)) & 1023);
    constexpr bool GLU = EPI == SWIGLU || EPI == GEGLU || EPI == DUAL;
    const int r0 = blockIdx.y * (GLU ? BM / 2 : BM), t0 = blockIdx.x * BN;
    const int steps = (cols + BK - 1) / BK;
    const int group = threadIdx.x >> 7, in_group = threadIdx.x & 127;
    const uint8_t* Xb = reinterpret_cast<const uint8_t*>(X);
    const long long x_bytes = 2LL * cols;

    float d[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) d[i] = 0.0f;

    auto load = [&](int k) {
        unsigned char* slot = ring + (k % STAGES) * slot_bytes(BN);
        if constexpr (GLU) {
            fetch_glu(W, Wu, row_bytes, r0, rows - 1, cols, k, slot);
        } else {
            fetch<BM>(W, row_bytes, r0, rows - 1, cols, k, slot);
        }
        fetch<BN>(Xb, x_bytes, t0, ntok - 1, cols, k, slot + BM * BK * 2);
    };
#pragma unroll 1
    for (int k = 0; k < DEPTH; ++k) {
        if (k < steps) load(k);
        async_commit();
    }
#pragma unroll 1
    for (int k = 0; k < steps; ++k) {
        // Step k's copies (this thread's) have landed; after the barrier,
        // everyone's have, and every warpgroup's products of step k-2 are
        // done: the slot the next copies overwrite.
        async_wait<DEPTH - 1>();
        fence_proxy_async();
        __syncthreads();
        if (k + DEPTH < steps) load(k + DEPTH);
        async_commit();
        const unsigned char* slot = ring + (k % STAGES) * slot_bytes(BN);
        const unsigned a = shared_address(slot) + group * 64 * 128, b = shared_address(slot + BM * BK * 2);
        wg_fence();
        wg_hold(d);
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) wg_mma<BN>(d, wg_descriptor(a + 32 * kk), wg_descriptor(b + 32 * kk));
        wg_commit();
        wg_wait<1>();
        wg_hold(d);
    }
    wg_wait<0>();
    wg_hold(d);
    if constexpr (GLU) {
        // Accumulator i of tile row lane/4 (i / 2 even) is a gate's, i + 2
        // (row lane/4 + 8, the same token) its up's.
        const int o = r0 + group * 32 + (in_group >> 5) * 8 + ((in_group & 31) >> 2);
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) {
            if ((i >> 1) & 1) continue;
            const int t = t0 + wg_col(in_group, i);
            if (o >= rows || t >= ntok) continue;
            if constexpr (EPI == DUAL) {
                // Gate and up stored apart (Y, then Y + ntok * rows).
                Y[static_cast<long long>(t) * rows + o] = d[i];
                Y[static_cast<long long>(ntok + t) * rows + o] = d[i + 2];
            } else {
                Y[static_cast<long long>(t) * rows + o] =
                    EPI == SWIGLU ? swiglu_of(d[i], d[i + 2]) : geglu_of(d[i], d[i + 2]);
            }
        }
    } else if constexpr (EPI == ADD) {
        // The sums go through shared memory (the ring, which no product or
        // copy touches once both warpgroups have waited), a token's rows
        // contiguous (`LD` floats apart, padded so that a warp's stores of
        // an accumulator hit 32 banks), then come out a row of a token a
        // thread, the residuals read and the outputs written coalesced.
        // Eight a thread are loaded before any is stored: the compiler
        // cannot tell a residual's address from an earlier output's, and
        // kept each load behind the store before it (a block's epilogue
        // then took 64 round trips to memory, about 24 us a wave).
        constexpr int LD = BM + 4, AT_ONCE = 8;
        float* tile = reinterpret_cast<float*>(ring);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) tile[wg_col(in_group, i) * LD + group * 64 + wg_row(in_group, i)] = d[i];
        __syncthreads();
        static_assert(BM * BN % (AT_ONCE * THREADS) == 0, "whole rounds");
#pragma unroll 1
        for (int e0 = threadIdx.x; e0 < BM * BN; e0 += AT_ONCE * THREADS) {
            float old[AT_ONCE];
#pragma unroll
            for (int j = 0; j < AT_ONCE; ++j) {
                const int e = e0 + j * THREADS, r = r0 + e % BM, t = t0 + e / BM;
                old[j] = r < rows && t < ntok ? Y[static_cast<long long>(t) * rows + r] : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < AT_ONCE; ++j) {
                const int e = e0 + j * THREADS, r = r0 + e % BM, t = t0 + e / BM;
                if (r < rows && t < ntok) Y[static_cast<long long>(t) * rows + r] = old[j] + tile[(e / BM) * LD + e % BM];
            }
        }
    } else {
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) {
            const int r = r0 + group * 64 + wg_row(in_group, i), t = t0 + wg_col(in_group, i);
            if (r < rows && t < ntok) Y[static_cast<long long>(t) * rows + r] = d[i];
        }
    }
}

}  // namespace sm90

// matmul_wg_f16_n<BN>: grid (ceil(ntok/BN), ceil(rows/128)), block 256,
// dynamic shared memory sm90::shared_bytes(BN) (6 x 32 KiB + 1 KiB at BN
// 128, 4 x 48 KiB + 1 KiB at 256), one block a multiprocessor.
// matmul_wg_f16_add_n<BN>: the same, Y += the product.
// matmul_wg_f16_glu_n<BN>: Y = act(Wg X) * (Wu X) (act 0: SwiGLU, 1: GeGLU),
// Wg and Wu of one shape; grid (ceil(ntok/BN), ceil(rows/64)). act 2, a
// form for timing (test_matmul --bench-glu; the backend never passes it):
// Wg X at Y and Wu X at Y + ntok * rows, no activation, to tell what the
// activation in the epilogue costs.
#define GQ_MATMUL_WG(BN)                                                                                          \
    extern "C" __global__ void __launch_bounds__(sm90::THREADS, 1)                                                \
        matmul_wg_f16_n##BN(const uint8_t* __restrict__ W, const __half* __restrict__ X, float* __restrict__ Y,   \
                            int rows, int cols, long long row_bytes, int ntok) {                                  \
        gq::pdl_begin();                                                                                          \
        sm90::gemm_f16<BN, sm90::STORE>(W, nullptr, X, Y, rows, cols, row_bytes, ntok);                        \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(sm90::THREADS, 1)                                                \
        matmul_wg_f16_add_n##BN(const uint8_t* __restrict__ W, const __half* __restrict__ X, float* __restrict__ Y, \
                                int rows, int cols, long long row_bytes, int ntok) {                              \
        gq::pdl_begin();                                                                                          \
        sm90::gemm_f16<BN, sm90::ADD>(W, nullptr, X, Y, rows, cols, row_bytes, ntok);                          \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(sm90::THREADS, 1)                                                \
        matmul_wg_f16_glu_n##BN(const uint8_t* __restrict__ Wg, const uint8_t* __restrict__ Wu,                   \
                                const __half* __restrict__ X, float* __restrict__ Y, int rows, int cols,          \
                                long long row_bytes, int ntok, int act) {                                         \
        gq::pdl_begin();                                                                                          \
        if (act == 0)                                                                                             \
            sm90::gemm_f16<BN, sm90::SWIGLU>(Wg, Wu, X, Y, rows, cols, row_bytes, ntok);                       \
        else if (act == 1)                                                                                        \
            sm90::gemm_f16<BN, sm90::GEGLU>(Wg, Wu, X, Y, rows, cols, row_bytes, ntok);                        \
        else                                                                                                      \
            sm90::gemm_f16<BN, sm90::DUAL>(Wg, Wu, X, Y, rows, cols, row_bytes, ntok);                         \
    }

GQ_MATMUL_WG(256)
GQ_MATMUL_WG(128)
GQ_MATMUL_WG(64)
