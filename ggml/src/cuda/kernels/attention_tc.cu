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
#include "async.cuh"
#include "dynamic_shared.cuh"
#include "mma_sync.cuh"
#include <mma.h>
#include <stdint.h>
#include <string.h>

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
#ifdef GQ_EMU
    return static_cast<unsigned>(gq_emu::st().dynamic_shared_bytes);
#else
    unsigned n;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(n));
    return n;
#endif
}

// Queries t0..t0+QB-1 of head h as f16 rows of D + 8 in Qs; rows past the
// batch are zeros. (Both prompt kernels; a block of WARPS warps.)
template <int D>
__device__ __forceinline__ void stage_queries(const float* q, __half* Qs, int t0, int tokens, int n_head, int h) {
    constexpr int LDH = D + 8;
    for (int i = threadIdx.x; i < QB * D / 4; i += WARPS * 32) {
        const int r = i / (D / 4), c = (i - r * (D / 4)) * 4;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (t0 + r < tokens) v = *reinterpret_cast<const float4*>(q + (static_cast<long long>(t0 + r) * n_head + h) * D + c);
        *reinterpret_cast<__half2*>(Qs + r * LDH + c) = __floats2half2_rn(v.x, v.y);
        *reinterpret_cast<__half2*>(Qs + r * LDH + c + 2) = __floats2half2_rn(v.z, v.w);
    }
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

    attn_tc::stage_queries<D>(q, Qs, t0, tokens, n_head, h);
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

// The same contract in one pass (attention_prompt_fa<D>, compute capability
// 8.0 on; `LLM_CUDA_PROMPT_FA=1`): flash attention's online softmax, which
// wmma's unspecified fragment layouts ruled out above. mma.sync m16n8k16's
// documented layouts (mma_sync.cuh) let a lane rescale its own rows of the
// output sums when a tile raises a row's maximum, so each tile's keys are
// read and multiplied once, not twice. Tiles of 64 cells are copied by
// cp.async one tile ahead (two K and two V buffers). A warp keeps its 16
// queries as fragments in registers; a tile's scores S = Q K^T (eight
// blocks of 8 cells) stay in registers and become, rounded to f16, the
// A fragments of P V (a score block's layout is an A fragment's half).
// Grid (ceil(tokens/64), n_head), block 128, dynamic shared memory
// attn_fa::shared_bytes(D) (backend.rs mirrors it; less traps).
namespace attn_fa {

constexpr int QB = 64, CB = 64, WARPS = 4;

__host__ __device__ constexpr int shared_bytes(int d) { return (QB + 4 * CB) * (d + 8) * 2; }

// Cells c0..c0+CB-1 of kv head g into `tile` by cp.async; zeros past n_cells
// (a masked cell's weight is 0, and 0 times a stale value must stay 0).
template <int D>
__device__ __forceinline__ void copy_cells(const __half* cache, int kv_dim, int g, int c0, int n_cells, __half* tile) {
    constexpr int PER_ROW = D / 8;
#pragma unroll 4
    for (int i = threadIdx.x; i < CB * PER_ROW; i += WARPS * 32) {
        const int r = i / PER_ROW, u = i - r * PER_ROW;
        const int c = c0 + r;
        __half* dst = tile + r * (D + 8) + 8 * u;
        if (c < n_cells)
            gq::copy16_async(dst, cache + static_cast<long long>(c) * kv_dim + g * D + 8 * u);
        else
            *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
}

__device__ __forceinline__ uint32_t word_at(const __half* p) {
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

template <int D>
__device__ __forceinline__ void attention_fa(const float* __restrict__ q, const __half* __restrict__ kc,
                                             const __half* __restrict__ vc, float* __restrict__ out, int n_head,
                                             int n_head_kv, int head_dim, int cells, const int* step, int window,
                                             float kq_scale) {
    constexpr int LDH = D + 8, NB = CB / 8, ND = D / 8, KD = D / 16;
    GQ_DYNAMIC_SHARED(128, unsigned char, smem);
    if (head_dim != D || attn_tc::dynamic_shared_size() < static_cast<unsigned>(shared_bytes(D))) __trap();
    __half* Qs = reinterpret_cast<__half*>(smem);  // [QB][LDH]
    __half* KV = Qs + QB * LDH;                     // K0, V0, K1, V1: [CB][LDH] each

    const int h = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int pos0 = step[0], tokens = step[1];
    const int t0 = blockIdx.x * QB;
    if (t0 >= tokens) return;  // block-uniform
    const int last = pos0 + tokens - 1;
    const int lm = last % cells;
    const int g = h / (n_head / n_head_kv), kv_dim = n_head_kv * D;
    const int pos_max = pos0 + min(tokens, t0 + QB) - 1;
    const int n_cells = last < cells ? pos_max + 1 : cells;
    const int tiles = (n_cells + CB - 1) / CB;

    copy_cells<D>(kc, kv_dim, g, 0, n_cells, KV);
    copy_cells<D>(vc, kv_dim, g, 0, n_cells, KV + CB * LDH);
    gq::async_commit();
    attn_tc::stage_queries<D>(q, Qs, t0, tokens, n_head, h);
    __syncthreads();

    // Lane (g8, t4) holds rows g8 and g8 + 8 of the warp's 16 queries.
    const int g8 = lane >> 2, t4 = lane & 3;
    uint32_t qa[KD][4];
    {
        const __half* r0 = Qs + (warp * 16 + g8) * LDH + 2 * t4;
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
            qa[kk][0] = word_at(r0 + 16 * kk);
            qa[kk][1] = word_at(r0 + 8 * LDH + 16 * kk);
            qa[kk][2] = word_at(r0 + 16 * kk + 8);
            qa[kk][3] = word_at(r0 + 8 * LDH + 16 * kk + 8);
        }
    }
    int qt[2], qpos[2];
    bool qok[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        qt[r] = t0 + warp * 16 + g8 + 8 * r;
        qok[r] = qt[r] < tokens;
        qpos[r] = pos0 + qt[r];
    }
    // The warp's first query sees every cell up to its position where the
    // ring has not wrapped and no window applies: tiles before it need no mask.
    const int first_pos = pos0 + t0 + warp * 16;
    const bool plain = last < cells && window <= 0 && t0 + warp * 16 + 15 < tokens;
    auto visible = [&](int c, int r) {
        const int back = lm - c + (c > lm ? cells : 0);
        const int p = last - back;
        return qok[r] && c < n_cells && p >= 0 && p <= qpos[r] && !(window > 0 && qpos[r] - p >= window);
    };

    float o[ND][4];
#pragma unroll
    for (int n = 0; n < ND; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (int it = 0; it < tiles; ++it) {
        const int c0 = it * CB;
        if (it + 1 < tiles) {
            __half* next = KV + ((it + 1) & 1) * 2 * CB * LDH;
            copy_cells<D>(kc, kv_dim, g, c0 + CB, n_cells, next);
            copy_cells<D>(vc, kv_dim, g, c0 + CB, n_cells, next + CB * LDH);
            gq::async_commit();
            gq::async_wait<1>();
        } else {
            gq::async_wait<0>();
        }
        __syncthreads();  // this tile's copies (every thread's) have landed
        const __half* Ks = KV + (it & 1) * 2 * CB * LDH;
        const __half* Vs = Ks + CB * LDH;

        float s[NB][4];
#pragma unroll
        for (int j = 0; j < NB; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        // Lane l names row l % 8 of matrix l / 8: cells 8j + l % 8, dims
        // 16kk + 8 (l / 8) of a k step (two B words of cell block j), or of
        // the next block for l >= 16 (matrices 2 and 3).
#pragma unroll
        for (int kk = 0; kk < KD; ++kk)
#pragma unroll
            for (int j = 0; j < NB; j += 2) {
                uint32_t kb[4];
                gq::ldmatrix_x4<false>(kb, Ks + (8 * (j + (lane >> 4)) + (lane & 7)) * LDH + 16 * kk + 8 * ((lane >> 3) & 1));
                const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
                gq::mma_16816(s[j], qa[kk], b0);
                gq::mma_16816(s[j + 1], qa[kk], b1);
            }

        // Scale and mask; each row's maximum over the quad of lanes that share it.
        const bool all_seen = plain && c0 + CB - 1 <= first_pos && c0 + CB <= n_cells;
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int r = i >> 1, c = c0 + 8 * j + 2 * t4 + (i & 1);
                const float v = all_seen || visible(c, r) ? s[j][i] * kq_scale : -INFINITY;
                s[j][i] = v;
                mx[r] = fmaxf(mx[r], v);
            }
        float alpha[2], base[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(attn_tc::FULL, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(attn_tc::FULL, mx[r], 2));
            const float mn = fmaxf(m[r], mx[r]);
            // A row that has seen no cell yet keeps its zeros.
            base[r] = mn == -INFINITY ? 0.0f : mn;
            alpha[r] = expf(m[r] - base[r]);
            m[r] = mn;
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int n = 0; n < ND; ++n) {
            o[n][0] *= alpha[0];
            o[n][1] *= alpha[0];
            o[n][2] *= alpha[1];
            o[n][3] *= alpha[1];
        }
#pragma unroll
        for (int j = 0; j < NB; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int r = i >> 1;
                const float e = s[j][i] == -INFINITY ? 0.0f : expf(s[j][i] - base[r]);
                l[r] += e;
                s[j][i] = e;
            }
        // P V: score blocks 2k and 2k + 1 are the A fragment of cells 16k..16k+15.
#pragma unroll
        for (int k = 0; k < CB / 16; ++k) {
            const uint32_t pa[4] = {gq::pack_halves(s[2 * k][0], s[2 * k][1]), gq::pack_halves(s[2 * k][2], s[2 * k][3]),
                                    gq::pack_halves(s[2 * k + 1][0], s[2 * k + 1][1]),
                                    gq::pack_halves(s[2 * k + 1][2], s[2 * k + 1][3])};
            // Transposed: lane l names cell 16k + 8 ((l / 8) & 1) + l % 8 at
            // dims 8 (n + l / 16): B words of dim blocks n and n + 1.
            const __half* v0 = Vs + (16 * k + 8 * ((lane >> 3) & 1) + (lane & 7)) * LDH + 8 * (lane >> 4);
#pragma unroll
            for (int n = 0; n < ND; n += 2) {
                uint32_t vb[4];
                gq::ldmatrix_x4<true>(vb, v0 + 8 * n);
                const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
                gq::mma_16816(o[n], pa, b0);
                gq::mma_16816(o[n + 1], pa, b1);
            }
        }
        __syncthreads();  // every warp is done with this tile before it is refilled
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(attn_tc::FULL, l[r], 1);
        l[r] += __shfl_xor_sync(attn_tc::FULL, l[r], 2);
        if (!qok[r]) continue;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        float* dst = out + (static_cast<long long>(qt[r]) * n_head + h) * D + 2 * t4;
#pragma unroll
        for (int n = 0; n < ND; ++n)
            *reinterpret_cast<float2*>(dst + 8 * n) = make_float2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
}

}  // namespace attn_fa

// A prompt kernel of head size D from namespace NS's attention_NS<D>, with
// the launch bounds that follow.
#define ATTENTION_PROMPT(NS, D, ...)                                                                             \
    extern "C" __global__ void __launch_bounds__(__VA_ARGS__)                                                   \
        attention_prompt_##NS##D(const float* q, const __half* kc, const __half* vc, float* out, int n_head,     \
                                 int n_head_kv, int head_dim, int cells, const int* step, int window,          \
                                 float kq_scale) {                                                             \
        gq::pdl_begin();                                                                                       \
        attn_##NS::attention_##NS<D>(q, kc, vc, out, n_head, n_head_kv, head_dim, cells, step, window, kq_scale); \
    }

ATTENTION_PROMPT(tc, 64, attn_tc::WARPS * 32)
ATTENTION_PROMPT(tc, 128, attn_tc::WARPS * 32)
ATTENTION_PROMPT(fa, 64, attn_fa::WARPS * 32, 2)
ATTENTION_PROMPT(fa, 128, attn_fa::WARPS * 32, 2)
