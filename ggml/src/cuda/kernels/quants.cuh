// Device-side dequantisation of ggml block formats, 32 weights at a time.
//
// dequant32<T>(row, chunk, out) writes elements 32*chunk .. 32*chunk+31 of a
// row of type T (a ggml type id) as floats, bit-identical to ggml's
// dequantize_row_* (and to ggml/src/blocks/*.rs): the same formula with the
// same float operations in the same order. Multiplies and adds that the CPU
// does separately are written __fmul_rn/__fadd_rn/__fsub_rn so that nvcc cannot
// contract them into an FMA.
//
// Rows are only assumed 2-byte aligned: every block size is even, and all
// reads go through ldspan (aligned 4-byte loads plus funnel shifts) or 2-byte
// loads, generic ones, so `row` may point into global or shared memory. ldspan only ever loads aligned words holding at least one byte of the
// requested span, so it never touches a 4-byte granule without requested data.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

namespace gq {

enum : int {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14,
    IQ4_NL = 20, IQ4_XS = 23, BF16 = 30,
};

// Elements per ggml block.
__host__ __device__ constexpr int block_elems(int t) {
    return (t == F32 || t == F16 || t == BF16) ? 1
         : (t == Q2_K || t == Q3_K || t == Q4_K || t == Q5_K || t == Q6_K || t == IQ4_XS) ? 256
         : 32;
}

// Bytes per ggml block.
__host__ __device__ constexpr int block_bytes(int t) {
    return t == F32 ? 4 : t == F16 ? 2 : t == BF16 ? 2
         : t == Q4_0 ? 18 : t == Q4_1 ? 20 : t == Q5_0 ? 22 : t == Q5_1 ? 24 : t == Q8_0 ? 34
         : t == Q2_K ? 84 : t == Q3_K ? 110 : t == Q4_K ? 144 : t == Q5_K ? 176 : t == Q6_K ? 210
         : t == IQ4_NL ? 18 : t == IQ4_XS ? 136 : -1;
}

// What `cols` must be a multiple of for the kernels (a 32-element chunk never
// straddles two blocks, and F32/F16/BF16 are handled 32 at a time too).
__host__ __device__ constexpr int cols_multiple(int t) {
    return block_elems(t) == 256 ? 256 : 32;
}

// ---------------------------------------------------------------- loads

__device__ __forceinline__ uint32_t ldg_u16(const uint8_t* p) {
    return *reinterpret_cast<const unsigned short*>(p);
}

// Reads the N bytes at p (p 2-byte aligned, N even) into ceil(N/4) words:
// byte k of the span is byte (k & 3) of word k >> 2 (little endian).
template <int N>
__device__ __forceinline__ void ldspan(const uint8_t* p, uint32_t (&out)[(N + 3) / 4]) {
    constexpr int NW = (N + 3) / 4;
    const uint32_t s = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p) & 2);  // 0 or 2
    // Offset from p itself (not rebuilt from an integer), so that where p
    // points into shared memory the compiler still knows it and emits
    // shared loads rather than generic ones.
    const unsigned int* w = reinterpret_cast<const unsigned int*>(p - s);
    uint32_t v[NW + 1];
#pragma unroll
    for (int k = 0; k < NW; ++k) v[k] = w[k];
    // The extra word is needed (and holds requested bytes) only when misaligned.
    v[NW] = (4 * NW < N + static_cast<int>(s)) ? w[NW] : 0u;
#pragma unroll
    for (int k = 0; k < NW; ++k) out[k] = __funnelshift_r(v[k], v[k + 1], s * 8);
}

// Byte K (compile-time) of a span.
template <int K, int NW>
__device__ __forceinline__ uint32_t byte_at(const uint32_t (&w)[NW]) {
    static_assert(K / 4 < NW, "byte outside span");
    return (w[K >> 2] >> (8 * (K & 3))) & 0xffu;
}

__device__ __forceinline__ uint32_t byte_of(uint32_t w, int k) { return (w >> (8 * k)) & 0xffu; }

// ---------------------------------------------------------------- small ints to float

// float(q) for 0 <= q < 2^23, exactly, without the (quarter-rate) I2F unit.
__device__ __forceinline__ float u2f(uint32_t q) {
    return __uint_as_float(0x4B000000u | q) - 8388608.0f;
}

// float(q - BIAS) for 0 <= q < 2^23, exactly (both operands lie in [2^23, 2^24)).
template <int BIAS>
__device__ __forceinline__ float u2f_b(uint32_t q) {
    return __uint_as_float(0x4B000000u | q) - (8388608.0f + static_cast<float>(BIAS));
}

__device__ __forceinline__ float h2f(uint32_t h) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(h & 0xffffu)));
}

// kvalues_iq4nl[i] + 128, one byte each.
__device__ __forceinline__ float iq4nl_value(uint32_t i) {
    const uint32_t lo = __byte_perm(0x3f2d1801u, 0x766a5d4fu, i & 7u);
    const uint32_t hi = __byte_perm(0xa6998d81u, 0xf1d9c5b5u, i & 7u);
    return u2f_b<128>(((i & 8u) ? hi : lo) & 0xffu);
}

// ---------------------------------------------------------------- per type

template <int T>
__device__ __forceinline__ void dequant32(const uint8_t* row, int chunk, float out[32]);

// Q4_0 {f16 d; u8 qs[16]}: y = float(q - 8) * d
template <>
__device__ __forceinline__ void dequant32<Q4_0>(const uint8_t* row, int chunk, float out[32]) {
    uint32_t w[5];
    ldspan<18>(row + static_cast<long long>(chunk) * 18, w);
    const float d = h2f(w[0]);
#define GQ_Q4_0(J)                                                  \
    {                                                               \
        const uint32_t b = byte_at<2 + (J)>(w);                     \
        out[J] = __fmul_rn(u2f_b<8>(b & 15u), d);                   \
        out[(J) + 16] = __fmul_rn(u2f_b<8>(b >> 4), d);             \
    }
    GQ_Q4_0(0) GQ_Q4_0(1) GQ_Q4_0(2) GQ_Q4_0(3) GQ_Q4_0(4) GQ_Q4_0(5) GQ_Q4_0(6) GQ_Q4_0(7)
    GQ_Q4_0(8) GQ_Q4_0(9) GQ_Q4_0(10) GQ_Q4_0(11) GQ_Q4_0(12) GQ_Q4_0(13) GQ_Q4_0(14) GQ_Q4_0(15)
#undef GQ_Q4_0
}

// Q4_1 {f16 d, m; u8 qs[16]}: y = float(q) * d + m
template <>
__device__ __forceinline__ void dequant32<Q4_1>(const uint8_t* row, int chunk, float out[32]) {
    uint32_t w[5];
    ldspan<20>(row + static_cast<long long>(chunk) * 20, w);
    const float d = h2f(w[0]), m = h2f(w[0] >> 16);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t b = byte_of(w[1 + (j >> 2)], j & 3);
        out[j] = __fadd_rn(__fmul_rn(u2f(b & 15u), d), m);
        out[j + 16] = __fadd_rn(__fmul_rn(u2f(b >> 4), d), m);
    }
}

// Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}: y = float(q - 16) * d
template <>
__device__ __forceinline__ void dequant32<Q5_0>(const uint8_t* row, int chunk, float out[32]) {
    uint32_t w[6];
    ldspan<22>(row + static_cast<long long>(chunk) * 22, w);
    const float d = h2f(w[0]);
    const uint32_t qh = __funnelshift_r(w[0], w[1], 16);  // bytes 2..5
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t b = byte_of(w[(6 + j) >> 2], (6 + j) & 3);
        const uint32_t lo = ((qh >> j) << 4) & 0x10u;
        const uint32_t hi = (qh >> (j + 12)) & 0x10u;
        out[j] = __fmul_rn(u2f_b<16>((b & 15u) | lo), d);
        out[j + 16] = __fmul_rn(u2f_b<16>((b >> 4) | hi), d);
    }
}

// Q5_1 {f16 d, m; u8 qh[4]; u8 qs[16]}: y = float(q) * d + m
template <>
__device__ __forceinline__ void dequant32<Q5_1>(const uint8_t* row, int chunk, float out[32]) {
    uint32_t w[6];
    ldspan<24>(row + static_cast<long long>(chunk) * 24, w);
    const float d = h2f(w[0]), m = h2f(w[0] >> 16);
    const uint32_t qh = w[1];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t b = byte_of(w[2 + (j >> 2)], j & 3);
        const uint32_t lo = ((qh >> j) << 4) & 0x10u;
        const uint32_t hi = (qh >> (j + 12)) & 0x10u;
        out[j] = __fadd_rn(__fmul_rn(u2f((b & 15u) | lo), d), m);
        out[j + 16] = __fadd_rn(__fmul_rn(u2f((b >> 4) | hi), d), m);
    }
}

// Q8_0 {f16 d; i8 qs[32]}: y = float(q) * d
template <>
__device__ __forceinline__ void dequant32<Q8_0>(const uint8_t* row, int chunk, float out[32]) {
    uint32_t w[9];
    ldspan<34>(row + static_cast<long long>(chunk) * 34, w);
    const float d = h2f(w[0]);
#pragma unroll
    for (int j = 0; j < 32; ++j) {
        const uint32_t b = byte_of(w[(2 + j) >> 2], (2 + j) & 3);
        out[j] = __fmul_rn(u2f_b<128>(b ^ 0x80u), d);
    }
}

// IQ4_NL {f16 d; u8 qs[16]}: y = d * kvalues[q]
template <>
__device__ __forceinline__ void dequant32<IQ4_NL>(const uint8_t* row, int chunk, float out[32]) {
    uint32_t w[5];
    ldspan<18>(row + static_cast<long long>(chunk) * 18, w);
    const float d = h2f(w[0]);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t b = byte_of(w[(2 + j) >> 2], (2 + j) & 3);
        out[j] = __fmul_rn(d, iq4nl_value(b & 15u));
        out[j + 16] = __fmul_rn(d, iq4nl_value(b >> 4));
    }
}

// IQ4_XS {f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]}, 8 sub-blocks of 32:
// dl = d * float(scale - 32); y = dl * kvalues[q]
template <>
__device__ __forceinline__ void dequant32<IQ4_XS>(const uint8_t* row, int chunk, float out[32]) {
    const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 136;
    const int ib = chunk & 7;
    uint32_t h[2];
    ldspan<8>(b, h);
    uint32_t q[4];
    ldspan<16>(b + 8 + 16 * ib, q);
    const float d = h2f(h[0]);
    const uint32_t low = (h[1] >> (4 * ib)) & 15u;
    const uint32_t high = (h[0] >> (16 + 2 * ib)) & 3u;
    const float dl = __fmul_rn(d, u2f_b<32>(low | (high << 4)));
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t v = byte_of(q[j >> 2], j & 3);
        out[j] = __fmul_rn(dl, iq4nl_value(v & 15u));
        out[j + 16] = __fmul_rn(dl, iq4nl_value(v >> 4));
    }
}

// Q2_K {u8 scales[16]; u8 qs[64]; f16 d, dmin}. Chunk c of a block is
// (half = c/4, shift = 2*(c%4)): q = (qs[32*half + l] >> shift) & 3 with
// scale byte 2c (l < 16) or 2c+1; y = (d * float(sc & 15)) * float(q) - dmin * float(sc >> 4)
template <>
__device__ __forceinline__ void dequant32<Q2_K>(const uint8_t* row, int chunk, float out[32]) {
    const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 84;
    const int c = chunk & 7;
    const int shift = 2 * (c & 3);
    uint32_t q[8];
    ldspan<32>(b + 16 + 32 * (c >> 2), q);
    uint32_t dm[1];
    ldspan<4>(b + 80, dm);
    const uint32_t sc = ldg_u16(b + 2 * c);
    const float d = h2f(dm[0]), dmin = h2f(dm[0] >> 16);
    const float dl0 = __fmul_rn(d, u2f(sc & 15u)), ml0 = __fmul_rn(dmin, u2f((sc >> 4) & 15u));
    const float dl1 = __fmul_rn(d, u2f((sc >> 8) & 15u)), ml1 = __fmul_rn(dmin, u2f((sc >> 12) & 15u));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const uint32_t v = q[i] >> shift;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int l = 4 * i + k;
            const float x = u2f((v >> (8 * k)) & 3u);
            out[l] = (l < 16) ? __fsub_rn(__fmul_rn(dl0, x), ml0) : __fsub_rn(__fmul_rn(dl1, x), ml1);
        }
    }
}

// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}. Chunk c as Q2_K, the
// third bit is bit c of hmask[l] (clear means -4); 6-bit scales biased by 32:
// y = (d * float(scale - 32)) * float(q - (hbit ? 0 : 4))
template <>
__device__ __forceinline__ void dequant32<Q3_K>(const uint8_t* row, int chunk, float out[32]) {
    const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 110;
    const int c = chunk & 7;
    const int shift = 2 * (c & 3);
    uint32_t hm[8], q[8], s[3];
    ldspan<32>(b, hm);
    ldspan<32>(b + 32 + 32 * (c >> 2), q);
    ldspan<12>(b + 96, s);
    const float d = h2f(ldg_u16(b + 108));
    // Scales j = 2c and 2c+1 (see q3_k_scales): group g = j/4 = c/2, byte k = j%4.
    const int g = c >> 1;
    const int k0 = 2 * (c & 1);
    const uint32_t lw = ((g & 1) ? s[1] : s[0]) >> (4 * (g >> 1));
    const uint32_t hw = s[2] >> (2 * g);
    const uint32_t sc0 = ((lw >> (8 * k0)) & 15u) | (((hw >> (8 * k0)) & 3u) << 4);
    const uint32_t sc1 = ((lw >> (8 * k0 + 8)) & 15u) | (((hw >> (8 * k0 + 8)) & 3u) << 4);
    const float dl0 = __fmul_rn(d, u2f_b<32>(sc0));
    const float dl1 = __fmul_rn(d, u2f_b<32>(sc1));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const uint32_t v = q[i] >> shift;
        const uint32_t h = hm[i] >> c;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int l = 4 * i + k;
            const float x = u2f_b<4>(((v >> (8 * k)) & 3u) | (((h >> (8 * k)) & 1u) << 2));
            out[l] = __fmul_rn(l < 16 ? dl0 : dl1, x);
        }
    }
}

// Scale and min c (0..7) of the 12 packed scale bytes of Q4_K/Q5_K, given as
// the words s0 = bytes 0..3, s1 = 4..7, s2 = 8..11 (scale_min_k4).
__device__ __forceinline__ void scale_min_k4(int c, uint32_t s0, uint32_t s1, uint32_t s2,
                                             uint32_t& sc, uint32_t& mn) {
    const int k = c & 3;
    const uint32_t b0 = byte_of(s0, k), b1 = byte_of(s1, k), b2 = byte_of(s2, k);
    if (c < 4) {
        sc = b0 & 63u;
        mn = b1 & 63u;
    } else {
        sc = (b2 & 15u) | ((b0 >> 6) << 4);
        mn = (b2 >> 4) | ((b1 >> 6) << 4);
    }
}

// Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}: chunk c uses qs[32*(c/2) ..]
// nibble c%2; y = (d * float(sc)) * float(q) - dmin * float(m)
template <>
__device__ __forceinline__ void dequant32<Q4_K>(const uint8_t* row, int chunk, float out[32]) {
    const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 144;
    const int c = chunk & 7;
    uint32_t h[4], q[8];
    ldspan<16>(b, h);
    ldspan<32>(b + 16 + 32 * (c >> 1), q);
    uint32_t sc, mn;
    scale_min_k4(c, h[1], h[2], h[3], sc, mn);
    const float d1 = __fmul_rn(h2f(h[0]), u2f(sc));
    const float m1 = __fmul_rn(h2f(h[0] >> 16), u2f(mn));
    const int nib = 4 * (c & 1);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const uint32_t v = q[i] >> nib;
#pragma unroll
        for (int k = 0; k < 4; ++k)
            out[4 * i + k] = __fsub_rn(__fmul_rn(d1, u2f((v >> (8 * k)) & 15u)), m1);
    }
}

// Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: Q4_K plus bit c
// of qh[l] worth 16.
template <>
__device__ __forceinline__ void dequant32<Q5_K>(const uint8_t* row, int chunk, float out[32]) {
    const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 176;
    const int c = chunk & 7;
    uint32_t h[4], qh[8], q[8];
    ldspan<16>(b, h);
    ldspan<32>(b + 16, qh);
    ldspan<32>(b + 48 + 32 * (c >> 1), q);
    uint32_t sc, mn;
    scale_min_k4(c, h[1], h[2], h[3], sc, mn);
    const float d1 = __fmul_rn(h2f(h[0]), u2f(sc));
    const float m1 = __fmul_rn(h2f(h[0] >> 16), u2f(mn));
    const int nib = 4 * (c & 1);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const uint32_t v = q[i] >> nib;
        const uint32_t hb = qh[i] >> c;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const uint32_t x = ((v >> (8 * k)) & 15u) | (((hb >> (8 * k)) & 1u) << 4);
            out[4 * i + k] = __fsub_rn(__fmul_rn(d1, u2f(x)), m1);
        }
    }
}

// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}. Chunk c: half = c/4,
// sub = c%4: low nibble (sub < 2) or high of ql[64*half + 32*(sub&1) + l],
// bits 2*sub of qh[32*half + l], scale scales[8*half + 2*sub + l/16];
// y = (d * float(scale)) * float(q - 32)
template <>
__device__ __forceinline__ void dequant32<Q6_K>(const uint8_t* row, int chunk, float out[32]) {
    const uint8_t* b = row + static_cast<long long>(chunk >> 3) * 210;
    const int c = chunk & 7;
    const int half = c >> 2, sub = c & 3;
    uint32_t ql[8], qh[8];
    ldspan<32>(b + 64 * half + 32 * (sub & 1), ql);
    ldspan<32>(b + 128 + 32 * half, qh);
    const uint32_t sc = ldg_u16(b + 192 + 8 * half + 2 * sub);
    const float d = h2f(ldg_u16(b + 208));
    const float ds0 = __fmul_rn(d, u2f_b<128>((sc & 0xffu) ^ 0x80u));
    const float ds1 = __fmul_rn(d, u2f_b<128>((sc >> 8) ^ 0x80u));
    const int nib = 4 * (sub >> 1), hs = 2 * sub;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const uint32_t lo = ql[i] >> nib;
        const uint32_t hi = qh[i] >> hs;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int l = 4 * i + k;
            const uint32_t x = ((lo >> (8 * k)) & 15u) | (((hi >> (8 * k)) & 3u) << 4);
            out[l] = __fmul_rn(l < 16 ? ds0 : ds1, u2f_b<32>(x));
        }
    }
}

template <>
__device__ __forceinline__ void dequant32<F32>(const uint8_t* row, int chunk, float out[32]) {
    uint32_t w[32];
    ldspan<128>(row + static_cast<long long>(chunk) * 128, w);
#pragma unroll
    for (int j = 0; j < 32; ++j) out[j] = __uint_as_float(w[j]);
}

template <>
__device__ __forceinline__ void dequant32<F16>(const uint8_t* row, int chunk, float out[32]) {
    uint32_t w[16];
    ldspan<64>(row + static_cast<long long>(chunk) * 64, w);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        out[2 * j] = h2f(w[j]);
        out[2 * j + 1] = h2f(w[j] >> 16);
    }
}

template <>
__device__ __forceinline__ void dequant32<BF16>(const uint8_t* row, int chunk, float out[32]) {
    uint32_t w[16];
    ldspan<64>(row + static_cast<long long>(chunk) * 64, w);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        out[2 * j] = __uint_as_float(w[j] << 16);
        out[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
    }
}

// Element k of a row of F32 or BF16 weights (for the f32 SIMT matmul).
template <int T>
__device__ __forceinline__ float load_elem(const uint8_t* row, int k) {
    static_assert(T == F32 || T == BF16 || T == F16, "one-element types only");
    if (T == F32) {
        const uint8_t* p = row + 4ll * k;
        uint32_t u;
        if ((reinterpret_cast<uintptr_t>(p) & 3) == 0)
            u = __ldg(reinterpret_cast<const unsigned int*>(p));
        else
            u = ldg_u16(p) | (ldg_u16(p + 2) << 16);
        return __uint_as_float(u);
    } else if (T == BF16) {
        return __uint_as_float(ldg_u16(row + 2ll * k) << 16);
    } else {
        return h2f(ldg_u16(row + 2ll * k));
    }
}

}  // namespace gq
