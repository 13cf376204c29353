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
//
// Launched early (pdl.cuh), a product may ask L2 for the first `prefetch`
// bytes of each of its first group's rows before it waits for the kernel
// before it (the weights are no kernel's output), and quantize_x16 may let
// the product start before it waits itself: HBM then keeps reading
// across the boundary between two kernels, where it would idle while one
// ends and the next starts.
#include <cuda_fp16.h>
#include <stdint.h>

#include "async.cuh"
#include "dynamic_shared.cuh"
#include "pdl.cuh"
#include "act.cuh"
#include "q4k_lanes.cuh"
#include "mv1_common.cuh"
#include "quants.cuh"

namespace mv1_lean {

constexpr int ROWS = 4;  // rows a warp reads at once

// Bytes of quantize_x16's output for `cols` values (the backend's
// LEAN_X_BYTES mirrors it).
__host__ __device__ constexpr long long x_bytes(int cols) { return 2ll * cols + 8ll * (cols / 32); }

// Shifts w down by `o` bytes (even, 0..14; words past the end read 0), by
// selects: a lane's offset is not known at compile time, and a runtime
// index would put w in local memory.
template <int N>
__device__ __forceinline__ void shift_down(uint32_t (&w)[N], int o) {
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = (o & 8) ? (i + 2 < N ? w[i + 2] : 0u) : w[i];
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = (o & 4) ? (i + 1 < N ? w[i + 1] : 0u) : w[i];
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = (o & 2) ? __funnelshift_r(w[i], i + 1 < N ? w[i + 1] : 0u, 16) : w[i];
}

// The uint4s of a group of 256 weights (Q4_K's super-block; eight blocks
// of Q4_0 or Q8_0, 144 and 272 bytes, so 16-byte aligned in a 16-byte
// aligned row) that lane j (0..7) of its eight reads.
template <int T>
struct LeanGroup {
    static_assert(T == gq::Q4_K || T == gq::Q4_0 || T == gq::Q8_0, "a type of the lean products");
    static constexpr int BYTES = T == gq::Q8_0 ? 272 : 144;
    static constexpr int WORDS = T == gq::Q8_0 ? 3 : 2;
    // Q4_K: the header and 16 bytes of nibbles (q4k_lanes.cuh); Q4_0 and
    // Q8_0: the words holding block j (at byte 18j or 34j: offset 2j into
    // the first).
    __device__ static __forceinline__ int word(int k, int j) {
        return T == gq::Q4_K ? (k == 0 ? 0 : 1 + j) : (T == gq::Q4_0 ? j + k : 2 * j + k);
    }
};

// Lane j's 32 weights of one row of a Q4_0 or Q8_0 group (block j) against
// X's chunk: the block aligned out of the lane's words, its integers (Q4_0's
// less 8, as signed bytes) dotted with X's 16-bit integers exactly, then
// scaled by the block's d and X's chunk scale.
template <int T>
__device__ __forceinline__ float block_lane(const uint4 (&wv)[LeanGroup<T>::WORDS], const gq::LaneX<int16_t>& x,
                                            int j) {
    constexpr int N = 4 * LeanGroup<T>::WORDS;
    uint32_t w[N];
#pragma unroll
    for (int k = 0; k < LeanGroup<T>::WORDS; ++k) {
        w[4 * k] = wv[k].x;
        w[4 * k + 1] = wv[k].y;
        w[4 * k + 2] = wv[k].z;
        w[4 * k + 3] = wv[k].w;
    }
    shift_down(w, 2 * j);
    const float d = gq::half_lo(w[0]);
    const uint32_t xw[8] = {x.lo[0].x, x.lo[0].y, x.lo[0].z, x.lo[0].w, x.lo[1].x, x.lo[1].y, x.lo[1].z, x.lo[1].w};
    const uint32_t yw[8] = {x.hi[0].x, x.hi[0].y, x.hi[0].z, x.hi[0].w, x.hi[1].x, x.hi[1].y, x.hi[1].z, x.hi[1].w};
    int s = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        uint32_t lo, hi;  // elements 4k..4k+3 and 16+4k..16+4k+3
        if constexpr (T == gq::Q4_0) {
            const uint32_t qs = __funnelshift_r(w[k], w[k + 1], 16);
            lo = __vsub4(qs & 0x0f0f0f0fu, 0x08080808u);
            hi = __vsub4((qs >> 4) & 0x0f0f0f0fu, 0x08080808u);
        } else {
            lo = __funnelshift_r(w[k], w[k + 1], 16);
            hi = __funnelshift_r(w[k + 4], w[k + 5], 16);
        }
        s = __dp2a_lo(static_cast<int>(xw[2 * k]), static_cast<int>(lo), s);
        s = __dp2a_hi(static_cast<int>(xw[2 * k + 1]), static_cast<int>(lo), s);
        s = __dp2a_lo(static_cast<int>(yw[2 * k]), static_cast<int>(hi), s);
        s = __dp2a_hi(static_cast<int>(yw[2 * k + 1]), static_cast<int>(hi), s);
    }
    return d * (static_cast<float>(s) * x.dlo);
}

// Float4 q of X (cols values), whose chunk's largest magnitude and sum the
// lane holds (chunk_amax_sum), into quantize_x16's layout.
__device__ __forceinline__ void store_x16(float4 v, float amax, float sum, int q, int cols, uint8_t* __restrict__ out) {
    const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
    const int ix = __float2int_rn(v.x * inv), iy = __float2int_rn(v.y * inv);
    const int iz = __float2int_rn(v.z * inv), iw = __float2int_rn(v.w * inv);
    const uint32_t lo = (static_cast<uint32_t>(ix) & 0xffffu) | (static_cast<uint32_t>(iy) << 16);
    const uint32_t hi = (static_cast<uint32_t>(iz) & 0xffffu) | (static_cast<uint32_t>(iw) << 16);
    reinterpret_cast<uint2*>(out)[q] = make_uint2(lo, hi);
    if ((q & 7) == 0) {
        float* scales = reinterpret_cast<float*>(out + 2ll * cols);
        scales[q >> 3] = amax / 32767.0f;
        scales[(cols >> 5) + (q >> 3)] = sum;
    }
}

// A launch's row groups: a warp takes ROWS rows of a part at a time (a
// glu's two outputs' gate and up rows), groups numbered over the parts.
// A glu given `yq` also writes its outputs there quantised as
// quantize_x16 would (the down projection's X; outputs a multiple of 32):
// the warp that completes a chunk of 32 (counts[chunk] reaching the
// chunk's warps; it resets it to zero) quantises it, so no launch of
// quantize_x16 stands between the glu and the product after it.
template <int OUT>
struct RowGroups {
    static constexpr int R = ROWS;
    static constexpr bool GLU = OUT == MV1_SWIGLU || OUT == MV1_GEGLU;
    static constexpr int NO = GLU ? R / 2 : R;  // outputs a warp
    const Mv1Parts& parts;
    long long row_bytes;
    uint8_t* yq;
    unsigned* counts;
    int lane, g0, g1, groups;

    __device__ __forceinline__ RowGroups(const Mv1Parts& parts_, long long row_bytes_, uint8_t* yq_,
                                         unsigned* counts_)
        : parts(parts_), row_bytes(row_bytes_), yq(yq_), counts(counts_) {
        lane = threadIdx.x & 31;
        g0 = (parts.rows[0] + NO - 1) / NO;
        g1 = GLU ? 0 : (parts.rows[1] + NO - 1) / NO;
        groups = g0 + g1 + (GLU ? 0 : (parts.rows[2] + NO - 1) / NO);
    }

    // Row group g: its part, first output, the part's rows and the start
    // of each of its R rows (rows past the end read the last one's; a
    // glu's gate rows, then its up rows).
    struct Group {
        int part, r0, rows;
        const uint8_t* row[R];
    };
    __device__ __forceinline__ Group group(int g) const {
        Group G;
        G.part = g < g0 ? 0 : (g < g0 + g1 ? 1 : 2);
        G.r0 = (g - (G.part == 0 ? 0 : (G.part == 1 ? g0 : g0 + g1))) * NO;
        G.rows = Mv1Parts::pick(parts.rows, G.part);
        const uint8_t* W = Mv1Parts::pick(parts.W, G.part);
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const int r = min(G.r0 + (GLU ? i % NO : i), G.rows - 1);
            const uint8_t* base = GLU && i >= NO ? parts.W[1] : W;
            G.row[i] = base + static_cast<long long>(r) * row_bytes;
        }
        return G;
    }

    // Lane i < R asks L2 for min(bytes, row_bytes - from) of row i from
    // byte `from` on (bytes a multiple of 16; nothing where the row ends
    // first), from the 16-byte boundary at or below it (Q6_K's rows start
    // at any even byte).
    __device__ __forceinline__ void prefetch(const Group& G, unsigned bytes, long long from = 0) const {
        const long long n0 = min(static_cast<long long>(bytes), row_bytes - from);
        if (n0 <= 0) return;
#pragma unroll
        for (int i = 0; i < R; ++i)
            if (lane == i) prefetch_row(G.row[i] + from, n0);
    }

    // L2 asked for n bytes from p on, from the 16-byte boundary at or below it.
    __device__ __forceinline__ static void prefetch_row(const uint8_t* p, long long n) {
        const uintptr_t a = reinterpret_cast<uintptr_t>(p);
        n += static_cast<long long>(a & 15);
        prefetch_l2(reinterpret_cast<const void*>(a & ~uintptr_t{15}), static_cast<unsigned>((n + 15) & ~15ll));
    }

    // The warp's sums, in every lane.
    __device__ __forceinline__ void reduce(float (&acc)[R]) const {
#pragma unroll
        for (int i = 0; i < R; ++i) {
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], off);
        }
    }

    // The warp's sums, then lane 0 writes the group's outputs (and zeroes
    // acc for the next group).
    __device__ __forceinline__ void finish(float (&acc)[R], const Group& G) const {
        reduce(acc);
        finish_reduced(acc, G);
    }

    // finish, the warp's sums already in every lane's acc.
    __device__ __forceinline__ void finish_reduced(float (&acc)[R], const Group& G) const {
        write(acc, G);
#pragma unroll
        for (int i = 0; i < R; ++i) acc[i] = 0.0f;
    }

    // A group whose steps a team of `split` warps (adjacent in the block)
    // share: their sums meet in `part` (a slot a warp of the block; the
    // block's barrier, so every warp of the block calls this at the same
    // step), and the team's first warp writes the outputs, adding the
    // warps' sums in their order. `valid`: the team has a group this step.
    __device__ __forceinline__ void finish_split(float (&acc)[R], const Group& G, bool valid, int split, int wib,
                                                 float (*part)[R]) const {
        reduce(acc);
        finish_split_reduced(acc, G, valid, split, wib, part);
    }

    // finish_split, the warp's sums already in every lane's acc.
    __device__ __forceinline__ void finish_split_reduced(float (&acc)[R], const Group& G, bool valid, int split,
                                                         int wib, float (*part)[R]) const {
        if (lane == 0) {
#pragma unroll
            for (int i = 0; i < R; ++i) part[wib][i] = acc[i];
        }
        __syncthreads();
        if (valid && wib % split == 0) {
#pragma unroll
            for (int i = 0; i < R; ++i) {
                for (int s = 1; s < split; ++s) acc[i] += part[wib + s][i];
            }
            write(acc, G);
        }
#pragma unroll
        for (int i = 0; i < R; ++i) acc[i] = 0.0f;
    }

    // Lane 0 writes the group's outputs of `sum` (a glu's chunk quantised
    // too where asked: all lanes call this).
    __device__ __forceinline__ void write(const float (&sum)[R], const Group& G) const {
        const float* acc = sum;
        if (lane == 0) {
            float* Y = Mv1Parts::pick(parts.Y, G.part);
            if constexpr (GLU) {
#pragma unroll
                for (int o = 0; o < NO; ++o) {
                    if (G.r0 + o >= G.rows) continue;
                    Y[G.r0 + o] =
                        OUT == MV1_SWIGLU ? swiglu_of(acc[o], acc[NO + o]) : geglu_of(acc[o], acc[NO + o]);
                }
            } else {
#pragma unroll
                for (int i = 0; i < R; ++i) {
                    if (G.r0 + i >= G.rows) continue;
                    Y[G.r0 + i] = OUT == MV1_ADD ? Y[G.r0 + i] + acc[i] : acc[i];
                }
            }
        }
        if constexpr (GLU) {
            if (yq != nullptr) quantise_chunk(G);
        }
    }

    // The glu's chunk of 32 outputs holding G's, quantised by the warp
    // that completes it (all lanes call this).
    __device__ __forceinline__ void quantise_chunk(const Group& G) const {
        const int c = G.r0 >> 5;
        unsigned last = 0;
        if (lane == 0) {
            __threadfence();  // this warp's outputs, before its count
            const unsigned want = static_cast<unsigned>((min(32, G.rows - 32 * c) + NO - 1) / NO);
            last = atomicAdd(counts + c, 1u) + 1u == want ? 1u : 0u;
        }
        // The warp barrier orders lane 0's count before the lanes' reads.
        __syncwarp();
        if (__shfl_sync(0xffffffffu, last, 0) == 0) return;
        __threadfence();  // the other warps' outputs, before reading them
        const int q = 8 * c + (lane & 7);
        const float4 v = __ldcg(reinterpret_cast<const float4*>(parts.Y[0]) + q);
        float amax, sum;
        chunk_amax_sum(v, amax, sum);
        if (lane < 8) store_x16(v, amax, sum, q, G.rows, yq);
        if (lane == 0) counts[c] = 0;
    }
};

// What every lane of a launch of a quantised type shares: the row groups,
// X's integers, scales and sums, and where the lane sits in a group of 256
// weights.
template <int T, int OUT>
struct Lanes : RowGroups<OUT> {
    using G8 = LeanGroup<T>;
    static constexpr int R = ROWS;
    // Steps whose loads the plain loop issues at once (Q8_0's three words
    // a row: one).
    static constexpr int UNROLL = G8::WORDS == 2 ? 2 : 1;
    static constexpr int SB_STEP = 4;  // groups of 256 a step moves on (a lane's eight take one)
    static constexpr bool PING_PONG = false;  // product_piped's word sets
    struct Words {
        uint4 v[ROWS][G8::WORDS];
    };
    using Group = typename RowGroups<OUT>::Group;
    int nsb, sbo, j, p, h;
    const int16_t* q;
    const float *d, *s;

    __device__ __forceinline__ Lanes(const uint8_t* xq, const Mv1Parts& parts_, int cols, long long row_bytes_,
                                     uint8_t* yq_, unsigned* counts_)
        : RowGroups<OUT>(parts_, row_bytes_, yq_, counts_) {
        nsb = cols >> 8;
        sbo = this->lane >> 3;
        j = this->lane & 7;
        p = j >> 1;
        h = j & 1;
        q = reinterpret_cast<const int16_t*>(xq);
        d = reinterpret_cast<const float*>(xq + 2ll * cols);
        s = d + (cols >> 5);
    }

    // The lane's words of group sb of each row.
    __device__ __forceinline__ void load_w(const Group& G, int sb, Words& w) const {
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            const uint4* gp = reinterpret_cast<const uint4*>(G.row[i] + sb * G8::BYTES);
#pragma unroll
            for (int k = 0; k < G8::WORDS; ++k) w.v[i][k] = __ldg(gp + G8::word(k, j));
        }
    }

    // X's values, scales and sums for the lane's share of group sb: Q4_K's
    // 16 values of chunks 2p and 2p + 1 (lo, hi); the others' chunk j.
    __device__ __forceinline__ gq::LaneX<int16_t> load_x(int sb) const {
        gq::LaneX<int16_t> x;
        const int e = sb * 256 + (T == gq::Q4_K ? 64 * p + 16 * h : 32 * j);
        const uint4* lo = reinterpret_cast<const uint4*>(q + e);
        const uint4* hi = reinterpret_cast<const uint4*>(q + e + (T == gq::Q4_K ? 32 : 16));
#pragma unroll
        for (int k = 0; k < 2; ++k) {
            x.lo[k] = __ldg(lo + k);
            x.hi[k] = __ldg(hi + k);
        }
        const int c = e >> 5;
        x.dlo = __ldg(d + c);
        if constexpr (T == gq::Q4_K) {
            x.dhi = __ldg(d + c + 1);
            x.slo = __ldg(s + c);
            x.shi = __ldg(s + c + 1);
        } else {
            x.dhi = x.slo = x.shi = 0.0f;
        }
        return x;
    }

    __device__ __forceinline__ void accumulate(float (&acc)[ROWS], const Words& w,
                                               const gq::LaneX<int16_t>& x) const {
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            if constexpr (T == gq::Q4_K)
                acc[i] += gq::q4k_lane(w.v[i][0], w.v[i][1], x, p, h == 0);
            else
                acc[i] += block_lane<T>(w.v[i], x, j);
        }
    }
};

// Q6_K's lanes. A super-block (ql[128]: the low four bits; qh[64]: the top
// two; 16 int8 scales, one a sub-block of 16 weights; d) is 210 bytes, so
// its fields sit at 0 or 2 mod 4 (rows of 11008 columns start at any even
// byte too): words are read as 4-byte loads from the aligned word at or
// below and put in place by funnel shifts. Eight lanes take a row's
// super-block, lane l of them (n = l / 4: its half; u = l % 4) 16 ql bytes
// at 64n + 16u and the 16 qh bytes holding their top bits, i.e. 16 weights
// of one sub-block (low nibbles) and 16 of the sub-block four on (high
// nibbles): a load's 4 bytes carry 8 of the lane's weights, where lanes
// that each took four rows' 8 weights spent most of their instructions on
// loads and addresses (the products were bound by issue, not HBM). A warp
// takes its four rows (lane / 8) together, SBS super-blocks a step. The
// stored integers are q + 32: their dot with X's integers less 32 times
// the sum of those X values is exact (|(q - 32) x| summed over 16, times a
// scale, stays under 2^31).
template <int OUT>
struct Lanes6 : RowGroups<OUT> {
    static constexpr int R = ROWS;
    static constexpr int UNROLL = 1;
    static constexpr int SBS = 2;      // super-blocks a lane takes a step
    static constexpr int SB_STEP = SBS;
    static constexpr bool PING_PONG = true;
    using Base = RowGroups<OUT>;
    // The group's rows, and the lane's own.
    struct Group : Base::Group {
        const uint8_t* mine;
    };
    // A super-block's words of the lane: ql and qh from the aligned word
    // at or below its bytes (five, shifted right by `sh` bits), scales, d.
    struct One {
        uint32_t ql[5], qh[5], d, sh;
        int sc[2];
    };
    struct Words {
        One b[SBS];
    };
    struct X {
        int sb;
    };
    int nsb, sbo, ri, c2, ql_at, qh_at, sc_at, e_lo;
    const int16_t* q;
    const float* d;

    __device__ __forceinline__ Lanes6(const uint8_t* xq, const Mv1Parts& parts_, int cols, long long row_bytes_,
                                      uint8_t* yq_, unsigned* counts_)
        : Base(parts_, row_bytes_, yq_, counts_) {
        const int l = this->lane & 7, n = l >> 2, u = l & 3, c = u >> 1, lb = 16 * (u & 1);
        nsb = cols >> 8;
        sbo = 0;
        ri = this->lane >> 3;
        c2 = 2 * c;
        ql_at = 64 * n + 16 * u;
        qh_at = 128 + 32 * n + lb;
        sc_at = 192 + 8 * n + 2 * c + (u & 1);
        e_lo = 128 * n + 32 * c + lb;
        q = reinterpret_cast<const int16_t*>(xq);
        d = reinterpret_cast<const float*>(xq + 2ll * cols);
    }

    __device__ __forceinline__ Group group(int g) const {
        Group G;
        static_cast<typename Base::Group&>(G) = Base::group(g);
        // As Base::group finds row ri (selecting among G.row would index it).
        constexpr bool GLU = Base::GLU;
        constexpr int NO = Base::NO;
        const int r = min(G.r0 + (GLU ? ri % NO : ri), G.rows - 1);
        const uint8_t* base = GLU && ri >= NO ? this->parts.W[1] : Mv1Parts::pick(this->parts.W, G.part);
        G.mine = base + static_cast<long long>(r) * this->row_bytes;
        return G;
    }

    // As Base::prefetch, lane 8i asking for row i (its own).
    __device__ __forceinline__ void prefetch(const Group& G, unsigned bytes, long long from = 0) const {
        const long long n0 = min(static_cast<long long>(bytes), this->row_bytes - from);
        if (n0 > 0 && (this->lane & 7) == 0) Base::prefetch_row(G.mine + from, n0);
    }

    __device__ __forceinline__ void load_one(const uint8_t* a, One& o) const {
        const uintptr_t odd = reinterpret_cast<uintptr_t>(a) & 2;
        const uint8_t* a4 = a - odd;
        const uint32_t* ql = reinterpret_cast<const uint32_t*>(a4 + ql_at);
        const uint32_t* qh = reinterpret_cast<const uint32_t*>(a4 + qh_at);
#pragma unroll
        for (int k = 0; k < 5; ++k) {
            o.ql[k] = __ldg(ql + k);
            o.qh[k] = __ldg(qh + k);
        }
        const signed char* sc = reinterpret_cast<const signed char*>(a + sc_at);
        o.sc[0] = __ldg(sc);
        o.sc[1] = __ldg(sc + 4);
        o.d = __ldg(reinterpret_cast<const unsigned short*>(a + 208));
        o.sh = static_cast<uint32_t>(odd) << 3;
    }

    // Super-blocks sb .. sb + SBS - 1 of the lane's row (those in the row).
    __device__ __forceinline__ void load_w(const Group& G, int sb, Words& w) const {
        const uint8_t* a = G.mine + static_cast<long long>(sb) * 210;
#pragma unroll
        for (int k = 0; k < SBS; ++k)
            if (k == 0 || sb + k < nsb) load_one(a + 210 * k, w.b[k]);
    }

    __device__ __forceinline__ X load_x(int sb) const { return X{sb}; }

    // The sum of 16 of X's integers.
    __device__ __forceinline__ static int sum16(const uint4 (&x)[2]) {
        const uint32_t xw[8] = {x[0].x, x[0].y, x[0].z, x[0].w, x[1].x, x[1].y, x[1].z, x[1].w};
        int s = 0;
#pragma unroll
        for (int k = 0; k < 8; ++k) s = gq::dp2a_lo_su(static_cast<int>(xw[k]), 0x0101, s);
        return s;
    }

    // The lane's 32 weights of super-block sb against X's.
    __device__ __forceinline__ float one(const One& o, int sb) const {
        const int e = sb * 256 + e_lo;
        const uint4* xp = reinterpret_cast<const uint4*>(q + e);
        const uint4 xl[2] = {__ldg(xp), __ldg(xp + 1)};
        const uint4 xh[2] = {__ldg(xp + 8), __ldg(xp + 9)};  // 64 values on
        const float dxl = __ldg(d + (e >> 5)), dxh = __ldg(d + (e >> 5) + 2);
        uint32_t lw[4], hw[4];
#pragma unroll
        for (int m = 0; m < 4; ++m) {
            const uint32_t l4 = __funnelshift_r(o.ql[m], o.ql[m + 1], o.sh);
            // Shifted c2 further in the same funnel: the bits it brings in
            // from the next word land above every bit used below.
            const uint32_t h2 = __funnelshift_r(o.qh[m], o.qh[m + 1], o.sh + c2);
            lw[m] = (l4 & 0x0f0f0f0fu) | ((h2 << 4) & 0x30303030u);
            hw[m] = ((l4 >> 4) & 0x0f0f0f0fu) | (h2 & 0x30303030u);
        }
        const int dl = gq::dot16(lw, xl) - 32 * sum16(xl);
        const int dh = gq::dot16(hw, xh) - 32 * sum16(xh);
        return gq::half_lo(o.d) * (static_cast<float>(dl * o.sc[0]) * dxl + static_cast<float>(dh * o.sc[1]) * dxh);
    }

    // The lane's row's sums in acc[0] (acc[k] for super-block k of a step).
    __device__ __forceinline__ void accumulate(float (&acc)[R], const Words& w, const X& x) const {
#pragma unroll
        for (int k = 0; k < SBS; ++k)
            if (k == 0 || x.sb + k < nsb) acc[k] += one(w.b[k], x.sb + k);
    }

    // Each row's sum over its eight lanes, then the four rows' sums in every lane.
    __device__ __forceinline__ void gather(float (&acc)[R]) const {
        float v = acc[0];
#pragma unroll
        for (int k = 1; k < SBS; ++k) v += acc[k];
#pragma unroll
        for (int off = 1; off < 8; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
#pragma unroll
        for (int i = 0; i < R; ++i) acc[i] = __shfl_sync(0xffffffffu, v, 8 * i);
    }

    __device__ __forceinline__ void finish(float (&acc)[R], const Group& G) const {
        gather(acc);
        this->finish_reduced(acc, G);
    }

    __device__ __forceinline__ void finish_split(float (&acc)[R], const Group& G, bool valid, int split, int wib,
                                                 float (*part)[R]) const {
        gather(acc);
        this->finish_split_reduced(acc, G, valid, split, wib, part);
    }
};

// The lanes of a launch of type T.
template <int T, int OUT>
struct LanesOf {
    using type = Lanes<T, OUT>;
};
template <int OUT>
struct LanesOf<gq::Q6_K, OUT> {
    using type = Lanes6<OUT>;
};

// Y_p = W_p . X for each part, Y += W . X, or Y = act(gate . X) * (up . X)
// (gate rows in part 0, up rows in W[1], outputs rows[0]); a warp a group
// at a time, a step four super-blocks on. `prefetch` > 0: the kernel has
// not waited yet (pdl_begin), and each warp asks L2 for that many bytes of
// its first group's rows first.
template <int T, int OUT>
__device__ __forceinline__ void product(const uint8_t* __restrict__ xq, const Mv1Parts& parts, int cols,
                                        long long row_bytes, unsigned prefetch, uint8_t* yq, unsigned* counts) {
    using L_t = typename LanesOf<T, OUT>::type;
    const L_t L(xq, parts, cols, row_bytes, yq, counts);
    const int warp = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    const int nwarps = static_cast<int>((gridDim.x * blockDim.x) >> 5);
    bool waited = prefetch == 0;
    float acc[L_t::R] = {};
    for (int g = warp; g < L.groups; g += nwarps) {
        const auto G = L.group(g);
        if (!waited) {
            L.prefetch(G, prefetch);
            gq::pdl_begin();
            waited = true;
        }
#pragma unroll(L_t::UNROLL)
        for (int sb = L.sbo; sb < L.nsb; sb += L_t::SB_STEP) {
            typename L_t::Words w;
            L.load_w(G, sb, w);
            L.accumulate(acc, w, L.load_x(sb));
        }
        L.finish(acc, G);
    }
}

// The item after step k of group g in a warp's sequence of the piped
// loops: the next step, or the next group's first (groups nwarps apart).
__device__ __forceinline__ void next_item(int g, int k, int steps, int nwarps, int& ng, int& nk) {
    nk = k + 1;
    ng = g;
    if (nk == steps) {
        nk = 0;
        ng = g + nwarps;
    }
}

// product_piped for lanes whose words a step are few (Q6_K's: PING_PONG):
// the same items, sums and order, but a warp without a group leaves by a
// vote, which tells ptxas that the whole warp does (after a return it could
// not see as uniform it kept the loads' memory descriptor in ordinary
// registers and moved it into a uniform one before every load), and the
// words of the next item go into the set the item before used. On the H100
// (session 42) these two, given to Q4_K, Q4_0 and Q8_0 as well, cut their
// loops' instructions by a fifth yet their decode by 3.5%, 11.6% and 7.6%
// (which of the two, and why, is not known yet): those keep product_piped
// as it was. A fork rather than one loop with switches: folded into one,
// the others' split kernels compiled to other code than was measured.
template <int T, int OUT, int SPLIT>
__device__ __forceinline__ void product_alternating(const uint8_t* __restrict__ xq, const Mv1Parts& parts,
                                                    int cols, long long row_bytes, unsigned prefetch, uint8_t* yq,
                                                    unsigned* counts, int split_given) {
    const int split = SPLIT == 1 ? 1 : split_given;
    using L_t = typename LanesOf<T, OUT>::type;
    constexpr int R = L_t::R;
    const L_t L(xq, parts, cols, row_bytes, yq, counts);
    using Words = typename L_t::Words;
    __shared__ float part[2][8][R];
    const int wib = static_cast<int>(threadIdx.x >> 5);
    const int teams = static_cast<int>(blockDim.x >> 5) / split, team = wib / split, s = wib % split;
    const int nteams = static_cast<int>(gridDim.x) * teams;
    // A warp's steps a group, and where its step k sits.
    const int steps = ((L.nsb + L_t::SB_STEP - 1) / L_t::SB_STEP + split - 1) / split;
    auto sb_of = [&](int k) { return L.sbo + L_t::SB_STEP * (s + split * k); };
    // Whether the warp goes on to group g (split: while its block's first team has a group).
    auto live = [&](int gi) { return (split == 1 ? gi : gi - team) < L.groups; };
    int g = static_cast<int>(blockIdx.x) * teams + team;
    // A warp without a group leaves (by a vote: above).
    if (__all_sync(0xffffffffu, !live(g))) {
        if (prefetch) gq::pdl_begin();
        return;
    }
    bool valid = g < L.groups;
    auto G = L.group(min(g, L.groups - 1));
    // Two sets of words, whose roles swap from one item to the next
    // (copying the next item's words into the current one's every item
    // cost Q6_K's loop a sixth of its instructions).
    Words w0 = {}, w1 = {};
    if (prefetch && valid) L.prefetch(G, prefetch);
    if (valid && sb_of(0) < L.nsb) L.load_w(G, sb_of(0), w0);
    if (prefetch) gq::pdl_begin();
    float acc[R] = {};
    int k = 0, buf = 0;
    // The item in `cur`, the next one's loads into `nxt` first; whether
    // the warp goes on.
    auto item = [&](const Words& cur, Words& nxt) {
        int ng, nk;
        next_item(g, k, steps, nteams, ng, nk);
        const bool more = live(ng), next_valid = ng < L.groups;
        const auto NG = ng == g ? G : L.group(min(ng, L.groups - 1));
        if (next_valid && sb_of(nk) < L.nsb) L.load_w(NG, sb_of(nk), nxt);
        if (valid && sb_of(k) < L.nsb) L.accumulate(acc, cur, L.load_x(sb_of(k)));
        if (nk == 0) {
            if (split == 1) {
                L.finish(acc, G);
            } else {
                L.finish_split(acc, G, valid, split, wib, part[buf]);
                buf ^= 1;
            }
        }
        G = NG;
        g = ng;
        k = nk;
        valid = next_valid;
        return more;
    };
    while (item(w0, w1) && item(w1, w0)) {
    }
}

// The same products, software-pipelined over a flat sequence of (group,
// step) items: each lane's weight loads of the next item are in flight
// while it computes the current one, across the end of a group too, so
// that a warp never waits for a whole step's latency from HBM (the plain
// loop loads its steps, then uses them). X, which L1 and L2 hold, is read
// as an item is computed (holding it a step ahead too spilled). Where its
// group of 256 is past the row's end a lane loads and adds nothing. Before
// the kernel waits (prefetch > 0), the first item's weights are loaded too.
//
// `split` (1, 2, 4 or 8; blocks of eight warps) warps of a block, a team,
// share a group, warp s of the team taking steps s, s + split, ... and
// their sums meeting at the group's end (RowGroups::finish_split): a small
// product (a 1B's, Q6_K's of one super-block a step) then has more warps
// and shorter chains of steps. Teams take groups as warps do unsplit: team
// t of the grid's T groups t, t + T, ..., so split 1 is the warps' own
// sequence; a split block goes on while its first team has a group (its
// barriers need every warp), a team past the end loading nothing.
// SPLIT: 1 (matvec1_<type>_lean_piped_*: a warp a group, without the
// teams' arithmetic, which made Q8_0's loop spill), or 0
// (matvec1_<type>_lean_split_*: `split_given` warps a group).
template <int T, int OUT, int SPLIT>
__device__ __forceinline__ void product_piped(const uint8_t* __restrict__ xq, const Mv1Parts& parts, int cols,
                                              long long row_bytes, unsigned prefetch, uint8_t* yq,
                                              unsigned* counts, int split_given) {
    using L_t = typename LanesOf<T, OUT>::type;
    if constexpr (L_t::PING_PONG) {
        product_alternating<T, OUT, SPLIT>(xq, parts, cols, row_bytes, prefetch, yq, counts, split_given);
        return;
    }
    const int split = SPLIT == 1 ? 1 : split_given;
    constexpr int R = L_t::R;
    const L_t L(xq, parts, cols, row_bytes, yq, counts);
    using Words = typename L_t::Words;
    __shared__ float part[2][8][R];
    const int wib = static_cast<int>(threadIdx.x >> 5);
    const int teams = static_cast<int>(blockDim.x >> 5) / split, team = wib / split, s = wib % split;
    const int nteams = static_cast<int>(gridDim.x) * teams;
    // A warp's steps a group, and where its step k sits.
    const int steps = ((L.nsb + L_t::SB_STEP - 1) / L_t::SB_STEP + split - 1) / split;
    auto sb_of = [&](int k) { return L.sbo + L_t::SB_STEP * (s + split * k); };
    // Whether the warp goes on to group g (split: while its block's first team has a group).
    auto live = [&](int gi) { return (split == 1 ? gi : gi - team) < L.groups; };
    int g = static_cast<int>(blockIdx.x) * teams + team;
    if (!live(g)) {
        if (prefetch) gq::pdl_begin();
        return;
    }
    bool valid = g < L.groups;
    auto G = L.group(min(g, L.groups - 1));
    Words w = {};
    if (prefetch && valid) L.prefetch(G, prefetch);
    if (valid && sb_of(0) < L.nsb) L.load_w(G, sb_of(0), w);
    if (prefetch) gq::pdl_begin();
    float acc[R] = {};
    int k = 0, buf = 0;
    for (;;) {
        int ng, nk;
        next_item(g, k, steps, nteams, ng, nk);
        const bool more = live(ng), next_valid = ng < L.groups;
        const auto NG = ng == g ? G : L.group(min(ng, L.groups - 1));
        Words nw = {};
        if (next_valid && sb_of(nk) < L.nsb) L.load_w(NG, sb_of(nk), nw);
        if (valid && sb_of(k) < L.nsb) L.accumulate(acc, w, L.load_x(sb_of(k)));
        if (nk == 0) {
            if (split == 1) {
                L.finish(acc, G);
            } else {
                L.finish_split(acc, G, valid, split, wib, part[buf]);
                buf ^= 1;
            }
        }
        if (!more) break;
        w = nw;
        G = NG;
        g = ng;
        k = nk;
        valid = next_valid;
    }
}

// Lane l's eight products of one F16 row's 16-byte word (columns 8l ..
// 8l + 7 of a step of 256) with X's values, into the row's two sums,
// alternating.
__device__ __forceinline__ void f16_word_fma(uint4 w, const float (&x)[8], float (&acc)[2]) {
    const uint32_t h2[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int t = 0; t < 4; ++t) {
        acc[0] = fmaf(gq::half_lo(h2[t]), x[2 * t], acc[0]);
        acc[1] = fmaf(gq::half_hi(h2[t]), x[2 * t + 1], acc[1]);
    }
}

// The end of a group in the F16 loops: each row's two sums added, the
// warp's (or its team's, through `part[buf]`) outputs written, the sums
// zeroed for the next group.
template <int OUT>
__device__ __forceinline__ void f16_group_end(float (&acc)[ROWS][2], const RowGroups<OUT>& R,
                                              const typename RowGroups<OUT>::Group& G, bool valid, int split, int wib,
                                              float (*part)[8][ROWS], int& buf) {
    float sum[ROWS];
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
        sum[i] = acc[i][0] + acc[i][1];
        acc[i][0] = acc[i][1] = 0.0f;
    }
    if (split == 1) {
        R.finish(sum, G);
    } else {
        R.finish_split(sum, G, valid, split, wib, part[buf]);
        buf ^= 1;
    }
}

// F16 rows against X as it is (floats, normed where norm_w is given, as
// matvec1f reads it: no quantised X, so no quantize_x16), software-
// pipelined as product_piped: a step is 256 columns, lane l's 8 at 8l
// (one 16-byte load a row, a warp's loads of a row contiguous), U steps a
// batch, the next batch's loads in flight while the lane computes this
// one. Each row's two partial sums alternate over its 8 products, as
// matvec1f's do. SPLIT as product_piped's: 1 (a warp a group), or 0
// (`split_given` warps of a block a group, warp s of the team taking
// batches s, s + split, ...: the 1024 row groups of a 7B's adds then fill
// the GPU's warps, where unsplit they held half).
template <int OUT, int SPLIT>
__device__ __forceinline__ void product_f16(const float* __restrict__ X, const Mv1Parts& parts, int cols,
                                            long long row_bytes, unsigned prefetch, const float* __restrict__ norm_w,
                                            float eps, uint8_t* yq, unsigned* counts, int split_given) {
    constexpr int U = 2;
    using Batch = uint4[ROWS][U];
    const int split = SPLIT == 1 ? 1 : split_given;
    const RowGroups<OUT> R(parts, row_bytes, yq, counts);
    __shared__ float part[2][8][ROWS];
    const int lane = R.lane;
    const int wib = static_cast<int>(threadIdx.x >> 5);
    const int teams = static_cast<int>(blockDim.x >> 5) / split, team = wib / split, s = wib % split;
    const int nteams = static_cast<int>(gridDim.x) * teams;
    const int steps = cols >> 8, batches = ((steps + U - 1) / U + split - 1) / split;
    // The first step of the warp's batch k of a group.
    auto step_of = [&](int k) { return (s + split * k) * U; };
    auto load = [&](const typename RowGroups<OUT>::Group& G, int k, Batch& w) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int step = step_of(k) + u;
            if (step >= steps) continue;
#pragma unroll
            for (int i = 0; i < ROWS; ++i)
                w[i][u] = __ldg(reinterpret_cast<const uint4*>(G.row[i] + 512ll * step) + lane);
        }
    };
    // Whether the warp goes on to group gi (split: while its block's first team has a group).
    auto live = [&](int gi) { return (split == 1 ? gi : gi - team) < R.groups; };
    int g = static_cast<int>(blockIdx.x) * teams + team;
    const bool any = live(g);
    bool valid = g < R.groups;
    auto G = R.group(valid ? g : 0);
    Batch w = {};
    if (valid) {
        if (prefetch) R.prefetch(G, prefetch);
        load(G, 0, w);
    }
    if (prefetch) gq::pdl_begin();
    // The whole block, before any warp leaves (mv1_norm_scale's barrier).
    const float nscale = norm_w ? mv1_norm_scale<4>(X, cols, eps) : 1.0f;
    if (!any) return;
    float acc[ROWS][2] = {};
    int k = 0, buf = 0;
    for (;;) {
        int ng, nk;
        next_item(g, k, batches, nteams, ng, nk);
        const bool more = live(ng), next_valid = ng < R.groups;
        const auto NG = ng == g ? G : R.group(next_valid ? ng : g);
        Batch nw = {};
        if (next_valid) load(NG, nk, nw);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int step = step_of(k) + u;
            if (!valid || step >= steps) continue;
            float x[8];
            mv1f_x(X, nullptr, 256 * step + 8 * lane, x, norm_w, nscale);
#pragma unroll
            for (int i = 0; i < ROWS; ++i) f16_word_fma(w[i][u], x, acc[i]);
        }
        if (nk == 0) f16_group_end(acc, R, G, valid, split, wib, part, buf);
        if (!more) break;
#pragma unroll
        for (int i = 0; i < ROWS; ++i)
#pragma unroll
            for (int u = 0; u < U; ++u) w[i][u] = nw[i][u];
        G = NG;
        g = ng;
        k = nk;
        valid = next_valid;
    }
}


// cp.async.wait_group with a count known only at run time (0..7).
__device__ __forceinline__ void async_wait_upto(int n) {
    switch (n) {
        case 0: gq::async_wait<0>(); break;
        case 1: gq::async_wait<1>(); break;
        case 2: gq::async_wait<2>(); break;
        case 3: gq::async_wait<3>(); break;
        case 4: gq::async_wait<4>(); break;
        case 5: gq::async_wait<5>(); break;
        case 6: gq::async_wait<6>(); break;
        default: gq::async_wait<7>(); break;
    }
}

// Steps of 256 columns a batch of product_f16_deep, and the uint4s of a
// warp's batch (four rows: 4 KiB): one slot of its ring.
constexpr int F16_DEEP_U = 2;
constexpr int F16_DEEP_SLOT = ROWS * F16_DEEP_U * 32;

// Dynamic shared memory of product_f16_deep's block (eight warps) for
// `depth` batches in flight a warp.
__host__ __device__ constexpr int f16_deep_shared(int depth) { return MV1_WARPS * depth * F16_DEEP_SLOT * 16; }

// product_f16's batches, but brought by cp.async into a ring of `depth`
// slots a warp in shared memory rather than into registers: `depth`
// batches (4 KiB each) in flight a warp where registers held one. On the
// H200 a warp's one batch in flight (2112 warps: 8.6 MB, less in a
// product's last, partly filled round) no longer covers HBM's latency at
// its bandwidth. Each lane copies, and later reads, only its own 16-byte
// pieces of a slot, so the ring needs no barrier: a lane's wait_group
// alone says its batch has landed. The first `depth` batches are asked for
// before the kernel waits for the one before it (weights are no kernel's
// output), so that they cross while that one finishes. Arithmetic and
// order as product_f16's, so the outputs equal its bit for bit.
//
// `prefetch` (bytes, a multiple of 16; 0: none): before the wait, L2 is
// asked for that much more of the first group's rows, past what the ring
// holds, so that HBM keeps reading while the kernel before finishes.
template <int OUT, int SPLIT>
__device__ __forceinline__ void product_f16_deep(const float* __restrict__ X, const Mv1Parts& parts, int cols,
                                                 long long row_bytes, const float* __restrict__ norm_w, float eps,
                                                 uint8_t* yq, unsigned* counts, int split_given, int depth,
                                                 unsigned prefetch) {
    constexpr int U = F16_DEEP_U;
    const int split = SPLIT == 1 ? 1 : split_given;
    const RowGroups<OUT> R(parts, row_bytes, yq, counts);
    __shared__ float part[2][8][ROWS];
    GQ_DYNAMIC_SHARED(16, uint4, ring);
    const int lane = R.lane;
    const int wib = static_cast<int>(threadIdx.x >> 5);
    const int teams = static_cast<int>(blockDim.x >> 5) / split, team = wib / split, s = wib % split;
    const int nteams = static_cast<int>(gridDim.x) * teams;
    const int steps = cols >> 8, batches = ((steps + U - 1) / U + split - 1) / split;
    auto step_of = [&](int k) { return (s + split * k) * U; };
    auto live = [&](int gi) { return (split == 1 ? gi : gi - team) < R.groups; };
    uint4* const mine = ring + wib * depth * F16_DEEP_SLOT + lane;
    int g = static_cast<int>(blockIdx.x) * teams + team;
    // The next batch to ask for: group ig, batch ik, into slot is.
    int ig = g, ik = 0, is = 0;
    auto issue = [&]() {
        if (ig < R.groups) {
            const auto IG = R.group(ig);
            uint4* slot = mine + is * F16_DEEP_SLOT;
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int step = step_of(ik) + u;
                if (step >= steps) continue;
#pragma unroll
                for (int i = 0; i < ROWS; ++i)
                    gq::copy16_async(slot + (i * U + u) * 32,
                                     reinterpret_cast<const uint4*>(IG.row[i] + 512ll * step) + lane);
            }
        }
        gq::async_commit();
        int ng, nk;
        next_item(ig, ik, batches, nteams, ng, nk);
        ig = ng;
        ik = nk;
        is = is + 1 == depth ? 0 : is + 1;
    };
    const bool any = live(g);
    if (any)
        for (int d = 0; d < depth; ++d) issue();
    // The team's ring holds its group's first depth x split batches; its
    // first warp asks for the bytes after them.
    if (prefetch && s == 0 && g < R.groups)
        R.prefetch(R.group(g), prefetch, static_cast<long long>(depth) * split * U * 512);
    gq::pdl_begin();
    // The whole block, before any warp leaves (mv1_norm_scale's barrier).
    const float nscale = norm_w ? mv1_norm_scale<4>(X, cols, eps) : 1.0f;
    if (!any) return;
    bool valid = g < R.groups;
    auto G = R.group(valid ? g : 0);
    float acc[ROWS][2] = {};
    int k = 0, buf = 0, cs = 0;
    for (;;) {
        int ng, nk;
        next_item(g, k, batches, nteams, ng, nk);
        const bool more = live(ng), next_valid = ng < R.groups;
        // This batch's group has landed once at most depth - 1 newer ones are pending.
        async_wait_upto(depth - 1);
        const uint4* slot = mine + cs * F16_DEEP_SLOT;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int step = step_of(k) + u;
            if (!valid || step >= steps) continue;
            float x[8];
            mv1f_x(X, nullptr, 256 * step + 8 * lane, x, norm_w, nscale);
#pragma unroll
            for (int i = 0; i < ROWS; ++i) f16_word_fma(slot[(i * U + u) * 32], x, acc[i]);
        }
        // The slot's words are in registers and used: refill it.
        asm volatile("" ::: "memory");
        issue();
        cs = cs + 1 == depth ? 0 : cs + 1;
        if (nk == 0) f16_group_end(acc, R, G, valid, split, wib, part, buf);
        if (!more) break;
        if (ng != g) G = R.group(next_valid ? ng : g);
        g = ng;
        k = nk;
        valid = next_valid;
    }
}

}  // namespace mv1_lean

// X (cols floats, a multiple of 32; through rms_norm(X) * norm_w where
// norm_w is given) into `out` as mv1_lean reads it: a thread four values, 8
// threads a chunk, the integers, scale and sum of mv1_quantize_x. Grid
// ceil(cols / 1024), block 256 (mv1_norm_scale's: each block sums all of X's
// squares itself, in its fixed order). `release_first`: the product may
// start before this waits (pdl_begin).
extern "C" __global__ void __launch_bounds__(256) quantize_x16(const float* __restrict__ X, int cols,
                                                              const float* __restrict__ norm_w, float eps,
                                                              uint8_t* __restrict__ out, int release_first) {
    const int n4 = cols >> 2;
    const int q = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    // The norm's weights (no kernel's output) before the wait, and the
    // thread's X before the norm's sum: their loads in flight meanwhile.
    const float4 g = norm_w && q < n4 ? __ldg(reinterpret_cast<const float4*>(norm_w) + q)
                                      : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
    gq::pdl_begin(release_first != 0);
    float4 v = q < n4 ? __ldg(reinterpret_cast<const float4*>(X) + q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float nscale = norm_w ? mv1_norm_scale<4>(X, cols, eps) : 1.0f;
    if (norm_w && q < n4)
        v = make_float4(v.x * nscale * g.x, v.y * nscale * g.y, v.z * nscale * g.z, v.w * nscale * g.w);
    float amax, sum;
    chunk_amax_sum(v, amax, sum);
    if (q < n4) mv1_lean::store_x16(v, amax, sum, q, cols, out);
}

// matvec1_<type>_lean_<variant>, matvec1_<type>_lean_piped_<variant> and
// matvec1_<type>_lean_split_<variant> (Q4_K, Q4_0, Q8_0, Q6_K; F16 piped
// and split only): the products above, matvec1's parts and epilogues. X:
// quantize_x16's output (which applied the norm), or F16's floats (normed
// here where norm_w is given). Grid: a warp a row group (four rows; two
// outputs of a glu) of all parts, eight warps a block (`split` warps a
// group for the split ones), or fewer blocks that loop over them. `prefetch`: bytes of each row asked of
// L2 before waiting (0: none; wait first). `yq`, `counts`: a glu's outputs
// quantised as well (RowGroups), else null. At most 128 registers, two
// blocks a multiprocessor (unbounded, ptxas takes 155 to 168 for Q4_K and
// one). `depth`: the F16 deep products' batches in flight a warp (their
// dynamic shared memory is mv1_lean::f16_deep_shared(depth)); the others
// ignore it. The deep products ask for their first weights before they
// wait, whatever `prefetch`, and L2 for `prefetch` bytes more of each row.
#define GQ_MATVEC1_LEAN_SIG(name)                                                                         \
    extern "C" __global__ void __launch_bounds__(256, 2)                                                  \
        name(const uint8_t* __restrict__ x, const uint8_t* W0, float* Y0, int rows0, const uint8_t* W1,    \
             float* Y1, int rows1, const uint8_t* W2, float* Y2, int rows2, int cols, long long row_bytes, \
             unsigned prefetch, const float* __restrict__ norm_w, float eps, uint8_t* __restrict__ yq,     \
             unsigned* __restrict__ counts, int split, int depth)
#define GQ_MATVEC1_LEAN_ONE(name, ...)                                           \
    GQ_MATVEC1_LEAN_SIG(name) {                                                  \
        const Mv1Parts parts{{W0, W1, W2}, {Y0, Y1, Y2}, {rows0, rows1, rows2}}; \
        if (prefetch == 0) gq::pdl_begin();                                      \
        __VA_ARGS__;                                                             \
    }
#define GQ_MATVEC1_DEEP_ONE(name, ...)                                           \
    GQ_MATVEC1_LEAN_SIG(name) {                                                  \
        const Mv1Parts parts{{W0, W1, W2}, {Y0, Y1, Y2}, {rows0, rows1, rows2}}; \
        __VA_ARGS__;                                                             \
    }
#define GQ_MATVEC1_LEAN(type, T, variant, OUT)                                                      \
    GQ_MATVEC1_LEAN_ONE(matvec1_##type##_lean_##variant,                                            \
                        mv1_lean::product<T, OUT>(x, parts, cols, row_bytes, prefetch, yq, counts)) \
    GQ_MATVEC1_LEAN_ONE(matvec1_##type##_lean_piped_##variant,                                      \
                        mv1_lean::product_piped<T, OUT, 1>(x, parts, cols, row_bytes, prefetch, yq, counts, 1)) \
    GQ_MATVEC1_LEAN_ONE(matvec1_##type##_lean_split_##variant,                                      \
                        mv1_lean::product_piped<T, OUT, 0>(x, parts, cols, row_bytes, prefetch, yq, counts, split))
#define GQ_MATVEC1_LEAN_TYPE(type, T)                  \
    GQ_MATVEC1_LEAN(type, T, r1, MV1_STORE)            \
    GQ_MATVEC1_LEAN(type, T, r1a, MV1_ADD)             \
    GQ_MATVEC1_LEAN(type, T, swiglu, MV1_SWIGLU)       \
    GQ_MATVEC1_LEAN(type, T, geglu, MV1_GEGLU)
GQ_MATVEC1_LEAN_TYPE(q4_k, gq::Q4_K)
GQ_MATVEC1_LEAN_TYPE(q4_0, gq::Q4_0)
GQ_MATVEC1_LEAN_TYPE(q8_0, gq::Q8_0)
GQ_MATVEC1_LEAN_TYPE(q6_k, gq::Q6_K)
#define GQ_MATVEC1_LEAN_F16(variant, OUT)                                                                 \
    GQ_MATVEC1_LEAN_ONE(matvec1_f16_lean_piped_##variant,                                                 \
                        mv1_lean::product_f16<OUT, 1>(reinterpret_cast<const float*>(x), parts, cols,      \
                                                      row_bytes, prefetch, norm_w, eps, yq, counts, 1))    \
    GQ_MATVEC1_LEAN_ONE(matvec1_f16_lean_split_##variant,                                                 \
                        mv1_lean::product_f16<OUT, 0>(reinterpret_cast<const float*>(x), parts, cols,      \
                                                      row_bytes, prefetch, norm_w, eps, yq, counts, split))
#define GQ_MATVEC1_F16_DEEP(variant, OUT)                                                                    \
    GQ_MATVEC1_DEEP_ONE(matvec1_f16_deep_piped_##variant,                                                    \
                        mv1_lean::product_f16_deep<OUT, 1>(reinterpret_cast<const float*>(x), parts, cols,   \
                                                           row_bytes, norm_w, eps, yq, counts, 1, depth,     \
                                                           prefetch))                                        \
    GQ_MATVEC1_DEEP_ONE(matvec1_f16_deep_split_##variant,                                                    \
                        mv1_lean::product_f16_deep<OUT, 0>(reinterpret_cast<const float*>(x), parts, cols,   \
                                                           row_bytes, norm_w, eps, yq, counts, split, depth, \
                                                           prefetch))
GQ_MATVEC1_F16_DEEP(r1, MV1_STORE)
GQ_MATVEC1_F16_DEEP(r1a, MV1_ADD)
GQ_MATVEC1_F16_DEEP(swiglu, MV1_SWIGLU)
GQ_MATVEC1_F16_DEEP(geglu, MV1_GEGLU)
GQ_MATVEC1_LEAN_F16(r1, MV1_STORE)
GQ_MATVEC1_LEAN_F16(r1a, MV1_ADD)
GQ_MATVEC1_LEAN_F16(swiglu, MV1_SWIGLU)
GQ_MATVEC1_LEAN_F16(geglu, MV1_GEGLU)
