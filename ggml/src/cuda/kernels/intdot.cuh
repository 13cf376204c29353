// Weights as packed 8-bit integers for the integer-dot matvec.
//
// int_chunk<T>(row, chunk, c) unpacks the 32 weights of a chunk (as
// dequant32 numbers them) into eight words of four signed bytes, element
// 4k + i in byte i of word k, with the float factors that turn integer dot
// products back into the chunk's sum:
//
//   sum_j w_j * x_j = a0 * sum_{j<16} q_j x_j + a1 * sum_{j>=16} q_j x_j - m * sum_j x_j
//
// The matvec quantises the activations of each chunk to 16 bits (scale
// amax / 32767, far finer than the 8-bit activations of llama.cpp's mmvq), so
// the dot products run on __dp2a (two 16x8-bit products a lane per
// instruction) instead of dequantising every weight to a float.
#pragma once

#include "quants.cuh"

namespace gq {

__host__ __device__ constexpr bool has_int_chunk(int t) {
    return t == Q4_0 || t == Q5_0 || t == Q8_0 || t == Q4_K || t == Q6_K || t == Q5_K || t == Q4_1;
}

struct IntChunk {
    int q[8];
    float a0, a1, m;
};

template <int T>
__device__ __forceinline__ void int_chunk(const uint8_t* row, int chunk, IntChunk& c);

// Q4_0 {f16 d; u8 qs[16]}: element j < 16 is the low nibble of qs[j], j >= 16
// the high nibble of qs[j - 16]; w = d * (q - 8).
template <>
__device__ __forceinline__ void int_chunk<Q4_0>(const uint8_t* row, int chunk, IntChunk& c) {
    uint32_t w[5];
    ldspan<18>(row + static_cast<long long>(chunk) * 18, w);
    const float d = h2f(w[0]);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const uint32_t qs = __funnelshift_r(w[k], w[k + 1], 16);
        c.q[k] = static_cast<int>(__vsub4(qs & 0x0f0f0f0fu, 0x08080808u));
        c.q[k + 4] = static_cast<int>(__vsub4((qs >> 4) & 0x0f0f0f0fu, 0x08080808u));
    }
    c.a0 = c.a1 = d;
    c.m = 0.0f;
}

// Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}: element j's low four bits as Q4_0's,
// its fifth bit bit j of qh; w = d * (q - 16). `offset` subtracts the 16
// (int_chunk) or leaves it to the caller (int_chunk_raw).
__device__ __forceinline__ void q5_0_chunk(const uint8_t* row, int chunk, IntChunk& c, bool offset) {
    uint32_t w[6];
    ldspan<22>(row + static_cast<long long>(chunk) * 22, w);
    const uint32_t qh = __funnelshift_r(w[0], w[1], 16);
    // Bits 4k..4k+3 of qh to bit 4 of bytes 0..3 (the product puts bit i at 8i).
    auto fifth = [qh](int k) { return ((((qh >> (4 * k)) & 0xfu) * 0x00204081u) & 0x01010101u) << 4; };
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const uint32_t qs = __funnelshift_r(w[k + 1], w[k + 2], 16);
        const uint32_t lo = (qs & 0x0f0f0f0fu) | fifth(k), hi = ((qs >> 4) & 0x0f0f0f0fu) | fifth(k + 4);
        c.q[k] = static_cast<int>(offset ? __vsub4(lo, 0x10101010u) : lo);
        c.q[k + 4] = static_cast<int>(offset ? __vsub4(hi, 0x10101010u) : hi);
    }
    c.a0 = c.a1 = h2f(w[0]);
    c.m = 0.0f;
}

template <>
__device__ __forceinline__ void int_chunk<Q5_0>(const uint8_t* row, int chunk, IntChunk& c) {
    q5_0_chunk(row, chunk, c, true);
}

// Q4_1 {f16 d, m; u8 qs[16]}: w = d * q + m.
template <>
__device__ __forceinline__ void int_chunk<Q4_1>(const uint8_t* row, int chunk, IntChunk& c) {
    uint32_t w[5];
    ldspan<20>(row + static_cast<long long>(chunk) * 20, w);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        c.q[k] = static_cast<int>(w[k + 1] & 0x0f0f0f0fu);
        c.q[k + 4] = static_cast<int>((w[k + 1] >> 4) & 0x0f0f0f0fu);
    }
    c.a0 = c.a1 = h2f(w[0]);
    c.m = -h2f(w[0] >> 16);
}

// Q8_0 {f16 d; i8 qs[32]}: w = d * q.
template <>
__device__ __forceinline__ void int_chunk<Q8_0>(const uint8_t* row, int chunk, IntChunk& c) {
    uint32_t w[9];
    ldspan<34>(row + static_cast<long long>(chunk) * 34, w);
#pragma unroll
    for (int k = 0; k < 8; ++k) c.q[k] = static_cast<int>(__funnelshift_r(w[k], w[k + 1], 16));
    c.a0 = c.a1 = h2f(w[0]);
    c.m = 0.0f;
}

// Q4_K: w = (d * sc) * q - dmin * mn (see dequant32<Q4_K>).
template <>
__device__ __forceinline__ void int_chunk<Q4_K>(const uint8_t* row, int chunk, IntChunk& c) {
    const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 144;
    const int j = chunk & 7;
    uint32_t h[4], q[8];
    ldspan<16>(b, h);
    ldspan<32>(b + 16 + 32 * (j >> 1), q);
    uint32_t sc, mn;
    scale_min_k4(j, h[1], h[2], h[3], sc, mn);
    const int nib = 4 * (j & 1);
#pragma unroll
    for (int k = 0; k < 8; ++k) c.q[k] = static_cast<int>((q[k] >> nib) & 0x0f0f0f0fu);
    c.a0 = c.a1 = h2f(h[0]) * static_cast<float>(sc);
    c.m = h2f(h[0] >> 16) * static_cast<float>(mn);
}

// The offset a type's stored integers carry (w = scale * (q - offset)).
__host__ __device__ constexpr int int_offset(int t) { return t == Q4_0 ? 8 : t == Q5_0 ? 16 : t == Q6_K ? 32 : 0; }

// int_chunk with the stored integers as they are, offset and all (the
// caller subtracts int_offset(T) times each half's sum of X); A16: the row
// starts 16-byte aligned, so the types whose blocks keep 16-byte fields
// aligned read them whole.
template <int T, bool A16>
__device__ __forceinline__ void int_chunk_raw(const uint8_t* row, int chunk, IntChunk& c) {
    if constexpr (T == Q4_0) {
        uint32_t w[5];
        ldspan<18>(row + static_cast<long long>(chunk) * 18, w);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const uint32_t qs = __funnelshift_r(w[k], w[k + 1], 16);
            c.q[k] = static_cast<int>(qs & 0x0f0f0f0fu);
            c.q[k + 4] = static_cast<int>((qs >> 4) & 0x0f0f0f0fu);
        }
        c.a0 = c.a1 = h2f(w[0]);
        c.m = 0.0f;
    } else if constexpr (T == Q5_0) {
        q5_0_chunk(row, chunk, c, false);
    } else if constexpr (T == Q6_K) {
        const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 210;
        const int j = chunk & 7;
        const int half = j >> 2, sub = j & 3;
        uint32_t ql[8], qh[8];
        ldspan<32>(b + 64 * half + 32 * (sub & 1), ql);
        ldspan<32>(b + 128 + 32 * half, qh);
        const uint32_t sc = ldg_u16(b + 192 + 8 * half + 2 * sub);
        const float d = h2f(ldg_u16(b + 208));
        const int nib = 4 * (sub >> 1), hs = 2 * sub;
#pragma unroll
        for (int k = 0; k < 8; ++k)
            c.q[k] = static_cast<int>(((ql[k] >> nib) & 0x0f0f0f0fu) | (((qh[k] >> hs) & 0x03030303u) << 4));
        c.a0 = d * static_cast<float>(static_cast<int8_t>(sc & 0xffu));
        c.a1 = d * static_cast<float>(static_cast<int8_t>(sc >> 8));
        c.m = 0.0f;
    } else if constexpr (T == Q4_K && A16) {
        const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 144;
        const int j = chunk & 7;
        const uint4 h = *reinterpret_cast<const uint4*>(b);
        const uint4* qp = reinterpret_cast<const uint4*>(b + 16 + 32 * (j >> 1));
        const uint4 q0 = qp[0], q1 = qp[1];
        const uint32_t q[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
        uint32_t sc, mn;
        scale_min_k4(j, h.y, h.z, h.w, sc, mn);
        const int nib = 4 * (j & 1);
#pragma unroll
        for (int k = 0; k < 8; ++k) c.q[k] = static_cast<int>((q[k] >> nib) & 0x0f0f0f0fu);
        c.a0 = c.a1 = h2f(h.x) * static_cast<float>(sc);
        c.m = h2f(h.x >> 16) * static_cast<float>(mn);
    } else {
        int_chunk<T>(row, chunk, c);
    }
}

// Chunk `lane & 7` of block `lane >> 3` of a 16-byte-aligned run of Q4_K
// blocks in global memory, read straight into registers through the
// read-only path: the block's 16-byte head (8 lanes load the same one, one
// transaction) and the 32 bytes of quants the chunk's nibbles are in. The
// loads and the unpacking are apart so that a caller issues all of its
// rows' loads before it waits on any.
struct Q4kRaw {
    uint4 h, q0, q1;
};
__device__ __forceinline__ Q4kRaw q4_k_load_global(const uint8_t* blocks, int lane) {
    const uint8_t* b = blocks + (lane >> 3) * 144;
    const uint4* qp = reinterpret_cast<const uint4*>(b + 16 + 32 * ((lane & 7) >> 1));
    return Q4kRaw{__ldg(reinterpret_cast<const uint4*>(b)), __ldg(qp), __ldg(qp + 1)};
}

// The words are the nibbles masked in place, as unsigned bytes: an odd
// chunk's (high nibbles) are 16 q, and its factors carry the 1/16 (exact),
// one instruction a word instead of a shift and a mask.
__device__ __forceinline__ void q4_k_unpack_masked(const Q4kRaw& r, int lane, IntChunk& c) {
    const int j = lane & 7;
    const uint32_t q[8] = {r.q0.x, r.q0.y, r.q0.z, r.q0.w, r.q1.x, r.q1.y, r.q1.z, r.q1.w};
    uint32_t sc, mn;
    scale_min_k4(j, r.h.y, r.h.z, r.h.w, sc, mn);
    const uint32_t mask = (j & 1) ? 0xf0f0f0f0u : 0x0f0f0f0fu;
#pragma unroll
    for (int k = 0; k < 8; ++k) c.q[k] = static_cast<int>(q[k] & mask);
    c.a0 = c.a1 = h2f(r.h.x) * static_cast<float>(sc) * ((j & 1) ? 0.0625f : 1.0f);
    c.m = h2f(r.h.x >> 16) * static_cast<float>(mn);
}

// Q5_K: Q4_K plus bit j of qh[l] worth 16.
template <>
__device__ __forceinline__ void int_chunk<Q5_K>(const uint8_t* row, int chunk, IntChunk& c) {
    const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 176;
    const int j = chunk & 7;
    uint32_t h[4], qh[8], q[8];
    ldspan<16>(b, h);
    ldspan<32>(b + 16, qh);
    ldspan<32>(b + 48 + 32 * (j >> 1), q);
    uint32_t sc, mn;
    scale_min_k4(j, h[1], h[2], h[3], sc, mn);
    const int nib = 4 * (j & 1);
#pragma unroll
    for (int k = 0; k < 8; ++k)
        c.q[k] = static_cast<int>(((q[k] >> nib) & 0x0f0f0f0fu) | (((qh[k] >> j) & 0x01010101u) << 4));
    c.a0 = c.a1 = h2f(h[0]) * static_cast<float>(sc);
    c.m = h2f(h[0] >> 16) * static_cast<float>(mn);
}

// Q6_K: w = (d * scale[half]) * (q - 32), one scale per 16 weights (see dequant32<Q6_K>).
template <>
__device__ __forceinline__ void int_chunk<Q6_K>(const uint8_t* row, int chunk, IntChunk& c) {
    const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 210;
    const int j = chunk & 7;
    const int half = j >> 2, sub = j & 3;
    uint32_t ql[8], qh[8];
    ldspan<32>(b + 64 * half + 32 * (sub & 1), ql);
    ldspan<32>(b + 128 + 32 * half, qh);
    const uint32_t sc = ldg_u16(b + 192 + 8 * half + 2 * sub);
    const float d = h2f(ldg_u16(b + 208));
    const int nib = 4 * (sub >> 1), hs = 2 * sub;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const uint32_t v = ((ql[k] >> nib) & 0x0f0f0f0fu) | (((qh[k] >> hs) & 0x03030303u) << 4);
        c.q[k] = static_cast<int>(__vsub4(v, 0x20202020u));
    }
    c.a0 = d * static_cast<float>(static_cast<int8_t>(sc & 0xffu));
    c.a1 = d * static_cast<float>(static_cast<int8_t>(sc >> 8));
    c.m = 0.0f;
}

}  // namespace gq
