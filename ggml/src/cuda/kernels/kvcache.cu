// Quantised KV caches (-ctk / -ctv other than f16 for both): storing rows
// and the attention that reads them. The f16 cache keeps its own kernels in
// ops.cu; these take any pair of the cache types (f16, bf16, q8_0, q4_0,
// q4_1, q5_0, q5_1, iq4_nl), each cache `[cell][kv_dim]` in its type's blocks,
// the layout of the CPU's rows (ggml/src/cpu/backend.rs, CpuKv), so cells
// cross between the two as bytes.
//
// As llama.cpp does, a quantised K cache holds keys rotated by a Walsh-
// Hadamard matrix (pieces of k_rot, 64 x 2^m), and queries take the same
// rotation; a quantised V cache holds values rotated in pieces of 64, and the
// attention output rotates back before it is written. The host passes the sizes,
// 0 for none (ggml/src/kv_types.rs says which).
//
// Storing is bit-identical to the CPU (same quantiser arithmetic, one thread
// per block, no contracted multiply-adds), so a cache written on either
// device holds the same bytes. Attention dots the f32 (rotated) query with
// dequantised keys in f32, where the CPU and llama.cpp's CUDA build first
// quantise the query to 8 bits.
#include <cuda_fp16.h>
#include <stdint.h>

#include "pdl.cuh"
#include "quants.cuh"
#include "rope.cuh"

using namespace gq;

#define FULL_MASK 0xffffffffu
#define MAX_HEAD 256     // head sizes up to 256 (the f16 kernels' limit too)
#define MAX_WARPS 16
#ifndef VU
#define VU 4  // rounds of cells in flight per warp in attention_q
#endif
#define AQ 8             // queries (one warp each) per block of attention_q_prompt
#define LDS (MAX_HEAD + 2)  // halves per staged cell row: an odd word count

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Bytes of `n` values of cache type t (n a multiple of its block).
__device__ __forceinline__ long long type_bytes(int t, long long n) {
    return n / block_elems(t) * block_bytes(t);
}

// ---------------------------------------------------------------- rotation

// Rotates `rows` rows (`stride` floats apart) of `width` values, each piece
// of n (a power of two dividing width) by the orthonormal Walsh-Hadamard
// matrix, in ggml's order and so to the bit the CPU's `hadamard`: scaled by
// 1/sqrt(n) first, then butterflies (u + v, u - v) over strides 1, 2, 4...
// x is shared memory; every thread of the block calls this.
__device__ void fwht_rows(float* x, int rows, int stride, int width, int n) {
    const float s = __fdiv_rn(1.0f, __fsqrt_rn((float)n));
    const int total = rows * width, half = width / 2;
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
        int r = i / width, c = i - r * width;
        x[r * stride + c] = __fmul_rn(x[r * stride + c], s);
    }
    __syncthreads();
    for (int len = 1; len < n; len <<= 1) {
        for (int p = threadIdx.x; p < rows * half; p += blockDim.x) {
            int r = p / half, q = p - r * half;
            int i = (q / len) * 2 * len + q % len;
            float* y = x + r * stride;
            float u = y[i], v = y[i + len];
            y[i] = __fadd_rn(u, v);
            y[i + len] = __fsub_rn(u, v);
        }
        __syncthreads();
    }
}

// The Walsh-Hadamard rotation of a row held a value per lane per j (dims
// lane + 32 j), in pieces of n (64 x 2^m): fwht_rows's arithmetic, strides
// under 32 across lanes, the others across j. Every lane takes part.
__device__ __forceinline__ void rotate_lanes(float* v, int nd, int n, int lane) {
    constexpr int ND = MAX_HEAD / 32;
    const float s = __fdiv_rn(1.0f, __fsqrt_rn((float)n));
#pragma unroll
    for (int j = 0; j < ND; j++) v[j] = __fmul_rn(v[j], s);
#pragma unroll
    for (int len = 1; len < 32; len <<= 1) {
#pragma unroll
        for (int j = 0; j < ND; j++) {
            const float other = __shfl_xor_sync(FULL_MASK, v[j], len);
            v[j] = (lane & len) ? __fsub_rn(other, v[j]) : __fadd_rn(v[j], other);
        }
    }
#pragma unroll
    for (int len = 1; len < ND; len <<= 1) {
        if (32 * len >= n) break;
#pragma unroll
        for (int j = 0; j + len < ND; j++) {
            if (j < nd && (j & len) == 0) {
                const float u = v[j], w = v[j + len];
                v[j] = __fadd_rn(u, w);
                v[j + len] = __fsub_rn(u, w);
            }
        }
    }
}

// A head of head_dim values (a multiple of 32, up to MAX_HEAD) rotated by
// one warp: src's values into registers (dims lane + 32 j), rotated by
// pieces of n (0: not at all), then to dst where it is given. Every lane of
// the warp takes part; no block barrier.
__device__ __forceinline__ void rotate_head_warp(const float* src, float* dst, float* v, int head_dim, int n,
                                                 int lane) {
    constexpr int ND = MAX_HEAD / 32;
    const int nd = head_dim / 32;
#pragma unroll
    for (int j = 0; j < ND; j++) v[j] = j < nd ? src[lane + 32 * j] : 0.0f;
    if (n) rotate_lanes(v, nd, n, lane);
    if (dst) {
#pragma unroll
        for (int j = 0; j < ND; j++)
            if (j < nd) dst[lane + 32 * j] = v[j];
    }
}

// ---------------------------------------------------------------- storing

__device__ __forceinline__ void put_u16(uint8_t* p, uint32_t h) {
    *reinterpret_cast<unsigned short*>(p) = static_cast<unsigned short>(h);
}

__device__ __forceinline__ uint32_t half_bits(float v) { return __half_as_ushort(__float2half_rn(v)); }

// ggml's f32 -> bf16: round half to even, NaN kept quiet.
__device__ __forceinline__ uint32_t bf16_bits(float v) {
    uint32_t b = __float_as_uint(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (b >> 16) | 64u;
    return (b + (0x7fffu + ((b >> 16) & 1u))) >> 16;
}

// ggml's MIN(top, (int8_t)v): C's truncating cast wraps before the clamp.
__device__ __forceinline__ uint32_t level_i8(float v, int top) {
    return static_cast<uint32_t>(min(static_cast<int>(static_cast<int8_t>(__float2int_rz(v))), top)) & 0xffu;
}

__device__ __forceinline__ float inverse(float d) { return d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f; }

// The first of the warp's 32 values (one a lane) of largest magnitude, as
// ggml's scan finds it (NaNs skipped; 0 when all are zero).
__device__ __forceinline__ float warp_signed_absmax(float x, int lane) {
    float a = fabsf(x);
    a = a == a ? a : 0.0f;
    int at = a > 0.0f ? lane : 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ao = __shfl_xor_sync(FULL_MASK, a, o);
        const int ato = __shfl_xor_sync(FULL_MASK, at, o);
        if (ao > a || (ao == a && ato < at)) {
            a = ao;
            at = ato;
        }
    }
    return at < 32 ? __shfl_sync(FULL_MASK, x, at) : 0.0f;
}

// ggml's scan for the minimum and maximum, from FLT_MAX and -FLT_MAX (NaNs
// skipped).
__device__ __forceinline__ void warp_min_max(float x, float& mn, float& mx) {
    mn = x == x ? x : 3.40282347e+38f;
    mx = x == x ? x : -3.40282347e+38f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        mn = fminf(mn, __shfl_xor_sync(FULL_MASK, mn, o));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));
    }
}

// The sum of the lanes' values in lane order, rounded as ggml's loop rounds
// it (every lane gets it).
__device__ __forceinline__ float warp_sum_in_order(float v) {
    float s = 0.0f;
    for (int i = 0; i < 32; i++) s = __fadd_rn(s, __shfl_sync(FULL_MASK, v, i));
    return s;
}

// Lane j's level into block byte j (j < 16) with lane j + 16's above it.
__device__ __forceinline__ void put_nibbles(uint8_t* qs, uint32_t l, int lane) {
    const uint32_t hi = __shfl_down_sync(FULL_MASK, l, 16);
    if (lane < 16) qs[lane] = (l & 15u) | ((hi & 15u) << 4);
}

// The levels' fifth bits, bit j for lane j.
__device__ __forceinline__ void put_fifth_bits(uint8_t* p, uint32_t l, int lane) {
    const uint32_t qh = __ballot_sync(FULL_MASK, (l & 0x10u) != 0);
    if (lane == 0) {
        put_u16(p, qh & 0xffffu);
        put_u16(p + 2, qh >> 16);
    }
}

// ggml's best_index_int8 over the IQ4_NL codebook (the upper on a tie).
__device__ __forceinline__ int iq4nl_index(float x) {
    if (x <= iq4nl_value(0)) return 0;
    if (x >= iq4nl_value(15)) return 15;
    int ml = 0, mu = 15;
    while (mu - ml > 1) {
        int mav = (ml + mu) / 2;
        if (x < iq4nl_value(mav)) mu = mav;
        else ml = mav;
    }
    return __fsub_rn(x, iq4nl_value(mu - 1)) < __fsub_rn(iq4nl_value(mu), x) ? mu - 1 : mu;
}

// One block of 32 values (x: this lane's) of a quantised type into p, a
// warp at a time: the quantisers the CPU's cache uses (ggml/src/blocks:
// ggml's from_float for each type), with the same float operations, so the
// bytes are the CPU's.
__device__ void quantize_block(int t, float x, uint8_t* p, int lane) {
    if (t == Q8_0) {
        // ggml's x86 from_float: scale 127/amax, round half to even.
        const float amax = warp_max(fabsf(x));
        const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
        if (lane == 0) put_u16(p, half_bits(__fdiv_rn(amax, 127.0f)));
        const float q = fminf(fmaxf(rintf(__fmul_rn(x, id)), -128.0f), 127.0f);
        p[2 + lane] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(q)));
    } else if (t == Q4_0 || t == Q5_0) {
        const bool five = t == Q5_0;
        const float d = __fdiv_rn(warp_signed_absmax(x, lane), five ? -16.0f : -8.0f), id = inverse(d);
        if (lane == 0) put_u16(p, half_bits(d));
        const uint32_t l = level_i8(__fadd_rn(__fmul_rn(x, id), five ? 16.5f : 8.5f), five ? 31 : 15);
        if (five) put_fifth_bits(p + 2, l, lane);
        put_nibbles(p + (five ? 6 : 2), l, lane);
    } else if (t == Q4_1 || t == Q5_1) {
        const bool five = t == Q5_1;
        float mn, mx;
        warp_min_max(x, mn, mx);
        const float d = __fdiv_rn(__fsub_rn(mx, mn), five ? 31.0f : 15.0f), id = inverse(d);
        if (lane == 0) {
            put_u16(p, half_bits(d));
            put_u16(p + 2, half_bits(mn));
        }
        const float v = __fadd_rn(__fmul_rn(__fsub_rn(x, mn), id), 0.5f);
        // ggml clamps Q4_1's level, not Q5_1's.
        const uint32_t l = five ? static_cast<uint32_t>(__float2int_rz(v)) & 0xffu : level_i8(v, 15);
        if (five) put_fifth_bits(p + 4, l, lane);
        put_nibbles(p + (five ? 8 : 4), l, lane);
    } else if (t == IQ4_NL) {
        // quantize_row_iq4_nl_ref: the least-squares scale of the levels
        // that max -> -127 picks, with x^2 weights; no scale search.
        const float max = warp_signed_absmax(x, lane);
        float d = 0.0f;
        uint32_t l = 8;
        if (fabsf(max) >= 1e-15f) {
            const float id = __fdiv_rn(1.0f, __fdiv_rn(max, -127.0f));
            l = iq4nl_index(__fmul_rn(id, x));
            const float q = iq4nl_value(l), w = __fmul_rn(x, x);
            const float sumqx = warp_sum_in_order(__fmul_rn(__fmul_rn(w, q), x));
            const float sumq2 = warp_sum_in_order(__fmul_rn(__fmul_rn(w, q), q));
            d = sumq2 > 0.0f ? __fdiv_rn(sumqx, sumq2) : 0.0f;
        }
        if (lane == 0) put_u16(p, half_bits(d));
        put_nibbles(p + 2, l, lane);
    }
}

// Key and value head h of token t (f32, `k` and `v` rows of kv_dim) into
// cell (step[0] + t) % cells, each rotated first where k_rot / v_rot say:
// warp 0 the key, warp 1 the value (the block has at least two warps),
// each in registers.
__device__ void store_heads(uint8_t* kc, uint8_t* vc, const float* k, const float* v, int t, int h,
                            int n_head_kv, int head_dim, int cells, const int* step, int kt, int vt,
                            int k_rot, int v_rot) {
    constexpr int ND = MAX_HEAD / 32;
    const int lane = threadIdx.x & 31, which = threadIdx.x >> 5;
    if (which > 1) return;
    const long long kv_dim = (long long)n_head_kv * head_dim;
    const long long cell = (step[0] + t) % cells;
    const int ty = which ? vt : kt;
    const float* src = (which ? v : k) + t * kv_dim + (long long)h * head_dim;
    uint8_t* dst = (which ? vc : kc) + cell * type_bytes(ty, kv_dim) + type_bytes(ty, (long long)h * head_dim);
    float x[ND];
    rotate_head_warp(src, nullptr, x, head_dim, which ? v_rot : k_rot, lane);
#pragma unroll
    for (int j = 0; j < ND; j++) {
        if (j >= head_dim / 32) break;
        if (ty == F16 || ty == BF16)
            put_u16(dst + 2 * (lane + 32 * j), ty == F16 ? half_bits(x[j]) : bf16_bits(x[j]));
        else
            quantize_block(ty, x[j], dst + j * block_bytes(ty), lane);
    }
}

// Stores K and V of `tokens` tokens (f32 rows of n_head_kv * head_dim) in
// cells (step[0] + t) % cells of caches of types kt and vt.
// grid = (tokens, n_head_kv), block = 128.
extern "C" __global__ void kv_store_q(uint8_t* kc, uint8_t* vc, const float* k, const float* v,
                                      int n_head_kv, int head_dim, int cells, const int* step, int kt,
                                      int vt, int k_rot, int v_rot) {
    gq::pdl_begin();
    store_heads(kc, vc, k, v, blockIdx.x, blockIdx.y, n_head_kv, head_dim, cells, step, kt, vt, k_rot, v_rot);
}

// ops.cu's rope_store for these caches: rope on q (n_head heads) and k
// (n_head_kv heads) of `tokens` rows, then each key and value head stored
// as kv_store_q stores it. grid = (tokens, n_head + n_head_kv), block = 128.
extern "C" __global__ void rope_store_q(float* q, float* k, const float* v, int n_head, int n_head_kv,
                                        int head_dim, const int* step, RopeParams p, const float* ff,
                                        uint8_t* kc, uint8_t* vc, int cells, int kt, int vt, int k_rot,
                                        int v_rot) {
    gq::pdl_begin();
    const int t = blockIdx.x;
    int h = blockIdx.y;
    if (h < n_head) {
        rope_head(q + ((long long)t * n_head + h) * head_dim, step[0] + t, p, ff);
        return;
    }
    h -= n_head;
    rope_head(k + (long long)t * n_head_kv * head_dim + (long long)h * head_dim, step[0] + t, p, ff);
    __syncthreads();  // the head as the other threads rotated it
    store_heads(kc, vc, k, v, t, h, n_head_kv, head_dim, cells, step, kt, vt, k_rot, v_rot);
}

// ---------------------------------------------------------------- reading

// Element e of a cache row of type t.
__device__ __forceinline__ float load1(int t, const uint8_t* row, int e) {
    if (t == F16) return h2f(ldg_u16(row + 2 * e));
    if (t == BF16) return __uint_as_float(ldg_u16(row + 2 * e) << 16);
    const int j = e & 31, sh = (j & 16) ? 4 : 0;
    const uint8_t* p = row + (e >> 5) * block_bytes(t);
    const float d = h2f(ldg_u16(p));
    switch (t) {
    case Q8_0:
        return d * static_cast<float>(static_cast<int8_t>(p[2 + j]));
    case Q4_0:
        return d * u2f_b<8>((p[2 + (j & 15)] >> sh) & 15u);
    case Q4_1:
        return d * u2f((p[4 + (j & 15)] >> sh) & 15u) + h2f(ldg_u16(p + 2));
    case Q5_0: {
        const uint32_t qh = ldg_u16(p + 2) | (ldg_u16(p + 4) << 16);
        return d * u2f_b<16>(((p[6 + (j & 15)] >> sh) & 15u) | (((qh >> j) & 1u) << 4));
    }
    case Q5_1: {
        const uint32_t qh = ldg_u16(p + 4) | (ldg_u16(p + 6) << 16);
        return d * u2f(((p[8 + (j & 15)] >> sh) & 15u) | (((qh >> j) & 1u) << 4)) + h2f(ldg_u16(p + 2));
    }
    default:  // IQ4_NL
        return d * iq4nl_value((p[2 + (j & 15)] >> sh) & 15u);
    }
}

// Elements e0 .. e0 + 7 (e0 a multiple of 8) of a cache row, in two steps
// so that a kernel keeps several cells' loads in flight in few registers:
// fetch<T> loads the bytes (and the block's scale and minimum), expand<T>
// gives the block's integers as floats, value = d * o + m, the scale and
// minimum left to the caller: a dot product or a weighted sum applies them
// once for the lane's 8 values rather than once a value (f16/bf16: d = 1,
// m = 0). T < 0: the type t known only at run time.
struct Raw {
    uint32_t w[4];  // the values' bytes (f16/bf16: 16; quantised: 8)
    float d, m;     // the block's scale and minimum
    uint32_t qh;    // the block's fifth bits (q5_0, q5_1)
};

template <int T>
__device__ __forceinline__ void fetch_t(const uint8_t* row, int e0, Raw& r) {
    if constexpr (T == F16 || T == BF16) {
        ldspan<16>(row + 2 * e0, r.w);
        r.d = 1.0f;
        r.m = 0.0f;
    } else if constexpr (T == Q4_1 || T == Q5_1) {
        // Blocks of 20 and 24 bytes in rows of whole blocks from an aligned
        // allocation start 4-byte aligned, and a lane's 8 bytes of qs too:
        // whole words, no byte-span assembly.
        const int j = e0 & 31;
        const uint8_t* p = row + (e0 >> 5) * block_bytes(T);
        const uint32_t dm = *reinterpret_cast<const uint32_t*>(p);
        r.d = h2f(dm);
        r.m = h2f(dm >> 16);
        constexpr int QS = T == Q4_1 ? 4 : 8;
        const uint32_t* w = reinterpret_cast<const uint32_t*>(p + QS + (j & 15));
        r.w[0] = w[0];
        r.w[1] = w[1];
        if constexpr (T == Q5_1) r.qh = *reinterpret_cast<const uint32_t*>(p + 4);
    } else {
        const int j = e0 & 31;
        const uint8_t* p = row + (e0 >> 5) * block_bytes(T);
        r.d = h2f(ldg_u16(p));
        constexpr int QS = T == Q5_0 ? 6 : 2;  // q8_0, q4_0, iq4_nl: 2
        uint32_t w[2];
        ldspan<8>(p + QS + (T == Q8_0 ? j : (j & 15)), w);
        r.w[0] = w[0];
        r.w[1] = w[1];
        r.m = 0.0f;
        if constexpr (T == Q5_0) r.qh = ldg_u16(p + 2) | (ldg_u16(p + 4) << 16);
    }
}

// float(byte k of w) - BIAS for the four bytes, exactly: each byte is put
// under the exponent of 2^23 by one byte permute (no I2F, which runs at a
// quarter of the rate).
template <int BIAS>
__device__ __forceinline__ void bytes_to_floats(uint32_t w, float* o) {
#pragma unroll
    for (int k = 0; k < 4; k++)
        o[k] = __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | k)) - (8388608.0f + static_cast<float>(BIAS));
}

// Bits 0..3 of x into bit 0 of bytes 0..3 (the four products land in
// disjoint bits, so nothing carries).
__device__ __forceinline__ uint32_t spread_bits4(uint32_t x) {
    return ((x & 15u) * 0x00204081u) & 0x01010101u;
}

// kvalues_iq4nl[i] + 128 for the four indices (0..15) in the bytes of nib.
__device__ __forceinline__ uint32_t iq4nl_bytes(uint32_t nib) {
    const uint32_t idx = nib & 0x07070707u;
    const uint32_t sel = __byte_perm(idx | (idx >> 4), 0u, 0x4420u);  // the four indices as nibbles
    const uint32_t lo = __byte_perm(0x3f2d1801u, 0x766a5d4fu, sel);
    const uint32_t hi = __byte_perm(0xa6998d81u, 0xf1d9c5b5u, sel);
    const uint32_t high = ((nib >> 3) & 0x01010101u) * 0xffu;  // 0xff in the bytes of indices 8..15
    return (lo & ~high) | (hi & high);
}

// j = e0 & 31 (the same for every cell of a lane).
template <int T>
__device__ __forceinline__ void expand_t(const Raw& r, int j, float o[8]) {
    if constexpr (T == F16 || T == BF16) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if constexpr (T == F16) {
                const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&r.w[i]));
                o[2 * i] = f.x;
                o[2 * i + 1] = f.y;
            } else {
                o[2 * i] = __uint_as_float(r.w[i] << 16);
                o[2 * i + 1] = __uint_as_float(r.w[i] & 0xffff0000u);
            }
        }
    } else if constexpr (T == Q8_0) {
        bytes_to_floats<128>(r.w[0] ^ 0x80808080u, o);
        bytes_to_floats<128>(r.w[1] ^ 0x80808080u, o + 4);
    } else {
        const int sh = (j & 16) ? 4 : 0;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            uint32_t q = (r.w[h] >> sh) & 0x0f0f0f0fu;
            if constexpr (T == Q5_0 || T == Q5_1) q |= spread_bits4(r.qh >> (j + 4 * h)) << 4;
            if constexpr (T == Q4_0) bytes_to_floats<8>(q, o + 4 * h);
            else if constexpr (T == Q5_0) bytes_to_floats<16>(q, o + 4 * h);
            else if constexpr (T == IQ4_NL) bytes_to_floats<128>(iq4nl_bytes(q), o + 4 * h);
            else bytes_to_floats<0>(q, o + 4 * h);
        }
    }
}

#define BY_TYPE(t, CALL)                \
    switch (t) {                        \
    case F16: CALL(F16); break;         \
    case BF16: CALL(BF16); break;       \
    case Q8_0: CALL(Q8_0); break;       \
    case Q4_0: CALL(Q4_0); break;       \
    case Q4_1: CALL(Q4_1); break;       \
    case Q5_0: CALL(Q5_0); break;       \
    case Q5_1: CALL(Q5_1); break;       \
    default: CALL(IQ4_NL); break;       \
    }

template <int T>
__device__ __forceinline__ void fetch(int t, const uint8_t* row, int e0, Raw& r) {
    if constexpr (T >= 0) {
        fetch_t<T>(row, e0, r);
    } else {
#define FETCH(U) fetch_t<U>(row, e0, r)
        BY_TYPE(t, FETCH)
#undef FETCH
    }
}

template <int T>
__device__ __forceinline__ void expand(int t, const Raw& r, int j, float o[8]) {
    if constexpr (T >= 0) {
        expand_t<T>(r, j, o);
    } else {
#define EXPAND(U) expand_t<U>(r, j, o)
        BY_TYPE(t, EXPAND)
#undef EXPAND
    }
}

__device__ __forceinline__ void load8_any(int t, const uint8_t* row, int e0, float o[8]) {
    Raw r;
    fetch<-1>(t, row, e0, r);
    expand<-1>(t, r, e0 & 31, o);
#pragma unroll
    for (int i = 0; i < 8; i++) o[i] = fmaf(r.d, o[i], r.m);
}

// Whether the query at `pos` sees cell c (the newest position mapped to c,
// at or before the batch's last, is at most pos and inside the window);
// lm = last % cells, taken once per kernel rather than a modulo per cell.
__device__ __forceinline__ bool visible(int c, int lm, int last, int pos, int cells, int window) {
    const int back = lm - c + (c > lm ? cells : 0);
    const int p = last - back;
    return p >= 0 && p <= pos && !(window > 0 && pos - p >= window);
}

// The block's partial results (per warp: running max sm, sum sl, values
// sacc) into the output row, rotated back by pieces of v_rot where V is, or,
// with several splits, the split's partial for attention_merge_q: [m, l,
// values], unrotated. Every thread of the block calls this.
__device__ __forceinline__ void finish(const float* sm, const float* sl, const float* sacc, int stride,
                                       int nwarps, int head_dim, float* out, float* part, int t, int h,
                                       int n_head, int v_rot) {
    __shared__ float o[MAX_HEAD];
    float M = -INFINITY;
    for (int w = 0; w < nwarps; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f;
    for (int w = 0; w < nwarps; w++)
        if (sm[w] != -INFINITY) L += sl[w] * expf(sm[w] - M);
    const int splits = gridDim.z, split = blockIdx.z;
    if (splits > 1) {
        float* dst = part + (((long long)t * n_head + h) * splits + split) * (head_dim + 2);
        if (threadIdx.x == 0) {
            dst[0] = M;
            dst[1] = L;
        }
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < nwarps; w++)
                if (sm[w] != -INFINITY) v += sacc[w * stride + d] * expf(sm[w] - M);
            dst[2 + d] = v;
        }
        return;
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < nwarps; w++)
            if (sm[w] != -INFINITY) v += sacc[w * stride + d] * expf(sm[w] - M);
        o[d] = L > 0.0f ? v / L : 0.0f;
    }
    __syncthreads();
    float r[MAX_HEAD / 32];
    if (threadIdx.x < 32)
        rotate_head_warp(o, out + ((long long)t * n_head + h) * head_dim, r, head_dim, v_rot, threadIdx.x);
}

// ops.cu's attention_merge, then the rotation back by pieces of v_rot (0:
// none). grid = (tokens, n_head), block 128.
extern "C" __global__ void attention_merge_q(const float* part, float* out, int n_head, int head_dim, int splits,
                                             int v_rot) {
    gq::pdl_begin();
    __shared__ float o[MAX_HEAD];
    const int t = blockIdx.x, h = blockIdx.y;
    const float* pp = part + ((long long)t * n_head + h) * splits * (head_dim + 2);
    float M = -INFINITY;
    for (int s = 0; s < splits; s++) M = fmaxf(M, pp[s * (head_dim + 2)]);
    float L = 0.0f;
    for (int s = 0; s < splits; s++) {
        const float m = pp[s * (head_dim + 2)];
        if (m != -INFINITY) L += pp[s * (head_dim + 2) + 1] * expf(m - M);
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < splits; s++) {
            const float m = pp[s * (head_dim + 2)];
            if (m != -INFINITY) v += pp[s * (head_dim + 2) + 2 + d] * expf(m - M);
        }
        o[d] = L > 0.0f ? v / L : 0.0f;
    }
    __syncthreads();
    float r[MAX_HEAD / 32];
    if (threadIdx.x < 32)
        rotate_head_warp(o, out + ((long long)t * n_head + h) * head_dim, r, head_dim, v_rot, threadIdx.x);
}

// The query head (rotated as the keys are) into shared memory, by warp 0.
__device__ __forceinline__ void load_query(float* qs, const float* q, int head_dim, int k_rot) {
    float r[MAX_HEAD / 32];
    if (threadIdx.x < 32) rotate_head_warp(q, qs, r, head_dim, k_rot, threadIdx.x);
    __syncthreads();
}

// Decode attention over a quantised cache for head sizes 64, 128 and 256:
// ops.cu's attention_range_vec with loads through fetch/expand (a cell's head of
// D values takes L = D / 8 lanes, 8 values each). Same grid (tokens, n_head,
// splits), block 32 * warps (<= 16), and partials as there.
template <int D, int KT, int VT>
__device__ __forceinline__ void attention_q_vec(const float* q, const uint8_t* kc, const uint8_t* vc,
                                                float* out, float* part, int n_head, int n_head_kv, int cells,
                                                const int* step, int window, float kq_scale, int kt, int vt,
                                                int k_rot, int v_rot) {
    constexpr int L = D / 8, CPW = 32 / L;
    __shared__ float qs[D];
    __shared__ float sm[MAX_WARPS], sl_[MAX_WARPS];
    __shared__ float sacc[MAX_WARPS][D];
    const int t = blockIdx.x, h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int sub = lane / L, sl = lane % L;
    const int pos0 = step[0], tokens = step[1];
    const int last = pos0 + tokens - 1, pos = pos0 + t;
    const int lm = last % cells;
    const int g = h / (n_head / n_head_kv);
    const long long kv_dim = (long long)n_head_kv * D;
    const long long k_row = type_bytes(kt, kv_dim), v_row = type_bytes(vt, kv_dim);
    const int e0 = g * D + 8 * sl;
    load_query(qs, q + ((long long)t * n_head + h) * D, D, k_rot);
    // Scales and minimums are applied once per lane and cell: a key's
    // d * sum(q x) + m * sum(q), a value's weight e * d and e * m summed apart
    // (macc) and added to every output at the end.
    constexpr bool KD = !(KT == F16 || KT == BF16), VD = !(VT == F16 || VT == BF16);
    constexpr bool KM = KT < 0 || KT == Q4_1 || KT == Q5_1, VM = VT < 0 || VT == Q4_1 || VT == Q5_1;
    float qr[8], acc[8], qsum = 0.0f, macc = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        qr[i] = qs[8 * sl + i];
        qsum += qr[i];
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int n_cells = last < cells ? pos + 1 : cells;
    const int splits = gridDim.z, split = blockIdx.z;
    const int c_lo = (int)((long long)n_cells * split / splits);
    const int c_hi = (int)((long long)n_cells * (split + 1) / splits);
    const int stride = nwarps * CPW;
    const int j = e0 & 31;
    for (int cw = c_lo + warp * CPW; cw < c_hi; cw += VU * stride) {
        Raw kr[VU], vr[VU];
        bool ok[VU];
#pragma unroll
        for (int u = 0; u < VU; u++) {
            const int c = cw + u * stride + sub;
            ok[u] = c < c_hi && visible(c, lm, last, pos, cells, window);
            if (ok[u]) {
                fetch<KT>(kt, kc + c * k_row, e0, kr[u]);
                fetch<VT>(vt, vc + c * v_row, e0, vr[u]);
            }
        }
        float s[VU];
        float mx = m;
#pragma unroll
        for (int u = 0; u < VU; u++) {
            float kf[8], d = 0.0f;
            expand<KT>(kt, kr[u], j, kf);
#pragma unroll
            for (int i = 0; i < 8; i++) d = fmaf(qr[i], kf[i], d);
            if constexpr (KD) d *= kr[u].d;
            if constexpr (KM) d = fmaf(kr[u].m, qsum, d);
#pragma unroll
            for (int off = L / 2; off > 0; off >>= 1) d += __shfl_xor_sync(FULL_MASK, d, off);
            s[u] = d * kq_scale;
            if (ok[u]) mx = fmaxf(mx, s[u]);
        }
        if (mx == -INFINITY) continue;  // nothing visible to this group yet (no shuffles follow)
        const float corr = expf(m - mx);
        l *= corr;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] *= corr;
        if constexpr (VM) macc *= corr;
#pragma unroll
        for (int u = 0; u < VU; u++) {
            if (!ok[u]) continue;
            const float e = expf(s[u] - mx);
            l += e;
            float vf[8];
            expand<VT>(vt, vr[u], j, vf);
            const float ed = VD ? e * vr[u].d : e;
#pragma unroll
            for (int i = 0; i < 8; i++) acc[i] = fmaf(ed, vf[i], acc[i]);
            if constexpr (VM) macc = fmaf(e, vr[u].m, macc);
        }
        m = mx;
    }
    if constexpr (VM) {
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] += macc;
    }
    // The warp's groups into one (every lane takes part).
#pragma unroll
    for (int off = L; off < 32; off <<= 1) {
        const float mo = __shfl_xor_sync(FULL_MASK, m, off);
        const float lo = __shfl_xor_sync(FULL_MASK, l, off);
        const float M = fmaxf(m, mo);
        const float a = m == -INFINITY ? 0.0f : expf(m - M);
        const float b = mo == -INFINITY ? 0.0f : expf(mo - M);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float ao = __shfl_xor_sync(FULL_MASK, acc[i], off);
            acc[i] = acc[i] * a + ao * b;
        }
        l = l * a + lo * b;
        m = M;
    }
    if (lane == 0) {
        sm[warp] = m;
        sl_[warp] = l;
    }
    if (sub == 0) {
#pragma unroll
        for (int i = 0; i < 8; i++) sacc[warp][8 * sl + i] = acc[i];
    }
    __syncthreads();
    finish(sm, sl_, &sacc[0][0], D, nwarps, D, out, part, t, h, n_head, v_rot);
}

// attention_q<D>[_<type>](q, kc, vc, out, part, n_head, n_head_kv, cells,
// step, window, kq_scale, kt, vt, k_rot): the suffixed kernels are for a K
// and V cache of that one type; attention_q<D> reads any pair.
#define ATTENTION_Q(D, NAME, KT, VT)                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * MAX_WARPS) attention_q##D##NAME(                       \
        const float* q, const uint8_t* kc, const uint8_t* vc, float* out, float* part, int n_head,          \
        int n_head_kv, int cells, const int* step, int window, float kq_scale, int kt, int vt, int k_rot,   \
        int v_rot) {                                                                                        \
        gq::pdl_begin();                                                                                    \
        attention_q_vec<D, KT, VT>(q, kc, vc, out, part, n_head, n_head_kv, cells, step, window, kq_scale,  \
                                   kt, vt, k_rot, v_rot);                                                   \
    }
#define ATTENTION_Q_TYPES(D)                   \
    ATTENTION_Q(D, , -1, -1)                   \
    ATTENTION_Q(D, _q8_0, Q8_0, Q8_0)          \
    ATTENTION_Q(D, _q4_0, Q4_0, Q4_0)          \
    ATTENTION_Q(D, _q4_1, Q4_1, Q4_1)          \
    ATTENTION_Q(D, _q5_0, Q5_0, Q5_0)          \
    ATTENTION_Q(D, _q5_1, Q5_1, Q5_1)          \
    ATTENTION_Q(D, _iq4_nl, IQ4_NL, IQ4_NL)    \
    ATTENTION_Q(D, _bf16, BF16, BF16)
ATTENTION_Q_TYPES(64)
ATTENTION_Q_TYPES(128)
ATTENTION_Q_TYPES(256)

// Decode attention for any head size (a multiple of 32, up to 256): a warp
// takes a cell at a time, lane i dims i + 32 j, as ops.cu's attention_range.
// Same grid, block and partials as attention_q<D>.
extern "C" __global__ void __launch_bounds__(32 * MAX_WARPS)
attention_q_any(const float* q, const uint8_t* kc, const uint8_t* vc, float* out, float* part, int n_head,
                int n_head_kv, int head_dim, int cells, const int* step, int window, float kq_scale, int kt,
                int vt, int k_rot, int v_rot) {
    gq::pdl_begin();
    constexpr int ND = MAX_HEAD / 32;
    __shared__ float qs[MAX_HEAD];
    __shared__ float sm[MAX_WARPS], sl[MAX_WARPS];
    __shared__ float sacc[MAX_WARPS][MAX_HEAD];
    const int t = blockIdx.x, h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int pos0 = step[0], tokens = step[1];
    const int last = pos0 + tokens - 1, pos = pos0 + t;
    const int lm = last % cells;
    const int g = h / (n_head / n_head_kv);
    const long long kv_dim = (long long)n_head_kv * head_dim;
    const long long k_row = type_bytes(kt, kv_dim), v_row = type_bytes(vt, kv_dim);
    const int nd = head_dim / 32;
    load_query(qs, q + ((long long)t * n_head + h) * head_dim, head_dim, k_rot);
    float qr[ND], acc[ND];
#pragma unroll
    for (int j = 0; j < ND; j++) {
        qr[j] = j < nd ? qs[lane + 32 * j] : 0.0f;
        acc[j] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int n_cells = last < cells ? pos + 1 : cells;
    const int splits = gridDim.z, split = blockIdx.z;
    const int c_lo = (int)((long long)n_cells * split / splits);
    const int c_hi = (int)((long long)n_cells * (split + 1) / splits);
    for (int c = c_lo + warp; c < c_hi; c += nwarps) {
        if (!visible(c, lm, last, pos, cells, window)) continue;  // warp-uniform
        const uint8_t* kr = kc + c * k_row;
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < ND; j++)
            if (j < nd) s += qr[j] * load1(kt, kr, g * head_dim + lane + 32 * j);
        s = warp_sum(s) * kq_scale;
        const float mx = fmaxf(m, s);
        const float corr = expf(m - mx), e = expf(s - mx);
        l = l * corr + e;
        const uint8_t* vr = vc + c * v_row;
#pragma unroll
        for (int j = 0; j < ND; j++)
            if (j < nd) acc[j] = acc[j] * corr + e * load1(vt, vr, g * head_dim + lane + 32 * j);
        m = mx;
    }
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < ND; j++)
        if (j < nd) sacc[warp][lane + 32 * j] = acc[j];
    __syncthreads();
    finish(sm, sl, &sacc[0][0], MAX_HEAD, nwarps, head_dim, out, part, t, h, n_head, v_rot);
}

// Causal attention for prompt batches over a quantised cache: ops.cu's
// attention_prompt (AQ queries of one head a block, the cells in tiles
// staged in shared memory), each tile dequantised as it is staged: keys to
// f16 (as llama.cpp's CUDA build converts a quantised cache for its prompt
// kernels; the CPU rounds queries coarser), values to f32 (the CPU sums
// dequantised values in f32, and so must we to be as close to exact). Tiles
// of AQC = 16 cells keep that in 48 KB; a cell's score takes two lanes, each
// half of the head. grid = (ceil(tokens / AQ), n_head), block = 32 * AQ.
#define AQC 16
extern "C" __global__ void __launch_bounds__(32 * AQ)
attention_q_prompt(const float* q, const uint8_t* kc, const uint8_t* vc, float* out, int n_head,
                   int n_head_kv, int head_dim, int cells, const int* step, int window, float kq_scale, int kt,
                   int vt, int k_rot, int v_rot) {
    gq::pdl_begin();
    constexpr int ND = MAX_HEAD / 32;
    __shared__ float qs[AQ][MAX_HEAD];
    __shared__ __align__(16) __half ks[AQC][LDS];
    __shared__ float vs[AQC][MAX_HEAD + 1];
    const int h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int pos0 = step[0], tokens = step[1];
    const int last = pos0 + tokens - 1;
    const int lm = last % cells;
    const int t = blockIdx.x * AQ + warp;
    const bool qok = t < tokens;
    const int pos = pos0 + t;
    const int g = h / (n_head / n_head_kv);
    const long long kv_dim = (long long)n_head_kv * head_dim;
    const long long k_row = type_bytes(kt, kv_dim), v_row = type_bytes(vt, kv_dim);
    const int nd = head_dim / 32;
    for (int d = lane; d < head_dim; d += 32)
        qs[warp][d] = qok ? q[((long long)t * n_head + h) * head_dim + d] : 0.0f;
    __syncthreads();
    if (k_rot) fwht_rows(&qs[0][0], AQ, MAX_HEAD, head_dim, k_rot);
    float acc[ND];
#pragma unroll
    for (int j = 0; j < ND; j++) acc[j] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int pos_max = pos0 + min(tokens, (int)(blockIdx.x + 1) * AQ) - 1;
    const int n_cells = last < cells ? pos_max + 1 : cells;
    const int hd8 = head_dim / 8, quarter = head_dim / 4;
    const int cl = lane & (AQC - 1), part = lane / AQC;  // this lane's cell in the tile, and half of the head
    for (int c0 = 0; c0 < n_cells; c0 += AQC) {
        __syncthreads();  // the previous tile is consumed
        for (int i = threadIdx.x; i < AQC * hd8; i += blockDim.x) {
            const int cc = i / hd8, e8 = i - cc * hd8;
            const int c = c0 + cc;
            float kf[8], vf[8];
            if (c < n_cells) {
                load8_any(kt, kc + c * k_row, g * head_dim + 8 * e8, kf);
                load8_any(vt, vc + c * v_row, g * head_dim + 8 * e8, vf);
            } else {
#pragma unroll
                for (int r = 0; r < 8; r++) kf[r] = vf[r] = 0.0f;
            }
#pragma unroll
            for (int r = 0; r < 4; r++)
                *reinterpret_cast<__half2*>(&ks[cc][8 * e8 + 2 * r]) = __floats2half2_rn(kf[2 * r], kf[2 * r + 1]);
#pragma unroll
            for (int r = 0; r < 8; r++) vs[cc][8 * e8 + r] = vf[r];
        }
        __syncthreads();
        const int c = c0 + cl;
        const bool see = qok && c < n_cells && visible(c, lm, last, pos, cells, window);
        float s = 0.0f;
        for (int d2 = part * quarter; d2 < (part + 1) * quarter; d2++) {
            const float2 kf = __half22float2(*reinterpret_cast<const __half2*>(&ks[cl][2 * d2]));
            s = fmaf(qs[warp][2 * d2], kf.x, s);
            s = fmaf(qs[warp][2 * d2 + 1], kf.y, s);
        }
        s += __shfl_xor_sync(FULL_MASK, s, AQC);
        s = see ? s * kq_scale : -INFINITY;
        const float m_new = fmaxf(m, warp_max(s));
        if (m_new == -INFINITY) continue;  // nothing visible yet (warp-uniform)
        const float corr = expf(m - m_new);
        const float e = see ? expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(part == 0 ? e : 0.0f);
#pragma unroll
        for (int j = 0; j < ND; j++) acc[j] *= corr;
        for (int cc = 0; cc < AQC; cc++) {
            const float pc = __shfl_sync(FULL_MASK, e, cc);
            if (pc == 0.0f) continue;  // warp-uniform
#pragma unroll
            for (int j = 0; j < ND; j++)
                if (j < nd) acc[j] = fmaf(pc, vs[cc][lane + 32 * j], acc[j]);
        }
        m = m_new;
    }
#pragma unroll
    for (int j = 0; j < ND; j++) acc[j] = l > 0.0f ? acc[j] / l : 0.0f;
    if (v_rot) rotate_lanes(acc, nd, v_rot, lane);
    if (!qok) return;
    float* o = out + ((long long)t * n_head + h) * head_dim;
#pragma unroll
    for (int j = 0; j < ND; j++)
        if (j < nd) o[lane + 32 * j] = acc[j];
}
