// Decode's mat-vec (one token): y[r] = W[r] · x for quantised W and f32 x.
// A simdgroup takes a row, its lanes every 32nd block, and the block's
// integers are dotted with x in f32 and scaled once (x is not quantised, as
// the CPU's and llama.cpp's Metal path quantise it, so this is the closer to
// exact of the two). One function per weight type's block; `matvec` is the
// rest.
#include <metal_stdlib>
using namespace metal;

#include "blocks.h"

struct MatvecArgs {
    uint rows;
    uint cols;  // a multiple of the type's block
};

static inline float block_dot(device const block_q4_0& b, device const float* x) {
    float s = 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        const uchar q = b.qs[j];
        s += (float)((int)(q & 15) - 8) * x[j] + (float)((int)(q >> 4) - 8) * x[j + QK / 2];
    }
    return (float)b.d * s;
}

static inline float block_dot(device const block_q8_0& b, device const float* x) {
    float s = 0.0f;
    for (int j = 0; j < QK; j++) s += (float)b.qs[j] * x[j];
    return (float)b.d * s;
}

template <typename B>
static void matvec(device const B* w, device const float* x, device float* y, constant MatvecArgs& a, uint row,
                   uint lane) {
    if (row >= a.rows) return;  // the whole simdgroup: its simd_sum is not reached
    const uint nb = a.cols / QK;
    device const B* wr = w + (ulong)row * nb;
    float acc = 0.0f;
    for (uint b = lane; b < nb; b += 32) acc += block_dot(wr[b], x + b * QK);
    acc = simd_sum(acc);
    if (lane == 0) y[row] = acc;
}

#define MATVEC(NAME, BLOCK)                                                                                   \
    kernel void matvec_##NAME(device const BLOCK* w [[buffer(0)]], device const float* x [[buffer(1)]],       \
                              device float* y [[buffer(2)]], constant MatvecArgs& a [[buffer(3)]],            \
                              uint tg [[threadgroup_position_in_grid]],                                       \
                              uint simd [[simdgroup_index_in_threadgroup]],                                   \
                              uint simds [[simdgroups_per_threadgroup]],                                      \
                              uint lane [[thread_index_in_simdgroup]]) {                                      \
        matvec(w, x, y, a, tg * simds + simd, lane);                                                          \
    }

MATVEC(q4_0, block_q4_0)
MATVEC(q8_0, block_q8_0)
