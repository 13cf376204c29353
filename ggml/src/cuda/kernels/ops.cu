// Element-wise, normalisation, rope, KV-cache and attention kernels of the
// CUDA backend. Launch contracts are stated above each kernel; the host side
// (ggml/src/cuda/backend.rs) follows them. Positions come from device memory
// (`step`: [pos0, tokens]) so that a captured decode graph replays at any
// position.
#include <cuda_fp16.h>
#include <stdint.h>

#include "pdl.cuh"
#include "act.cuh"
#include "rope.cuh"
#include "x16.cuh"

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// The first cell of split `split` of a decode step's `splits` over n_cells
// (the next split's first is this one's end): every kernel that splits the
// cells, or finds which split holds one, takes them so.
__device__ __forceinline__ int split_start(int n_cells, int split, int splits) {
    return (int)((long long)n_cells * split / splits);
}

// Sum over a block of up to 1024 threads (a multiple of 32).
__device__ float block_sum(float v) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = lane < nw ? part[lane] : 0.0f;
    return warp_sum(v);
}

// dst[r] = src[r] / rms(src[r]) * w, one block (256 threads) per row;
// src may equal dst.
extern "C" __global__ void rms_norm(const float* src, const float* w, float* dst, int width,
                                    float eps) {
    gq::pdl_begin();
    const float* x = src + (long long)blockIdx.x * width;
    float* y = dst + (long long)blockIdx.x * width;
    float ss = 0.0f;
    if ((width & 3) == 0) {
        // float4 loads, several in flight per thread: one block per row is
        // latency-bound otherwise (a decode step has a single row).
        const float4* x4 = reinterpret_cast<const float4*>(x);
        const float4* w4 = reinterpret_cast<const float4*>(w);
        float4* y4 = reinterpret_cast<float4*>(y);
        const int n4 = width >> 2;
#pragma unroll 4
        for (int i = threadIdx.x; i < n4; i += blockDim.x) {
            const float4 v = x4[i];
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
        ss = block_sum(ss);
        const float scale = rsqrtf(ss / (float)width + eps);
#pragma unroll 4
        for (int i = threadIdx.x; i < n4; i += blockDim.x) {
            const float4 v = x4[i], g = w4[i];
            y4[i] = make_float4(v.x * scale * g.x, v.y * scale * g.y, v.z * scale * g.z, v.w * scale * g.w);
        }
        return;
    }
    for (int i = threadIdx.x; i < width; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss);
    float scale = rsqrtf(ss / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) y[i] = x[i] * scale * w[i];
}

// x[i] += bias[i % width] over n elements; any grid covering n.
extern "C" __global__ void add_bias(float* x, const float* bias, int width, long long n) {
    gq::pdl_begin();
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += bias[i % width];
}

extern "C" __global__ void add(float* x, const float* y, long long n) {
    gq::pdl_begin();
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

extern "C" __global__ void scale(float* x, float s, long long n) {
    gq::pdl_begin();
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

// dst[r][c] = src[r][col0 + c] for c < width, n = rows * width elements.
extern "C" __global__ void copy_cols(const float* src, int src_width, int col0, int width,
                                     float* dst, long long n) {
    gq::pdl_begin();
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        long long r = i / width;
        int c = (int)(i - r * width);
        dst[i] = src[r * src_width + col0 + c];
    }
}

// dst[r][k] = src[r][order[k]]: a row's inputs in a weight's stored order
// (group-quantised formats keep their inputs in group order).
extern "C" __global__ void gather_cols(const float* src, const unsigned* order, int width,
                                       float* dst, long long n) {
    gq::pdl_begin();
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        long long r = i / width;
        int c = (int)(i - r * width);
        dst[i] = src[r * width + order[c]];
    }
}

// gate = silu(gate) * up
extern "C" __global__ void swiglu(float* gate, const float* up, long long n) {
    gq::pdl_begin();
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) gate[i] = swiglu_of(gate[i], up[i]);
}

// gate = gelu(gate) * up
extern "C" __global__ void geglu(float* gate, const float* up, long long n) {
    gq::pdl_begin();
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) gate[i] = geglu_of(gate[i], up[i]);
}

// This thread's head of the block's ROPE_HEADS_PER_BLOCK (blockIdx.y's) and
// its place among the head's ROPE_HEAD_THREADS threads.
struct RopeThread {
    int head, sub;
};
__device__ __forceinline__ RopeThread rope_thread() {
    return {static_cast<int>(blockIdx.y) * ROPE_HEADS_PER_BLOCK + static_cast<int>(threadIdx.x) / ROPE_HEAD_THREADS,
            static_cast<int>(threadIdx.x) % ROPE_HEAD_THREADS};
}

// Rotates every head of `tokens` rows of n_heads * head_dim; token i is at
// position step[0] + i. grid = (tokens, ceil(n_heads / ROPE_HEADS_PER_BLOCK)),
// block = ROPE_HEADS_PER_BLOCK * ROPE_HEAD_THREADS.
extern "C" __global__ void rope(float* x, int n_heads, int head_dim, const int* step,
                                RopeParams p, const float* ff) {
    gq::pdl_begin();
    const int t = blockIdx.x;
    const RopeThread r = rope_thread();
    if (r.head < n_heads)
        rope_head(x + ((long long)t * n_heads + r.head) * head_dim, step[0] + t, p, ff, r.sub, ROPE_HEAD_THREADS);
}

// The attention block's steps between its projections and attention, in one
// launch: rope on q (n_head heads) and k (n_head_kv heads) of `tokens` rows,
// then k and v (kv_dim = n_head_kv * head_dim wide) as f16 into the cache
// cells (step[0] + t) % cells, as rope and kv_store do.
// grid = (tokens, blocks a token), block = ROPE_HEADS_PER_BLOCK *
// ROPE_HEAD_THREADS: a block takes its share of the token's q heads then k
// heads. Its threads compute the token's cosines and sines once, into
// shared memory (a prompt's block takes many heads: computed a head at a
// time, the transcendentals were most of a 512-token batch's 33 us a
// layer), then rotate the share's pairs, a thread every blockDim-th, eight
// loaded before any is stored.
extern "C" __global__ void rope_store(float* q, float* k, const float* v, int n_head, int n_head_kv,
                                      int head_dim, const int* step, RopeParams p, const float* ff,
                                      __half* kc, __half* vc, int cells) {
    gq::pdl_begin();
    constexpr int AT_ONCE = 8, MOST_PAIRS = 256;
    __shared__ float2 table[MOST_PAIRS];
    const int t = blockIdx.x, pos = step[0] + t;
    const int heads = n_head + n_head_kv, per_block = (heads + gridDim.y - 1) / gridDim.y;
    const int first = static_cast<int>(blockIdx.y) * per_block, end = min(heads, first + per_block);
    const int kv_dim = n_head_kv * head_dim, pairs = p.n_dims / 2;
    const bool tabled = pairs <= MOST_PAIRS;
    for (int i = threadIdx.x; tabled && i < pairs; i += blockDim.x) rope_cs(pos, p, ff, i, table[i].x, table[i].y);
    __syncthreads();
    auto head_of = [&](int hd) {
        return hd < n_head ? q + ((long long)t * n_head + hd) * head_dim
                           : k + (long long)t * kv_dim + (hd - n_head) * head_dim;
    };
    const int n = max(end - first, 0) * pairs;
    for (int e0 = threadIdx.x; e0 < n; e0 += AT_ONCE * blockDim.x) {
        float x0[AT_ONCE], x1[AT_ONCE];
#pragma unroll
        for (int j = 0; j < AT_ONCE; ++j) {
            const int e = e0 + j * blockDim.x;
            if (e < n) {
                const float* head = head_of(first + e / pairs);
                x0[j] = head[rope_a(p, e % pairs)];
                x1[j] = head[rope_b(p, e % pairs)];
            }
        }
#pragma unroll
        for (int j = 0; j < AT_ONCE; ++j) {
            const int e = e0 + j * blockDim.x;
            if (e >= n) continue;
            const int pair = e % pairs;
            float c, s;
            if (tabled) {
                c = table[pair].x;
                s = table[pair].y;
            } else {
                rope_cs(pos, p, ff, pair, c, s);
            }
            float* head = head_of(first + e / pairs);
            rope_turn(x0[j], x1[j], c, s, head[rope_a(p, pair)], head[rope_b(p, pair)]);
        }
    }
    __syncthreads();  // the block's key heads as its threads rotated them
    const int k0 = max(first, n_head) - n_head, k1 = end - n_head;
    if (k1 <= k0) return;
    // Eight of k and of v loaded before any is stored (one at a time, each
    // load waited for the stores before it: a prompt block's 32 key heads
    // took 16 round trips).
    const long long at = (long long)(pos % cells) * kv_dim, row = (long long)t * kv_dim;
    const int i1 = k1 * head_dim;
    for (int i0 = k0 * head_dim + static_cast<int>(threadIdx.x); i0 < i1; i0 += AT_ONCE * blockDim.x) {
        float kx[AT_ONCE], vx[AT_ONCE];
#pragma unroll
        for (int j = 0; j < AT_ONCE; ++j) {
            const int i = i0 + j * blockDim.x;
            if (i < i1) {
                kx[j] = k[row + i];
                vx[j] = v[row + i];
            }
        }
#pragma unroll
        for (int j = 0; j < AT_ONCE; ++j) {
            const int i = i0 + j * blockDim.x;
            if (i < i1) {
                kc[at + i] = __float2half_rn(kx[j]);
                vc[at + i] = __float2half_rn(vx[j]);
            }
        }
    }
}

// Stores K and V rows of `tokens` tokens (f32, kv_dim wide) as f16 in the
// cache cells (step[0] + t) % cells; both caches are [cell][kv_dim].
// grid = (tokens), block = 256.
extern "C" __global__ void kv_store(__half* kc, __half* vc, const float* k, const float* v,
                                    int kv_dim, int cells, const int* step) {
    gq::pdl_begin();
    // grid (tokens, ceil(kv_dim / blockDim)): one element per thread.
    int t = blockIdx.x;
    int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= kv_dim) return;
    long long cell = (long long)((step[0] + t) % cells);
    kc[cell * kv_dim + i] = __float2half_rn(k[(long long)t * kv_dim + i]);
    vc[cell * kv_dim + i] = __float2half_rn(v[(long long)t * kv_dim + i]);
}

#define ATT_MAX_WARPS 16
#define ATT_MAX_D 8 // head_dim up to 256
#define ATT_U 4     // cells a warp takes at once: their loads overlap

// Causal attention with an f16 cache, one block per (query token, head):
// grid = (tokens, n_head), block = 32 * warps (warps <= ATT_MAX_WARPS; the
// host gives a decode step many warps, since a single query has only n_head
// blocks to spread over the GPU). Each warp walks a share of the cells,
// ATT_U at a time, with an online softmax (running max, sum and weighted
// values in f32), then the warps' partial results merge.
// The cell of a position p is p % cells; the query at position `pos` sees
// cell c when the latest position mapped to c (at or before the batch's last
// one) is <= pos and, with a window, within it.
// The block's share of the cells: split blockIdx.z of gridDim.z. With one
// split it writes the normalised output; with several, its partial result
// (running max m, sum l, then the unnormalised values) to part[((t * n_head
// + h) * splits + split) * (head_dim + 2)], for attention_merge.
__device__ __forceinline__ void attention_range(const float* q, const __half* kc, const __half* vc, float* out,
                                                float* part, int n_head, int n_head_kv, int head_dim, int cells,
                                                const int* step, int window, float kq_scale) {
    int t = blockIdx.x, h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    int pos0 = step[0], tokens = step[1];
    int last = pos0 + tokens - 1;
    const int lm = last % cells;  // once, not a modulo per cell
    int pos = pos0 + t;
    int g = h / (n_head / n_head_kv);
    int kv_dim = n_head_kv * head_dim;
    int nd = head_dim / 32; // dims per lane: lane + 32 * j
    const float* qh = q + ((long long)t * n_head + h) * head_dim;
    float qr[ATT_MAX_D], acc[ATT_MAX_D];
#pragma unroll
    for (int j = 0; j < ATT_MAX_D; j++) {
        qr[j] = j < nd ? qh[lane + 32 * j] : 0.0f;
        acc[j] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    // Before the ring wraps, cells past this query's position hold later
    // tokens of the batch (masked anyway): skip them.
    int n_cells = last < cells ? pos + 1 : cells;
    int splits = gridDim.z, split = blockIdx.z;
    int c_lo = split_start(n_cells, split, splits);
    int c_hi = split_start(n_cells, split + 1, splits);
    for (int c0 = c_lo + warp; c0 < c_hi; c0 += ATT_U * nwarps) {
        float s[ATT_U];
        bool ok[ATT_U];
#pragma unroll
        for (int u = 0; u < ATT_U; u++) {
            int c = c0 + u * nwarps;
            int back = lm - c + (c > lm ? cells : 0);
            int p = last - back;
            ok[u] = c < c_hi && p >= 0 && p <= pos && !(window > 0 && pos - p >= window);
            s[u] = 0.0f;
            if (ok[u]) {
                const __half* kr = kc + (long long)c * kv_dim + g * head_dim;
#pragma unroll
                for (int j = 0; j < ATT_MAX_D; j++)
                    if (j < nd) s[u] += qr[j] * __half2float(kr[lane + 32 * j]);
            }
        }
        float mx = m;
#pragma unroll
        for (int u = 0; u < ATT_U; u++) {
            s[u] = warp_sum(s[u]) * kq_scale;
            if (ok[u]) mx = fmaxf(mx, s[u]);
        }
        if (mx == -INFINITY) continue;  // nothing visible yet (warp-uniform)
        float corr = expf(m - mx);
        l *= corr;
#pragma unroll
        for (int j = 0; j < ATT_MAX_D; j++) acc[j] *= corr;
#pragma unroll
        for (int u = 0; u < ATT_U; u++) {
            if (!ok[u]) continue;
            float e = expf(s[u] - mx);
            l += e;
            const __half* vr = vc + (long long)(c0 + u * nwarps) * kv_dim + g * head_dim;
#pragma unroll
            for (int j = 0; j < ATT_MAX_D; j++)
                if (j < nd) acc[j] += e * __half2float(vr[lane + 32 * j]);
        }
        m = mx;
    }
    __shared__ float sm[ATT_MAX_WARPS], sl[ATT_MAX_WARPS];
    __shared__ float sacc[ATT_MAX_WARPS][32 * ATT_MAX_D];
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < ATT_MAX_D; j++)
        if (j < nd) sacc[warp][lane + 32 * j] = acc[j];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < nwarps; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f;
    for (int w = 0; w < nwarps; w++)
        if (sm[w] != -INFINITY) L += sl[w] * expf(sm[w] - M);
    if (splits > 1) {
        float* pp = part + (((long long)t * n_head + h) * splits + split) * (head_dim + 2);
        if (threadIdx.x == 0) {
            pp[0] = M;
            pp[1] = L;
        }
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < nwarps; w++)
                if (sm[w] != -INFINITY) v += sacc[w][d] * expf(sm[w] - M);
            pp[2 + d] = v;
        }
        return;
    }
    float* o = out + ((long long)t * n_head + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < nwarps; w++)
            if (sm[w] != -INFINITY) v += sacc[w][d] * expf(sm[w] - M);
        o[d] = L > 0.0f ? v / L : 0.0f;
    }
}

extern "C" __global__ void attention(const float* q, const __half* kc, const __half* vc,
                                     float* out, int n_head, int n_head_kv, int head_dim,
                                     int cells, const int* step, int window, float kq_scale) {
    gq::pdl_begin();
    attention_range(q, kc, vc, out, nullptr, n_head, n_head_kv, head_dim, cells, step, window, kq_scale);
}

// Split-K attention for decode at depth: grid (tokens, n_head, splits), each
// block a contiguous share of the cells (a single query's n_head blocks
// cannot stream a long cache from the whole GPU), partials to `part`, then
// attention_merge.
extern "C" __global__ void attention_split(const float* q, const __half* kc, const __half* vc, float* part,
                                           int n_head, int n_head_kv, int head_dim, int cells, const int* step,
                                           int window, float kq_scale) {
    gq::pdl_begin();
    attention_range(q, kc, vc, nullptr, part, n_head, n_head_kv, head_dim, cells, step, window, kq_scale);
}

// One head's output from its splits' partials ([M, sum, D values] each):
// attention_merge's arithmetic, shared with the split that finishes last.
// Partials are read from L2 (__ldcg): another block may have just written them.
// With `q16`, the merged values are also written quantised there (x16.cuh;
// element e0 + d of X `cols` wide): every thread of a whole warp takes part.
__device__ __forceinline__ void merge_splits(const float* pp, float* o, int head_dim, int splits,
                                             uint8_t* q16 = nullptr, int e0 = 0, int cols = 0) {
    float M = -INFINITY;
    for (int s = 0; s < splits; s++) M = fmaxf(M, __ldcg(pp + s * (head_dim + 2)));
    float L = 0.0f;
    for (int s = 0; s < splits; s++) {
        float m = __ldcg(pp + s * (head_dim + 2));
        if (m != -INFINITY) L += __ldcg(pp + s * (head_dim + 2) + 1) * expf(m - M);
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < splits; s++) {
            float m = __ldcg(pp + s * (head_dim + 2));
            if (m != -INFINITY) v += __ldcg(pp + s * (head_dim + 2) + 2 + d) * expf(m - M);
        }
        const float r = L > 0.0f ? v / L : 0.0f;
        o[d] = r;
        if (q16) store_x16_warp(r, e0 + d, cols, q16);
    }
}

// After a block has written its split's partials: whether it is the last of
// the head's `splits` blocks to do so (then it merges them, and the head's
// counter goes back to zero for the next launch). The partials are made
// visible before the count is raised, as in CUDA's threadFenceReduction.
__device__ __forceinline__ bool last_split_done(unsigned* counter, int splits) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(counter, 1u) == static_cast<unsigned>(splits - 1);
        if (last) *counter = 0;
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

// The decode steps' attention for head sizes of 64, 128 and 256, as
// attention_range computes it (same grid, same split partials) but reading
// the cache 16 bytes a lane: a cell's row of D halves takes L = D / 8 lanes,
// so a warp reads 32 / L cells at once, and ATT_VU such rounds are in flight
// before any is used. (attention_range reads 2 bytes a lane and a cell a
// warp: 20% of the H200's bandwidth at a depth of 4096.) Each group of L
// lanes keeps its own running max, sum and values for its dims; the groups
// of a warp merge at the end, then the warps as in attention_range. The loop
// is warp-uniform (its shuffles need every lane); cells past the range or
// masked are skipped per group.
#ifndef ATT_VU
#define ATT_VU 4
#endif
//
// `qh` is the block's query head (D floats, global or shared memory). With
// FRESH (a decode step of one token, rope_attention_vec) the newest cell's
// key and value are not read from the cache, which another block may be
// writing meanwhile, but from `fk` and `fv` (D halves each, shared memory):
// the same values, in the same place in the order of the sums. With `q16`
// (one token; D a multiple of 32, so a warp holds whole chunks) the output
// is also written quantised there, as quantize_x16 would (x16.cuh), by the
// block that writes it.
//
// `ready` (FRESH only) runs once, by every thread, after the warp's first
// round of cells is asked of the cache and before any of it or `qh_` is
// used: the kernel waits there for the one before (pdl.cuh) and fills qh_,
// fk and fv. Only the newest cell, which no earlier step wrote, depends on
// that kernel; `step` is the host's. So the first round's reads of HBM, all
// of a short cache's, overlap the end of the product before.
struct NoWait {
    __device__ void operator()() const {}
};
template <int D, bool FRESH = false, int VU = ATT_VU, typename Ready = NoWait>
__device__ __forceinline__ void attention_range_vec(const float* qh_, const __half* kc, const __half* vc,
                                                    float* out, float* part, int n_head, int n_head_kv,
                                                    int cells, const int* step, int window, float kq_scale,
                                                    unsigned* count, const __half* fk = nullptr,
                                                    const __half* fv = nullptr, uint8_t* q16 = nullptr,
                                                    Ready ready = {}) {
    constexpr int L = D / 8, CPW = 32 / L;
    int t = blockIdx.x, h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    int sub = lane / L, sl = lane % L;
    int pos0 = step[0], tokens = step[1];
    int last = pos0 + tokens - 1;
    const int lm = last % cells;  // once, not a modulo per cell
    int pos = pos0 + t;
    int g = h / (n_head / n_head_kv);
    long long kv_dim = (long long)n_head_kv * D;
    float m = -INFINITY, l = 0.0f;
    int n_cells = last < cells ? pos + 1 : cells;
    int splits = gridDim.z, split = blockIdx.z;
    int c_lo = split_start(n_cells, split, splits);
    int c_hi = split_start(n_cells, split + 1, splits);
    const int stride = nwarps * CPW;
    uint4 kr[VU], vr[VU];
    bool ok[VU];
    // Round cw's cells into kr and vr; the newest one (FRESH) from fk and
    // fv once `fresh_ready`, else left for later (zeros).
    auto load = [&](int cw, bool fresh_ready) {
#pragma unroll
        for (int u = 0; u < VU; u++) {
            int c = cw + u * stride + sub;
            int back = lm - c + (c > lm ? cells : 0);
            int p = last - back;
            ok[u] = c < c_hi && p >= 0 && p <= pos && !(window > 0 && pos - p >= window);
            if (FRESH && ok[u] && c == lm) {
                if (fresh_ready) {
                    kr[u] = *reinterpret_cast<const uint4*>(fk + 8 * sl);
                    vr[u] = *reinterpret_cast<const uint4*>(fv + 8 * sl);
                } else {
                    kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
                }
            } else if (ok[u]) {
                long long at = (long long)c * kv_dim + g * D + 8 * sl;
                kr[u] = *reinterpret_cast<const uint4*>(kc + at);
                vr[u] = *reinterpret_cast<const uint4*>(vc + at);
            } else {
                kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
            }
        }
    };
    int cw = c_lo + warp * CPW;
    // The first round asked for before `ready` (FRESH), its newest cell after.
    bool loaded = FRESH && cw < c_hi;
    if (loaded) load(cw, false);
    ready();
    if (loaded) {
#pragma unroll
        for (int u = 0; u < VU; u++) {
            if (ok[u] && cw + u * stride + sub == lm) {
                kr[u] = *reinterpret_cast<const uint4*>(fk + 8 * sl);
                vr[u] = *reinterpret_cast<const uint4*>(fv + 8 * sl);
            }
        }
    }
    const float* qh = qh_ + 8 * sl;
    float qr[8], acc[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        qr[i] = qh[i];
        acc[i] = 0.0f;
    }
    for (; cw < c_hi; cw += VU * stride) {
        if (!loaded) load(cw, true);
        loaded = false;
        float s[VU];
        float mx = m;
#pragma unroll
        for (int u = 0; u < VU; u++) {
            const __half2* k2 = reinterpret_cast<const __half2*>(&kr[u]);
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 kf = __half22float2(k2[i]);
                d += qr[2 * i] * kf.x + qr[2 * i + 1] * kf.y;
            }
#pragma unroll
            for (int off = L / 2; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
            s[u] = d * kq_scale;
            if (ok[u]) mx = fmaxf(mx, s[u]);
        }
        if (mx == -INFINITY) continue;  // nothing visible to this group yet (no shuffles follow)
        float corr = expf(m - mx);
        l *= corr;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] *= corr;
#pragma unroll
        for (int u = 0; u < VU; u++) {
            if (!ok[u]) continue;
            float e = expf(s[u] - mx);
            l += e;
            const __half2* v2 = reinterpret_cast<const __half2*>(&vr[u]);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 vf = __half22float2(v2[i]);
                acc[2 * i] += e * vf.x;
                acc[2 * i + 1] += e * vf.y;
            }
        }
        m = mx;
    }
    // The warp's groups into one (every lane takes part).
#pragma unroll
    for (int off = L; off < 32; off <<= 1) {
        float mo = __shfl_xor_sync(0xffffffffu, m, off);
        float lo = __shfl_xor_sync(0xffffffffu, l, off);
        float M = fmaxf(m, mo);
        float a = m == -INFINITY ? 0.0f : expf(m - M);
        float b = mo == -INFINITY ? 0.0f : expf(mo - M);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float ao = __shfl_xor_sync(0xffffffffu, acc[i], off);
            acc[i] = acc[i] * a + ao * b;
        }
        l = l * a + lo * b;
        m = M;
    }
    __shared__ float sm[ATT_MAX_WARPS], sl_[ATT_MAX_WARPS];
    __shared__ float sacc[ATT_MAX_WARPS][D];
    if (lane == 0) {
        sm[warp] = m;
        sl_[warp] = l;
    }
    if (sub == 0) {
#pragma unroll
        for (int i = 0; i < 8; i++) sacc[warp][8 * sl + i] = acc[i];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < nwarps; w++) M = fmaxf(M, sm[w]);
    float Lsum = 0.0f;
    for (int w = 0; w < nwarps; w++)
        if (sm[w] != -INFINITY) Lsum += sl_[w] * expf(sm[w] - M);
    float* o = out + ((long long)t * n_head + h) * D;
    if (splits > 1) {
        float* pp = part + (((long long)t * n_head + h) * splits + split) * (D + 2);
        if (threadIdx.x == 0) {
            pp[0] = M;
            pp[1] = Lsum;
        }
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < nwarps; w++)
                if (sm[w] != -INFINITY) v += sacc[w][d] * expf(sm[w] - M);
            pp[2 + d] = v;
        }
        if (count && last_split_done(count + (long long)t * n_head + h, splits))
            merge_splits(part + ((long long)t * n_head + h) * splits * (D + 2), o, D, splits, q16, h * D, n_head * D);
        return;
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < nwarps; w++)
            if (sm[w] != -INFINITY) v += sacc[w][d] * expf(sm[w] - M);
        const float r = Lsum > 0.0f ? v / Lsum : 0.0f;
        o[d] = r;
        if (q16) store_x16_warp(r, h * D + d, n_head * D, q16);
    }
}

// attention_vec<D>(q, kc, vc, out, part, n_head, n_head_kv, cells, step,
// window, kq_scale, count, q16): grid (tokens, n_head, splits), block 32 *
// warps (<= 16); with one split the output, with several the partials, which
// attention_merge merges, or with `count` (tokens x n_head counters, zero
// before the launch and after it) the split that finishes last. `q16` (one
// token, or null): the output quantised too where this launch writes it.
// The _vu8 kernels keep eight rounds in flight rather than ATT_VU (for
// timing them: LLM_CUDA_ATT_VU=8).
#define ATTENTION_VEC_VU(D, VU, SUFFIX)                                                                        \
    extern "C" __global__ void attention_vec##D##SUFFIX(const float* q, const __half* kc, const __half* vc,    \
                                                        float* out, float* part, int n_head, int n_head_kv,    \
                                                        int cells, const int* step, int window,                \
                                                        float kq_scale, unsigned* count, uint8_t* q16) {       \
        gq::pdl_begin();                                                                                       \
        const float* qh = q + ((long long)blockIdx.x * n_head + blockIdx.y) * D;                               \
        attention_range_vec<D, false, VU>(qh, kc, vc, out, part, n_head, n_head_kv, cells, step, window,       \
                                          kq_scale, count, nullptr, nullptr, q16);                             \
    }
#define ATTENTION_VEC(D) ATTENTION_VEC_VU(D, ATT_VU, ) ATTENTION_VEC_VU(D, 8, _vu8)
ATTENTION_VEC(64)
ATTENTION_VEC(128)
ATTENTION_VEC(256)

// A decode step's rope_store and attention_vec<D> in one launch, for one
// token (step[1] == 1) and an f16 cache: each block ropes its query head in
// shared memory (as rope_head does in place); the blocks of the split that
// holds the new cell rope their group's key head there too and take the new
// cell's key and value from there (attention_range_vec's FRESH), and the
// first query head of each group among them stores them into the cache. The
// results and the cache equal rope_store's then attention_vec's; q and k are
// left unrotated.
//
// In a launch of one split, before it waits for the kernel before (the
// product that wrote q, k and v), a block computes rope's cosines and sines
// (the position is the host's) and asks the cache for its first round of
// cells (attention_range_vec's `ready`); after, q's pairs and k's turn on
// different threads at once.
// rope_attention_vec<D>(q, k, v, kc, vc, out, part, n_head, n_head_kv,
// cells, step, window, kq_scale, p, ff, count, q16): grid (1, n_head,
// splits), block and `count` as attention_vec's; `q16` (or null): the
// output quantised too where this launch writes it (attention_range_vec).
template <int D, int VU>
__device__ __forceinline__ void rope_attention_vec(const float* q, const float* k, const float* v, __half* kc,
                                                   __half* vc, float* out, float* part, int n_head, int n_head_kv,
                                                   int cells, const int* step, int window, float kq_scale,
                                                   const RopeParams& p, const float* ff, unsigned* count,
                                                   uint8_t* q16) {
    __shared__ float qs[D], ks[D], rc[D / 2], rs[D / 2];
    __shared__ __align__(16) __half kh[D], vh[D];
    const int h = blockIdx.y, group = n_head / n_head_kv, g = h / group;
    const int pos = step[0];
    // The split that holds the new cell, as attention_range_vec splits; the
    // other splits' blocks (most of them over a long cache) rope q alone.
    const int lm = pos % cells, n_cells = pos < cells ? pos + 1 : cells;
    const int splits = gridDim.z, split = blockIdx.z;
    const int c_lo = split_start(n_cells, split, splits);
    const int c_hi = split_start(n_cells, split + 1, splits);
    const bool fresh = c_lo <= lm && lm < c_hi;  // block-uniform
    const bool stores = fresh && h % group == 0;
    const long long at = (long long)lm * n_head_kv * D + (long long)g * D;
    if (splits > 1) {
        // A split launch (a cache of 1024 cells or more) waits first, as
        // before session 46: test_ops' split cases failed on an H100 with
        // the early start and the cause is not found yet.
        gq::pdl_begin();
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            qs[i] = q[(long long)h * D + i];
            if (fresh) ks[i] = k[(long long)g * D + i];
        }
        __syncthreads();
        rope_head(qs, pos, p, ff);
        if (fresh) {
            rope_head(ks, pos, p, ff);
            __syncthreads();
            for (int i = threadIdx.x; i < D; i += blockDim.x) {
                kh[i] = __float2half_rn(ks[i]);
                vh[i] = __float2half_rn(v[(long long)g * D + i]);
            }
        }
        __syncthreads();
        if (stores) {
            for (int i = threadIdx.x; i < D; i += blockDim.x) {
                kc[at + i] = kh[i];
                vc[at + i] = vh[i];
            }
        }
        attention_range_vec<D, true, VU>(qs, kc, vc, out, part, n_head, n_head_kv, cells, step, window, kq_scale,
                                         count, kh, vh, q16);
        return;
    }
    const int pairs = p.n_dims / 2;
    for (int pair = threadIdx.x; pair < pairs; pair += blockDim.x) rope_cs(pos, p, ff, pair, rc[pair], rs[pair]);
    auto ready = [&] {
        gq::pdl_begin();
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            qs[i] = q[(long long)h * D + i];
            if (fresh) {
                ks[i] = k[(long long)g * D + i];
                const __half hv = __float2half_rn(v[(long long)g * D + i]);
                vh[i] = hv;
                if (stores) vc[at + i] = hv;
            }
        }
        __syncthreads();
        // Pair j of q (j < pairs) or of k (j - pairs), rope_head's turn.
        for (int j = threadIdx.x; j < (fresh ? 2 : 1) * pairs; j += blockDim.x) {
            float* head = j < pairs ? qs : ks;
            const int pair = j < pairs ? j : j - pairs;
            const int a = rope_a(p, pair), b = rope_b(p, pair);
            rope_turn(head[a], head[b], rc[pair], rs[pair], head[a], head[b]);
        }
        __syncthreads();
        if (fresh) {
            for (int i = threadIdx.x; i < D; i += blockDim.x) {
                const __half hk = __float2half_rn(ks[i]);
                kh[i] = hk;
                if (stores) kc[at + i] = hk;
            }
            __syncthreads();
        }
    };
    attention_range_vec<D, true, VU>(qs, kc, vc, out, part, n_head, n_head_kv, cells, step, window, kq_scale,
                                     count, kh, vh, q16, ready);
}

// The kernel waits inside (rope_attention_vec's `ready`).
#define ROPE_ATTENTION_VEC_VU(D, VU, SUFFIX)                                                                     \
    extern "C" __global__ void rope_attention_vec##D##SUFFIX(                                                      \
        const float* q, const float* k, const float* v, __half* kc, __half* vc, float* out, float* part,          \
        int n_head, int n_head_kv, int cells, const int* step, int window, float kq_scale, RopeParams p,          \
        const float* ff, unsigned* count, uint8_t* q16) {                                                         \
        rope_attention_vec<D, VU>(q, k, v, kc, vc, out, part, n_head, n_head_kv, cells, step, window, kq_scale, \
                                  p, ff, count, q16);                                                              \
    }
#define ROPE_ATTENTION_VEC(D) ROPE_ATTENTION_VEC_VU(D, ATT_VU, ) ROPE_ATTENTION_VEC_VU(D, 8, _vu8)
ROPE_ATTENTION_VEC(64)
ROPE_ATTENTION_VEC(128)
ROPE_ATTENTION_VEC(256)

// out[t][h] from the splits' partials: grid (tokens, n_head), any block size.
extern "C" __global__ void attention_merge(const float* part, float* out, int n_head, int head_dim, int splits) {
    gq::pdl_begin();
    int t = blockIdx.x, h = blockIdx.y;
    merge_splits(part + ((long long)t * n_head + h) * splits * (head_dim + 2),
                 out + ((long long)t * n_head + h) * head_dim, head_dim, splits);
}

#define AQ 8   // queries (one warp each) per block of attention_prompt
#define AC 32  // cells per tile: one a lane for the scores
#define ATT_LDS (32 * ATT_MAX_D + 2) // halves per staged cell row: an odd word count, conflict-free

// Causal attention for prompt batches: the same contract as `attention`, but
// a block takes AQ consecutive queries of one head (grid = (ceil(tokens/AQ),
// n_head), block = 32 * AQ) and walks the cells in tiles of AC staged in
// shared memory, so that each K and V row is read from the cache once per AQ
// queries instead of once per query. Scores: lane = cell; values: lane =
// dims lane + 32 j, the tile's softmax weights broadcast by shuffles.
extern "C" __global__ void __launch_bounds__(32 * AQ)
attention_prompt(const float* q, const __half* kc, const __half* vc, float* out, int n_head, int n_head_kv,
                 int head_dim, int cells, const int* step, int window, float kq_scale) {
    gq::pdl_begin();
    __shared__ float qs[AQ][32 * ATT_MAX_D];
    __shared__ __align__(16) __half ks[AC][ATT_LDS];
    __shared__ __align__(16) __half vs[AC][ATT_LDS];
    int h = blockIdx.y;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int pos0 = step[0], tokens = step[1];
    int last = pos0 + tokens - 1;
    const int lm = last % cells;  // once, not a modulo per cell
    int t = blockIdx.x * AQ + warp;
    bool qok = t < tokens;
    int pos = pos0 + t;
    int g = h / (n_head / n_head_kv);
    int kv_dim = n_head_kv * head_dim;
    int nd = head_dim / 32;
    for (int d = lane; d < head_dim; d += 32)
        qs[warp][d] = qok ? q[((long long)t * n_head + h) * head_dim + d] : 0.0f;
    float acc[ATT_MAX_D];
#pragma unroll
    for (int j = 0; j < ATT_MAX_D; j++) acc[j] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    // The cells the block's last query may see (before the ring wraps,
    // later ones hold later tokens of the batch).
    int pos_max = pos0 + min(tokens, (int)(blockIdx.x + 1) * AQ) - 1;
    int n_cells = last < cells ? pos_max + 1 : cells;
    int hd2 = head_dim / 2;
    for (int c0 = 0; c0 < n_cells; c0 += AC) {
        __syncthreads();  // the previous tile is consumed (and qs written, the first time)
        for (int i = threadIdx.x; i < AC * hd2; i += blockDim.x) {
            int cc = i / hd2, d2 = i - cc * hd2;
            int c = c0 + cc;
            __half2 kv2 = __floats2half2_rn(0.0f, 0.0f), vv2 = kv2;
            if (c < n_cells) {
                kv2 = reinterpret_cast<const __half2*>(kc + (long long)c * kv_dim + g * head_dim)[d2];
                vv2 = reinterpret_cast<const __half2*>(vc + (long long)c * kv_dim + g * head_dim)[d2];
            }
            *reinterpret_cast<__half2*>(&ks[cc][2 * d2]) = kv2;
            *reinterpret_cast<__half2*>(&vs[cc][2 * d2]) = vv2;
        }
        __syncthreads();
        int c = c0 + lane;
        int back = lm - c + (c > lm ? cells : 0);
        int p = last - back;
        bool visible = qok && c < n_cells && p >= 0 && p <= pos && !(window > 0 && pos - p >= window);
        float s = 0.0f;
#pragma unroll 4
        for (int d2 = 0; d2 < hd2; d2++) {
            float2 kf = __half22float2(*reinterpret_cast<const __half2*>(&ks[lane][2 * d2]));
            s = fmaf(qs[warp][2 * d2], kf.x, s);
            s = fmaf(qs[warp][2 * d2 + 1], kf.y, s);
        }
        s = visible ? s * kq_scale : -INFINITY;
        float m_new = fmaxf(m, warp_max(s));
        if (m_new == -INFINITY) continue;  // nothing visible yet (warp-uniform)
        float corr = expf(m - m_new);
        float e = visible ? expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(e);
#pragma unroll
        for (int j = 0; j < ATT_MAX_D; j++) acc[j] *= corr;
        for (int cc = 0; cc < AC; cc++) {
            float pc = __shfl_sync(FULL_MASK, e, cc);
            if (pc == 0.0f) continue;  // warp-uniform
#pragma unroll
            for (int j = 0; j < ATT_MAX_D; j++)
                if (j < nd) acc[j] = fmaf(pc, __half2float(vs[cc][lane + 32 * j]), acc[j]);
        }
        m = m_new;
    }
    if (!qok) return;
    float* o = out + ((long long)t * n_head + h) * head_dim;
#pragma unroll
    for (int j = 0; j < ATT_MAX_D; j++)
        if (j < nd) o[lane + 32 * j] = l > 0.0f ? acc[j] / l : 0.0f;
}
