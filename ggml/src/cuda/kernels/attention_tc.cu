// Causal attention of prompt batches over an f16 cache, on tensor cores.
//
// The contract of ops.cu's attention_prompt (q, the caches, out, n_head,
// n_head_kv, head_dim, cells, step = [pos0, tokens], window, kq_scale; the
// cache a ring of `cells`), for head sizes 64 and 128: attention_prompt_tc<D>
// (head_dim must be D; any other traps), grid
// (ceil(tokens/64), n_head), block 128, dynamic shared memory
// prompt_tc_shared(D) (backend.rs mirrors it; less traps).
//
// A block takes 64 queries of one head, 16 a warp. The cells go in tiles of
// 64 staged in shared memory as f16. Two passes over them: the first finds
// each query's largest visible score (S = Q K^T by wmma 16x16x16, f32
// accumulation), the second takes exp(score - max) as f16 weights P and
// accumulates P V in wmma fragments. With the maximum known up front no
// running rescale of the output is needed (a fragment's rows cannot be
// scaled without relying on its unspecified layout); the price is Q K^T twice,
// small beside the SIMT kernel's cost. Q and P are rounded to f16 as
// llama.cpp's tensor-core flash attention rounds them; the row sums stay f32.
#include <cuda_fp16.h>
#include <math.h>

#include "pdl.cuh"
#include "dynamic_shared.cuh"
#include <mma.h>
#include <stdint.h>

namespace attn_tc {

constexpr unsigned FULL = 0xffffffffu;
constexpr int QB = 64;      // queries a block, 16 a warp
constexpr int CB = 64;      // cells a tile
constexpr int WARPS = 4;
constexpr int LDS = CB + 4; // floats per score row
constexpr int LDP = CB + 8; // halves per weight row

__host__ __device__ constexpr int shared_bytes(int d) {
    return (QB + 2 * CB) * (d + 8) * 2 + WARPS * 16 * LDS * 4 + WARPS * 16 * LDP * 2;
}

__device__ __forceinline__ unsigned dynamic_shared_size() {
    unsigned n;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(n));
    return n;
}

// Cells c0..c0+CB-1 of kv head g (D halves each) into `tile`; zeros past n_cells.
template <int D>
__device__ __forceinline__ void load_cells(const __half* cache, int kv_dim, int g, int c0, int n_cells,
                                           __half* tile) {
    constexpr int PER_ROW = D / 8;
    for (int i = threadIdx.x; i < CB * PER_ROW; i += WARPS * 32) {
        const int r = i / PER_ROW, u = i - r * PER_ROW;
        const int c = c0 + r;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (c < n_cells) v = __ldg(reinterpret_cast<const uint4*>(cache + static_cast<long long>(c) * kv_dim + g * D) + u);
        *reinterpret_cast<uint4*>(tile + r * (D + 8) + 8 * u) = v;
    }
}

template <int D>
__device__ __forceinline__ void attention_tc(const float* __restrict__ q, const __half* __restrict__ kc,
                                             const __half* __restrict__ vc, float* __restrict__ out, int n_head,
                                             int n_head_kv, int head_dim, int cells, const int* step, int window,
                                             float kq_scale) {
    namespace wmma = nvcuda::wmma;
    constexpr int LDH = D + 8;
    GQ_DYNAMIC_SHARED(128, unsigned char, smem);
    if (head_dim != D || dynamic_shared_size() < static_cast<unsigned>(shared_bytes(D))) __trap();
    __half* Qs = reinterpret_cast<__half*>(smem);  // [QB][LDH]
    __half* Ks = Qs + QB * LDH;                     // [CB][LDH]
    __half* Vs = Ks + CB * LDH;                     // [CB][LDH]
    float* Ss = reinterpret_cast<float*>(Vs + CB * LDH);
    __half* Ps = reinterpret_cast<__half*>(Ss + WARPS * 16 * LDS);

    const int h = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int pos0 = step[0], tokens = step[1];
    const int t0 = blockIdx.x * QB;
    if (t0 >= tokens) return;  // block-uniform
    const int last = pos0 + tokens - 1;
    const int lm = last % cells;
    const int g = h / (n_head / n_head_kv), kv_dim = n_head_kv * D;

    // The block's queries as halves; rows past the batch are zeros.
    for (int i = threadIdx.x; i < QB * D / 4; i += WARPS * 32) {
        const int r = i / (D / 4), c = (i - r * (D / 4)) * 4;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (t0 + r < tokens) v = *reinterpret_cast<const float4*>(q + (static_cast<long long>(t0 + r) * n_head + h) * D + c);
        *reinterpret_cast<__half2*>(Qs + r * LDH + c) = __floats2half2_rn(v.x, v.y);
        *reinterpret_cast<__half2*>(Qs + r * LDH + c + 2) = __floats2half2_rn(v.z, v.w);
    }
    // The cells the block's last query may see (before the ring wraps, later
    // ones hold later tokens of the batch).
    const int pos_max = pos0 + min(tokens, t0 + QB) - 1;
    const int n_cells = last < cells ? pos_max + 1 : cells;

    // This lane's query (a row of the warp's 16) and half of a tile's cells.
    const int row = lane >> 1, side = lane & 1;
    const int t = t0 + warp * 16 + row;
    const bool qok = t < tokens;
    const int pos = pos0 + t;
    float* S = Ss + warp * 16 * LDS;
    __half* P = Ps + warp * 16 * LDP;
    auto visible = [&](int c) {
        const int back = lm - c + (c > lm ? cells : 0);
        const int p = last - back;
        return qok && c < n_cells && p >= 0 && p <= pos && !(window > 0 && pos - p >= window);
    };
    // The warp's scores against the staged tile, into S (row-major, LDS).
    auto scores = [&]() {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> s[CB / 16];
#pragma unroll
        for (int j = 0; j < CB / 16; ++j) wmma::fill_fragment(s[j], 0.0f);
#pragma unroll
        for (int k = 0; k < D; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
            wmma::load_matrix_sync(a, Qs + warp * 16 * LDH + k, LDH);
#pragma unroll
            for (int j = 0; j < CB / 16; ++j) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
                wmma::load_matrix_sync(b, Ks + 16 * j * LDH + k, LDH);
                wmma::mma_sync(s[j], a, b, s[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < CB / 16; ++j) wmma::store_matrix_sync(S + 16 * j, s[j], LDS, wmma::mem_row_major);
        __syncwarp();
    };

    float m = -INFINITY;
    for (int c0 = 0; c0 < n_cells; c0 += CB) {
        __syncthreads();  // the last tile is consumed (and Qs written, the first time)
        load_cells<D>(kc, kv_dim, g, c0, n_cells, Ks);
        __syncthreads();
        scores();
#pragma unroll 8
        for (int j = 0; j < CB / 2; ++j) {
            const int cc = side * (CB / 2) + j;
            if (visible(c0 + cc)) m = fmaxf(m, S[row * LDS + cc] * kq_scale);
        }
        __syncwarp();
    }
    m = fmaxf(m, __shfl_xor_sync(FULL, m, 1));

    float l = 0.0f;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> o[D / 16];
#pragma unroll
    for (int j = 0; j < D / 16; ++j) wmma::fill_fragment(o[j], 0.0f);
    for (int c0 = 0; c0 < n_cells; c0 += CB) {
        __syncthreads();
        load_cells<D>(kc, kv_dim, g, c0, n_cells, Ks);
        load_cells<D>(vc, kv_dim, g, c0, n_cells, Vs);
        __syncthreads();
        scores();
#pragma unroll 8
        for (int j = 0; j < CB / 2; ++j) {
            const int cc = side * (CB / 2) + j;
            const float e = visible(c0 + cc) ? expf(S[row * LDS + cc] * kq_scale - m) : 0.0f;
            l += e;
            P[row * LDP + cc] = __float2half_rn(e);
        }
        __syncwarp();
#pragma unroll
        for (int k = 0; k < CB; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
            wmma::load_matrix_sync(a, P + k, LDP);
#pragma unroll
            for (int j = 0; j < D / 16; ++j) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
                wmma::load_matrix_sync(b, Vs + k * LDH + 16 * j, LDH);
                wmma::mma_sync(o[j], a, b, o[j]);
            }
        }
    }
    l += __shfl_xor_sync(FULL, l, 1);

    // The output rows through shared memory (the K and V tiles' room: 16 x
    // (D + 4) floats a warp fit in 2 * CB * LDH halves), each lane half a row.
    __syncthreads();
    float* O = reinterpret_cast<float*>(Ks) + warp * 16 * (D + 4);
#pragma unroll
    for (int j = 0; j < D / 16; ++j) wmma::store_matrix_sync(O + 16 * j, o[j], D + 4, wmma::mem_row_major);
    __syncwarp();
    if (!qok) return;
    float* dst = out + (static_cast<long long>(t) * n_head + h) * D;
    for (int d = side * (D / 2); d < (side + 1) * (D / 2); ++d) dst[d] = l > 0.0f ? O[row * (D + 4) + d] / l : 0.0f;
}

static_assert(WARPS * 16 * (128 + 4) * 4 <= 2 * CB * (128 + 8) * 2, "output rows fit the tiles' room");

}  // namespace attn_tc

#define ATTENTION_TC(D)                                                                                         \
    extern "C" __global__ void __launch_bounds__(attn_tc::WARPS * 32)                                           \
        attention_prompt_tc##D(const float* q, const __half* kc, const __half* vc, float* out, int n_head,     \
                               int n_head_kv, int head_dim, int cells, const int* step, int window,            \
                               float kq_scale) {                                                               \
        gq::pdl_begin();                                                                                       \
        attn_tc::attention_tc<D>(q, kc, vc, out, n_head, n_head_kv, head_dim, cells, step, window, kq_scale);   \
    }

ATTENTION_TC(64)
ATTENTION_TC(128)
