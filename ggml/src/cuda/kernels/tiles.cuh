// What the tensor-core tile kernels (matmul.cu's matmul_tc, tile.cu's
// matmul_tile) share: the K stages their weights' raw bytes come in, the
// copies that bring a stage into shared memory, and the dequantisation of
// one chunk of a staged row into an f16 tile.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

#include "async.cuh"
#include "quants.cuh"

namespace gq {

// Weights per stage (a super-block for the K-quants, else 64), a stage's
// bytes of a row, and a row's slot in shared memory: its 16-byte aligned
// window, up to 15 bytes either side. tile.rs's tile_shared mirrors these.
__host__ __device__ constexpr int stage_elems(int t) { return block_elems(t) == 256 ? 256 : 64; }
__host__ __device__ constexpr int stage_bytes(int t) { return stage_elems(t) / block_elems(t) * block_bytes(t); }
__host__ __device__ constexpr int slot_bytes(int t) { return (stage_bytes(t) + 30 + 15) / 16 * 16; }

__device__ __forceinline__ uint32_t pack_half2(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}

// Starts the copies of stage `s` of rows r0..r0+ROWS-1 into `raw` (a slot a
// row) by the block's THREADS threads: coalesced 16-byte copies of each
// row's window (the weights are stored 256-byte aligned and padded, so a
// window never leaves the tensor's storage).
template <int T, int ROWS, int THREADS>
__device__ __forceinline__ void fetch_stage(const uint8_t* W, long long row_bytes, int rows, int cols, int r0, int s,
                                            uint8_t* raw) {
    constexpr int SLOT = slot_bytes(T), NPR = SLOT / 16;
    const int elems = min(stage_elems(T), cols - s * stage_elems(T));
    const int bytes = elems / block_elems(T) * block_bytes(T);
    for (int item = threadIdx.x; item < ROWS * NPR; item += THREADS) {
        const int r = item / NPR, i = item - r * NPR;
        if (r0 + r >= rows) continue;
        const uintptr_t a = reinterpret_cast<uintptr_t>(W) + static_cast<uintptr_t>((r0 + r) * row_bytes) +
                            static_cast<uintptr_t>(s) * stage_bytes(T);
        const uintptr_t a0 = a & ~static_cast<uintptr_t>(15);
        if (a0 + 16 * static_cast<uintptr_t>(i) < a + bytes)
            copy16_async(raw + r * SLOT + 16 * i, reinterpret_cast<const void*>(a0 + 16 * static_cast<uintptr_t>(i)));
    }
}

// Chunk `chunk` of the staged row at `row` (its stage's bytes, skew
// applied) as 32 halves at `dst` (16-byte aligned); zeros where !ok.
template <int T>
__device__ __forceinline__ void dequant_chunk_half(const uint8_t* row, int chunk, bool ok, __half* dst) {
    uint4* d = reinterpret_cast<uint4*>(dst);
    if (!ok) {
#pragma unroll
        for (int q = 0; q < 4; ++q) d[q] = make_uint4(0, 0, 0, 0);
        return;
    }
    float v[32];
    dequant32<T>(row, chunk, v);
#pragma unroll
    for (int q = 0; q < 4; ++q)
        d[q] = make_uint4(pack_half2(v[8 * q + 0], v[8 * q + 1]), pack_half2(v[8 * q + 2], v[8 * q + 3]),
                          pack_half2(v[8 * q + 4], v[8 * q + 5]), pack_half2(v[8 * q + 6], v[8 * q + 7]));
}

}  // namespace gq
