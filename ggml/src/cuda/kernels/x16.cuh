// One token's X as the lean one-token products read it (matvec1_lean.cu's
// quantize_x16): int16[cols] values, then cols / 32 float scales (amax /
// 32767), then cols / 32 float sums, a chunk of 32 at a time. This is the
// form a kernel whose warps hold whole chunks writes beside its float
// output, so that the product reading that output next needs no
// quantize_x16 launch (the backend's lean_y).
#pragma once
#include <stdint.h>

// Lane l of a warp holds element e of X (e % 32 == l: the warp holds one
// chunk, every lane takes part): the chunk's largest magnitude and its sum
// in quantize_x16's order (four consecutive values summed in pairs, then
// those sums as a tree over eight), so that the bytes equal quantize_x16's.
__device__ __forceinline__ void store_x16_warp(float v, int e, int cols, uint8_t* __restrict__ out) {
    float amax = fabsf(v), sum = v;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
        sum += __shfl_xor_sync(0xffffffffu, sum, off);
    }
    const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
    reinterpret_cast<int16_t*>(out)[e] = static_cast<int16_t>(__float2int_rn(v * inv));
    if ((e & 31) == 0) {
        float* scales = reinterpret_cast<float*>(out + 2ll * cols);
        scales[e >> 5] = amax / 32767.0f;
        scales[(cols >> 5) + (e >> 5)] = sum;
    }
}
