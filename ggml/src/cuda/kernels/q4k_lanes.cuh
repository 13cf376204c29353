// A lane's share of a Q4_K super-block in the X-stationary one-token products
// (matvec1_xs.cuh) and their prototypes (lean.cuh): lane l of a warp takes
// super-block l / 8 of every four and bytes 16 (l % 8) .. + 15 of its
// nibbles, that is 16 weights of chunk 2p (low nibbles) and the same 16 of
// chunk 2p + 1 (high nibbles), p = (l % 8) / 2, with one 16-byte load, and
// its super-block's 16-byte header (d, dmin and the 12 bytes of 6-bit
// scales and mins) with another. X comes as 16-bit integers (or 8-bit, in
// the prototypes) with a scale and a float sum a chunk of 32.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

namespace gq {

// sum of 16-bit a (signed) times bytes of b (unsigned), pairs lo or hi, plus c.
__device__ __forceinline__ int dp2a_lo_su(int a, int b, int c) {
#ifdef GQ_EMU
    return gq_emu::dp2a<true, false>(a, b, false, c);
#else
    int d;
    asm("dp2a.lo.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#endif
}
__device__ __forceinline__ int dp2a_hi_su(int a, int b, int c) {
#ifdef GQ_EMU
    return gq_emu::dp2a<true, false>(a, b, true, c);
#else
    int d;
    asm("dp2a.hi.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#endif
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

// The integer dot of 16 values (four words of unsigned bytes) with X's 16.
__device__ __forceinline__ int dot16(const uint32_t (&w)[4], const uint4 (&x)[2]) {
    const uint32_t xw[8] = {x[0].x, x[0].y, x[0].z, x[0].w, x[1].x, x[1].y, x[1].z, x[1].w};
    int s = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        s = dp2a_lo_su(static_cast<int>(xw[2 * k]), static_cast<int>(w[k]), s);
        s = dp2a_hi_su(static_cast<int>(xw[2 * k + 1]), static_cast<int>(w[k]), s);
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

}  // namespace gq
