// Prototypes of one-token Q4_K products (test_matmul --bench-lean only; no
// backend uses them yet; README, "What a one-token product could reach").
// X is quantised once, before, into global memory (int16 a value with
// matvec1's scale amax / 32767 a 32-chunk, or int8 as llama.cpp's q8_1; and
// the chunk's float sum) and read through L1: no X staging, no shared memory,
// no barrier. Lane l of a warp takes super-block l / 8 of every four and
// bytes 16 (l % 8) .. + 15 of its nibbles (16 weights of chunk 2p, low
// nibbles, and 16 of chunk 2p + 1, high; p = (l % 8) / 2) with one 16-byte
// load, and its super-block's header with another. `matvec_q4k` takes R rows
// a warp; `matvec_q4k_xs` keeps each lane's X in registers across rows.
#pragma once
#include <cstdint>

namespace lean {

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

__device__ __forceinline__ int dp2a_lo(int a, int b, int c) {
    int d;
    asm("dp2a.lo.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}
__device__ __forceinline__ int dp2a_hi(int a, int b, int c) {
    int d;
    asm("dp2a.hi.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}
__device__ __forceinline__ float half_lo(uint32_t w) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu)));
}
__device__ __forceinline__ float half_hi(uint32_t w) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
}

// A lane's sub-blocks 2p and 2p+1 of a super-block's header: their scales
// and mins (the 12 packed bytes in hd.y..w, ggml's get_scale_min_k4).
struct Q4kScales {
    int sc_lo, sc_hi, m_lo, m_hi;
};
__device__ __forceinline__ Q4kScales q4k_scales(uint4 hd, int p) {
    const uint32_t s0 = hd.y, s1 = hd.z, s2 = hd.w;
    const uint32_t sw = p < 2 ? (s0 & 0x3f3f3f3fu) : ((s2 & 0x0f0f0f0fu) | ((s0 >> 2) & 0x30303030u));
    const uint32_t mw = p < 2 ? (s1 & 0x3f3f3f3fu) : (((s2 >> 4) & 0x0f0f0f0fu) | ((s1 >> 2) & 0x30303030u));
    const int sh = 16 * (p & 1);
    return {static_cast<int>((sw >> sh) & 0xff), static_cast<int>((sw >> (sh + 8)) & 0xff),
            static_cast<int>((mw >> sh) & 0xff), static_cast<int>((mw >> (sh + 8)) & 0xff)};
}

// X's two chunks as a lane sees them: its 16 values of each (int16: two
// 16-byte words a chunk; int8: one), the chunks' scales and float sums.
template <typename XT>
struct LaneX {
    uint4 lo[sizeof(XT)], hi[sizeof(XT)];
    float dlo, dhi, slo, shi;
};
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

// The integer dot of 16 values (four words of unsigned bytes) with X's 16.
__device__ __forceinline__ int dot16(const uint32_t (&w)[4], const uint4 (&x)[2]) {
    const uint32_t xw[8] = {x[0].x, x[0].y, x[0].z, x[0].w, x[1].x, x[1].y, x[1].z, x[1].w};
    int s = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        s = dp2a_lo(static_cast<int>(xw[2 * k]), static_cast<int>(w[k]), s);
        s = dp2a_hi(static_cast<int>(xw[2 * k + 1]), static_cast<int>(w[k]), s);
    }
    return s;
}
__device__ __forceinline__ int dot16(const uint32_t (&w)[4], const uint4 (&x)[1]) {
    const uint32_t xw[4] = {x[0].x, x[0].y, x[0].z, x[0].w};
    int s = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) s = __dp4a(static_cast<int>(xw[k]), static_cast<int>(w[k]), s);
    return s;
}

// One lane's 32 weights of one row against X: 16 low-nibble and 16
// high-nibble products, each by its chunk's scale, less the mins' part
// (counted by the even lane of a pair only).
template <typename XT>
__device__ __forceinline__ float q4k_lane(uint4 hd, uint4 qs, const LaneX<XT>& x, int p, bool mins) {
    const Q4kScales s = q4k_scales(hd, p);
    const uint32_t lo[4] = {qs.x & 0x0f0f0f0fu, qs.y & 0x0f0f0f0fu, qs.z & 0x0f0f0f0fu, qs.w & 0x0f0f0f0fu};
    const uint32_t hi[4] = {(qs.x >> 4) & 0x0f0f0f0fu, (qs.y >> 4) & 0x0f0f0f0fu, (qs.z >> 4) & 0x0f0f0f0fu,
                            (qs.w >> 4) & 0x0f0f0f0fu};
    const float d = half_lo(hd.x), dmin = half_hi(hd.x);
    float r = d * (static_cast<float>(dot16(lo, x.lo) * s.sc_lo) * x.dlo +
                   static_cast<float>(dot16(hi, x.hi) * s.sc_hi) * x.dhi);
    if (mins) r -= dmin * (static_cast<float>(s.m_lo) * x.slo + static_cast<float>(s.m_hi) * x.shi);
    return r;
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
