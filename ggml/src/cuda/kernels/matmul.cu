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

#include "quants.cuh"

namespace {

using namespace gq;

constexpr unsigned FULL = 0xffffffffu;

// ---------------------------------------------------------------- matvec
//
// One warp per weight row, all (<= 8 at a time) tokens. The K axis is walked
// in segments of 1024 (32 chunks of 32): lane l dequantises chunk l of the
// segment into registers (consecutive lanes read consecutive chunks, so the
// warp's weight reads are contiguous); the block stages each token's 1024
// activations in shared memory with coalesced loads, and every lane FMAs its
// 32 weights against them. (Reading X straight from global memory, lane l at
// 32*l, costs a cache line per lane per load and was the bottleneck.)

constexpr int MV_LDX = 36;  // floats per staged chunk: 32 + 4 pad, conflict-free float4 reads

// Tokens [0, nt) of one row, nt <= NT (a compile-time bound; nt is uniform
// over the block, so the tokens past it are skipped by uniform branches).
// With one token its sum is split over four accumulators to shorten the FMA
// dependency chain. Every thread of the block must call this (barriers).
template <int T, int NT>
__device__ __forceinline__ void matvec_tokens(const uint8_t* __restrict__ row, bool active,
                                              const float* __restrict__ X, float* __restrict__ Y,
                                              int r, int rows, int cols, int nt, int lane, float* xs) {
    constexpr int NA = NT == 1 ? 4 : 1;
    float acc[NT][NA];
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
        for (int a = 0; a < NA; ++a) acc[t][a] = 0.0f;

    const int nchunks = cols >> 5;
    const int nseg = (nchunks + 31) >> 5;
    for (int seg = 0; seg < nseg; ++seg) {
        const int c = seg * 32 + lane;
        const bool have = active && c < nchunks;
        float w[32];
        if (have) dequant32<T>(row, c, w);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            if (NT > 1 && t >= nt) break;
            __syncthreads();  // the previous token's readers are done
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int q = threadIdx.x + 128 * h;  // float4 index within the segment
                const int k = seg * 1024 + 4 * q;
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (k < cols) v = __ldg(reinterpret_cast<const float4*>(X + static_cast<long long>(t) * cols + k));
                *reinterpret_cast<float4*>(xs + (q >> 3) * MV_LDX + (q & 7) * 4) = v;
            }
            __syncthreads();
            if (have) {
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    const float4 v = *reinterpret_cast<const float4*>(xs + lane * MV_LDX + 4 * i);
                    float& s = acc[t][i % NA];
                    s = fmaf(w[4 * i + 0], v.x, s);
                    s = fmaf(w[4 * i + 1], v.y, s);
                    s = fmaf(w[4 * i + 2], v.z, s);
                    s = fmaf(w[4 * i + 3], v.w, s);
                }
            }
        }
    }

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

template <int T>
__device__ __forceinline__ void matvec(const uint8_t* __restrict__ W, const float* __restrict__ X,
                                       float* __restrict__ Y, int rows, int cols, long long row_bytes,
                                       int ntok) {
    __shared__ __align__(16) float xs[32 * MV_LDX];
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * 4 + (threadIdx.x >> 5);
    // A warp past the last row still takes part in staging and barriers.
    const bool active = r < rows;
    const uint8_t* row = W + static_cast<long long>(active ? r : 0) * row_bytes;
    if (ntok == 1) {
        matvec_tokens<T, 1>(row, active, X, Y, r, rows, cols, 1, lane, xs);
    } else {
        // The contract is ntok <= 8; larger batches are still handled, 8 at a time.
        for (int t0 = 0; t0 < ntok; t0 += 8)
            matvec_tokens<T, 8>(row, active, X + static_cast<long long>(t0) * cols,
                                Y + static_cast<long long>(t0) * rows, r, rows, cols, min(ntok - t0, 8), lane, xs);
    }
}

// ---------------------------------------------------------------- matmul, tensor cores
//
// A block computes the 64 (rows) x 64 (tokens) tile of Y at
// (blockIdx.x*64, blockIdx.y*64), stepping K by 64 (two 32-weight chunks; a
// missing last chunk is zero-filled). Each of the 128 threads dequantises one
// chunk of one row into shared memory as __half, the activations are
// converted f32 -> __half, and each warp accumulates a 32x32 sub-tile as
// 2x2 wmma 16x16x16 fragments in f32.

constexpr int TM = 64, TN = 64, TK = 64;
constexpr int LDH = TK + 8;  // halves per shared row (pad: conflict-free ldmatrix, 32-byte fragment alignment)
constexpr int LDC = TM + 4;  // floats per shared column of the output tile

__device__ __forceinline__ uint32_t pack_half2(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}

template <int T>
__device__ __forceinline__ void matmul_tc(const uint8_t* __restrict__ W, const float* __restrict__ X,
                                          float* __restrict__ Y, int rows, int cols, long long row_bytes,
                                          int ntok) {
    namespace wmma = nvcuda::wmma;
    // W tile [64 rows][LDH] and X tile [64 tokens][LDH] as halves; after the
    // K loop the same bytes hold the f32 output tile, column-major [64 tokens][LDC].
    constexpr int SMEM = 2 * TM * LDH * 2;
    static_assert(TN * LDC * 4 <= SMEM, "output tile must fit");
    __shared__ __align__(128) unsigned char smem[SMEM];
    __half* Ws = reinterpret_cast<__half*>(smem);
    __half* Xs = Ws + TM * LDH;
    float* Cs = reinterpret_cast<float*>(smem);

    const int tid = threadIdx.x, warp = tid >> 5;
    const int r0 = blockIdx.x * TM, t0 = blockIdx.y * TN;
    const int nchunks = cols >> 5;

    // This thread's weight row and which of the two chunks of a K step.
    const int dr = tid >> 1, dsub = tid & 1;
    const bool rok = r0 + dr < rows;
    const uint8_t* wrow = W + static_cast<long long>(rok ? r0 + dr : 0) * row_bytes;

    const int wm = warp & 1, wn = warp >> 1;  // warp's 32x32 sub-tile
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    for (int kc = 0; kc < nchunks; kc += 2) {
        // Weights: 64 rows x 2 chunks, one (row, chunk) per thread.
        {
            const int c = kc + dsub;
            float v[32];
            if (rok && c < nchunks) {
                dequant32<T>(wrow, c, v);
            } else {
#pragma unroll
                for (int i = 0; i < 32; ++i) v[i] = 0.0f;
            }
            uint4* dst = reinterpret_cast<uint4*>(Ws + dr * LDH + dsub * 32);
#pragma unroll
            for (int q = 0; q < 4; ++q)
                dst[q] = make_uint4(pack_half2(v[8 * q + 0], v[8 * q + 1]), pack_half2(v[8 * q + 2], v[8 * q + 3]),
                                    pack_half2(v[8 * q + 4], v[8 * q + 5]), pack_half2(v[8 * q + 6], v[8 * q + 7]));
        }
        // Activations: 64 tokens x 64 k as 1024 float4, 16 consecutive threads per token.
#pragma unroll
        for (int m = 0; m < 8; ++m) {
            const int f = tid + 128 * m;
            const int t = f >> 4, k = (f & 15) * 4;
            const int gt = t0 + t, gk = kc * 32 + k;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (gt < ntok && gk < cols)
                v = __ldg(reinterpret_cast<const float4*>(X + static_cast<long long>(gt) * cols + gk));
            *reinterpret_cast<uint2*>(Xs + t * LDH + k) = make_uint2(pack_half2(v.x, v.y), pack_half2(v.z, v.w));
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

}  // namespace

// ---------------------------------------------------------------- entry points

#define GQ_ARGS                                                                                       \
    const uint8_t *__restrict__ W, const float *__restrict__ X, float *__restrict__ Y, int rows, int cols, \
        long long row_bytes, int ntok

// matvec: min 5 blocks/SM caps registers at 96 (below that ptxas spilled a
// few bytes; without a bound it settles near 80 and spills for some types).
#define GQ_MATVEC(name, T)                                                       \
    extern "C" __global__ void __launch_bounds__(128, 5) matvec_##name(GQ_ARGS) { \
        matvec<T>(W, X, Y, rows, cols, row_bytes, ntok);                      \
    }

#define GQ_MATMUL_TC(name, T)                                                 \
    extern "C" __global__ void __launch_bounds__(128) matmul_##name(GQ_ARGS) { \
        matmul_tc<T>(W, X, Y, rows, cols, row_bytes, ntok);                   \
    }

#define GQ_MATMUL_SIMT(name, T)                                               \
    extern "C" __global__ void __launch_bounds__(128) matmul_##name(GQ_ARGS) { \
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
