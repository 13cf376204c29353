// Prompt batches' matmul: out[t][r] = W[r] · x[t] for quantised W and f32 x
// of `tokens` rows, on simdgroup_matrix 8x8 tiles. A threadgroup of 4
// simdgroups takes 32 rows x 32 tokens; for each 32 columns it stages the
// weights dequantised to f32 (each thread 8 of them, through the type's
// `weight_at`, transposed) and the activations in threadgroup memory, and each
// simdgroup multiplies a 16 x 16 quarter as 2 x 2 accumulators. f32 tiles
// (not half) keep the products as close to exact as the mat-vec's.
// Launch: 128 threads a threadgroup, grid (rows / 32, tokens / 32) rounded
// up; cols a multiple of 32 (the staging steps).
#include <metal_stdlib>
using namespace metal;

#include "blocks.h"

struct MatmulArgs {
    uint rows;
    uint cols;    // a multiple of 32 and of the type's block
    uint tokens;
};

#define MM_R 32  // rows a threadgroup
#define MM_T 32  // tokens a threadgroup
#define MM_K 32  // columns a step

static inline float iq4nl_value(uint i) {
    const float v[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    return v[i & 15];
}

// Weight k of a row of blocks, by ggml's dequantisation.
static inline float weight_at(device const float* r, uint k) { return r[k]; }
static inline float weight_at(device const half* r, uint k) { return (float)r[k]; }
static inline float weight_at(device const ushort* r, uint k) { return as_type<float>((uint)r[k] << 16); }

static inline float weight_at(device const block_q4_0* r, uint k) {
    device const block_q4_0& b = r[k / QK];
    const uint j = k % QK;
    const uint q = j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4);
    return (float)b.d * (float)((int)q - 8);
}
static inline float weight_at(device const block_q4_1* r, uint k) {
    device const block_q4_1& b = r[k / QK];
    const uint j = k % QK;
    const uint q = j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4);
    return (float)b.d * (float)q + (float)b.m;
}
static inline uint qh_bit(device const uchar* qh, uint j) { return (qh[j / 8] >> (j % 8)) & 1; }
static inline float weight_at(device const block_q5_0* r, uint k) {
    device const block_q5_0& b = r[k / QK];
    const uint j = k % QK;
    const uint q = (j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4)) | (qh_bit(b.qh, j) << 4);
    return (float)b.d * (float)((int)q - 16);
}
static inline float weight_at(device const block_q5_1* r, uint k) {
    device const block_q5_1& b = r[k / QK];
    const uint j = k % QK;
    const uint q = (j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4)) | (qh_bit(b.qh, j) << 4);
    return (float)b.d * (float)q + (float)b.m;
}
static inline float weight_at(device const block_q8_0* r, uint k) {
    device const block_q8_0& b = r[k / QK];
    return (float)b.d * (float)b.qs[k % QK];
}
static inline float weight_at(device const block_iq4_nl* r, uint k) {
    device const block_iq4_nl& b = r[k / QK];
    const uint j = k % QK;
    return (float)b.d * iq4nl_value(j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4));
}
static inline float weight_at(device const block_q2_K* r, uint k) {
    device const block_q2_K& b = r[k / QK_K];
    const uint i = k % QK_K;
    const uint half_ = i / 128, shift = 2 * ((i % 128) / 32), l = i % 32;
    const uchar sc = b.scales[i / 16];
    const uint q = (b.qs[32 * half_ + l] >> shift) & 3;
    return (float)b.d * (float)(sc & 15) * (float)q - (float)b.dmin * (float)(sc >> 4);
}
static inline float weight_at(device const block_q3_K* r, uint k) {
    device const block_q3_K& b = r[k / QK_K];
    const uint i = k % QK_K;
    const uint half_ = i / 128, s = (i % 128) / 32, l = i % 32, is = i / 16;
    const int low = is < 8 ? (b.scales[is % 8] & 15) : (b.scales[is % 8] >> 4);
    const int high = (b.scales[8 + is % 4] >> (2 * (is / 4))) & 3;
    const int q = (int)((b.qs[32 * half_ + l] >> (2 * s)) & 3) - ((b.hmask[l] & (1 << (4 * half_ + s))) ? 0 : 4);
    return (float)b.d * (float)((low | (high << 4)) - 32) * (float)q;
}
static inline void sm_k4(uint j, device const uchar* q, thread float& sc, thread float& mn) {
    if (j < 4) {
        sc = (float)(q[j] & 63);
        mn = (float)(q[j + 4] & 63);
    } else {
        sc = (float)((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4));
        mn = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}
static inline float weight_at(device const block_q4_K* r, uint k) {
    device const block_q4_K& b = r[k / QK_K];
    const uint i = k % QK_K, chunk = i / 64, l = i % 32, hi = (i % 64) / 32;
    float sc, mn;
    sm_k4(2 * chunk + hi, b.scales, sc, mn);
    const uchar byte = b.qs[32 * chunk + l];
    const uint q = hi ? (byte >> 4) : (byte & 15);
    return (float)b.d * sc * (float)q - (float)b.dmin * mn;
}
static inline float weight_at(device const block_q5_K* r, uint k) {
    device const block_q5_K& b = r[k / QK_K];
    const uint i = k % QK_K, chunk = i / 64, l = i % 32, hi = (i % 64) / 32;
    float sc, mn;
    sm_k4(2 * chunk + hi, b.scales, sc, mn);
    const uchar byte = b.qs[32 * chunk + l];
    const uint q = (hi ? (byte >> 4) : (byte & 15)) + ((b.qh[l] & (1 << (2 * chunk + hi))) ? 16 : 0);
    return (float)b.d * sc * (float)q - (float)b.dmin * mn;
}
static inline float weight_at(device const block_q6_K* r, uint k) {
    device const block_q6_K& b = r[k / QK_K];
    const uint i = k % QK_K, half_ = i / 128, quarter = (i % 128) / 32, l = i % 32;
    device const uchar* ql = b.ql + 64 * half_;
    device const uchar* qh = b.qh + 32 * half_;
    const uint lo = quarter < 2 ? (ql[l + 32 * quarter] & 15) : (ql[l + 32 * (quarter - 2)] >> 4);
    const uint q = lo | (((qh[l] >> (2 * quarter)) & 3) << 4);
    return (float)b.d * (float)b.scales[8 * half_ + l / 16 + 2 * quarter] * (float)((int)q - 32);
}
static inline float weight_at(device const block_iq4_xs* r, uint k) {
    device const block_iq4_xs& b = r[k / QK_K];
    const uint i = k % QK_K, ib = i / 32, j = i % 32;
    const int low = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 15;
    const int high = (b.scales_h >> (2 * ib)) & 3;
    device const uchar* qs = b.qs + 16 * ib;
    const uint q = j < 16 ? (qs[j] & 15) : (qs[j - 16] >> 4);
    return (float)b.d * (float)((low | (high << 4)) - 32) * iq4nl_value(q);
}

template <typename B, uint QB>
static void matmul(device const B* w, device const float* x, device float* out, constant MatmulArgs& a,
                   threadgroup float* ws, threadgroup float* xs, uint2 tg, uint tid, uint simd) {
    const uint r0 = tg.x * MM_R, t0 = tg.y * MM_T;
    const uint nb = a.cols / QB;
    simdgroup_float8x8 acc[2][2];
    for (uint i = 0; i < 2; i++)
        for (uint j = 0; j < 2; j++) acc[i][j] = make_filled_simdgroup_matrix<float, 8>(0.0f);
    // This simdgroup's quarter: tokens sy * 16.., rows sx * 16..
    const uint sy = simd / 2, sx = simd % 2;
    for (uint k0 = 0; k0 < a.cols; k0 += MM_K) {
        for (uint e = tid; e < MM_R * MM_K; e += 128) {
            const uint r = e / MM_K, k = e % MM_K;
            // W transposed ([k][row]): B's columns are W's rows.
            ws[k * MM_R + r] = r0 + r < a.rows ? weight_at(w + (ulong)(r0 + r) * nb, k0 + k) : 0.0f;
            xs[e] = t0 + r < a.tokens ? x[(ulong)(t0 + r) * a.cols + k0 + k] : 0.0f;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (uint kk = 0; kk < MM_K; kk += 8) {
            simdgroup_float8x8 xa[2], wb[2];
            for (uint i = 0; i < 2; i++) simdgroup_load(xa[i], xs + (sy * 16 + 8 * i) * MM_K + kk, MM_K);
            for (uint j = 0; j < 2; j++) simdgroup_load(wb[j], ws + kk * MM_R + sx * 16 + 8 * j, MM_R);
            for (uint i = 0; i < 2; i++)
                for (uint j = 0; j < 2; j++) simdgroup_multiply_accumulate(acc[i][j], xa[i], wb[j], acc[i][j]);
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    // Through threadgroup memory (ws, now free) so that edge tiles store
    // only their rows and tokens.
    for (uint i = 0; i < 2; i++)
        for (uint j = 0; j < 2; j++)
            simdgroup_store(acc[i][j], ws + (sy * 16 + 8 * i) * MM_R + sx * 16 + 8 * j, MM_R);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint e = tid; e < MM_T * MM_R; e += 128) {
        const uint t = e / MM_R, r = e % MM_R;
        if (t0 + t < a.tokens && r0 + r < a.rows) out[(ulong)(t0 + t) * a.rows + r0 + r] = ws[e];
    }
}

#define MATMUL(NAME, BLOCK, QB)                                                                               \
    kernel void matmul_##NAME(device const BLOCK* w [[buffer(0)]], device const float* x [[buffer(1)]],       \
                              device float* out [[buffer(2)]], constant MatmulArgs& a [[buffer(3)]],          \
                              uint2 tg [[threadgroup_position_in_grid]],                                      \
                              uint tid [[thread_index_in_threadgroup]],                                       \
                              uint simd [[simdgroup_index_in_threadgroup]]) {                                 \
        threadgroup float ws[MM_R * MM_K];                                                                    \
        threadgroup float xs[MM_T * MM_K];                                                                    \
        matmul<BLOCK, QB>(w, x, out, a, ws, xs, tg, tid, simd);                                               \
    }

MATMUL(f32, float, 1)
MATMUL(f16, half, 1)
MATMUL(bf16, ushort, 1)
MATMUL(q4_0, block_q4_0, QK)
MATMUL(q4_1, block_q4_1, QK)
MATMUL(q5_0, block_q5_0, QK)
MATMUL(q5_1, block_q5_1, QK)
MATMUL(q8_0, block_q8_0, QK)
MATMUL(iq4_nl, block_iq4_nl, QK)
MATMUL(q2_k, block_q2_K, QK_K)
MATMUL(q3_k, block_q3_K, QK_K)
MATMUL(q4_k, block_q4_K, QK_K)
MATMUL(q5_k, block_q5_K, QK_K)
MATMUL(q6_k, block_q6_K, QK_K)
MATMUL(iq4_xs, block_iq4_xs, QK_K)
