// Decode's mat-vec (one token): y[r] = W[r] · x for quantised W and f32 x.
// A simdgroup takes a row, its lanes every 32nd block, and the block's
// integers are dotted with x in f32 and scaled once (x is not quantised, as
// the CPU's and llama.cpp's Metal path quantise it, so this is the closer to
// exact of the two). One block_dot per weight type's block (ggml's dequantisation,
// the scales applied to sums); `matvec` is the rest. Correct first: a lane
// a block leaves lanes idle on k-quant rows of few blocks (speed is for a
// Mac to measure).
#include <metal_stdlib>
using namespace metal;

#include "blocks.h"

struct MatvecArgs {
    uint rows;
    uint cols;  // a multiple of the type's block
};

// kvalues_iq4nl, ggml's 4-bit codebook of IQ4_NL and IQ4_XS.
constant float IQ4NL_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static inline float block_dot(device const float& b, device const float* x) { return b * x[0]; }

static inline float block_dot(device const half& b, device const float* x) { return (float)b * x[0]; }

static inline float block_dot(device const ushort& b, device const float* x) {  // bf16
    return as_type<float>((uint)b << 16) * x[0];
}

static inline float block_dot(device const block_q4_0& b, device const float* x) {
    float s = 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        const uchar q = b.qs[j];
        s += (float)((int)(q & 15) - 8) * x[j] + (float)((int)(q >> 4) - 8) * x[j + QK / 2];
    }
    return (float)b.d * s;
}

static inline float block_dot(device const block_q4_1& b, device const float* x) {
    float s = 0.0f, sx = 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        const uchar q = b.qs[j];
        s += (float)(q & 15) * x[j] + (float)(q >> 4) * x[j + QK / 2];
        sx += x[j] + x[j + QK / 2];
    }
    return (float)b.d * s + (float)b.m * sx;
}

static inline uint fifth_bits(device const uchar* qh) {
    return (uint)qh[0] | ((uint)qh[1] << 8) | ((uint)qh[2] << 16) | ((uint)qh[3] << 24);
}

static inline float block_dot(device const block_q5_0& b, device const float* x) {
    const uint qh = fifth_bits(b.qh);
    float s = 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        const int lo = (int)((b.qs[j] & 15) | (((qh >> j) & 1) << 4)) - 16;
        const int hi = (int)((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
        s += (float)lo * x[j] + (float)hi * x[j + QK / 2];
    }
    return (float)b.d * s;
}

static inline float block_dot(device const block_q5_1& b, device const float* x) {
    const uint qh = fifth_bits(b.qh);
    float s = 0.0f, sx = 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        const uint lo = (b.qs[j] & 15) | (((qh >> j) & 1) << 4);
        const uint hi = (b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
        s += (float)lo * x[j] + (float)hi * x[j + QK / 2];
        sx += x[j] + x[j + QK / 2];
    }
    return (float)b.d * s + (float)b.m * sx;
}

static inline float block_dot(device const block_q8_0& b, device const float* x) {
    float s = 0.0f;
    for (int j = 0; j < QK; j++) s += (float)b.qs[j] * x[j];
    return (float)b.d * s;
}

static inline float block_dot(device const block_iq4_nl& b, device const float* x) {
    float s = 0.0f;
    for (int j = 0; j < QK / 2; j++)
        s += IQ4NL_VALUES[b.qs[j] & 15] * x[j] + IQ4NL_VALUES[b.qs[j] >> 4] * x[j + QK / 2];
    return (float)b.d * s;
}

static inline float block_dot(device const block_q2_K& b, device const float* x) {
    const float d = (float)b.d, dmin = (float)b.dmin;
    float s = 0.0f;
    int is = 0;
    for (int half_ = 0; half_ < 2; half_++) {
        device const uchar* q = b.qs + 32 * half_;
        for (int shift = 0; shift < 8; shift += 2) {
            for (int part = 0; part < 2; part++, is++) {
                const uchar sc = b.scales[is];
                float sq = 0.0f, sx = 0.0f;
                for (int l = 16 * part; l < 16 * part + 16; l++, x++) {
                    sq += (float)((q[l] >> shift) & 3) * x[0];
                    sx += x[0];
                }
                s += d * (float)(sc & 15) * sq - dmin * (float)(sc >> 4) * sx;
            }
        }
    }
    return s;
}

// Q3_K's twelve scale bytes hold sixteen 6-bit scales (biased by 32).
static inline int q3k_scale(device const uchar* sc, int is) {
    const int low = is < 8 ? (sc[is % 8] & 15) : (sc[is % 8] >> 4);
    const int high = (sc[8 + is % 4] >> (2 * (is / 4))) & 3;
    return (low | (high << 4)) - 32;
}

static inline float block_dot(device const block_q3_K& b, device const float* x) {
    const float d = (float)b.d;
    float s = 0.0f;
    int is = 0;
    uchar m = 1;
    for (int half_ = 0; half_ < 2; half_++) {
        device const uchar* q = b.qs + 32 * half_;
        for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
            for (int part = 0; part < 2; part++, is++) {
                float sq = 0.0f;
                for (int l = 16 * part; l < 16 * part + 16; l++, x++) {
                    const int v = (int)((q[l] >> shift) & 3) - ((b.hmask[l] & m) ? 0 : 4);
                    sq += (float)v * x[0];
                }
                s += d * (float)q3k_scale(b.scales, is) * sq;
            }
        }
    }
    return s;
}

// Scale and minimum j of the twelve packed 6-bit pairs of Q4_K and Q5_K.
static inline void scale_min_k4(int j, device const uchar* q, thread float& sc, thread float& mn) {
    if (j < 4) {
        sc = (float)(q[j] & 63);
        mn = (float)(q[j + 4] & 63);
    } else {
        sc = (float)((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4));
        mn = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static inline float block_dot(device const block_q4_K& b, device const float* x) {
    const float d = (float)b.d, dmin = (float)b.dmin;
    float s = 0.0f;
    for (int chunk = 0; chunk < 4; chunk++) {
        device const uchar* q = b.qs + 32 * chunk;
        float sc1, m1, sc2, m2;
        scale_min_k4(2 * chunk, b.scales, sc1, m1);
        scale_min_k4(2 * chunk + 1, b.scales, sc2, m2);
        float s1 = 0.0f, s2 = 0.0f, x1 = 0.0f, x2 = 0.0f;
        for (int l = 0; l < 32; l++) {
            s1 += (float)(q[l] & 15) * x[l];
            s2 += (float)(q[l] >> 4) * x[l + 32];
            x1 += x[l];
            x2 += x[l + 32];
        }
        s += d * (sc1 * s1 + sc2 * s2) - dmin * (m1 * x1 + m2 * x2);
        x += 64;
    }
    return s;
}

static inline float block_dot(device const block_q5_K& b, device const float* x) {
    const float d = (float)b.d, dmin = (float)b.dmin;
    float s = 0.0f;
    for (int chunk = 0; chunk < 4; chunk++) {
        device const uchar* q = b.qs + 32 * chunk;
        const uchar u1 = 1 << (2 * chunk), u2 = 2 << (2 * chunk);
        float sc1, m1, sc2, m2;
        scale_min_k4(2 * chunk, b.scales, sc1, m1);
        scale_min_k4(2 * chunk + 1, b.scales, sc2, m2);
        float s1 = 0.0f, s2 = 0.0f, x1 = 0.0f, x2 = 0.0f;
        for (int l = 0; l < 32; l++) {
            s1 += (float)((q[l] & 15) + ((b.qh[l] & u1) ? 16 : 0)) * x[l];
            s2 += (float)((q[l] >> 4) + ((b.qh[l] & u2) ? 16 : 0)) * x[l + 32];
            x1 += x[l];
            x2 += x[l + 32];
        }
        s += d * (sc1 * s1 + sc2 * s2) - dmin * (m1 * x1 + m2 * x2);
        x += 64;
    }
    return s;
}

static inline float block_dot(device const block_q6_K& b, device const float* x) {
    const float d = (float)b.d;
    float s = 0.0f;
    for (int half_ = 0; half_ < 2; half_++) {
        device const uchar* ql = b.ql + 64 * half_;
        device const uchar* qh = b.qh + 32 * half_;
        device const char* sc = b.scales + 8 * half_;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // by scale
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            acc[is + 0] += (float)((int)((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32) * x[l];
            acc[is + 2] += (float)((int)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32) * x[l + 32];
            acc[is + 4] += (float)((int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * x[l + 64];
            acc[is + 6] += (float)((int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * x[l + 96];
        }
        for (int k = 0; k < 8; k++) s += d * (float)sc[k] * acc[k];
        x += 128;
    }
    return s;
}

static inline float block_dot(device const block_iq4_xs& b, device const float* x) {
    const float d = (float)b.d;
    float s = 0.0f;
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const int low = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 15;
        const int high = (b.scales_h >> (2 * ib)) & 3;
        device const uchar* qs = b.qs + 16 * ib;
        float sq = 0.0f;
        for (int j = 0; j < 16; j++)
            sq += IQ4NL_VALUES[qs[j] & 15] * x[j] + IQ4NL_VALUES[qs[j] >> 4] * x[j + 16];
        s += d * (float)((low | (high << 4)) - 32) * sq;
        x += 32;
    }
    return s;
}

template <typename B, uint QB>
static void matvec(device const B* w, device const float* x, device float* y, constant MatvecArgs& a, uint row,
                   uint lane) {
    if (row >= a.rows) return;  // the whole simdgroup: its simd_sum is not reached
    const uint nb = a.cols / QB;
    device const B* wr = w + (ulong)row * nb;
    float acc = 0.0f;
    for (uint b = lane; b < nb; b += 32) acc += block_dot(wr[b], x + b * QB);
    acc = simd_sum(acc);
    if (lane == 0) y[row] = acc;
}

#define MATVEC(NAME, BLOCK, QB)                                                                                 \
    kernel void matvec_##NAME(device const BLOCK* w [[buffer(0)]], device const float* x [[buffer(1)]],       \
                              device float* y [[buffer(2)]], constant MatvecArgs& a [[buffer(3)]],            \
                              uint tg [[threadgroup_position_in_grid]],                                       \
                              uint simd [[simdgroup_index_in_threadgroup]],                                   \
                              uint simds [[simdgroups_per_threadgroup]],                                      \
                              uint lane [[thread_index_in_simdgroup]]) {                                      \
        matvec<BLOCK, QB>(w, x, y, a, tg * simds + simd, lane);                                               \
    }

MATVEC(f32, float, 1)
MATVEC(f16, half, 1)
MATVEC(bf16, ushort, 1)
MATVEC(q4_0, block_q4_0, QK)
MATVEC(q4_1, block_q4_1, QK)
MATVEC(q5_0, block_q5_0, QK)
MATVEC(q5_1, block_q5_1, QK)
MATVEC(q8_0, block_q8_0, QK)
MATVEC(iq4_nl, block_iq4_nl, QK)
MATVEC(q2_k, block_q2_K, QK_K)
MATVEC(q3_k, block_q3_K, QK_K)
MATVEC(q4_k, block_q4_K, QK_K)
MATVEC(q5_k, block_q5_K, QK_K)
MATVEC(q6_k, block_q6_K, QK_K)
MATVEC(iq4_xs, block_iq4_xs, QK_K)
