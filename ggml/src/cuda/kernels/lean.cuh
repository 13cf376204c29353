// Prototypes of one-token Q4_K products (test_matmul --bench-lean only;
// README, "What a one-token product could reach"; matvec1_xs.cuh is the
// backend's form of the X-stationary one).
// X is quantised once, before, into global memory (int16 a value with
// matvec1's scale amax / 32767 a 32-chunk, or int8 as llama.cpp's q8_1; and
// the chunk's float sum) and read through L1: no X staging, no shared memory,
// no barrier. Lanes take their weights as q4k_lanes.cuh says. `matvec_q4k` takes R rows
// a warp; `matvec_q4k_xs` keeps each lane's X in registers across rows.
#pragma once
#include <cstdint>

#include "q4k_lanes.cuh"

namespace lean {

using gq::LaneX;
using gq::q4k_lane;

// X (cols floats) -> xq (cols values of XT: int16, or int8 as llama.cpp's
// q8_1), xs (cols / 32 scales, amax / the type's maximum), xsum (cols / 32
// float sums). One warp a chunk of 32.
template <typename XT>
__global__ void quantize_x(const float* __restrict__ X, int cols, XT* __restrict__ xq, float* __restrict__ xs,
                           float* __restrict__ xsum) {
    constexpr float top = sizeof(XT) == 2 ? 32767.0f : 127.0f;
    const int lane = threadIdx.x & 31;
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (c * 32 >= cols) return;
    const float v = X[c * 32 + lane];
    float amax = fabsf(v), sum = v;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
        sum += __shfl_xor_sync(0xffffffffu, sum, off);
    }
    const float inv = amax > 0.0f ? top / amax : 0.0f;
    xq[c * 32 + lane] = static_cast<XT>(__float2int_rn(v * inv));
    if (lane == 0) {
        xs[c] = amax / top;
        xsum[c] = sum;
    }
}

template <typename XT>
__device__ __forceinline__ LaneX<XT> lane_x(const XT* __restrict__ xq, const float* __restrict__ xs,
                                            const float* __restrict__ xsum, int e) {
    LaneX<XT> x;
    const uint4* lo = reinterpret_cast<const uint4*>(xq + e);
    const uint4* hi = reinterpret_cast<const uint4*>(xq + e + 32);
#pragma unroll
    for (int k = 0; k < static_cast<int>(sizeof(XT)); ++k) {
        x.lo[k] = __ldg(lo + k);
        x.hi[k] = __ldg(hi + k);
    }
    const int c = e >> 5;
    x.dlo = __ldg(xs + c);
    x.dhi = __ldg(xs + c + 1);
    x.slo = __ldg(xsum + c);
    x.shi = __ldg(xsum + c + 1);
    return x;
}

// Y[r] = W[r] . X for Q4_K rows (16-byte aligned, cols a multiple of 256);
// R rows a warp, warps striding over row groups; X as XT (int16 or int8).
template <int R, typename XT>
__global__ void __launch_bounds__(256) matvec_q4k(const uint8_t* __restrict__ W, long long row_bytes, int rows,
                                                   int cols, const XT* __restrict__ xq,
                                                   const float* __restrict__ xs, const float* __restrict__ xsum,
                                                   float* __restrict__ Y) {
    const int lane = threadIdx.x & 31;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int nwarps = (gridDim.x * blockDim.x) >> 5;
    const int nsb = cols >> 8;
    const int sbo = lane >> 3, j = lane & 7, p = j >> 1, h = j & 1;
    for (int r0 = warp * R; r0 < rows; r0 += nwarps * R) {
        float acc[R];
        // This lane's header and nibbles in its first super-block of each
        // row; a step is four super-blocks on.
        const uint4* hp[R];
#pragma unroll
        for (int i = 0; i < R; ++i) {
            acc[i] = 0.0f;
            hp[i] = reinterpret_cast<const uint4*>(W + static_cast<long long>(min(r0 + i, rows - 1)) * row_bytes +
                                                   sbo * 144);
        }
        int e = sbo * 256 + 64 * p + 16 * h;
#pragma unroll 2
        for (int sb = sbo; sb < nsb; sb += 4, e += 4 * 256) {
            uint4 hd[R], qs[R];
#pragma unroll
            for (int i = 0; i < R; ++i) {
                hd[i] = __ldg(hp[i]);
                qs[i] = __ldg(hp[i] + 1 + j);
                hp[i] += 4 * 144 / 16;
            }
            const LaneX<XT> x = lane_x(xq, xs, xsum, e);
#pragma unroll
            for (int i = 0; i < R; ++i) acc[i] += q4k_lane(hd[i], qs[i], x, p, h == 0);
        }
#pragma unroll
        for (int i = 0; i < R; ++i) {
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);
            if (lane == 0 && r0 + i < rows) Y[r0 + i] = acc[i];
        }
    }
}

// X-stationary: rows of exactly 1024 ITERS values; a lane keeps its share of
// X (int16, as matvec_q4k reads it) in registers for every row it takes, so
// that only weights cross L1 once X is loaded. One row a warp at a time,
// 128-thread blocks.
template <int ITERS>
__global__ void __launch_bounds__(128) matvec_q4k_xs(const uint8_t* __restrict__ W, long long row_bytes, int rows,
                                                      const int16_t* __restrict__ xq, const float* __restrict__ xs,
                                                      const float* __restrict__ xsum, float* __restrict__ Y) {
    const int lane = threadIdx.x & 31;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int nwarps = (gridDim.x * blockDim.x) >> 5;
    const int sbo = lane >> 3, j = lane & 7, p = j >> 1, h = j & 1;
    LaneX<int16_t> x[ITERS];
#pragma unroll
    for (int it = 0; it < ITERS; ++it) x[it] = lane_x(xq, xs, xsum, (sbo + 4 * it) * 256 + 64 * p + 16 * h);
    for (int r = warp; r < rows; r += nwarps) {
        const uint4* hp = reinterpret_cast<const uint4*>(W + static_cast<long long>(r) * row_bytes + sbo * 144);
        uint4 hd[ITERS], qs[ITERS];
#pragma unroll
        for (int it = 0; it < ITERS; ++it) {
            hd[it] = __ldg(hp + it * 36);
            qs[it] = __ldg(hp + it * 36 + 1 + j);
        }
        float acc = 0.0f;
#pragma unroll
        for (int it = 0; it < ITERS; ++it)
            acc += q4k_lane(hd[it], qs[it], x[it], p, h == 0);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (lane == 0) Y[r] = acc;
    }
}

}  // namespace lean
