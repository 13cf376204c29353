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

#include "async.cuh"
#include "dynamic_shared.cuh"
#include "pdl.cuh"
#include "wgmma.cuh"

namespace sm90 {

using namespace gq;

constexpr int BM = 128, BK = 64, THREADS = 256, STAGES = 6, DEPTH = STAGES - 2;

__host__ __device__ constexpr int slot_bytes(int bn) { return (BM + bn) * BK * 2; }
// The ring, and room to align it to 1024 bytes.
__host__ __device__ constexpr int shared_bytes(int bn) { return STAGES * slot_bytes(bn) + 1024; }

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

template <int BN>
__device__ __forceinline__ void gemm_f16(const uint8_t* __restrict__ W, const __half* __restrict__ X,
                                         float* __restrict__ Y, int rows, int cols, long long row_bytes, int ntok) {
    GQ_DYNAMIC_SHARED(1024, unsigned char, raw);
    // The swizzle is of shared-memory addresses: the ring starts on 1024.
    unsigned char* ring = raw + ((1024 - (shared_address(raw) & 1023)) & 1023);
    const int r0 = blockIdx.y * BM, t0 = blockIdx.x * BN;
    const int steps = (cols + BK - 1) / BK;
    const int group = threadIdx.x >> 7, in_group = threadIdx.x & 127;
    const uint8_t* Xb = reinterpret_cast<const uint8_t*>(X);
    const long long x_bytes = 2LL * cols;

    float d[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) d[i] = 0.0f;

    auto load = [&](int k) {
        unsigned char* slot = ring + (k % STAGES) * slot_bytes(BN);
        fetch<BM>(W, row_bytes, r0, rows - 1, cols, k, slot);
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
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) {
        const int r = r0 + group * 64 + wg_row(in_group, i), t = t0 + wg_col(in_group, i);
        if (r < rows && t < ntok) Y[static_cast<long long>(t) * rows + r] = d[i];
    }
}

}  // namespace sm90

// matmul_wg_f16_n<BN>: grid (ceil(ntok/BN), ceil(rows/128)), block 256,
// dynamic shared memory sm90::shared_bytes(BN) (6 x 32 KiB + 1 KiB at BN
// 128), one block a multiprocessor.
#define GQ_MATMUL_WG(BN)                                                                                      \
    extern "C" __global__ void __launch_bounds__(sm90::THREADS, 1)                                            \
        matmul_wg_f16_n##BN(const uint8_t* __restrict__ W, const __half* __restrict__ X, float* __restrict__ Y, \
                            int rows, int cols, long long row_bytes, int ntok) {                              \
        gq::pdl_begin();                                                                                      \
        sm90::gemm_f16<BN>(W, X, Y, rows, cols, row_bytes, ntok);                                             \
    }

GQ_MATMUL_WG(128)
GQ_MATMUL_WG(64)
