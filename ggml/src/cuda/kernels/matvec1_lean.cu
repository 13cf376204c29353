// ---------------------------------------------------------------- one token, X quantised once
//
// A module of its own (matmul.cu's fatbin is large enough), sharing
// mv1_common.cuh with matmul.cu's one-token products. The X-stationary
// products keep a lane's X in registers, so rows longer than a warp's four
// segments (a 7B's down projection, 11008 wide) are split over warps whose
// partial sums meet in shared memory at a block barrier a row group, and every block
// norms and quantises all of X before its first weight. On the H100
// (test_matmul --bench-lean) the 4096x11008 add took 22.5 us that way and
// 15.1 us with X quantised once beforehand and read through L1 by warps of
// four whole rows (lean.cuh's prototype); gate and up 30.3 against 23.6.
//
// quantize_x16 writes X (normed where a norm is given) once into global
// memory with matvec1's arithmetic (mv1_quantize_x: the same integers,
// scales and sums a chunk of 32), as int16[cols], then cols / 32 scales,
// then cols / 32 float sums; matvec1_q4_k_lean_<variant> read it. Each warp
// takes four rows of one part (two outputs' gate and up rows for a glu) over
// their whole length, lanes as q4k_lanes.cuh maps a super-block; warps stride
// over the row groups of all parts. No shared memory, no barrier.
#include <cuda_fp16.h>
#include <stdint.h>

#include "pdl.cuh"
#include "act.cuh"
#include "q4k_lanes.cuh"
#include "mv1_common.cuh"

namespace mv1_lean {

constexpr int ROWS = 4;  // rows a warp reads at once

// Bytes of quantize_x16's output for `cols` values (the backend's
// LEAN_X_BYTES mirrors it).
__host__ __device__ constexpr long long x_bytes(int cols) { return 2ll * cols + 8ll * (cols / 32); }

// Y_p = W_p . X for each part, Y += W . X, or Y = act(gate . X) * (up . X)
// (gate rows in part 0, up rows in W[1], outputs rows[0]).
template <int OUT>
__device__ __forceinline__ void product(const uint8_t* __restrict__ xq, const Mv1Parts& parts, int cols,
                                        long long row_bytes) {
    constexpr bool GLU = OUT == MV1_SWIGLU || OUT == MV1_GEGLU;
    constexpr int NO = GLU ? ROWS / 2 : ROWS;  // outputs a warp
    const int lane = threadIdx.x & 31;
    const int warp = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    const int nwarps = static_cast<int>((gridDim.x * blockDim.x) >> 5);
    const int nsb = cols >> 8, nchunks = cols >> 5;
    const int16_t* q = reinterpret_cast<const int16_t*>(xq);
    const float* d = reinterpret_cast<const float*>(xq + 2ll * cols);
    const float* s = d + nchunks;
    const int sbo = lane >> 3, j = lane & 7, p = j >> 1, h = j & 1;
    const int g0 = (parts.rows[0] + NO - 1) / NO;
    const int g1 = GLU ? 0 : (parts.rows[1] + NO - 1) / NO;
    const int g2 = GLU ? 0 : (parts.rows[2] + NO - 1) / NO;
    for (int g = warp; g < g0 + g1 + g2; g += nwarps) {
        const int part = g < g0 ? 0 : (g < g0 + g1 ? 1 : 2);
        const int r0 = (g - (part == 0 ? 0 : (part == 1 ? g0 : g0 + g1))) * NO;
        const int rows = Mv1Parts::pick(parts.rows, part);
        const uint8_t* W = Mv1Parts::pick(parts.W, part);
        // This lane's header and nibbles in its first super-block of each
        // row (rows past the end read the last one's); a step is four
        // super-blocks on.
        const uint4* hp[ROWS];
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            const int r = min(r0 + (GLU ? (i & 1) : i), rows - 1);
            const uint8_t* base = GLU && i >= 2 ? parts.W[1] : W;
            hp[i] = reinterpret_cast<const uint4*>(base + static_cast<long long>(r) * row_bytes + sbo * 144);
        }
        float acc[ROWS];
#pragma unroll
        for (int i = 0; i < ROWS; ++i) acc[i] = 0.0f;
        int e = sbo * 256 + 64 * p + 16 * h;
#pragma unroll 2
        for (int sb = sbo; sb < nsb; sb += 4, e += 4 * 256) {
            uint4 hd[ROWS], qs[ROWS];
#pragma unroll
            for (int i = 0; i < ROWS; ++i) {
                hd[i] = __ldg(hp[i]);
                qs[i] = __ldg(hp[i] + 1 + j);
                hp[i] += 4 * 144 / 16;
            }
            gq::LaneX<int16_t> x;
            const uint4* lo = reinterpret_cast<const uint4*>(q + e);
            const uint4* hi = reinterpret_cast<const uint4*>(q + e + 32);
#pragma unroll
            for (int k = 0; k < 2; ++k) {
                x.lo[k] = __ldg(lo + k);
                x.hi[k] = __ldg(hi + k);
            }
            const int c = e >> 5;
            x.dlo = __ldg(d + c);
            x.dhi = __ldg(d + c + 1);
            x.slo = __ldg(s + c);
            x.shi = __ldg(s + c + 1);
#pragma unroll
            for (int i = 0; i < ROWS; ++i) acc[i] += gq::q4k_lane(hd[i], qs[i], x, p, h == 0);
        }
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);
        }
        if (lane != 0) continue;
        float* Y = Mv1Parts::pick(parts.Y, part);
        if constexpr (GLU) {
#pragma unroll
            for (int o = 0; o < NO; ++o) {
                if (r0 + o >= rows) continue;
                Y[r0 + o] = OUT == MV1_SWIGLU ? swiglu_of(acc[o], acc[NO + o]) : geglu_of(acc[o], acc[NO + o]);
            }
        } else {
#pragma unroll
            for (int i = 0; i < ROWS; ++i) {
                if (r0 + i >= rows) continue;
                Y[r0 + i] = OUT == MV1_ADD ? Y[r0 + i] + acc[i] : acc[i];
            }
        }
    }
}

}  // namespace mv1_lean

// X (cols floats, a multiple of 32; through rms_norm(X) * norm_w where
// norm_w is given) into `out` as mv1_lean reads it: a thread four values, 8
// threads a chunk, the integers, scale and sum of mv1_quantize_x. Grid
// ceil(cols / 1024), block 256 (mv1_norm_scale's: each block sums all of X's
// squares itself, in its fixed order).
extern "C" __global__ void __launch_bounds__(256) quantize_x16(const float* __restrict__ X, int cols,
                                                              const float* __restrict__ norm_w, float eps,
                                                              uint8_t* __restrict__ out) {
    gq::pdl_begin();
    const float nscale = norm_w ? mv1_norm_scale(X, cols, eps) : 1.0f;
    const int n4 = cols >> 2, nchunks = cols >> 5;
    const int q = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    float4 v = q < n4 ? __ldg(reinterpret_cast<const float4*>(X) + q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (norm_w && q < n4) {
        const float4 g = __ldg(reinterpret_cast<const float4*>(norm_w) + q);
        v = make_float4(v.x * nscale * g.x, v.y * nscale * g.y, v.z * nscale * g.z, v.w * nscale * g.w);
    }
    float amax, sum;
    chunk_amax_sum(v, amax, sum);
    if (q >= n4) return;
    const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
    const int ix = __float2int_rn(v.x * inv), iy = __float2int_rn(v.y * inv);
    const int iz = __float2int_rn(v.z * inv), iw = __float2int_rn(v.w * inv);
    const uint32_t lo = (static_cast<uint32_t>(ix) & 0xffffu) | (static_cast<uint32_t>(iy) << 16);
    const uint32_t hi = (static_cast<uint32_t>(iz) & 0xffffu) | (static_cast<uint32_t>(iw) << 16);
    reinterpret_cast<uint2*>(out)[q] = make_uint2(lo, hi);
    if ((q & 7) == 0) {
        float* scales = reinterpret_cast<float*>(out + 2ll * cols);
        scales[q >> 3] = amax / 32767.0f;
        scales[nchunks + (q >> 3)] = sum;
    }
}

// matvec1_q4_k_lean_<variant>: the products above, matvec1's parts and
// epilogues, X from quantize_x16. Grid: a warp a row group (four rows; two
// outputs of a glu) of all parts, eight warps a block, or fewer blocks that
// loop over them.
#define GQ_MATVEC1_LEAN_ONE(variant, OUT)                                                                   \
    extern "C" __global__ void __launch_bounds__(256)                                                       \
        matvec1_q4_k_lean_##variant(const uint8_t* __restrict__ xq, const uint8_t* W0, float* Y0, int rows0, \
                                    const uint8_t* W1, float* Y1, int rows1, const uint8_t* W2, float* Y2,    \
                                    int rows2, int cols, long long row_bytes) {                               \
        const Mv1Parts parts{{W0, W1, W2}, {Y0, Y1, Y2}, {rows0, rows1, rows2}};                             \
        gq::pdl_begin();                                                                                     \
        mv1_lean::product<OUT>(xq, parts, cols, row_bytes);                                                  \
    }
GQ_MATVEC1_LEAN_ONE(r1, MV1_STORE)
GQ_MATVEC1_LEAN_ONE(r1a, MV1_ADD)
GQ_MATVEC1_LEAN_ONE(swiglu, MV1_SWIGLU)
GQ_MATVEC1_LEAN_ONE(geglu, MV1_GEGLU)
