// ---------------------------------------------------------------- one token, X-stationary
//
// Included by matmul.cu after matvec1 and matvec1f, whose contract this keeps (parts,
// epilogues, the fused input norm, X quantised to 16 bits into shared
// memory once a block, blocks that loop over groups of rows `gridDim.x`
// apart, rows split over S warps) for Q4_K rows that start 16-byte aligned,
// without input orders. matvec1 reads a lane's 32 values of X back out of
// shared memory for every row group (four 16-byte loads a chunk, against
// one for the weights), and on the H200 that traffic, not the arithmetic,
// held its large products to 1.7-2.0 TB/s (README, "What a one-token product
// could reach"). Here each lane copies its share of X into registers once,
// as q4k_lanes.cuh maps it, and keeps it for every row it takes; after
// that only weights cross L1. A warp keeps X for at most xs_segments
// segments of 1024 (80 registers for four), so longer rows are split over
// S warps (the host's stationary_split), whose partial sums meet in shared memory,
// double-buffered by the loop's parity so that one block barrier a row
// group suffices.
#pragma once

template <int OUT>
__device__ __forceinline__ constexpr bool xs_glu() {
    return OUT == MV1_SWIGLU || OUT == MV1_GEGLU;
}
// Rows a warp takes at once (gate and up for a glu) and the segments of X
// it keeps (fewer for a glu, whose two rows' weights are in flight at once).
template <int OUT>
__device__ __forceinline__ constexpr int xs_rows() {
    return xs_glu<OUT>() ? 2 : 1;
}
// Q5_K's and Q6_K's unpacking takes more registers: three segments (their
// four spilled). Float weights keep X as floats (32 registers a segment):
// two segments of F16 or BF16, one of F32 or for a glu. Mirrored by
// cuda/matvec1.rs's stationary_segments.
template <int T, int OUT>
__device__ __forceinline__ constexpr int xs_segments() {
    if constexpr (T == F32 || T == F16 || T == BF16) return T == F32 || xs_glu<OUT>() ? 1 : 2;
    return xs_glu<OUT>() ? 2 : (T == Q5_K || T == Q6_K ? 3 : 4);
}

// A warp's place in an X-stationary launch: piece `kw` of row group `group`
// (S pieces a group), taking segments first .. first + count - 1 of each
// row; `nvb` row groups in all, block `vb`'s a gridDim.x apart.
template <int NSEG, bool GLU>
struct XsWarp {
    int lane, warp, groups, group, kw, nvb, nseg, first, count;
    __device__ __forceinline__ XsWarp(const Mv1Parts& parts, int cols, int S) {
        lane = threadIdx.x & 31;
        warp = threadIdx.x >> 5;
        groups = MV1_WARPS / S;
        group = warp / S;
        kw = warp % S;
        nvb = mv1_groups_of_rows(parts, groups, GLU);
        nseg = (cols + MV_SEG - 1) / MV_SEG;
        const int run = (nseg + S - 1) / S;
        first = min(nseg, kw * run);
        count = min(nseg, first + run) - first;
        if (count > NSEG) __trap();  // the host's split keeps every warp's X in its registers
    }
    // Row group `vb`'s rows for this warp.
    template <int R>
    __device__ __forceinline__ Mv1Rows<R, GLU> rows(const Mv1Parts& parts, int vb, long long row_bytes) const {
        return mv1_rows<R, GLU>(parts, vb, groups, group, row_bytes);
    }
    // The warp's segments of the row group after `vb`, if any, asked of L2.
    template <int T, int R>
    __device__ __forceinline__ void prefetch_next(const Mv1Parts& parts, int vb, int cols, long long row_bytes) const {
        if (vb + static_cast<int>(gridDim.x) >= nvb) return;
        const Mv1Rows<R, GLU> N = rows<R>(parts, vb + gridDim.x, row_bytes);
        mv1_prefetch<T, R>(N.row, N.active, first, count, cols, lane);
    }
};

// Q4_K's lanes: lane l takes super-block l / 8 of every four (sbo) and
// piece j = l % 8 of its nibbles (16 weights of chunks 2p and 2p + 1,
// p = j / 2), with one 16-byte load, and its super-block's header with
// another (q4k_lanes.cuh). Row i's segment s starts at xs_q4k_piece.
constexpr int XS_Q4K_SB_BYTES = 144;  // a Q4_K super-block: 16 bytes of header, 128 of nibbles
__device__ __forceinline__ const uint4* xs_q4k_piece(const uint8_t* row, int segment, int sbo) {
    return reinterpret_cast<const uint4*>(row + static_cast<long long>(segment * 4 + sbo) * XS_Q4K_SB_BYTES);
}

// The first row group's weights staged in shared memory, each thread's own
// (a header and a piece of nibbles for each of at most four rows'
// segments; consecutive threads 16 bytes apart), after X's bytes:
// XS_Q4K_STAGE bytes a block more (cuda/matvec1.rs's Q4K_STAGE_BYTES).
constexpr int XS_Q4K_STAGE = 4 * 2 * MV1_WARPS * 32 * 16;
__device__ __forceinline__ uint8_t* xs_q4k_stage(uint8_t* xq, int cols, int k) {
    return xq + (((cols >> 5) * 80 + 15) & ~15) + k * (MV1_WARPS * 32 * 16) + threadIdx.x * 16;
}

// Before the wait for the kernel before (pdl.cuh), where gate and up are
// taken early (EARLY below): the block's first row group's weights are
// copied into the threads' stages (cp.async) and L2 is asked for its
// second group's, so that both cross while the kernel before finishes and
// while X is normed and quantised. Weights are never written by a kernel.
// (Only gate and up: the single-row variants have no registers to spare,
// ptxas keeps them at 128, and each form of this that was tried there
// spilled X's scales in their loop.)
template <int OUT>
__device__ __forceinline__ void xs_q4k_stage_first(const Mv1Parts& parts, int cols, long long row_bytes, int S) {
    constexpr bool GLU = xs_glu<OUT>();
    constexpr int R = xs_rows<OUT>(), NSEG = xs_segments<Q4_K, OUT>();
    static_assert(R * NSEG <= 4, "a stage holds four rows' segments");
    const XsWarp<NSEG, GLU> wp(parts, cols, S);
    if (static_cast<int>(blockIdx.x) >= wp.nvb) return;
    GQ_DYNAMIC_SHARED(16, uint8_t, xq);
    const int sbo = wp.lane >> 3, j = wp.lane & 7, nsb = cols >> 8;
    const Mv1Rows<R, GLU> B = wp.template rows<R>(parts, blockIdx.x, row_bytes);
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int s = 0; s < NSEG; ++s) {
            if (s >= wp.count || (wp.first + s) * 4 + sbo >= nsb) continue;
            const uint4* b = xs_q4k_piece(B.row[i], wp.first + s, sbo);
            copy16_async(xs_q4k_stage(xq, cols, 2 * (i * NSEG + s)), b);
            copy16_async(xs_q4k_stage(xq, cols, 2 * (i * NSEG + s) + 1), b + 1 + j);
        }
    async_commit();
    wp.template prefetch_next<Q4_K, R>(parts, blockIdx.x, cols, row_bytes);
}

// EARLY: the first row group's weights come from the thread's stage
// (xs_q4k_stage_first), the others straight from global memory.
template <int OUT, bool EARLY>
__device__ __forceinline__ void matvec1_xs_direct(const float* __restrict__ X, const Mv1Parts& parts, int cols,
                                           long long row_bytes, int S, const float* __restrict__ norm_w,
                                           float eps) {
    constexpr bool GLU = xs_glu<OUT>();
    constexpr int R = xs_rows<OUT>(), NSEG = xs_segments<Q4_K, OUT>();
    GQ_DYNAMIC_SHARED(16, uint8_t, xq);
    __shared__ float partial[2][MV1_WARPS][R];
    const XsWarp<NSEG, GLU> wp(parts, cols, S);
    const int lane = wp.lane, first = wp.first, count = wp.count;
    const int nchunks = cols >> 5, nsb = cols >> 8;
    // This lane's super-block of each four, and its bytes of that one's nibbles.
    const int sbo = lane >> 3, j = lane & 7, p = j >> 1, h = j & 1;

    const float nscale = norm_w ? mv1_norm_scale(X, cols, eps) : 1.0f;
    mv1_quantize_x(X, nullptr, xq, cols, norm_w, nscale);
    __syncthreads();

    // The lane's X: values 16h .. 16h + 15 (pieces 2h and 2h + 1 of
    // mv1_quantize_x's swizzled layout) of chunks c = 2p and c + 1 of its
    // super-block in each of its segments.
    const float* scales = reinterpret_cast<const float*>(xq + 64 * nchunks);
    const float* sums = scales + nchunks;
    LaneX<int16_t> x[NSEG];
    unsigned has = 0;  // bit s: the lane has a super-block in its segment s
#pragma unroll
    for (int s = 0; s < NSEG; ++s) {
        const int sb = (first + s) * 4 + sbo;
        if (s < count && sb < nsb) has |= 1u << s;
        const int c = has >> s & 1 ? sb * 8 + 2 * p : 0;
#pragma unroll
        for (int k = 0; k < 2; ++k) {
            x[s].lo[k] = *reinterpret_cast<const uint4*>(xq + 64 * c + 16 * ((2 * h + k) ^ (c & 3)));
            x[s].hi[k] = *reinterpret_cast<const uint4*>(xq + 64 * (c + 1) + 16 * ((2 * h + k) ^ ((c + 1) & 3)));
        }
        x[s].dlo = scales[c];
        x[s].dhi = scales[c + 1];
        x[s].slo = sums[c];
        x[s].shi = sums[c + 1];
    }

    for (int vb = blockIdx.x, it = 0; vb < wp.nvb; vb += gridDim.x, ++it) {
        // The next row group's weights into L2 (this one's were asked for
        // the same way, or by mv1_prologue), then every load of this one
        // before any is used.
        // (The staged first group's prologue asked L2 for the next already.)
        const bool staged = EARLY && it == 0;
        if (!staged) wp.template prefetch_next<Q4_K, R>(parts, vb, cols, row_bytes);
        const Mv1Rows<R, GLU> B = wp.template rows<R>(parts, vb, row_bytes);
        uint4 hd[R][NSEG], qs[R][NSEG];
        // The thread's own stage needs no barrier: no other thread reads it.
        if (staged) async_wait<0>();
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int s = 0; s < NSEG; ++s) {
                if (!(has >> s & 1)) continue;
                if (staged) {
                    hd[i][s] = *reinterpret_cast<const uint4*>(xs_q4k_stage(xq, cols, 2 * (i * NSEG + s)));
                    qs[i][s] = *reinterpret_cast<const uint4*>(xs_q4k_stage(xq, cols, 2 * (i * NSEG + s) + 1));
                } else {
                    const uint4* b = xs_q4k_piece(B.row[i], first + s, sbo);
                    hd[i][s] = __ldg(b);
                    qs[i][s] = __ldg(b + 1 + j);
                }
            }
        float acc[R];
#pragma unroll
        for (int i = 0; i < R; ++i) {
            acc[i] = 0.0f;
#pragma unroll
            for (int s = 0; s < NSEG; ++s)
                if (has >> s & 1) acc[i] += q4k_lane(hd[i][s], qs[i][s], x[s], p, h == 0);
        }
        mv1_finish<OUT>(acc, partial[it & 1], parts, B, S);
    }
}

// The same for the types whose rows are not read directly (Q4_0, Q4_1,
// Q5_0, Q8_0, Q5_K, Q6_K: blocks of 18 to 210 bytes, 2-byte aligned): a
// row group's segments are copied into the warp's shared-memory slots
// (mv_fetch: 16-byte cp.async pieces, all the group's rows and segments at
// once), the next group's are asked of L2 meanwhile, and lane l takes
// chunk l of each segment, as matvec1's staged path does, but against X in
// registers: 32 values of its chunk, its scale, sum and half sums a
// segment. Dynamic shared memory: X as matvec1's, then the slots,
// [warp][row][segment], mv_slot_bytes(T) each.
template <int T, int OUT>
__device__ __forceinline__ void matvec1_xs_staged(const float* __restrict__ X, const Mv1Parts& parts, int cols,
                                                  long long row_bytes, int S, const float* __restrict__ norm_w,
                                                  float eps) {
    constexpr bool GLU = xs_glu<OUT>();
    constexpr int R = xs_rows<OUT>(), NSEG = xs_segments<T, OUT>();
    constexpr int SLOT = mv_slot_bytes(T), OFFSET = int_offset(T);
    GQ_DYNAMIC_SHARED(16, uint8_t, xq);
    __shared__ float partial[2][MV1_WARPS][R];
    const XsWarp<NSEG, GLU> wp(parts, cols, S);
    const int lane = wp.lane, first = wp.first, count = wp.count;
    const int nchunks = cols >> 5;
    const int x_bytes = ((cols >> 5) * 80 + 15) & ~15;
    uint8_t* const slots = xq + x_bytes + wp.warp * (R * NSEG * SLOT);

    const float nscale = norm_w ? mv1_norm_scale(X, cols, eps) : 1.0f;
    mv1_quantize_x(X, nullptr, xq, cols, norm_w, nscale);
    __syncthreads();

    // The lane's X: chunk (first + s) * 32 + lane of each of its segments.
    const float* scales = reinterpret_cast<const float*>(xq + 64 * nchunks);
    const float* sums = scales + nchunks;
    const int2* halves = reinterpret_cast<const int2*>(sums + nchunks);
    uint4 x[NSEG][4];
    float dx[NSEG], sx[NSEG];
    int2 half[NSEG];
    unsigned has = 0;  // bit s: the lane has a chunk in its segment s
#pragma unroll
    for (int s = 0; s < NSEG; ++s) {
        const int c0 = (first + s) * 32 + lane;
        if (s < count && c0 < nchunks) has |= 1u << s;
        const int c = has >> s & 1 ? c0 : 0;
#pragma unroll
        for (int p = 0; p < 4; ++p) x[s][p] = *reinterpret_cast<const uint4*>(xq + 64 * c + 16 * (p ^ (c & 3)));
        dx[s] = scales[c];
        sx[s] = sums[c];
        half[s] = OFFSET != 0 ? halves[c] : make_int2(0, 0);
    }

    for (int vb = blockIdx.x, it = 0; vb < wp.nvb; vb += gridDim.x, ++it) {
        const Mv1Rows<R, GLU> B = wp.template rows<R>(parts, vb, row_bytes);
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int s = 0; s < NSEG; ++s)
                if (B.active[i] && s < count) mv_fetch<T>(B.row[i], first + s, cols, slots + (i * NSEG + s) * SLOT, lane);
        async_commit();
        wp.template prefetch_next<T, R>(parts, vb, cols, row_bytes);
        async_wait<0>();
        __syncwarp();
        float acc[R];
#pragma unroll
        for (int i = 0; i < R; ++i) {
            acc[i] = 0.0f;
#pragma unroll
            for (int s = 0; s < NSEG; ++s) {
                if (!(has >> s & 1) || !B.active[i]) continue;
                const uintptr_t at =
                    reinterpret_cast<uintptr_t>(B.row[i]) + static_cast<uintptr_t>(first + s) * mv_seg_bytes(T);
                const uint8_t* slot = slots + (i * NSEG + s) * SLOT;
                IntChunk w;
                if ((at & 15) == 0)
                    int_chunk_raw<T, true>(slot, lane, w);
                else
                    int_chunk_raw<T, false>(slot + (at & 15), lane, w);
                int s0 = -OFFSET * half[s].x, s1 = -OFFSET * half[s].y;
#pragma unroll
                for (int p = 0; p < 4; ++p) {
                    int& d = p < 2 ? s0 : s1;
                    d = __dp2a_lo(static_cast<int>(x[s][p].x), w.q[2 * p], d);
                    d = __dp2a_hi(static_cast<int>(x[s][p].y), w.q[2 * p], d);
                    d = __dp2a_lo(static_cast<int>(x[s][p].z), w.q[2 * p + 1], d);
                    d = __dp2a_hi(static_cast<int>(x[s][p].w), w.q[2 * p + 1], d);
                }
                acc[i] += dx[s] * (w.a0 * static_cast<float>(s0) + w.a1 * static_cast<float>(s1)) - w.m * sx[s];
            }
        }
        __syncwarp();  // the slots are read before the next group's copies overwrite them
        mv1_finish<OUT>(acc, partial[it & 1], parts, B, S);
    }
}

// The float types (F32, F16, BF16): no quantised X and no staging, as
// matvec1f, whose lane mapping this keeps (lane l's piece j of a segment is
// elements 8 (l + 32 j) .. + 7), but X is read (and normed) once into
// registers, 32 floats a segment, rather than through L1 for every row.
template <int T, int OUT>
__device__ __forceinline__ void matvec1f_xs(const float* __restrict__ X, const Mv1Parts& parts, int cols,
                                            long long row_bytes, int S, const float* __restrict__ norm_w,
                                            float eps) {
    constexpr bool GLU = xs_glu<OUT>();
    constexpr int R = xs_rows<OUT>(), NSEG = xs_segments<T, OUT>();
    constexpr int NW = T == F32 ? 2 : 1;  // 16-byte loads a piece
    __shared__ float partial[2][MV1_WARPS][R];
    const XsWarp<NSEG, GLU> wp(parts, cols, S);
    const int lane = wp.lane, first = wp.first, count = wp.count;

    const float nscale = norm_w ? mv1_norm_scale(X, cols, eps) : 1.0f;
    float x[NSEG][4][8];
#pragma unroll
    for (int s = 0; s < NSEG; ++s)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int e = (first + s) * MV_SEG + 8 * (lane + 32 * j);
            if (s < count && e < cols) {
                mv1f_x(X, nullptr, e, x[s][j], norm_w, nscale);
            } else {
#pragma unroll
                for (int k = 0; k < 8; ++k) x[s][j][k] = 0.0f;
            }
        }

    for (int vb = blockIdx.x, it = 0; vb < wp.nvb; vb += gridDim.x, ++it) {
        wp.template prefetch_next<T, R>(parts, vb, cols, row_bytes);
        const Mv1Rows<R, GLU> B = wp.template rows<R>(parts, vb, row_bytes);
        bool a16 = (row_bytes & 15) == 0;
#pragma unroll
        for (int i = 0; i < R; ++i) a16 = a16 && (reinterpret_cast<uintptr_t>(B.row[i]) & 15) == 0;
        uint4 raw[R][NSEG][4][NW];
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int s = 0; s < NSEG; ++s)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int e = (first + s) * MV_SEG + 8 * (lane + 32 * j);
                    if (B.active[i] && s < count && e < cols) mv1f_load<T>(B.row[i], e, a16, raw[i][s][j]);
                }
        float acc[R];
#pragma unroll
        for (int i = 0; i < R; ++i) {
            float a[2] = {0.0f, 0.0f};
#pragma unroll
            for (int s = 0; s < NSEG; ++s)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int e = (first + s) * MV_SEG + 8 * (lane + 32 * j);
                    if (!B.active[i] || s >= count || e >= cols) continue;
                    float w[8];
                    mv1f_floats<T>(raw[i][s][j], w);
#pragma unroll
                    for (int k = 0; k < 8; ++k) a[k & 1] = fmaf(w[k], x[s][j][k], a[k & 1]);
                }
            acc[i] = a[0] + a[1];
        }
        mv1_finish<OUT>(acc, partial[it & 1], parts, B, S);
    }
}
