// Prompt-sized weight x activation products on tensor cores, in large tiles.
//
//   Y[t*rows + r] = sum_k W[r][k] * X[t*cols + k]
//
// W: `rows` rows of `cols` weights of one ggml type (row r at W + r*row_bytes,
// 2-byte alignment assumed); X: ntok x cols activations already in __half
// (`to_half` makes them: one conversion a product rather than one a tile);
// Y: ntok x rows f32. See README.md for the launch contract.
//
// A block of 256 threads (8 warps) computes a 128 (rows) x BN (tokens) tile
// of Y, BN 128 or 64; the blocks of one row tile are launched side by side
// (blockIdx.x walks the tokens), so that they share its weights in L2 rather
// than each reading them from memory. Its K axis goes in steps of 64 weights. The weights'
// raw bytes come in stages of whole blocks (a super-block of 256 for the
// K-quants, else 64 weights) by coalesced 16-byte asynchronous copies into
// shared memory, double-buffered, the next stage asked for at the first step
// of this one; the activations' step tile comes the same way, one step ahead.
// Each step every thread dequantises one chunk of 32 weights of one row
// (dequant32, bit-exact) into a __half tile, and each warp accumulates its
// sub-tile with wmma 16x16x16 in f32. Against matmul.cu's 64x64 tiles of four
// warps, a dequantised weight serves twice the tokens, X is converted once a
// product rather than once a row tile, and a step's sync covers four times
// the tensor work.
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>

#include "pdl.cuh"
#include "dynamic_shared.cuh"
#include "tiles.cuh"

// Named (not anonymous) so that test_matmul.cu can include this beside matmul.cu.
namespace tile {

using namespace gq;

constexpr int BM = 128, BK = 64, THREADS = 256;
constexpr int LDH = BK + 8;   // halves per shared row: 144 bytes, conflict-free ldmatrix
constexpr int LDC = BM + 4;   // floats per shared column of the output tile

__host__ __device__ constexpr int max_i(int a, int b) { return a > b ? a : b; }
// W tile, two X tiles, two raw stages; the output tile reuses them.
// (F16's direct path, `matmul_tile_f16`, needs two weight tiles in place of
// one and the raw stages: less than this.)
__host__ __device__ constexpr int tile_shared(int t, int bn) {
    return max_i((BM + 2 * bn) * LDH * 2 + 2 * BM * slot_bytes(t), bn * LDC * 4);
}

__device__ __forceinline__ unsigned dynamic_shared_size() {
#ifdef GQ_EMU
    return static_cast<unsigned>(gq_emu::st().dynamic_shared_bytes);
#else
    unsigned n;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(n));
    return n;
#endif
}

// Starts the copies of step `k`'s activations (BN tokens x BK halves) into
// `xs`. Tokens past the last read the last one (their sums are never
// stored); columns past `cols` (a step half past the end) are zeros.
template <int BN>
__device__ __forceinline__ void fetch_x(const __half* X, int cols, int ntok, int t0, int k, __half* xs) {
    constexpr int PIECES = BN * BK / 8;
#pragma unroll
    for (int m = 0; m < PIECES / THREADS; ++m) {
        const int p = threadIdx.x + THREADS * m;
        const int t = p >> 3, c = (p & 7) * 8;
        const int gt = min(t0 + t, ntok - 1), gk = k * BK + c;
        __half* dst = xs + t * LDH + c;
        if (gk < cols)
            copy16_async(dst, X + static_cast<long long>(gt) * cols + gk);
        else
            *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
}

// Starts the copies of step `k`'s f16 weights (BM rows x BK halves) into
// `ws`, as `fetch_x` does the activations': rows past the last read the
// last one (never stored), columns past `cols` are zeros. F16 rows are
// 16-byte aligned (cols a multiple of 32, the tensor 256-byte aligned).
__device__ __forceinline__ void fetch_w16(const uint8_t* W, long long row_bytes, int rows, int cols, int r0, int k,
                                          __half* ws) {
    constexpr int PIECES = BM * BK / 8;
#pragma unroll
    for (int m = 0; m < PIECES / THREADS; ++m) {
        const int p = threadIdx.x + THREADS * m;
        const int r = p >> 3, c = (p & 7) * 8;
        const int gr = min(r0 + r, rows - 1), gk = k * BK + c;
        __half* dst = ws + r * LDH + c;
        if (gk < cols)
            copy16_async(dst, W + gr * row_bytes + 2LL * gk);
        else
            *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
}

// One K step of the block's tile: each warp's FM x FN fragments accumulate
// its rows of `ws` times its tokens of `xs` (warp (wm, wn) of WARPS_M x
// WARPS_N).
template <int FM, int FN, typename Acc>
__device__ __forceinline__ void mma_step(const __half* ws, const __half* xs, int wm, int wn, Acc (&acc)[FM][FN]) {
    namespace wmma = nvcuda::wmma;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[FN];
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::load_matrix_sync(b[j], xs + (wn * 32 + 16 * j) * LDH + kk, LDH);
#pragma unroll
        for (int i = 0; i < FM; ++i) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
            wmma::load_matrix_sync(a, ws + (wm * FM * 16 + 16 * i) * LDH + kk, LDH);
#pragma unroll
            for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], a, b[j], acc[i][j]);
        }
    }
}

// The accumulators through shared memory (C(r, t) at Cs[t*LDC + r]), then
// coalesced guarded stores along r. The caller has synced: every warp is
// done with the tiles `Cs` overwrites.
template <int BN, int FM, int FN, typename Acc>
__device__ __forceinline__ void store_tile(Acc (&acc)[FM][FN], float* Cs, float* __restrict__ Y, int rows, int ntok,
                                           int r0, int t0, int wm, int wn) {
    namespace wmma = nvcuda::wmma;
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j)
            wmma::store_matrix_sync(Cs + (wn * 32 + 16 * j) * LDC + wm * FM * 16 + 16 * i, acc[i][j], LDC,
                                    wmma::mem_col_major);
    __syncthreads();
#pragma unroll 4
    for (int idx = threadIdx.x; idx < BM * BN; idx += THREADS) {
        const int t = idx / BM, r = idx % BM;
        if (t0 + t < ntok && r0 + r < rows) Y[static_cast<long long>(t0 + t) * rows + r0 + r] = Cs[t * LDC + r];
    }
}

// F16 weights need no dequantisation (rows 16-byte aligned, as the backend
// stores them; else the staged path takes them): their step tiles come straight into
// shared memory by the same asynchronous copies as the activations', both
// double-buffered, so a step is one barrier and the tensor work (against
// a raw stage, a dequantisation pass and two barriers a step).
template <int BN>
__device__ __forceinline__ void matmul_tile_f16(const uint8_t* __restrict__ W, const __half* __restrict__ X,
                                                float* __restrict__ Y, int rows, int cols, long long row_bytes,
                                                int ntok) {
    namespace wmma = nvcuda::wmma;
    constexpr int WARPS_N = BN / 32, WARPS_M = 8 / WARPS_N;
    constexpr int FM = BM / WARPS_M / 16, FN = 2;
    GQ_DYNAMIC_SHARED(128, unsigned char, smem);
    static_assert((2 * BM + 2 * BN) * LDH * 2 <= tile_shared(F16, BN), "two weight tiles fit");
    if (dynamic_shared_size() < static_cast<unsigned>(tile_shared(F16, BN))) __trap();
    __half* Ws = reinterpret_cast<__half*>(smem);
    __half* Xs = Ws + 2 * BM * LDH;
    const int r0 = blockIdx.y * BM, t0 = blockIdx.x * BN;
    const int nsteps = (cols + BK - 1) / BK;
    const int warp = threadIdx.x >> 5, wm = warp % WARPS_M, wn = warp / WARPS_M;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    fetch_w16(W, row_bytes, rows, cols, r0, 0, Ws);
    fetch_x<BN>(X, cols, ntok, t0, 0, Xs);
    async_commit();
#pragma unroll 1
    for (int k = 0; k < nsteps; ++k) {
        async_wait<0>();
        // Step k's tiles have landed, and every warp is done with step
        // k-1's: the buffers the next copies overwrite.
        __syncthreads();
        if (k + 1 < nsteps) {
            fetch_w16(W, row_bytes, rows, cols, r0, k + 1, Ws + ((k + 1) & 1) * BM * LDH);
            fetch_x<BN>(X, cols, ntok, t0, k + 1, Xs + ((k + 1) & 1) * BN * LDH);
        }
        async_commit();
        mma_step(Ws + (k & 1) * BM * LDH, Xs + (k & 1) * BN * LDH, wm, wn, acc);
    }
    async_wait<0>();
    __syncthreads();
    store_tile<BN>(acc, reinterpret_cast<float*>(smem), Y, rows, ntok, r0, t0, wm, wn);
}

template <int T, int BN>
__device__ __forceinline__ void matmul_tile(const uint8_t* __restrict__ W, const __half* __restrict__ X,
                                            float* __restrict__ Y, int rows, int cols, long long row_bytes,
                                            int ntok) {
    if constexpr (T == F16) {
        if (((reinterpret_cast<uintptr_t>(W) | static_cast<uintptr_t>(row_bytes)) & 15) == 0) {
            matmul_tile_f16<BN>(W, X, Y, rows, cols, row_bytes, ntok);
            return;
        }
    }
    namespace wmma = nvcuda::wmma;
    constexpr int SLOT = slot_bytes(T), KS = stage_elems(T), SPS = KS / BK;
    // Warps as WARPS_M x WARPS_N over the tile; each holds FM x FN fragments.
    constexpr int WARPS_N = BN / 32, WARPS_M = 8 / WARPS_N;
    constexpr int FM = BM / WARPS_M / 16, FN = 2;
    GQ_DYNAMIC_SHARED(128, unsigned char, smem);
    if (dynamic_shared_size() < static_cast<unsigned>(tile_shared(T, BN))) __trap();
    __half* Ws = reinterpret_cast<__half*>(smem);
    __half* Xs = Ws + BM * LDH;
    uint8_t* raw = smem + (BM + 2 * BN) * LDH * 2;
    float* Cs = reinterpret_cast<float*>(smem);

    const int tid = threadIdx.x, warp = tid >> 5;
    const int r0 = blockIdx.y * BM, t0 = blockIdx.x * BN;
    const int nchunks = cols >> 5;
    const int nsteps = (cols + BK - 1) / BK, nstages = (cols + KS - 1) / KS;

    // This thread's weight row and which of a step's two chunks.
    const int dr = tid >> 1, dsub = tid & 1;
    const bool rok = r0 + dr < rows;
    const uintptr_t wrow = reinterpret_cast<uintptr_t>(W) + static_cast<uintptr_t>((rok ? r0 + dr : 0) * row_bytes);

    const int wm = warp % WARPS_M, wn = warp / WARPS_M;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    fetch_stage<T, BM, THREADS>(W, row_bytes, rows, cols, r0, 0, raw);
    fetch_x<BN>(X, cols, ntok, t0, 0, Xs);
    async_commit();
#pragma unroll 1
    for (int k = 0; k < nsteps; ++k) {
        const int s = k / SPS, kk0 = (k - s * SPS) * BK;
        async_wait<0>();
        // Step k's bytes have landed, and every warp is done with step k-1's
        // tiles: the buffers the next copies overwrite.
        __syncthreads();
        if (k + 1 < nsteps) fetch_x<BN>(X, cols, ntok, t0, k + 1, Xs + ((k + 1) & 1) * BN * LDH);
        if (kk0 == 0 && s + 1 < nstages) fetch_stage<T, BM, THREADS>(W, row_bytes, rows, cols, r0, s + 1, raw + ((s + 1) & 1) * BM * SLOT);
        async_commit();
        {
            const int skew = static_cast<int>((wrow + static_cast<uintptr_t>(s) * stage_bytes(T)) & 15);
            const uint8_t* mine = raw + (s & 1) * BM * SLOT + dr * SLOT + skew;
            const int c = ((k * BK) >> 5) + dsub;
            dequant_chunk_half<T>(mine, (kk0 >> 5) + dsub, rok && c < nchunks, Ws + dr * LDH + dsub * 32);
        }
        __syncthreads();
        mma_step(Ws, Xs + (k & 1) * BN * LDH, wm, wn, acc);
    }
    async_wait<0>();
    __syncthreads();  // every warp is done with the tiles the output overwrites
    store_tile<BN>(acc, Cs, Y, rows, ntok, r0, t0, wm, wn);
}

}  // namespace tile

// `n` floats (a multiple of 4) of x as __half, round to nearest; grid
// (ceil(n/4/256)), block 256.
extern "C" __global__ void to_half(const float* __restrict__ x, __half* __restrict__ y, long long n) {
    gq::pdl_begin();
    const long long i = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
    if (i >= n) return;
    const float4 v = *reinterpret_cast<const float4*>(x + i);
    *reinterpret_cast<uint2*>(y + i) = make_uint2(gq::pack_half2(v.x, v.y), gq::pack_half2(v.z, v.w));
}

// matmul_tile_<t>_n<BN>: grid (ceil(ntok/BN), ceil(rows/128)), block 256,
// dynamic shared memory tile_shared(T, BN) (backend.rs: tile_shared).
// Two blocks a multiprocessor where shared memory allows (every type but Q6_K
// on Hopper at BN 128).
#define GQ_MATMUL_TILE(name, T)                                                                                \
    extern "C" __global__ void __launch_bounds__(tile::THREADS, 2)                                                   \
        matmul_tile_##name##_n128(const uint8_t* __restrict__ W, const __half* __restrict__ X,                \
                                  float* __restrict__ Y, int rows, int cols, long long row_bytes, int ntok) { \
        gq::pdl_begin();                                                                                      \
        tile::matmul_tile<T, 128>(W, X, Y, rows, cols, row_bytes, ntok);                                            \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(tile::THREADS, 2)                                                   \
        matmul_tile_##name##_n64(const uint8_t* __restrict__ W, const __half* __restrict__ X,                 \
                                 float* __restrict__ Y, int rows, int cols, long long row_bytes, int ntok) {  \
        gq::pdl_begin();                                                                                      \
        tile::matmul_tile<T, 64>(W, X, Y, rows, cols, row_bytes, ntok);                                             \
    }

// dequant_half_<t>: `rows` x `cols` weights of type T as __half rows (row r
// at out + r*cols, 16-byte aligned), rounded as the tiles round them, for
// gemm_sm90.cu's products of prompt batches (cols a multiple of 32): grid
// (ceil(rows*cols/32/256)), block 256, a thread a chunk of 32.
#define GQ_DEQUANT_HALF(name, T)                                                                              \
    extern "C" __global__ void dequant_half_##name(const uint8_t* __restrict__ W, long long row_bytes, int rows, \
                                                    int cols, __half* __restrict__ out) {                      \
        gq::pdl_begin();                                                                                      \
        const int chunks = cols >> 5;                                                                         \
        const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;                   \
        if (i >= static_cast<long long>(rows) * chunks) return;                                               \
        const int r = static_cast<int>(i / chunks), c = static_cast<int>(i % chunks);                         \
        gq::dequant_chunk_half<T>(W + r * row_bytes, c, true, out + static_cast<long long>(r) * cols + 32 * c); \
    }

GQ_DEQUANT_HALF(q4_0, gq::Q4_0)
GQ_DEQUANT_HALF(q4_1, gq::Q4_1)
GQ_DEQUANT_HALF(q5_0, gq::Q5_0)
GQ_DEQUANT_HALF(q5_1, gq::Q5_1)
GQ_DEQUANT_HALF(q8_0, gq::Q8_0)
GQ_DEQUANT_HALF(q2_k, gq::Q2_K)
GQ_DEQUANT_HALF(q3_k, gq::Q3_K)
GQ_DEQUANT_HALF(q4_k, gq::Q4_K)
GQ_DEQUANT_HALF(q5_k, gq::Q5_K)
GQ_DEQUANT_HALF(q6_k, gq::Q6_K)
GQ_DEQUANT_HALF(iq4_nl, gq::IQ4_NL)
GQ_DEQUANT_HALF(iq4_xs, gq::IQ4_XS)

GQ_MATMUL_TILE(f16, gq::F16)
GQ_MATMUL_TILE(q4_0, gq::Q4_0)
GQ_MATMUL_TILE(q4_1, gq::Q4_1)
GQ_MATMUL_TILE(q5_0, gq::Q5_0)
GQ_MATMUL_TILE(q5_1, gq::Q5_1)
GQ_MATMUL_TILE(q8_0, gq::Q8_0)
GQ_MATMUL_TILE(q2_k, gq::Q2_K)
GQ_MATMUL_TILE(q3_k, gq::Q3_K)
GQ_MATMUL_TILE(q4_k, gq::Q4_K)
GQ_MATMUL_TILE(q5_k, gq::Q5_K)
GQ_MATMUL_TILE(q6_k, gq::Q6_K)
GQ_MATMUL_TILE(iq4_nl, gq::IQ4_NL)
GQ_MATMUL_TILE(iq4_xs, gq::IQ4_XS)
