// Causal attention over an f16 KV cache, `[cell][kv_dim]` for K and V (the
// CUDA backend's layout), a ring of `cells` cells: position p lives in cell
// p % cells. A threadgroup takes a (token, head); its simdgroups take every
// simdgroups-th visible cell, a lane dims lane + 32 j of the head, each
// simdgroup with its own online softmax, merged in threadgroup memory at the
// end. Grouped-query heads read their KV head (h / (n_head / n_head_kv));
// sliding-window layers see only the last `window` positions. Queries and
// sums stay f32; keys and values are read as f16. No infinities: Metal
// compiles with fast math, which may assume there are none, so the running
// maximum starts at -FLT_MAX and a simdgroup that saw no cell is known by
// its sum of 0. At most 16 simdgroups a threadgroup (sm, sacc).
#include <metal_stdlib>
using namespace metal;

#define ATT_MAX_D 8      // head dims per lane: heads up to 256
#define ATT_MAX_SIMDS 16  // sacc: 16 KB of the 32 KB of threadgroup memory

struct AttentionArgs {
    uint n_head;
    uint n_head_kv;
    uint head_dim;  // a multiple of 32, at most 256
    uint cells;
    uint pos0;      // the batch's first position
    uint tokens;
    uint window;    // 0: none
    float kq_scale;
};

kernel void attention_f16(device const float* q [[buffer(0)]], device const half* kc [[buffer(1)]],
                          device const half* vc [[buffer(2)]], device float* out [[buffer(3)]],
                          constant AttentionArgs& a [[buffer(4)]], uint tg [[threadgroup_position_in_grid]],
                          uint simd [[simdgroup_index_in_threadgroup]],
                          uint simds [[simdgroups_per_threadgroup]], uint lane [[thread_index_in_simdgroup]]) {
    threadgroup float sm[ATT_MAX_SIMDS], sl[ATT_MAX_SIMDS];
    threadgroup float sacc[ATT_MAX_SIMDS][32 * ATT_MAX_D];
    const uint t = tg / a.n_head, h = tg % a.n_head;
    const uint g = h / (a.n_head / a.n_head_kv);
    const uint nd = a.head_dim / 32;
    const ulong kv_dim = (ulong)a.n_head_kv * a.head_dim;
    const uint last = a.pos0 + a.tokens - 1, pos = a.pos0 + t;
    const uint lm = last % a.cells;
    device const float* qh = q + ((ulong)t * a.n_head + h) * a.head_dim;
    float qr[ATT_MAX_D], acc[ATT_MAX_D];
    for (uint j = 0; j < ATT_MAX_D; j++) {
        qr[j] = j < nd ? qh[lane + 32 * j] : 0.0f;
        acc[j] = 0.0f;
    }
    float m = -FLT_MAX, l = 0.0f;
    // Before the ring wraps, cells past this query's position hold nothing it sees.
    const uint n_cells = last < a.cells ? pos + 1 : a.cells;
    for (uint c = simd; c < n_cells; c += simds) {
        // The newest position in cell c, at or before the batch's last.
        const uint back = c <= lm ? lm - c : lm + a.cells - c;
        if (back > last) continue;  // never written
        const uint p = last - back;
        if (p > pos || (a.window > 0 && pos - p >= a.window)) continue;  // simdgroup-uniform
        device const half* kr = kc + (ulong)c * kv_dim + (ulong)g * a.head_dim;
        device const half* vr = vc + (ulong)c * kv_dim + (ulong)g * a.head_dim;
        float s = 0.0f;
        for (uint j = 0; j < nd; j++) s += qr[j] * (float)kr[lane + 32 * j];
        s = simd_sum(s) * a.kq_scale;
        const float mx = max(m, s);
        const float corr = exp(m - mx), e = exp(s - mx);
        l = l * corr + e;
        for (uint j = 0; j < nd; j++) acc[j] = acc[j] * corr + e * (float)vr[lane + 32 * j];
        m = mx;
    }
    if (lane == 0) {
        sm[simd] = m;
        sl[simd] = l;
    }
    for (uint j = 0; j < nd; j++) sacc[simd][lane + 32 * j] = acc[j];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (simd != 0) return;
    float M = -FLT_MAX;
    for (uint w = 0; w < simds; w++)
        if (sl[w] > 0.0f) M = max(M, sm[w]);
    float L = 0.0f;
    for (uint w = 0; w < simds; w++)
        if (sl[w] > 0.0f) L += sl[w] * exp(sm[w] - M);
    device float* o = out + ((ulong)t * a.n_head + h) * a.head_dim;
    for (uint j = 0; j < nd; j++) {
        float v = 0.0f;
        for (uint w = 0; w < simds; w++)
            if (sl[w] > 0.0f) v += sacc[w][lane + 32 * j] * exp(sm[w] - M);
        o[lane + 32 * j] = L > 0.0f ? v / L : 0.0f;
    }
}
