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
// attention output rotates back (hadamard_rows). The host passes the sizes,
// 0 for none (ggml/src/kv_types.rs says which).
//
// Storing is bit-identical to the CPU (same quantiser arithmetic, one thread
// per block, no contracted multiply-adds), so a cache written on either
// device holds the same bytes. Attention dots the f32 (rotated) query with
// dequantised keys in f32, where the CPU and llama.cpp's CUDA build first
// quantise the query to 8 bits.
#include <cuda_fp16.h>
#include <stdint.h>

#include "quants.cuh"

using namespace gq;

#define FULL_MASK 0xffffffffu
#define MAX_HEAD 256     // head sizes up to 256 (the f16 kernels' limit too)
#define MAX_WARPS 16
#define VU 4             // rounds of cells in flight per warp in attention_q
#define AQ 8             // queries (one warp each) per block of attention_q_prompt
#define AC 32            // cells per tile of attention_q_prompt
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

// Pieces of n floats of x, one block (any size) each: grid = (pieces).
extern "C" __global__ void hadamard_rows(float* x, int n) {
    __shared__ float s[1024];
    float* piece = x + (long long)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = piece[i];
    __syncthreads();
    fwht_rows(s, 1, n, n, n);
    for (int i = threadIdx.x; i < n; i += blockDim.x) piece[i] = s[i];
}

// ---------------------------------------------------------------- storing

__device__ __forceinline__ void put_u16(uint8_t* p, uint32_t h) {
    *reinterpret_cast<unsigned short*>(p) = static_cast<unsigned short>(h);
}

__device__ __forceinline__ void put_half(uint8_t* p, float v) {
    put_u16(p, __half_as_ushort(__float2half_rn(v)));
}

// ggml's f32 -> bf16: round half to even, NaN kept quiet.
__device__ __forceinline__ uint32_t bf16_bits(float v) {
    uint32_t b = __float_as_uint(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (b >> 16) | 64u;
    return (b + (0x7fffu + ((b >> 16) & 1u))) >> 16;
}

// C's (int) cast of the levels' floats (truncation; 0 for NaN).
__device__ __forceinline__ int trunc_int(float v) { return __float2int_rz(v); }

// ggml's MIN(top, (int8_t)v): the cast wraps before the clamp.
__device__ __forceinline__ uint32_t level_i8(float v, int top) {
    return static_cast<uint32_t>(min(static_cast<int>(static_cast<int8_t>(trunc_int(v))), top)) & 0xffu;
}

__device__ __forceinline__ float inverse(float d) { return d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f; }

// The first value of largest magnitude.
__device__ __forceinline__ float signed_absmax(const float* x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

__device__ __forceinline__ void min_max(const float* x, float& mn, float& mx) {
    mn = 3.40282347e+38f;
    mx = -3.40282347e+38f;
    for (int j = 0; j < 32; j++) {
        if (x[j] < mn) mn = x[j];
        if (x[j] > mx) mx = x[j];
    }
}

// Elements j and j + 16 share byte j.
__device__ __forceinline__ void put_nibbles(uint8_t* qs, const uint8_t* l) {
    for (int j = 0; j < 16; j++) qs[j] = (l[j] & 15u) | ((l[j + 16] & 15u) << 4);
}

__device__ __forceinline__ void put_fifth_bits(uint8_t* p, const uint8_t* l) {
    uint32_t qh = 0;
    for (int j = 0; j < 32; j++) qh |= ((l[j] & 0x10u) >> 4) << j;
    put_u16(p, qh & 0xffffu);
    put_u16(p + 2, qh >> 16);
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

// One block of 32 values of a quantised type into p: the quantisers the
// CPU's cache uses (ggml/src/blocks: ggml's from_float for each type).
__device__ void quantize_block(int t, const float* x, uint8_t* p) {
    uint8_t l[32];
    if (t == Q8_0) {
        // ggml's x86 from_float: scale 127/amax, round half to even.
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
        put_half(p, __fdiv_rn(amax, 127.0f));
        for (int j = 0; j < 32; j++) {
            float q = fminf(fmaxf(rintf(__fmul_rn(x[j], id)), -128.0f), 127.0f);
            p[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(q)));
        }
    } else if (t == Q4_0 || t == Q5_0) {
        const bool five = t == Q5_0;
        const float d = __fdiv_rn(signed_absmax(x), five ? -16.0f : -8.0f), id = inverse(d);
        put_half(p, d);
        for (int j = 0; j < 32; j++)
            l[j] = level_i8(__fadd_rn(__fmul_rn(x[j], id), five ? 16.5f : 8.5f), five ? 31 : 15);
        if (five) put_fifth_bits(p + 2, l);
        put_nibbles(p + (five ? 6 : 2), l);
    } else if (t == Q4_1 || t == Q5_1) {
        const bool five = t == Q5_1;
        float mn, mx;
        min_max(x, mn, mx);
        const float d = __fdiv_rn(__fsub_rn(mx, mn), five ? 31.0f : 15.0f), id = inverse(d);
        put_half(p, d);
        put_half(p + 2, mn);
        for (int j = 0; j < 32; j++) {
            float v = __fadd_rn(__fmul_rn(__fsub_rn(x[j], mn), id), 0.5f);
            // ggml clamps Q4_1's level, not Q5_1's.
            l[j] = five ? static_cast<uint8_t>(trunc_int(v)) : level_i8(v, 15);
        }
        if (five) put_fifth_bits(p + 4, l);
        put_nibbles(p + (five ? 8 : 4), l);
    } else if (t == IQ4_NL) {
        // quantize_row_iq4_nl_ref: the least-squares scale of the levels
        // that max -> -127 picks, with x^2 weights; no scale search.
        const float max = signed_absmax(x);
        float d = 0.0f;
        for (int j = 0; j < 32; j++) l[j] = 8;
        if (fabsf(max) >= 1e-15f) {
            const float id = __fdiv_rn(1.0f, __fdiv_rn(max, -127.0f));
            float sumqx = 0.0f, sumq2 = 0.0f;
            for (int j = 0; j < 32; j++) {
                const int i = iq4nl_index(__fmul_rn(id, x[j]));
                l[j] = static_cast<uint8_t>(i);
                const float q = iq4nl_value(i), w = __fmul_rn(x[j], x[j]);
                sumqx = __fadd_rn(sumqx, __fmul_rn(__fmul_rn(w, q), x[j]));
                sumq2 = __fadd_rn(sumq2, __fmul_rn(__fmul_rn(w, q), q));
            }
            d = sumq2 > 0.0f ? __fdiv_rn(sumqx, sumq2) : 0.0f;
        }
        put_half(p, d);
        put_nibbles(p + 2, l);
    }
}

// One head of `head_dim` values (x, shared) into its bytes of a cache row.
__device__ void put_head(int t, const float* x, int head_dim, uint8_t* dst) {
    if (t == F16 || t == BF16) {
        for (int i = threadIdx.x; i < head_dim; i += blockDim.x)
            put_u16(dst + 2 * i, t == F16 ? __half_as_ushort(__float2half_rn(x[i])) : bf16_bits(x[i]));
        return;
    }
    for (int b = threadIdx.x; b < head_dim / 32; b += blockDim.x)
        quantize_block(t, x + 32 * b, dst + b * block_bytes(t));
}

// Stores K and V of `tokens` tokens (f32 rows of n_head_kv * head_dim) in
// cells (step[0] + t) % cells of caches of types kt and vt, each head rotated
// first where k_rot / v_rot say. grid = (tokens, n_head_kv), block = 128.
extern "C" __global__ void kv_store_q(uint8_t* kc, uint8_t* vc, const float* k, const float* v,
                                      int n_head_kv, int head_dim, int cells, const int* step, int kt,
                                      int vt, int k_rot, int v_rot) {
    __shared__ float x[MAX_HEAD];
    const int t = blockIdx.x, h = blockIdx.y;
    const long long kv_dim = (long long)n_head_kv * head_dim;
    const long long cell = (step[0] + t) % cells;
    for (int which = 0; which < 2; which++) {
        const int ty = which ? vt : kt, rot = which ? v_rot : k_rot;
        const float* src = (which ? v : k) + t * kv_dim + (long long)h * head_dim;
        uint8_t* dst = (which ? vc : kc) + cell * type_bytes(ty, kv_dim) + type_bytes(ty, (long long)h * head_dim);
        __syncthreads();  // the previous head is stored
        for (int i = threadIdx.x; i < head_dim; i += blockDim.x) x[i] = src[i];
        __syncthreads();
        if (rot) fwht_rows(x, 1, head_dim, head_dim, rot);
        put_head(ty, x, head_dim, dst);
    }
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

// Elements e0 .. e0 + 7 (e0 a multiple of 8) of a cache row of type T.
template <int T>
__device__ __forceinline__ void load8(const uint8_t* row, int e0, float o[8]) {
    if constexpr (T == F16 || T == BF16) {
        uint32_t w[4];
        ldspan<16>(row + 2 * e0, w);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if constexpr (T == F16) {
                o[2 * i] = h2f(w[i]);
                o[2 * i + 1] = h2f(w[i] >> 16);
            } else {
                o[2 * i] = __uint_as_float(w[i] << 16);
                o[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
            }
        }
    } else {
        const int j = e0 & 31;
        const uint8_t* p = row + (e0 >> 5) * block_bytes(T);
        const float d = h2f(ldg_u16(p));
        uint32_t w[2];
        if constexpr (T == Q8_0) {
            ldspan<8>(p + 2 + j, w);
#pragma unroll
            for (int i = 0; i < 8; i++)
                o[i] = d * static_cast<float>(static_cast<int8_t>(byte_of(w[i >> 2], i & 3)));
        } else {
            constexpr int QS = (T == Q4_0 || T == IQ4_NL) ? 2 : T == Q4_1 ? 4 : T == Q5_0 ? 6 : 8;
            ldspan<8>(p + QS + (j & 15), w);
            const int sh = (j & 16) ? 4 : 0;
            uint32_t qh = 0;
            if constexpr (T == Q5_0) qh = ldg_u16(p + 2) | (ldg_u16(p + 4) << 16);
            if constexpr (T == Q5_1) qh = ldg_u16(p + 4) | (ldg_u16(p + 6) << 16);
            float m = 0.0f;
            if constexpr (T == Q4_1 || T == Q5_1) m = h2f(ldg_u16(p + 2));
#pragma unroll
            for (int i = 0; i < 8; i++) {
                uint32_t q = (byte_of(w[i >> 2], i & 3) >> sh) & 15u;
                if constexpr (T == Q5_0 || T == Q5_1) q |= ((qh >> (j + i)) & 1u) << 4;
                if constexpr (T == Q4_0) o[i] = d * u2f_b<8>(q);
                else if constexpr (T == Q5_0) o[i] = d * u2f_b<16>(q);
                else if constexpr (T == IQ4_NL) o[i] = d * iq4nl_value(q);
                else o[i] = d * u2f(q) + m;
            }
        }
    }
}

__device__ __forceinline__ void load8_any(int t, const uint8_t* row, int e0, float o[8]) {
    switch (t) {
    case F16: load8<F16>(row, e0, o); break;
    case BF16: load8<BF16>(row, e0, o); break;
    case Q8_0: load8<Q8_0>(row, e0, o); break;
    case Q4_0: load8<Q4_0>(row, e0, o); break;
    case Q4_1: load8<Q4_1>(row, e0, o); break;
    case Q5_0: load8<Q5_0>(row, e0, o); break;
    case Q5_1: load8<Q5_1>(row, e0, o); break;
    default: load8<IQ4_NL>(row, e0, o); break;
    }
}

// T < 0: the type known only at run time.
template <int T>
__device__ __forceinline__ void load8_of(int t, const uint8_t* row, int e0, float o[8]) {
    if constexpr (T >= 0) load8<T>(row, e0, o);
    else load8_any(t, row, e0, o);
}

// Whether the query at `pos` sees cell c (the newest position mapped to c,
// at or before the batch's last, is at most pos and inside the window).
__device__ __forceinline__ bool visible(int c, int last, int pos, int cells, int window) {
    int back = ((last - c) % cells + cells) % cells;
    int p = last - back;
    return p >= 0 && p <= pos && !(window > 0 && pos - p >= window);
}

// The block's partial results (per warp: running max sm, sum sl, values
// sacc) into the output row or, with several splits, the split's partial
// for attention_merge (ops.cu): [m, l, values].
__device__ __forceinline__ void finish(const float* sm, const float* sl, const float* sacc, int stride,
                                       int nwarps, int head_dim, float* out, float* part, int t, int h,
                                       int n_head) {
    float M = -INFINITY;
    for (int w = 0; w < nwarps; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f;
    for (int w = 0; w < nwarps; w++)
        if (sm[w] != -INFINITY) L += sl[w] * expf(sm[w] - M);
    const int splits = gridDim.z, split = blockIdx.z;
    float* dst = splits > 1 ? part + (((long long)t * n_head + h) * splits + split) * (head_dim + 2) + 2
                            : out + ((long long)t * n_head + h) * head_dim;
    if (splits > 1 && threadIdx.x == 0) {
        dst[-2] = M;
        dst[-1] = L;
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < nwarps; w++)
            if (sm[w] != -INFINITY) v += sacc[w * stride + d] * expf(sm[w] - M);
        dst[d] = splits > 1 ? v : (L > 0.0f ? v / L : 0.0f);
    }
}

// The query head (rotated as the keys are) into shared memory.
__device__ __forceinline__ void load_query(float* qs, const float* q, int head_dim, int k_rot) {
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) qs[i] = q[i];
    __syncthreads();
    if (k_rot) fwht_rows(qs, 1, head_dim, head_dim, k_rot);
}

// Decode attention over a quantised cache for head sizes 64, 128 and 256:
// ops.cu's attention_range_vec with loads through load8 (a cell's head of
// D values takes L = D / 8 lanes, 8 values each). Same grid (tokens, n_head,
// splits), block 32 * warps (<= 16), and partials as there.
template <int D, int KT, int VT>
__device__ __forceinline__ void attention_q_vec(const float* q, const uint8_t* kc, const uint8_t* vc,
                                                float* out, float* part, int n_head, int n_head_kv, int cells,
                                                const int* step, int window, float kq_scale, int kt, int vt,
                                                int k_rot) {
    constexpr int L = D / 8, CPW = 32 / L;
    __shared__ float qs[D];
    __shared__ float sm[MAX_WARPS], sl_[MAX_WARPS];
    __shared__ float sacc[MAX_WARPS][D];
    const int t = blockIdx.x, h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int sub = lane / L, sl = lane % L;
    const int pos0 = step[0], tokens = step[1];
    const int last = pos0 + tokens - 1, pos = pos0 + t;
    const int g = h / (n_head / n_head_kv);
    const long long kv_dim = (long long)n_head_kv * D;
    const long long k_row = type_bytes(kt, kv_dim), v_row = type_bytes(vt, kv_dim);
    const int e0 = g * D + 8 * sl;
    load_query(qs, q + ((long long)t * n_head + h) * D, D, k_rot);
    float qr[8], acc[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        qr[i] = qs[8 * sl + i];
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int n_cells = last < cells ? pos + 1 : cells;
    const int splits = gridDim.z, split = blockIdx.z;
    const int c_lo = (int)((long long)n_cells * split / splits);
    const int c_hi = (int)((long long)n_cells * (split + 1) / splits);
    const int stride = nwarps * CPW;
    for (int cw = c_lo + warp * CPW; cw < c_hi; cw += VU * stride) {
        float kf[VU][8], vf[VU][8];
        bool ok[VU];
#pragma unroll
        for (int u = 0; u < VU; u++) {
            const int c = cw + u * stride + sub;
            ok[u] = c < c_hi && visible(c, last, pos, cells, window);
            if (ok[u]) {
                load8_of<KT>(kt, kc + c * k_row, e0, kf[u]);
                load8_of<VT>(vt, vc + c * v_row, e0, vf[u]);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) kf[u][i] = vf[u][i] = 0.0f;
            }
        }
        float s[VU];
        float mx = m;
#pragma unroll
        for (int u = 0; u < VU; u++) {
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) d += qr[i] * kf[u][i];
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
#pragma unroll
        for (int u = 0; u < VU; u++) {
            if (!ok[u]) continue;
            const float e = expf(s[u] - mx);
            l += e;
#pragma unroll
            for (int i = 0; i < 8; i++) acc[i] += e * vf[u][i];
        }
        m = mx;
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
    finish(sm, sl_, &sacc[0][0], D, nwarps, D, out, part, t, h, n_head);
}

// attention_q<D>[_<type>](q, kc, vc, out, part, n_head, n_head_kv, cells,
// step, window, kq_scale, kt, vt, k_rot): the suffixed kernels are for a K
// and V cache of that one type; attention_q<D> reads any pair.
#define ATTENTION_Q(D, NAME, KT, VT)                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * MAX_WARPS) attention_q##D##NAME(                       \
        const float* q, const uint8_t* kc, const uint8_t* vc, float* out, float* part, int n_head,          \
        int n_head_kv, int cells, const int* step, int window, float kq_scale, int kt, int vt, int k_rot) {  \
        attention_q_vec<D, KT, VT>(q, kc, vc, out, part, n_head, n_head_kv, cells, step, window, kq_scale,  \
                                   kt, vt, k_rot);                                                          \
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
                int vt, int k_rot) {
    constexpr int ND = MAX_HEAD / 32;
    __shared__ float qs[MAX_HEAD];
    __shared__ float sm[MAX_WARPS], sl[MAX_WARPS];
    __shared__ float sacc[MAX_WARPS][MAX_HEAD];
    const int t = blockIdx.x, h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int pos0 = step[0], tokens = step[1];
    const int last = pos0 + tokens - 1, pos = pos0 + t;
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
        if (!visible(c, last, pos, cells, window)) continue;  // warp-uniform
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
    finish(sm, sl, &sacc[0][0], MAX_HEAD, nwarps, head_dim, out, part, t, h, n_head);
}

// Causal attention for prompt batches over a quantised cache: ops.cu's
// attention_prompt (AQ queries of one head a block, tiles of AC cells in
// shared memory), each tile dequantised as it is staged, to f16 as
// llama.cpp's CUDA build converts a quantised cache for its prompt kernels.
// grid = (ceil(tokens / AQ), n_head), block = 32 * AQ.
extern "C" __global__ void __launch_bounds__(32 * AQ)
attention_q_prompt(const float* q, const uint8_t* kc, const uint8_t* vc, float* out, int n_head,
                   int n_head_kv, int head_dim, int cells, const int* step, int window, float kq_scale, int kt,
                   int vt, int k_rot) {
    constexpr int ND = MAX_HEAD / 32;
    __shared__ float qs[AQ][MAX_HEAD];
    __shared__ __align__(16) __half ks[AC][LDS];
    __shared__ __align__(16) __half vs[AC][LDS];
    const int h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int pos0 = step[0], tokens = step[1];
    const int last = pos0 + tokens - 1;
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
    const int hd8 = head_dim / 8;
    for (int c0 = 0; c0 < n_cells; c0 += AC) {
        __syncthreads();  // the previous tile is consumed
        for (int i = threadIdx.x; i < AC * hd8; i += blockDim.x) {
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
            for (int r = 0; r < 4; r++) {
                *reinterpret_cast<__half2*>(&ks[cc][8 * e8 + 2 * r]) = __floats2half2_rn(kf[2 * r], kf[2 * r + 1]);
                *reinterpret_cast<__half2*>(&vs[cc][8 * e8 + 2 * r]) = __floats2half2_rn(vf[2 * r], vf[2 * r + 1]);
            }
        }
        __syncthreads();
        const int c = c0 + lane;
        const bool see = qok && c < n_cells && visible(c, last, pos, cells, window);
        float s = 0.0f;
        for (int d2 = 0; d2 < head_dim / 2; d2++) {
            const float2 kf = __half22float2(*reinterpret_cast<const __half2*>(&ks[lane][2 * d2]));
            s = fmaf(qs[warp][2 * d2], kf.x, s);
            s = fmaf(qs[warp][2 * d2 + 1], kf.y, s);
        }
        s = see ? s * kq_scale : -INFINITY;
        const float m_new = fmaxf(m, warp_max(s));
        if (m_new == -INFINITY) continue;  // nothing visible yet (warp-uniform)
        const float corr = expf(m - m_new);
        const float e = see ? expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(e);
#pragma unroll
        for (int j = 0; j < ND; j++) acc[j] *= corr;
        for (int cc = 0; cc < AC; cc++) {
            const float pc = __shfl_sync(FULL_MASK, e, cc);
            if (pc == 0.0f) continue;  // warp-uniform
#pragma unroll
            for (int j = 0; j < ND; j++)
                if (j < nd) acc[j] = fmaf(pc, __half2float(vs[cc][lane + 32 * j]), acc[j]);
        }
        m = m_new;
    }
    if (!qok) return;
    float* o = out + ((long long)t * n_head + h) * head_dim;
#pragma unroll
    for (int j = 0; j < ND; j++)
        if (j < nd) o[lane + 32 * j] = l > 0.0f ? acc[j] / l : 0.0f;
}
