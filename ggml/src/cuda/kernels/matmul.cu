// Weight x activation products for every supported ggml weight type.
//
//   Y[t*rows + r] = sum_k W[r][k] * X[t*cols + k]
//
// W: `rows` rows of `cols` weights of one ggml type, row r at W + r*row_bytes
//    (only 2-byte alignment assumed); X: ntok x cols f32, Y: ntok x rows f32.
// See README.md for the launch contracts.
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>

#include "pdl.cuh"
#include "dynamic_shared.cuh"
#include "act.cuh"
#include "async.cuh"
#include "tiles.cuh"
#include "intdot.cuh"
#include "q4k_lanes.cuh"
#include "quants.cuh"
#include "mv1_common.cuh"

namespace {

using namespace gq;

constexpr unsigned FULL = 0xffffffffu;

// ---------------------------------------------------------------- matvec
//
// One warp per weight row, all (<= 8 at a time) tokens. The K axis is walked
// in segments of 1024 weights (32 chunks of 32). Each warp streams its row's
// segments into a private ring of shared-memory slots with 16-byte
// asynchronous copies (cp.async, sm_80 on; plain copies on Turing), several
// segments ahead, so that enough bytes are in flight to keep HBM busy
// (Little's law: ~4 MB over the whole H200), and every global load is a full,
// coalesced 512-byte warp transaction whatever the block layout. Lanes then
// read their weights out of shared memory: for block types lane l
// dequantises chunk l of the segment (dequant32, bit-exact); for F32, F16 and
// BF16 lane l takes 8 consecutive weights at 8*(l + 32*j), so that neither
// the copy nor the shared-memory reads conflict. The block stages each
// token's 1024 activations in shared memory with coalesced loads, in a padded
// chunk layout the two weight mappings both read without bank conflicts.

constexpr int MV_LDX = 36;  // floats per staged chunk: 32 + 4 pad, conflict-free float4 reads
constexpr int MV_SEG = 1024;  // weights per segment

__host__ __device__ constexpr bool is_float_type(int t) { return t == F32 || t == F16 || t == BF16; }

// Bytes of one segment of a row (segments start on block boundaries).
__host__ __device__ constexpr int mv_seg_bytes(int t) { return MV_SEG / block_elems(t) * block_bytes(t); }

// A slot holds a segment's 16-byte-aligned window: up to 15 bytes either side.
__host__ __device__ constexpr int mv_slot_bytes(int t) { return (mv_seg_bytes(t) + 31 + 15) / 16 * 16; }

// Slots per warp: about 4 KB ahead where shared memory allows.
__host__ __device__ constexpr int mv_stages(int t) {
    return mv_seg_bytes(t) >= 4096 ? 2 : (4096 / mv_seg_bytes(t) + 1 > 6 ? 6 : (4096 / mv_seg_bytes(t) + 1 < 3 ? 3 : 4096 / mv_seg_bytes(t) + 1));
}

// Starts the copy of segment `seg` of `row` into `slot`; returns nothing, the
// data is there after the matching async_wait and a __syncwarp. The window is
// [floor16(start), ceil16(end)): the weights are stored 256-byte aligned and
// padded to 256 bytes (WEIGHT_ALIGN), so it never leaves the tensor's storage.
template <int T>
__device__ __forceinline__ void mv_fetch(const uint8_t* row, int seg, int cols, uint8_t* slot, int lane) {
    constexpr int SB = mv_seg_bytes(T);
    const int seg_elems = min(MV_SEG, cols - seg * MV_SEG);
    const int bytes = seg_elems / block_elems(T) * block_bytes(T);
    const uintptr_t a = reinterpret_cast<uintptr_t>(row) + static_cast<uintptr_t>(seg) * SB;
    const uintptr_t a0 = a & ~static_cast<uintptr_t>(15);
    const int n16 = static_cast<int>((a + bytes + 15 - a0) >> 4);
    // At most this many pieces a lane: a fixed, unrolled count of predicated
    // copies rather than a loop with a remainder.
    constexpr int MOST = ((SB + 30) / 16 + 1 + 31) / 32;
#pragma unroll
    for (int k = 0; k < MOST; ++k) {
        const int i = lane + 32 * k;
        if (i < n16) copy16_async(slot + 16 * i, reinterpret_cast<const void*>(a0 + 16 * static_cast<uintptr_t>(i)));
    }
}

// The 32 weights lane `lane` owns in a landed segment (see the layout above).
template <int T>
__device__ __forceinline__ void mv_weights(const uint8_t* slot, const uint8_t* row, int seg, int lane, float w[32]) {
    const int skew = static_cast<int>((reinterpret_cast<uintptr_t>(row) + static_cast<uintptr_t>(seg) * mv_seg_bytes(T)) & 15);
    const uint8_t* base = slot + skew;
    // Float rows are 16-byte aligned in our storage (whole 64-byte chunks
    // from a 256-byte-aligned start); any other alignment reads by words.
    if constexpr (T == F16 || T == BF16) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            uint32_t u[4];
            const uint8_t* p = base + 16 * (lane + 32 * j);
            if (skew == 0) {
                const uint4 v = *reinterpret_cast<const uint4*>(p);
                u[0] = v.x, u[1] = v.y, u[2] = v.z, u[3] = v.w;
            } else {
                ldspan<16>(p, u);
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                if constexpr (T == F16) {
                    w[8 * j + 2 * i] = h2f(u[i]);
                    w[8 * j + 2 * i + 1] = h2f(u[i] >> 16);
                } else {
                    w[8 * j + 2 * i] = __uint_as_float(u[i] << 16);
                    w[8 * j + 2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
                }
            }
        }
    } else if constexpr (T == F32) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const uint8_t* p = base + 32 * (lane + 32 * j);
            if (skew == 0) {
                const float4 a = *reinterpret_cast<const float4*>(p);
                const float4 b = *reinterpret_cast<const float4*>(p + 16);
                w[8 * j + 0] = a.x; w[8 * j + 1] = a.y; w[8 * j + 2] = a.z; w[8 * j + 3] = a.w;
                w[8 * j + 4] = b.x; w[8 * j + 5] = b.y; w[8 * j + 6] = b.z; w[8 * j + 7] = b.w;
            } else {
                uint32_t u[8];
                ldspan<32>(p, u);
#pragma unroll
                for (int i = 0; i < 8; ++i) w[8 * j + i] = __uint_as_float(u[i]);
            }
        }
    } else {
        dequant32<T>(base, lane, w);
    }
}

// Where lane `lane`'s weights 4i..4i+3 meet the staged activations.
template <int T>
__device__ __forceinline__ int mv_x_index(int lane, int i) {
    if constexpr (is_float_type(T)) {
        // weights 8j..8j+7 are elements 8*(lane + 32j) + 0..7 of the segment
        const int e = 8 * (lane + 32 * (i >> 1)) + 4 * (i & 1);
        return (e >> 5) * MV_LDX + (e & 31);
    } else {
        return lane * MV_LDX + 4 * i;
    }
}

// Tokens [0, nt) of one row, nt <= NT (a compile-time bound; nt is uniform
// over the block, so the tokens past it are skipped by uniform branches).
// With one token its sum is split over four accumulators to shorten the FMA
// dependency chain. Every thread of the block must call this (barriers).
template <int T, int NT>
__device__ __forceinline__ void matvec_tokens(const uint8_t* __restrict__ row, bool active,
                                              const float* __restrict__ X, float* __restrict__ Y,
                                              int r, int rows, int cols, int nt, int lane, float* xs,
                                              uint8_t* slots) {
    constexpr int NA = NT == 1 ? 4 : 1;
    constexpr int ST = mv_stages(T), SLOT = mv_slot_bytes(T);
    float acc[NT][NA];
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
        for (int a = 0; a < NA; ++a) acc[t][a] = 0.0f;

    const int nchunks = cols >> 5;
    const int nseg = (cols + MV_SEG - 1) / MV_SEG;
    // Prologue: ST - 1 segments in flight (one commit group each, empty or not).
#pragma unroll
    for (int s = 0; s < ST - 1; ++s) {
        if (active && s < nseg) mv_fetch<T>(row, s, cols, slots + s * SLOT, lane);
        async_commit();
    }
    for (int seg = 0; seg < nseg; ++seg) {
        {
            const int s = seg + ST - 1;
            if (active && s < nseg) mv_fetch<T>(row, s, cols, slots + (s % ST) * SLOT, lane);
            async_commit();
        }
        async_wait<ST - 1>();
        __syncwarp();
        const int c = seg * 32 + lane;
        // Float types: lane l's weights lie in chunks l/4 + 8j; present when
        // the segment is whole (cols is a multiple of 32, the tail chunks
        // are checked one by one below).
        const bool have = active && (is_float_type(T) ? seg * 32 < nchunks : c < nchunks);
        float w[32];
        if (have) {
            mv_weights<T>(slots + (seg % ST) * SLOT, row, seg, lane, w);
            if constexpr (is_float_type(T)) {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (seg * 32 + (lane >> 2) + 8 * j >= nchunks)
#pragma unroll
                        for (int i = 0; i < 8; ++i) w[8 * j + i] = 0.0f;
            }
        }
        __syncwarp();  // the slot is read before a later fetch overwrites it
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            if (NT > 1 && t >= nt) break;
            __syncthreads();  // the previous token's readers are done
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int q = threadIdx.x + 128 * h;  // float4 index within the segment
                const int k = seg * MV_SEG + 4 * q;
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (k < cols) v = __ldg(reinterpret_cast<const float4*>(X + static_cast<long long>(t) * cols + k));
                *reinterpret_cast<float4*>(xs + (q >> 3) * MV_LDX + (q & 7) * 4) = v;
            }
            __syncthreads();
            if (have) {
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    const float4 v = *reinterpret_cast<const float4*>(xs + mv_x_index<T>(lane, i));
                    float& s = acc[t][i % NA];
                    s = fmaf(w[4 * i + 0], v.x, s);
                    s = fmaf(w[4 * i + 1], v.y, s);
                    s = fmaf(w[4 * i + 2], v.z, s);
                    s = fmaf(w[4 * i + 3], v.w, s);
                }
            }
        }
    }
    async_wait<0>();

    float mine = 0.0f;
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        if (NT > 1 && t >= nt) break;
        float s = acc[t][0];
#pragma unroll
        for (int a = 1; a < NA; ++a) s += acc[t][a];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(FULL, s, off);
        if (lane == t) mine = s;
    }
    if (active && lane < nt) Y[static_cast<long long>(lane) * rows + r] = mine;
}

// The integer-dot variant for the types with an int_chunk (intdot.cuh): the
// same weight stream, but each token's segment of activations is staged as
// 16-bit integers with one scale and one float sum per chunk, and a lane's
// chunk costs eight words of packed weights and sixteen __dp2a a token
// instead of 32 dequantised floats and FMAs (the float kernel was bound by
// issuing those). Staged layout: chunk c's 32 int16 at byte 80*c (64 + 16
// pad: conflict-free 16-byte reads), scales at byte 2560, sums at 2688.
constexpr int MV_XQ_STRIDE = 80, MV_XQ_SCALES = 2560, MV_XQ_SUMS = 2688;

// Stages token t's segment `seg` of X as above (every thread of the block).
__device__ __forceinline__ void mv_stage_x16(const float* __restrict__ X, int t, int seg, int cols, uint8_t* xq) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int q = threadIdx.x + 128 * h;  // float4 index within the segment; 8 per chunk
        const int k = seg * MV_SEG + 4 * q;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (k < cols) v = __ldg(reinterpret_cast<const float4*>(X + static_cast<long long>(t) * cols + k));
        float amax, sum;
        chunk_amax_sum(v, amax, sum);
        const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        const uint32_t lo = (static_cast<uint32_t>(__float2int_rn(v.x * inv)) & 0xffffu) |
                            (static_cast<uint32_t>(__float2int_rn(v.y * inv)) << 16);
        const uint32_t hi = (static_cast<uint32_t>(__float2int_rn(v.z * inv)) & 0xffffu) |
                            (static_cast<uint32_t>(__float2int_rn(v.w * inv)) << 16);
        const int c = q >> 3;
        *reinterpret_cast<uint2*>(xq + c * MV_XQ_STRIDE + (q & 7) * 8) = make_uint2(lo, hi);
        if ((q & 7) == 0) {
            reinterpret_cast<float*>(xq + MV_XQ_SCALES)[c] = amax / 32767.0f;
            reinterpret_cast<float*>(xq + MV_XQ_SUMS)[c] = sum;
        }
    }
}

template <int T, int NT>
__device__ __forceinline__ void matvec_tokens_int(const uint8_t* __restrict__ row, bool active,
                                                  const float* __restrict__ X, float* __restrict__ Y, int r,
                                                  int rows, int cols, int nt, int lane, uint8_t* xq,
                                                  uint8_t* slots) {
    constexpr int ST = mv_stages(T), SLOT = mv_slot_bytes(T);
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.0f;

    const int nchunks = cols >> 5;
    const int nseg = (cols + MV_SEG - 1) / MV_SEG;
#pragma unroll
    for (int s = 0; s < ST - 1; ++s) {
        if (active && s < nseg) mv_fetch<T>(row, s, cols, slots + s * SLOT, lane);
        async_commit();
    }
    for (int seg = 0; seg < nseg; ++seg) {
        {
            const int s = seg + ST - 1;
            if (active && s < nseg) mv_fetch<T>(row, s, cols, slots + (s % ST) * SLOT, lane);
            async_commit();
        }
        async_wait<ST - 1>();
        __syncwarp();
        const int c = seg * 32 + lane;
        const bool have = active && c < nchunks;
        IntChunk w;
        if (have) {
            const int skew = static_cast<int>(
                (reinterpret_cast<uintptr_t>(row) + static_cast<uintptr_t>(seg) * mv_seg_bytes(T)) & 15);
            int_chunk<T>(slots + (seg % ST) * SLOT + skew, lane, w);
        }
        __syncwarp();  // the slot is read before a later fetch overwrites it
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            if (NT > 1 && t >= nt) break;
            __syncthreads();  // the previous token's readers are done
            mv_stage_x16(X, t, seg, cols, xq);
            __syncthreads();
            if (have) {
                int s0 = 0, s1 = 0;
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const uint4 x = *reinterpret_cast<const uint4*>(xq + lane * MV_XQ_STRIDE + 16 * i);
                    int& s = i < 2 ? s0 : s1;
                    s = __dp2a_lo(static_cast<int>(x.x), w.q[2 * i], s);
                    s = __dp2a_hi(static_cast<int>(x.y), w.q[2 * i], s);
                    s = __dp2a_lo(static_cast<int>(x.z), w.q[2 * i + 1], s);
                    s = __dp2a_hi(static_cast<int>(x.w), w.q[2 * i + 1], s);
                }
                const float dx = reinterpret_cast<const float*>(xq + MV_XQ_SCALES)[lane];
                const float sx = reinterpret_cast<const float*>(xq + MV_XQ_SUMS)[lane];
                acc[t] += dx * (w.a0 * static_cast<float>(s0) + w.a1 * static_cast<float>(s1)) - w.m * sx;
            }
        }
    }
    async_wait<0>();

    float mine = 0.0f;
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        if (NT > 1 && t >= nt) break;
        float s = acc[t];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(FULL, s, off);
        if (lane == t) mine = s;
    }
    if (active && lane < nt) Y[static_cast<long long>(lane) * rows + r] = mine;
}

template <int T, bool INT>
__device__ __forceinline__ void matvec(const uint8_t* __restrict__ W, const float* __restrict__ X,
                                       float* __restrict__ Y, int rows, int cols, long long row_bytes,
                                       int ntok) {
    __shared__ __align__(16) float xs[32 * MV_LDX];
    __shared__ __align__(16) uint8_t slots[4][mv_stages(T) * mv_slot_bytes(T)];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r = blockIdx.x * 4 + warp;
    // A warp past the last row still takes part in staging and barriers.
    const bool active = r < rows;
    const uint8_t* row = W + static_cast<long long>(active ? r : 0) * row_bytes;
    if constexpr (INT) {
        uint8_t* xq = reinterpret_cast<uint8_t*>(xs);
        if (ntok == 1) {
            matvec_tokens_int<T, 1>(row, active, X, Y, r, rows, cols, 1, lane, xq, slots[warp]);
        } else {
            for (int t0 = 0; t0 < ntok; t0 += 8)
                matvec_tokens_int<T, 8>(row, active, X + static_cast<long long>(t0) * cols,
                                        Y + static_cast<long long>(t0) * rows, r, rows, cols, min(ntok - t0, 8),
                                        lane, xq, slots[warp]);
        }
        return;
    }
    if (ntok == 1) {
        matvec_tokens<T, 1>(row, active, X, Y, r, rows, cols, 1, lane, xs, slots[warp]);
    } else {
        // The contract is ntok <= 8; larger batches are still handled, 8 at a time.
        for (int t0 = 0; t0 < ntok; t0 += 8)
            matvec_tokens<T, 8>(row, active, X + static_cast<long long>(t0) * cols,
                                Y + static_cast<long long>(t0) * rows, r, rows, cols, min(ntok - t0, 8), lane, xs,
                                slots[warp]);
    }
}

// ---------------------------------------------------------------- one token, rows per block
//
// The decode step's mat-vec for the integer-dot types. The per-segment
// staging above (two block barriers and an L2 round trip per 1024 weights)
// bounds the kernels above far below HBM bandwidth; here each block
// quantises the token's activations once, into shared memory, while its
// first weights are in flight, and then runs without block barriers. A
// block is 8 warps of R rows each, so one staged copy of X serves 8R rows
// and each lane's X chunk, read once a segment, serves all of its rows.
//
// A decode step runs few, small products, so a launch does more than one
// (each launch costs microseconds, and X is quantised once for all):
//  - up to three products of one input (q, k and v), MV1_STORE;
//  - a product added to its output (the residual stream), MV1_ADD;
//  - gate and up with their activation: warp w's two rows are row w of
//    gate and of up, and it writes act(gate) * up (MV1_SWIGLU, MV1_GEGLU).
//
// A row may also be split over S (1, 2, 4 or 8) warps of its block, warp
// k of S taking segments k, k + S, ...: the products of a decode step are
// small, and a grid of one or two rows a warp fills too few warps to keep
// enough bytes in flight (a 7B's output and down projections make 256
// blocks, under one wave of the H200). The S partial sums meet in shared
// memory and are added in warp order, so a result does not depend on timing.
//
// X layout in shared memory: chunk c's 32 int16 at byte 64*c, its four
// 16-byte pieces XOR-swizzled by c & 3 (conflict-free reads of a warp's
// consecutive chunks); then the chunks' scales, then their float sums, then
// the integer sums of each half (elements 0-15, 16-31) of the quantised
// chunk: 80 bytes a chunk (cuda/matvec1.rs sizes the launch's dynamic
// shared memory). The half sums let a type whose weights are stored with
// an offset (Q4_0's q - 8, Q6_K's q - 32) take the dot product of the raw
// stored values and subtract offset * half sum, an integer identity, instead
// of subtracting bytewise (three instructions a word on the GPU).
// Blocks a multiprocessor the launch bounds ask for (the registers a thread
// may take follow); the host reads the occupancy back. Three: on the H200
// (2026-12-04, one-type 7B files, tg128) 3 / 4 / 5 blocks read Q4_K 357.6 /
// 324.5 / 239.2 tokens/s, Q4_0 342.8 / 338.9 / 322.9, Q8_0 306.9 / 301.6 /
// 273.8, Q6_K 262.4 / 251.3 / 206.2 (only a 1B's Q4_0 gained, 1199 -> 1232).
// Also tried and slower there: Q4_K's direct reads one segment ahead in two
// register buffers (333.9 -> 326.8 at two blocks, 236.3 at three with
// spills), and the staged segments brought by Hopper's bulk copies with a
// shared-memory barrier a slot instead of 16-byte cp.async (Q4_0 339.4 ->
// 315.3, Q8_0 304.0 -> 297.5, Q6_K 260.8 -> 248.8; more slots slower yet).
#ifndef GQ_MV1_MIN_BLOCKS
#define GQ_MV1_MIN_BLOCKS 3
#endif

// Waits until at most `n` (0..7, warp-uniform) commit groups are in flight.
__device__ __forceinline__ void async_wait_n(int n) {
    switch (n) {
        case 0: async_wait<0>(); break;
        case 1: async_wait<1>(); break;
        case 2: async_wait<2>(); break;
        case 3: async_wait<3>(); break;
        case 4: async_wait<4>(); break;
        case 5: async_wait<5>(); break;
        case 6: async_wait<6>(); break;
        default: async_wait<7>(); break;
    }
}

// X (cols floats) into the layout above, by the whole block; every thread
// takes part in every round (the shuffles), whether or not it has a value.
// A round's loads are all issued before any is used: every block starts
// with this, and one L2 round trip a float4 of a thread made it the largest
// fixed cost of a small product.
constexpr int MV1_X_LOADS = 4;
// With `order` (a group-quantised weight's stored input order), element k
// is X[order[k]]: the gather costs four scalar loads a float4, not a launch.
__device__ __forceinline__ void mv1_quantize_x(const float* __restrict__ X, const unsigned* __restrict__ order,
                                               uint8_t* xq, int cols, const float* __restrict__ norm_w,
                                               float nscale) {
    const int nchunks = cols >> 5, n4 = cols >> 2;
    float* scales = reinterpret_cast<float*>(xq + 64 * nchunks);
    for (int base = 0; base < n4; base += MV1_X_LOADS * blockDim.x) {
        float4 vs[MV1_X_LOADS];
#pragma unroll
        for (int b = 0; b < MV1_X_LOADS; ++b) {
            const int q = base + b * blockDim.x + threadIdx.x;
            if (q >= n4)
                vs[b] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            else if (order)
                vs[b] = make_float4(__ldg(X + __ldg(order + 4 * q)), __ldg(X + __ldg(order + 4 * q + 1)),
                                    __ldg(X + __ldg(order + 4 * q + 2)), __ldg(X + __ldg(order + 4 * q + 3)));
            else
                vs[b] = __ldg(reinterpret_cast<const float4*>(X) + q);
            if (norm_w && q < n4) {
                const float4 g = __ldg(reinterpret_cast<const float4*>(norm_w) + q);
                vs[b] = make_float4(vs[b].x * nscale * g.x, vs[b].y * nscale * g.y, vs[b].z * nscale * g.z,
                                    vs[b].w * nscale * g.w);
            }
        }
#pragma unroll
        for (int b = 0; b < MV1_X_LOADS; ++b) {
        const int q = base + b * blockDim.x + threadIdx.x;
        const float4 v = vs[b];
        float amax, sum;
        chunk_amax_sum(v, amax, sum);
        const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        const int ix = __float2int_rn(v.x * inv), iy = __float2int_rn(v.y * inv);
        const int iz = __float2int_rn(v.z * inv), iw = __float2int_rn(v.w * inv);
        int half = (ix + iy) + (iz + iw);
        half += __shfl_xor_sync(FULL, half, 1);
        half += __shfl_xor_sync(FULL, half, 2);
        if (q >= n4) continue;
        const uint32_t lo = (static_cast<uint32_t>(ix) & 0xffffu) | (static_cast<uint32_t>(iy) << 16);
        const uint32_t hi = (static_cast<uint32_t>(iz) & 0xffffu) | (static_cast<uint32_t>(iw) << 16);
        const int c = q >> 3, piece = (q & 7) >> 1;
        *reinterpret_cast<uint2*>(xq + 64 * c + 16 * (piece ^ (c & 3)) + 8 * (q & 1)) = make_uint2(lo, hi);
        if ((q & 7) == 0) {
            scales[c] = amax / 32767.0f;
            scales[nchunks + c] = sum;
        }
        if ((q & 3) == 0) reinterpret_cast<int*>(scales + 2 * nchunks)[2 * c + ((q & 7) >> 2)] = half;
        }
    }
}

// Direct reads (Hopper, Q4_K rows 16-byte aligned). The staging above costs
// about a hundred instructions a lane a segment (addresses, predicates,
// copies, waits) besides reading the weights back out of shared memory, and
// the products were issue-bound (Nsight Compute: Q4_K at a third of HBM
// bandwidth, ~215 instructions a lane a chunk of 32 weights in the SASS). A
// Q4_K chunk's bytes are 16-byte aligned, so a lane loads them straight into
// registers; each warp of a split row takes a run of consecutive segments,
// and L2 is asked for them MV1_PREFETCH segments at a time (one bulk
// prefetch a row), ahead of the loads, so the loads find their bytes in L2
// while HBM keeps a queue.
constexpr int MV1_PREFETCH = 4;
template <int T>
__device__ __forceinline__ constexpr bool mv1_direct() {
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900) || defined(GQ_EMU)
    return T == Q4_K;
#else
    return false;
#endif
}

// Segments seg .. seg + n - 1 of each of the warp's rows into L2: lane i < R
// asks for row i's. The bulk prefetch wants 16-byte bounds; the span is
// widened to them, which stays inside the tensor's storage (256-byte
// aligned and padded, WEIGHT_ALIGN).
template <int T, int R>
__device__ __forceinline__ void mv1_prefetch(const uint8_t* const (&row)[R], const bool (&active)[R], int seg, int n,
                                             int cols, int lane) {
    const int elems = min(cols, (seg + n) * MV_SEG) - seg * MV_SEG;
    if (lane >= R || elems <= 0) return;
    const long long bytes = elems / block_elems(T) * block_bytes(T);
#pragma unroll
    for (int i = 0; i < R; ++i) {
        if (lane == i && active[i]) {
            const uintptr_t a = reinterpret_cast<uintptr_t>(row[i]) + static_cast<uintptr_t>(seg) * mv_seg_bytes(T);
            const uintptr_t a0 = a & ~static_cast<uintptr_t>(15);
            const uintptr_t a1 = (a + static_cast<uintptr_t>(bytes) + 15) & ~static_cast<uintptr_t>(15);
            prefetch_l2(reinterpret_cast<const void*>(a0), static_cast<unsigned>(a1 - a0));
        }
    }
}

// Block `vb` of a launch's products (the grid counts the parts' blocks one
// after another): its part, its warp's first row and the warp's R rows (a
// row past the part's last reads row 0 and drops its result).
template <int R, bool GLU>
struct Mv1Rows {
    int part, r0;
    const uint8_t* row[R];
    bool active[R];
};
template <int R, bool GLU>
__device__ __forceinline__ Mv1Rows<R, GLU> mv1_rows(const Mv1Parts& parts, int vb, int groups, int group,
                                                   long long row_bytes) {
    Mv1Rows<R, GLU> b;
    int part = 0;
    const int ROWS_PER_BLOCK = GLU ? groups : groups * R;
#pragma unroll
    for (int p = 0; p < 2; ++p) {
        const int nb = (parts.rows[p] + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
        if (part == p && vb >= nb) {
            vb -= nb;
            part = p + 1;
        }
    }
    const int rows = Mv1Parts::pick(parts.rows, part);
    b.part = part;
    b.r0 = GLU ? vb * groups + group : (vb * groups + group) * R;
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int r = GLU ? b.r0 : b.r0 + i;
        b.active[i] = r < rows;
        const uint8_t* w = GLU ? parts.W[i] : Mv1Parts::pick(parts.W, part);
        b.row[i] = w + static_cast<long long>(b.active[i] ? r : 0) * row_bytes;
    }
    return b;
}

// A launch's groups of `per` rows, part after part (a glu's gate and up
// rows are one part's).
__device__ __forceinline__ int mv1_groups_of_rows(const Mv1Parts& parts, int per, bool glu) {
    int n = (parts.rows[0] + per - 1) / per;
    if (!glu) n += (parts.rows[1] + per - 1) / per + (parts.rows[2] + per - 1) / per;
    return n;
}

// What a block does before it waits for the kernel before it (pdl.cuh):
// where rows are read directly, L2 is asked for the first segments of its
// warps' first rows, which no kernel writes, so that HBM is busy while the
// kernel before finishes. Not for the staged types and floats: on the H200
// their 7B decode lost to it (Q8_0 303.7 -> 281.2 tokens/s, F16 187 -> 174,
// and Q8_0 250 with early launches, whose prefetches then compete with the
// kernel before for L2).
template <int T, int R, int OUT>
__device__ __forceinline__ void mv1_prologue(const Mv1Parts& parts, int cols, long long row_bytes, int S) {
    if (!mv1_direct<T>()) return;
    constexpr bool GLU = OUT == MV1_SWIGLU || OUT == MV1_GEGLU;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int groups = MV1_WARPS / S, group = warp / S, kw = warp % S;
    const int ROWS_PER_BLOCK = GLU ? groups : groups * R;
    const int nvb = mv1_groups_of_rows(parts, ROWS_PER_BLOCK, GLU);
    if (static_cast<int>(blockIdx.x) >= nvb) return;
    const int nseg = (cols + MV_SEG - 1) / MV_SEG, run = (nseg + S - 1) / S;
    const int first = min(nseg, kw * run), count = min(nseg, first + run) - first;
    const Mv1Rows<R, GLU> B = mv1_rows<R, GLU>(parts, blockIdx.x, groups, group, row_bytes);
    mv1_prefetch<T, R>(B.row, B.active, first, min(count, MV1_PREFETCH), cols, lane);
}

// A row group's end, by every thread of the block: each warp's sums over
// its lanes, then (rows split over S warps) over a row's warps in warp
// order through `partial` (which the caller keeps from being overwritten
// before every warp has read it), and the epilogue by each row's first warp.
template <int OUT, int R, bool GLU>
__device__ __forceinline__ void mv1_finish(float (&acc)[R], float (&partial)[MV1_WARPS][R], const Mv1Parts& parts,
                                           const Mv1Rows<R, GLU>& B, int S) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, kw = warp % S;
#pragma unroll
    for (int i = 0; i < R; ++i) {
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(FULL, acc[i], off);
    }
    if (S > 1) {
        if (lane == 0) {
#pragma unroll
            for (int i = 0; i < R; ++i) partial[warp][i] = acc[i];
        }
        __syncthreads();
        if (kw == 0) {
#pragma unroll
            for (int i = 0; i < R; ++i) {
                acc[i] = partial[warp][i];
                for (int k = 1; k < S; ++k) acc[i] += partial[warp + k][i];
            }
        }
    }
    if (lane == 0 && kw == 0) {
        float* Y = Mv1Parts::pick(parts.Y, B.part);
        if constexpr (GLU) {
            if (B.active[0]) Y[B.r0] = OUT == MV1_SWIGLU ? swiglu_of(acc[0], acc[1]) : geglu_of(acc[0], acc[1]);
        } else {
#pragma unroll
            for (int i = 0; i < R; ++i) {
                if (!B.active[i]) continue;
                Y[B.r0 + i] = OUT == MV1_ADD ? Y[B.r0 + i] + acc[i] : acc[i];
            }
        }
    }
}

// ST (2..8) slots of a segment a row: ST - 1 segments in flight while one
// is read. Dynamic shared memory: X (72 bytes a chunk, rounded up to 16),
// then the slots, [warp][row][stage].
// Each part reads X through its own order (orders[p], null for none). A
// glu's gate and up may have different orders (act-order GPTQ): then X is
// quantised twice, the up's copy after the gate's (`two_x`, block-uniform).
template <int T, int R, int OUT>
__device__ __forceinline__ void matvec1(const float* __restrict__ X, const unsigned* const (&orders)[3],
                                        const Mv1Parts& parts, int cols, long long row_bytes, int ST, int S,
                                        const float* __restrict__ norm_w, float eps) {
    constexpr bool GLU = OUT == MV1_SWIGLU || OUT == MV1_GEGLU;
    static_assert(!GLU || R == 2, "a fused gate/up warp takes one row of each");
    // Negative stages: stage the weights even where they could be read
    // directly (LLM_CUDA_MV1_STAGED, for timing the two).
    const bool staged_only = ST < 0;
    ST = staged_only ? -ST : ST;
    constexpr int SLOT = mv_slot_bytes(T);
    GQ_DYNAMIC_SHARED(16, uint8_t, xq);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int x_bytes = ((cols >> 5) * 80 + 15) & ~15;
    const bool two_x = GLU && orders[1] != orders[0];
    uint8_t* const xq_up = xq + (two_x ? x_bytes : 0);
    uint8_t* slots[R];
#pragma unroll
    for (int i = 0; i < R; ++i)
        slots[i] = xq + (two_x ? 2 : 1) * x_bytes + ((warp * R + i) * ST) * SLOT;

    __shared__ float partial[MV1_WARPS][R];
    // Warp `warp` is piece `kw` of row group `group` (S pieces a group).
    const int groups = MV1_WARPS / S, group = warp / S, kw = warp % S;

    // A block may take several blocks' worth of rows, `gridDim.x` apart (the
    // host makes the grid no larger than what stays resident where every
    // part reads X in one order): X is quantised once for all of them, and
    // each one's first weights are asked for while the one before runs.
    const int ROWS_PER_BLOCK = GLU ? groups : groups * R;
    const int nvb = mv1_groups_of_rows(parts, ROWS_PER_BLOCK, GLU);
    const int nchunks = cols >> 5;
    const int nseg = (cols + MV_SEG - 1) / MV_SEG;
    // This warp's segments: kw + S j for j < mine; or, reading directly,
    // first .. first + run - 1.
    const int mine = kw < nseg ? (nseg - kw + S - 1) / S : 0;
    const int run = (nseg + S - 1) / S;
    const int first = min(nseg, kw * run), count = min(nseg, first + run) - first;
    const float* scales = reinterpret_cast<const float*>(xq + 64 * nchunks);
    const float* sums = scales + nchunks;
    const int2* halves = reinterpret_cast<const int2*>(sums + nchunks);
    const float* up_scales = reinterpret_cast<const float*>(xq_up + 64 * nchunks);
    constexpr int OFFSET = int_offset(T);
    for (int vb = blockIdx.x, it = 0; vb < nvb; vb += gridDim.x, ++it) {
        const Mv1Rows<R, GLU> B = mv1_rows<R, GLU>(parts, vb, groups, group, row_bytes);
        const int part = B.part, r0 = B.r0;
        const uint8_t* const(&row)[R] = B.row;
        const bool(&active)[R] = B.active;
        // Rows whose segments all start 16-byte aligned (every row of the usual
        // shapes) read their weights with aligned loads.
        bool a16 = (row_bytes & 15) == 0 && (mv_seg_bytes(T) & 15) == 0;
#pragma unroll
        for (int i = 0; i < R; ++i) a16 = a16 && (reinterpret_cast<uintptr_t>(row[i]) & 15) == 0;
        const bool direct = mv1_direct<T>() && a16 && !staged_only;
        if (direct) {
            // (the first rows' first segments: mv1_prologue)
            if (vb + static_cast<int>(gridDim.x) < nvb) {
                const Mv1Rows<R, GLU> N = mv1_rows<R, GLU>(parts, vb + gridDim.x, groups, group, row_bytes);
                mv1_prefetch<T, R>(N.row, N.active, first, min(count, MV1_PREFETCH), cols, lane);
            }
        } else {
            for (int j = 0; j < ST - 1; ++j) {
#pragma unroll
                for (int i = 0; i < R; ++i)
                    if (active[i] && j < mine) mv_fetch<T>(row[i], kw + j * S, cols, slots[i] + j * SLOT, lane);
                async_commit();
            }
            // Hopper: the next block's first segments into L2 meanwhile.
            if (vb + static_cast<int>(gridDim.x) < nvb) {
                const Mv1Rows<R, GLU> N = mv1_rows<R, GLU>(parts, vb + gridDim.x, groups, group, row_bytes);
                for (int j = 0; j < ST - 1 && j < mine; ++j) mv1_prefetch<T, R>(N.row, N.active, kw + j * S, 1, cols, lane);
            }
        }
        // X while the first weights arrive.
        if (it == 0) {
            const float nscale = norm_w ? mv1_norm_scale(X, cols, eps) : 1.0f;
            mv1_quantize_x(X, GLU ? orders[0] : Mv1Parts::pick(orders, part), xq, cols, norm_w, nscale);
            if (two_x) mv1_quantize_x(X, orders[1], xq_up, cols, norm_w, nscale);
        }
        // X is there; and the partial sums of the block before are read.
        __syncthreads();
        float acc[R];
#pragma unroll
        for (int i = 0; i < R; ++i) acc[i] = 0.0f;
        if constexpr (mv1_direct<T>()) {
            for (int j = 0; direct && j < count; ++j) {
                const int seg = first + j;
                if (j % MV1_PREFETCH == 0 && j + MV1_PREFETCH < count)
                    mv1_prefetch<T, R>(row, active, seg + MV1_PREFETCH, min(MV1_PREFETCH, count - j - MV1_PREFETCH),
                                       cols, lane);
                const int c = seg * 32 + lane;
                if (c >= nchunks) break;  // the last segment of a row may be short
                // Every row's loads are issued before any is used (a row past
                // the last reads row 0, whose result it drops).
                Q4kRaw raw[R];
#pragma unroll
                for (int i = 0; i < R; ++i)
                    raw[i] = q4_k_load_global(row[i] + static_cast<long long>(seg) * mv_seg_bytes(T), lane);
                IntChunk w[R];
#pragma unroll
                for (int i = 0; i < R; ++i) q4_k_unpack_masked(raw[i], lane, w[i]);
                uint4 x[4];
#pragma unroll
                for (int p = 0; p < 4; ++p) x[p] = *reinterpret_cast<const uint4*>(xq + 64 * c + 16 * (p ^ (c & 3)));
                float dx = scales[c], sx = sums[c];
#pragma unroll
                for (int i = 0; i < R; ++i) {
                    if (GLU && i == 1 && two_x) {
#pragma unroll
                        for (int p = 0; p < 4; ++p)
                            x[p] = *reinterpret_cast<const uint4*>(xq_up + 64 * c + 16 * (p ^ (c & 3)));
                        dx = up_scales[c];
                        sx = up_scales[nchunks + c];
                    }
                    if (!active[i]) continue;
                    int s0 = 0, s1 = 0;
#pragma unroll
                    for (int p = 0; p < 4; ++p) {
                        int& s = p < 2 ? s0 : s1;
                        s = dp2a_lo_su(static_cast<int>(x[p].x), w[i].q[2 * p], s);
                        s = dp2a_hi_su(static_cast<int>(x[p].y), w[i].q[2 * p], s);
                        s = dp2a_lo_su(static_cast<int>(x[p].z), w[i].q[2 * p + 1], s);
                        s = dp2a_hi_su(static_cast<int>(x[p].w), w[i].q[2 * p + 1], s);
                    }
                    acc[i] += dx * (w[i].a0 * static_cast<float>(s0 + s1)) - w[i].m * sx;
                }
            }
        }
        // The slots segment `seg` is read from and segment seg + ST - 1 goes to.
        int read = 0, write = ST - 1;
        for (int j = 0; !direct && j < mine; ++j) {
            const int seg = kw + j * S;
            {
                const int ahead = j + ST - 1;
#pragma unroll
                for (int i = 0; i < R; ++i)
                    if (active[i] && ahead < mine) mv_fetch<T>(row[i], kw + ahead * S, cols, slots[i] + write * SLOT, lane);
                async_commit();
            }
            async_wait_n(ST - 1);
            __syncwarp();
            const int c = seg * 32 + lane;
            if (c < nchunks) {
                uint4 x[4];
#pragma unroll
                for (int p = 0; p < 4; ++p) x[p] = *reinterpret_cast<const uint4*>(xq + 64 * c + 16 * (p ^ (c & 3)));
                float dx = scales[c], sx = sums[c];
                int2 half = OFFSET != 0 ? halves[c] : make_int2(0, 0);
#pragma unroll
                for (int i = 0; i < R; ++i) {
                    if (GLU && i == 1 && two_x) {
#pragma unroll
                        for (int p = 0; p < 4; ++p)
                            x[p] = *reinterpret_cast<const uint4*>(xq_up + 64 * c + 16 * (p ^ (c & 3)));
                        dx = up_scales[c];
                        sx = up_scales[nchunks + c];
                        if (OFFSET != 0) half = reinterpret_cast<const int2*>(up_scales + 2 * nchunks)[c];
                    }
                    if (!active[i]) continue;
                    const int skew = static_cast<int>(
                        (reinterpret_cast<uintptr_t>(row[i]) + static_cast<uintptr_t>(seg) * mv_seg_bytes(T)) & 15);
                    IntChunk w;
                    if (a16)
                        int_chunk_raw<T, true>(slots[i] + read * SLOT, lane, w);
                    else
                        int_chunk_raw<T, false>(slots[i] + read * SLOT + skew, lane, w);
                    int s0 = -OFFSET * half.x, s1 = -OFFSET * half.y;
#pragma unroll
                    for (int p = 0; p < 4; ++p) {
                        int& s = p < 2 ? s0 : s1;
                        s = __dp2a_lo(static_cast<int>(x[p].x), w.q[2 * p], s);
                        s = __dp2a_hi(static_cast<int>(x[p].y), w.q[2 * p], s);
                        s = __dp2a_lo(static_cast<int>(x[p].z), w.q[2 * p + 1], s);
                        s = __dp2a_hi(static_cast<int>(x[p].w), w.q[2 * p + 1], s);
                    }
                    acc[i] += dx * (w.a0 * static_cast<float>(s0) + w.a1 * static_cast<float>(s1)) - w.m * sx;
                }
            }
            __syncwarp();  // the slots are read before a later fetch overwrites them
            read = read + 1 == ST ? 0 : read + 1;
            write = write + 1 == ST ? 0 : write + 1;
        }
        async_wait<0>();
        mv1_finish<OUT>(acc, partial, parts, B, S);
    }
}

// ---------------------------------------------------------------- one token, float weights
//
// matvec1's contract (parts, epilogues, split, grid, 8 warps a block of R
// rows each) for F32, F16 and BF16 rows. Float weights need no quantised X
// and no staging: each lane loads its 8 weights of a piece straight from
// global memory (16 bytes, 32 for F32) and X's matching 8 floats through the
// read-only cache (the block's warps share them in L1), a segment's loads
// all issued before its FMAs. No block barrier and no dynamic shared
// memory, so blocks are limited only by registers; the per-segment staging
// of `matvec` above held a 7B of F16 to half the HBM bandwidth.
// Lane l's piece j of segment s is elements s*1024 + 8*(l + 32*j) + 0..7.
template <int T>
__device__ __forceinline__ void mv1f_load(const uint8_t* row, int e, bool a16, uint4 (&raw)[T == F32 ? 2 : 1]) {
    constexpr int EB = T == F32 ? 4 : 2;
    const uint8_t* p = row + static_cast<long long>(e) * EB;
    if (a16) {
#pragma unroll
        for (int h = 0; h < (T == F32 ? 2 : 1); ++h) raw[h] = __ldg(reinterpret_cast<const uint4*>(p) + h);
    } else {
        uint32_t u[T == F32 ? 8 : 4];
        ldspan<T == F32 ? 32 : 16>(p, u);
#pragma unroll
        for (int h = 0; h < (T == F32 ? 2 : 1); ++h) raw[h] = make_uint4(u[4 * h], u[4 * h + 1], u[4 * h + 2], u[4 * h + 3]);
    }
}

template <int T>
__device__ __forceinline__ void mv1f_floats(const uint4 (&raw)[T == F32 ? 2 : 1], float w[8]) {
    if constexpr (T == F32) {
        w[0] = __uint_as_float(raw[0].x), w[1] = __uint_as_float(raw[0].y);
        w[2] = __uint_as_float(raw[0].z), w[3] = __uint_as_float(raw[0].w);
        w[4] = __uint_as_float(raw[1].x), w[5] = __uint_as_float(raw[1].y);
        w[6] = __uint_as_float(raw[1].z), w[7] = __uint_as_float(raw[1].w);
    } else {
        const uint32_t u[4] = {raw[0].x, raw[0].y, raw[0].z, raw[0].w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if constexpr (T == F16) {
                w[2 * i] = h2f(u[i]);
                w[2 * i + 1] = h2f(u[i] >> 16);
            } else {
                w[2 * i] = __uint_as_float(u[i] << 16);
                w[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
            }
        }
    }
}

template <int T, int R, int OUT>
__device__ __forceinline__ void matvec1f(const float* __restrict__ X, const unsigned* const (&orders)[3],
                                         const Mv1Parts& parts, int cols, long long row_bytes, int S,
                                         const float* __restrict__ norm_w, float eps) {
    constexpr bool GLU = OUT == MV1_SWIGLU || OUT == MV1_GEGLU;
    static_assert(!GLU || R == 2, "a fused gate/up warp takes one row of each");
    constexpr int NW = T == F32 ? 2 : 1;  // 16-byte loads a piece
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __shared__ float partial[MV1_WARPS][R];
    const int groups = MV1_WARPS / S, group = warp / S, kw = warp % S;
    const Mv1Rows<R, GLU> B = mv1_rows<R, GLU>(parts, blockIdx.x, groups, group, row_bytes);
    const int part = B.part, r0 = B.r0;
    const uint8_t* const(&row)[R] = B.row;
    const bool(&active)[R] = B.active;
    const unsigned* order[R];
    bool a16 = (row_bytes & 15) == 0;
#pragma unroll
    for (int i = 0; i < R; ++i) {
        order[i] = GLU ? orders[i] : Mv1Parts::pick(orders, part);
        a16 = a16 && (reinterpret_cast<uintptr_t>(row[i]) & 15) == 0;
    }
    // Gate and up read X alike unless their orders differ (block-uniform).
    const bool two_x = GLU && order[1] != order[0];
    const float nscale = norm_w ? mv1_norm_scale(X, cols, eps) : 1.0f;
    float acc[R][2];
#pragma unroll
    for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = 0.0f;
    const int nseg = (cols + MV_SEG - 1) / MV_SEG;
    for (int seg = kw; seg < nseg; seg += S) {
        uint4 raw[R][4][NW];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int e = seg * MV_SEG + 8 * (lane + 32 * j);
#pragma unroll
            for (int i = 0; i < R; ++i)
                if (active[i] && e < cols) mv1f_load<T>(row[i], e, a16, raw[i][j]);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int e = seg * MV_SEG + 8 * (lane + 32 * j);
            if (e >= cols) continue;
            float x[8], x2[8];
            mv1f_x(X, order[0], e, x, norm_w, nscale);
            if (two_x) mv1f_x(X, order[1], e, x2, norm_w, nscale);
#pragma unroll
            for (int i = 0; i < R; ++i) {
                if (!active[i]) continue;
                float w[8];
                mv1f_floats<T>(raw[i][j], w);
                const float* xi = (GLU && i == 1 && two_x) ? x2 : x;
#pragma unroll
                for (int k = 0; k < 8; ++k) acc[i][k & 1] = fmaf(w[k], xi[k], acc[i][k & 1]);
            }
        }
    }
    float sum[R];
#pragma unroll
    for (int i = 0; i < R; ++i) {
        sum[i] = acc[i][0] + acc[i][1];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) sum[i] += __shfl_xor_sync(FULL, sum[i], off);
    }
    if (S > 1) {
        if (lane == 0) {
#pragma unroll
            for (int i = 0; i < R; ++i) partial[warp][i] = sum[i];
        }
        __syncthreads();
        if (kw != 0) return;
#pragma unroll
        for (int i = 0; i < R; ++i) {
            sum[i] = partial[warp][i];
            for (int k = 1; k < S; ++k) sum[i] += partial[warp + k][i];
        }
    }
    if (lane != 0) return;
    float* Y = Mv1Parts::pick(parts.Y, part);
    if constexpr (GLU) {
        if (active[0]) Y[r0] = OUT == MV1_SWIGLU ? swiglu_of(sum[0], sum[1]) : geglu_of(sum[0], sum[1]);
    } else {
#pragma unroll
        for (int i = 0; i < R; ++i) {
            if (!active[i]) continue;
            Y[r0 + i] = OUT == MV1_ADD ? Y[r0 + i] + sum[i] : sum[i];
        }
    }
}

// ---------------------------------------------------------------- matmul, tensor cores
//
// A block computes the 64 (rows) x 64 (tokens) tile of Y at
// (blockIdx.x*64, blockIdx.y*64). The K axis goes in stages of whole blocks
// (256 weights for the super-block types, else 64): the stage's raw bytes of
// the 64 rows are copied into shared memory with coalesced 16-byte
// asynchronous copies, double-buffered so that the next stage is in flight
// while this one is used (reading the rows in place, one lane per row, cost a
// cache line per lane per load and bound the kernel). Each K step of 64 then
// has every thread dequantise one chunk of one row out of shared memory into
// a __half tile, the activations are converted f32 -> __half (their loads
// issued first, to overlap the dequantisation), and each warp accumulates a
// 32x32 sub-tile as 2x2 wmma 16x16x16 fragments in f32.

constexpr int TM = 64, TN = 64, TK = 64;
constexpr int LDH = TK + 8;  // halves per shared row (pad: conflict-free ldmatrix, 32-byte fragment alignment)
constexpr int LDC = TM + 4;  // floats per shared column of the output tile

template <int T>
__device__ __forceinline__ void matmul_tc(const uint8_t* __restrict__ W, const float* __restrict__ X,
                                          float* __restrict__ Y, int rows, int cols, long long row_bytes,
                                          int ntok) {
    namespace wmma = nvcuda::wmma;
    constexpr int SLOT = slot_bytes(T), KS = stage_elems(T);
    // W tile [64 rows][LDH] and X tile [64 tokens][LDH] as halves; after the
    // K loop the same bytes hold the f32 output tile, column-major [64 tokens][LDC].
    constexpr int SMEM = 2 * TM * LDH * 2;
    static_assert(TN * LDC * 4 <= SMEM, "output tile must fit");
    __shared__ __align__(128) unsigned char smem[SMEM];
    __shared__ __align__(16) uint8_t raw[2][TM * SLOT];
    __half* Ws = reinterpret_cast<__half*>(smem);
    __half* Xs = Ws + TM * LDH;
    float* Cs = reinterpret_cast<float*>(smem);

    const int tid = threadIdx.x, warp = tid >> 5;
    const int r0 = blockIdx.x * TM, t0 = blockIdx.y * TN;
    const int nchunks = cols >> 5;
    const int nstages = (cols + KS - 1) / KS;

    // This thread's weight row and which of the two chunks of a K step.
    const int dr = tid >> 1, dsub = tid & 1;
    const bool rok = r0 + dr < rows;
    const uintptr_t wrow = reinterpret_cast<uintptr_t>(W) + static_cast<uintptr_t>((rok ? r0 + dr : 0) * row_bytes);

    const int wm = warp & 1, wn = warp >> 1;  // warp's 32x32 sub-tile
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    fetch_stage<T, TM, 128>(W, row_bytes, rows, cols, r0, 0, raw[0]);
    async_commit();
    for (int s = 0; s < nstages; ++s) {
        if (s + 1 < nstages) fetch_stage<T, TM, 128>(W, row_bytes, rows, cols, r0, s + 1, raw[(s + 1) & 1]);
        async_commit();
        async_wait<1>();
        __syncthreads();  // stage s has landed, every thread's copies
        const int skew = static_cast<int>((wrow + static_cast<uintptr_t>(s) * stage_bytes(T)) & 15);
        const uint8_t* mine = raw[s & 1] + dr * SLOT + skew;
#pragma unroll 1
        for (int kk0 = 0; kk0 < KS; kk0 += TK) {
            const int kc = (s * KS + kk0) >> 5;  // first chunk of this K step
            if (kc >= nchunks) break;
            // Activations: 64 tokens x 64 k as 1024 float4, 16 consecutive threads per token.
            float4 xv[8];
#pragma unroll
            for (int m = 0; m < 8; ++m) {
                const int f = tid + 128 * m;
                const int t = f >> 4, k = (f & 15) * 4;
                const int gt = t0 + t, gk = kc * 32 + k;
                xv[m] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (gt < ntok && gk < cols)
                    xv[m] = __ldg(reinterpret_cast<const float4*>(X + static_cast<long long>(gt) * cols + gk));
            }
            // Weights: 64 rows x 2 chunks, one (row, chunk) per thread.
            dequant_chunk_half<T>(mine, (kk0 >> 5) + dsub, rok && kc + dsub < nchunks, Ws + dr * LDH + dsub * 32);
#pragma unroll
            for (int m = 0; m < 8; ++m) {
                const int f = tid + 128 * m;
                const int t = f >> 4, k = (f & 15) * 4;
                *reinterpret_cast<uint2*>(Xs + t * LDH + k) =
                    make_uint2(pack_half2(xv[m].x, xv[m].y), pack_half2(xv[m].z, xv[m].w));
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < TK; kk += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[2];
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[2];
#pragma unroll
                for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], Ws + (wm * 32 + 16 * i) * LDH + kk, LDH);
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], Xs + (wn * 32 + 16 * j) * LDH + kk, LDH);
#pragma unroll
                for (int i = 0; i < 2; ++i)
#pragma unroll
                    for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
            }
            __syncthreads();
        }
    }
    async_wait<0>();

    // C(r, t) at Cs[t*LDC + r], then coalesced guarded stores along r.
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(Cs + (wn * 32 + 16 * j) * LDC + wm * 32 + 16 * i, acc[i][j], LDC,
                                    wmma::mem_col_major);
    __syncthreads();
#pragma unroll 4
    for (int m = 0; m < TM * TN / 128; ++m) {
        const int idx = tid + 128 * m;
        const int t = idx >> 6, r = idx & 63;
        if (t0 + t < ntok && r0 + r < rows) Y[static_cast<long long>(t0 + t) * rows + r0 + r] = Cs[t * LDC + r];
    }
}

// ---------------------------------------------------------------- matmul, f32 SIMT (F32, BF16)
//
// Same tiling of Y, K step 32, weights and activations kept in f32 in shared
// memory (k-major); each thread computes 4 rows x 8 tokens with FMAs.

constexpr int LDF = 64 + 4;

template <int T>
__device__ __forceinline__ void matmul_simt(const uint8_t* __restrict__ W, const float* __restrict__ X,
                                            float* __restrict__ Y, int rows, int cols, long long row_bytes,
                                            int ntok) {
    __shared__ __align__(16) float Ws[32 * LDF];  // [k][r]
    __shared__ __align__(16) float Xs[32 * LDF];  // [k][t]
    const int tid = threadIdx.x;
    const int r0 = blockIdx.x * 64, t0 = blockIdx.y * 64;
    const int tx = tid & 15, ty = tid >> 4;  // rows 4*tx.., tokens 8*ty..

    float acc[4][8];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < cols; k0 += 32) {
        // Weights: 64 rows x 32, a warp reads one row's 32 consecutive elements.
#pragma unroll 4
        for (int m = 0; m < 16; ++m) {
            const int e = tid + 128 * m;
            const int r = e >> 5, k = e & 31;
            float v = 0.0f;
            if (r0 + r < rows) v = load_elem<T>(W + static_cast<long long>(r0 + r) * row_bytes, k0 + k);
            Ws[k * LDF + r] = v;
        }
        // Activations: 64 tokens x 32 as float4, 8 consecutive threads per token.
#pragma unroll
        for (int m = 0; m < 4; ++m) {
            const int f = tid + 128 * m;
            const int t = f >> 3, k = (f & 7) * 4;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (t0 + t < ntok) v = __ldg(reinterpret_cast<const float4*>(X + static_cast<long long>(t0 + t) * cols + k0 + k));
            Xs[(k + 0) * LDF + t] = v.x;
            Xs[(k + 1) * LDF + t] = v.y;
            Xs[(k + 2) * LDF + t] = v.z;
            Xs[(k + 3) * LDF + t] = v.w;
        }
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < 32; ++k) {
            const float4 a = *reinterpret_cast<const float4*>(Ws + k * LDF + 4 * tx);
            const float4 b0 = *reinterpret_cast<const float4*>(Xs + k * LDF + 8 * ty);
            const float4 b1 = *reinterpret_cast<const float4*>(Xs + k * LDF + 8 * ty + 4);
            const float av[4] = {a.x, a.y, a.z, a.w};
            const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int t = t0 + 8 * ty + j;
        if (t >= ntok) break;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = r0 + 4 * tx + i;
            if (r < rows) Y[static_cast<long long>(t) * rows + r] = acc[i][j];
        }
    }
}

#include "matvec1_xs.cuh"

}  // namespace

// ---------------------------------------------------------------- entry points

#define GQ_ARGS                                                                                       \
    const uint8_t *__restrict__ W, const float *__restrict__ X, float *__restrict__ Y, int rows, int cols, \
        long long row_bytes, int ntok

// matvec: min 5 blocks/SM caps registers at 96 (below that ptxas spilled a
// few bytes; without a bound it settles near 80 and spills for some types).
#define GQ_MATVEC(name, T)                                                       \
    extern "C" __global__ void __launch_bounds__(128, 5) matvec_##name(GQ_ARGS) { \
        gq::pdl_begin();                                                          \
        matvec<T, false>(W, X, Y, rows, cols, row_bytes, ntok);               \
    }

// matvecx_<t>: the integer-dot matvec (same contract), for the types with an
// int_chunk; the backend prefers it for decode.
#define GQ_MATVEC_INT(name, T)                                                    \
    extern "C" __global__ void __launch_bounds__(128, 8) matvecx_##name(GQ_ARGS) { \
        gq::pdl_begin();                                                           \
        matvec<T, true>(W, X, Y, rows, cols, row_bytes, ntok);                  \
    }

#define GQ_MATMUL_TC(name, T)                                                 \
    extern "C" __global__ void __launch_bounds__(128) matmul_##name(GQ_ARGS) { \
        gq::pdl_begin();                                                       \
        matmul_tc<T>(W, X, Y, rows, cols, row_bytes, ntok);                   \
    }

#define GQ_MATMUL_SIMT(name, T)                                               \
    extern "C" __global__ void __launch_bounds__(128) matmul_##name(GQ_ARGS) { \
        gq::pdl_begin();                                                       \
        matmul_simt<T>(W, X, Y, rows, cols, row_bytes, ntok);                 \
    }

GQ_MATVEC(f32, gq::F32)
GQ_MATVEC(f16, gq::F16)
GQ_MATVEC(bf16, gq::BF16)
GQ_MATVEC(q4_0, gq::Q4_0)
GQ_MATVEC(q4_1, gq::Q4_1)
GQ_MATVEC(q5_0, gq::Q5_0)
GQ_MATVEC(q5_1, gq::Q5_1)
GQ_MATVEC(q8_0, gq::Q8_0)
GQ_MATVEC(q2_k, gq::Q2_K)
GQ_MATVEC(q3_k, gq::Q3_K)
GQ_MATVEC(q4_k, gq::Q4_K)
GQ_MATVEC(q5_k, gq::Q5_K)
GQ_MATVEC(q6_k, gq::Q6_K)
GQ_MATVEC(iq4_nl, gq::IQ4_NL)
GQ_MATVEC(iq4_xs, gq::IQ4_XS)

GQ_MATVEC_INT(q4_0, gq::Q4_0)
GQ_MATVEC_INT(q4_1, gq::Q4_1)
GQ_MATVEC_INT(q5_0, gq::Q5_0)
GQ_MATVEC_INT(q8_0, gq::Q8_0)
GQ_MATVEC_INT(q4_k, gq::Q4_K)
GQ_MATVEC_INT(q5_k, gq::Q5_K)
GQ_MATVEC_INT(q6_k, gq::Q6_K)

// matvec1_<t>_<variant>(X, W0, Y0, rows0, W1, Y1, rows1, W2, Y2, rows2, cols,
// row_bytes, stages, split, order0, order1, order2, norm_w, eps): one token,
// X f32 (read for part p through order_p where it is not null: its weights'
// stored input order; or, where norm_w is not null and no order is, as
// rms_norm(X) * norm_w with epsilon eps); block 256, dynamic shared memory 80 * cols / 32 rounded up
// to 16 (twice for a glu whose two orders differ), plus 8 R stages
// mv_slot_bytes(t) (2 <= |stages| <= 8; negative: no direct reads); each row over `split` warps (1, 2, 4
// or 8). Variants:
//   r1, r2:    Y_p = W_p X for the parts with rows_p > 0 (rows0 > 0); R rows
//              a warp, grid sum_p ceil(rows_p / (8 R / split));
//   r1a, r2a:  Y0 += W0 X (one part);
//   swiglu, geglu: Y0 = act(W0 X) * (W1 X), W0 and W1 of rows0 rows each;
//              grid ceil(rows0 / (8 / split)).
#define GQ_MATVEC1_ONE(name, T, variant, R, OUT)                                                           \
    extern "C" __global__ void __launch_bounds__(256, GQ_MV1_MIN_BLOCKS)                                    \
        matvec1_##name##_##variant(const float* __restrict__ X, const uint8_t* W0, float* Y0, int rows0,    \
                                   const uint8_t* W1, float* Y1, int rows1, const uint8_t* W2, float* Y2,   \
                                   int rows2, int cols, long long row_bytes, int stages, int split,         \
                                   const unsigned* order0, const unsigned* order1,                          \
                                   const unsigned* order2, const float* norm_w, float eps) {                \
        const Mv1Parts parts{{W0, W1, W2}, {Y0, Y1, Y2}, {rows0, rows1, rows2}};                            \
        mv1_prologue<T, R, OUT>(parts, cols, row_bytes, split);                                             \
        gq::pdl_begin();                                                                                    \
        const unsigned* const orders[3] = {order0, order1, order2};                                         \
        matvec1<T, R, OUT>(X, orders, parts, cols, row_bytes, stages, split, norm_w, eps);                  \
    }
// matvec1_<t>_xs_<variant>: matvec1_xs.cuh's X-stationary products, the
// arguments and variants (r1, r1a, swiglu, geglu) of matvec1_<t>'s, without
// input orders (order0..2 null; `stages` > 0: Q4_K's gate and up stage
// their first row group before the wait, xs_q4k_stage_first, whose bytes
// the dynamic shared memory must then hold); Q4_K rows must start 16-byte
// aligned. `split` 1, 2, 4 or 8, enough that a warp takes at most
// xs_segments segments of 1024 (quantised: a glu 2, else 3 for Q5_K and
// Q6_K, 4 for the others; F16 and BF16 2, a glu 1; F32 1). Dynamic shared
// memory: none for the float types; X's 80 bytes a chunk of 32 rounded up
// to 16, and for the quantised types but Q4_K 8 * R * xs_segments slots of
// mv_slot_bytes(t) (R: 2 for a glu, else 1). At least two blocks of 256 threads a multiprocessor: X takes 80
// registers a thread.
#define GQ_MATVEC1_XS_ONE(name, T, variant, OUT)                                                           \
    extern "C" __global__ void __launch_bounds__(256, 2)                                                    \
        matvec1_##name##_xs_##variant(const float* __restrict__ X, const uint8_t* W0, float* Y0, int rows0, \
                                      const uint8_t* W1, float* Y1, int rows1, const uint8_t* W2, float* Y2, \
                                      int rows2, int cols, long long row_bytes, int stages, int split,      \
                                      const unsigned* order0, const unsigned* order1,                       \
                                      const unsigned* order2, const float* norm_w, float eps) {             \
        const Mv1Parts parts{{W0, W1, W2}, {Y0, Y1, Y2}, {rows0, rows1, rows2}};                            \
        const bool early = T == gq::Q4_K && xs_glu<OUT>() && stages > 0;                                    \
        if (early)                                                                                          \
            xs_q4k_stage_first<OUT>(parts, cols, row_bytes, split);                                         \
        else                                                                                                \
            mv1_prologue<T, xs_rows<OUT>(), OUT>(parts, cols, row_bytes, split);                            \
        gq::pdl_begin();                                                                                    \
        if (order0 || order1 || order2) __trap();                                                           \
        if constexpr (T == gq::F32 || T == gq::F16 || T == gq::BF16)                                        \
            matvec1f_xs<T, OUT>(X, parts, cols, row_bytes, split, norm_w, eps);                             \
        else if constexpr (T == gq::Q4_K) {                                                                 \
            if (early)                                                                                      \
                matvec1_xs_direct<OUT, true>(X, parts, cols, row_bytes, split, norm_w, eps);                \
            else                                                                                            \
                matvec1_xs_direct<OUT, false>(X, parts, cols, row_bytes, split, norm_w, eps);               \
        } else                                                                                              \
            matvec1_xs_staged<T, OUT>(X, parts, cols, row_bytes, split, norm_w, eps);                       \
    }
#define GQ_MATVEC1_XS(name, T)                          \
    GQ_MATVEC1_XS_ONE(name, T, r1, MV1_STORE)           \
    GQ_MATVEC1_XS_ONE(name, T, r1a, MV1_ADD)            \
    GQ_MATVEC1_XS_ONE(name, T, swiglu, MV1_SWIGLU)      \
    GQ_MATVEC1_XS_ONE(name, T, geglu, MV1_GEGLU)
#define GQ_MATVEC1(name, T)                             \
    GQ_MATVEC1_ONE(name, T, r1, 1, MV1_STORE)           \
    GQ_MATVEC1_ONE(name, T, r2, 2, MV1_STORE)           \
    GQ_MATVEC1_ONE(name, T, r1a, 1, MV1_ADD)            \
    GQ_MATVEC1_ONE(name, T, r2a, 2, MV1_ADD)            \
    GQ_MATVEC1_ONE(name, T, swiglu, 2, MV1_SWIGLU)      \
    GQ_MATVEC1_ONE(name, T, geglu, 2, MV1_GEGLU)
// The float types' variants, same arguments (stages is unused; no dynamic
// shared memory).
#define GQ_MATVEC1F_ONE(name, T, variant, R, OUT)                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                                       \
        matvec1_##name##_##variant(const float* __restrict__ X, const uint8_t* W0, float* Y0, int rows0,    \
                                   const uint8_t* W1, float* Y1, int rows1, const uint8_t* W2, float* Y2,   \
                                   int rows2, int cols, long long row_bytes, int stages, int split,         \
                                   const unsigned* order0, const unsigned* order1,                          \
                                   const unsigned* order2, const float* norm_w, float eps) {                \
        const Mv1Parts parts{{W0, W1, W2}, {Y0, Y1, Y2}, {rows0, rows1, rows2}};                            \
        gq::pdl_begin();                                                                                    \
        const unsigned* const orders[3] = {order0, order1, order2};                                         \
        (void)stages;                                                                                       \
        matvec1f<T, R, OUT>(X, orders, parts, cols, row_bytes, split, norm_w, eps);                         \
    }
#define GQ_MATVEC1F(name, T)                             \
    GQ_MATVEC1F_ONE(name, T, r1, 1, MV1_STORE)           \
    GQ_MATVEC1F_ONE(name, T, r2, 2, MV1_STORE)           \
    GQ_MATVEC1F_ONE(name, T, r1a, 1, MV1_ADD)            \
    GQ_MATVEC1F_ONE(name, T, r2a, 2, MV1_ADD)            \
    GQ_MATVEC1F_ONE(name, T, swiglu, 2, MV1_SWIGLU)      \
    GQ_MATVEC1F_ONE(name, T, geglu, 2, MV1_GEGLU)
GQ_MATVEC1F(f32, gq::F32)
GQ_MATVEC1F(f16, gq::F16)
GQ_MATVEC1F(bf16, gq::BF16)
GQ_MATVEC1(q4_0, gq::Q4_0)
GQ_MATVEC1(q4_1, gq::Q4_1)
GQ_MATVEC1(q5_0, gq::Q5_0)
GQ_MATVEC1(q8_0, gq::Q8_0)
GQ_MATVEC1(q4_k, gq::Q4_K)
GQ_MATVEC1(q5_k, gq::Q5_K)
GQ_MATVEC1(q6_k, gq::Q6_K)
GQ_MATVEC1_XS(f32, gq::F32)
GQ_MATVEC1_XS(f16, gq::F16)
GQ_MATVEC1_XS(bf16, gq::BF16)
GQ_MATVEC1_XS(q4_0, gq::Q4_0)
GQ_MATVEC1_XS(q4_1, gq::Q4_1)
GQ_MATVEC1_XS(q5_0, gq::Q5_0)
GQ_MATVEC1_XS(q8_0, gq::Q8_0)
GQ_MATVEC1_XS(q4_k, gq::Q4_K)
GQ_MATVEC1_XS(q5_k, gq::Q5_K)
GQ_MATVEC1_XS(q6_k, gq::Q6_K)

GQ_MATMUL_SIMT(f32, gq::F32)
GQ_MATMUL_SIMT(bf16, gq::BF16)
GQ_MATMUL_TC(f16, gq::F16)
GQ_MATMUL_TC(q4_0, gq::Q4_0)
GQ_MATMUL_TC(q4_1, gq::Q4_1)
GQ_MATMUL_TC(q5_0, gq::Q5_0)
GQ_MATMUL_TC(q5_1, gq::Q5_1)
GQ_MATMUL_TC(q8_0, gq::Q8_0)
GQ_MATMUL_TC(q2_k, gq::Q2_K)
GQ_MATMUL_TC(q3_k, gq::Q3_K)
GQ_MATMUL_TC(q4_k, gq::Q4_K)
GQ_MATMUL_TC(q5_k, gq::Q5_K)
GQ_MATMUL_TC(q6_k, gq::Q6_K)
GQ_MATMUL_TC(iq4_nl, gq::IQ4_NL)
GQ_MATMUL_TC(iq4_xs, gq::IQ4_XS)
