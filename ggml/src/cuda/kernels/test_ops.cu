// Standalone check of ops.cu's fused decode kernels against the kernels they
// stand for, on the GPU or on the CPU emulator:
//
//   nvcc -O2 -arch=sm_90 -Xcompiler -ffp-contract=off -o test_ops test_ops.cu && ./test_ops [--bench]
//   g++ -std=c++17 -O2 -ffp-contract=off -I emu -x c++ test_ops.cu -o test_ops && ./test_ops
//
// rope_attention_vec<D> must leave the cache and give the output of
// rope_store then attention_vec<D> (split partials merged by
// attention_merge) to the bit: it computes the same values in the same
// order, taking the new cell's key and value from shared memory rather than
// from the cache, and over splits it merges them itself in the split that
// finishes last (its counters back at zero afterwards). The output it also
// writes quantised (x16.cuh) must equal quantize_x16's of its output, as
// computed here on the host.
//
// attention_tc.cu's prompt kernels: attention_prompt_fa<D> (one pass, online
// softmax) and attention_prompt_tc<D> (two passes) against a double
// reference over fresh and continued batches, grouped heads, windows and
// wrapped rings; the one-pass kernel's error may not exceed the other's by
// more than f16 rounding allows.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "ops.cu"
#include "attention_tc.cu"

#include "test_host.cuh"

template <typename T>
static T* to_device(const std::vector<T>& h) {
    T* d = nullptr;
    CK(cudaMalloc(&d, h.size() * sizeof(T) + 16));
    CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

template <typename T>
static std::vector<T> to_host(const T* d, size_t n) {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}

struct Case {
    int d, n_head, n_head_kv, cells, pos, window, splits, warps;
    RopeParams rope;
    bool factors;
};

static bool same_bits(const void* a, const void* b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

// quantize_x16's bytes for X (matvec1_lean.cu; a multiple of 32 values):
// per chunk of 32, sums of four values in pairs, then a tree over the
// eight, the largest magnitude, and each value times 32767 / amax rounded
// to the nearest even.
static std::vector<uint8_t> quantize_x16_host(const std::vector<float>& x) {
    const int cols = (int)x.size(), chunks = cols / 32;
    std::vector<uint8_t> out(2 * (size_t)cols + 8 * (size_t)chunks);
    for (int c = 0; c < chunks; c++) {
        const float* v = x.data() + 32 * c;
        float s[8], amax = 0.0f;
        for (int i = 0; i < 8; i++) s[i] = (v[4 * i] + v[4 * i + 1]) + (v[4 * i + 2] + v[4 * i + 3]);
        for (int w = 1; w < 8; w <<= 1)
            for (int i = 0; i < 8; i += 2 * w) s[i] = s[i] + s[i + w];
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
        const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        for (int i = 0; i < 32; i++) {
            const int16_t q = (int16_t)std::nearbyint(v[i] * inv);
            memcpy(out.data() + 2 * (32 * c + i), &q, 2);
        }
        const float scale = amax / 32767.0f;
        memcpy(out.data() + 2 * (size_t)cols + 4 * c, &scale, 4);
        memcpy(out.data() + 2 * (size_t)cols + 4 * ((size_t)chunks + c), &s[0], 4);
    }
    return out;
}

// Runs one case both ways (the kernels keeping eight rounds of cells in
// flight with `vu8`); true when they agree to the bit.
static bool check(const Case& c, bool vu8, std::mt19937& rng) {
    const int d = c.d, kv_dim = c.n_head_kv * d, q_dim = c.n_head * d;
    std::uniform_real_distribution<float> u(-1.5f, 1.5f);
    std::vector<__half> cache(2 * (size_t)c.cells * kv_dim);
    for (auto& h : cache) h = __float2half_rn(u(rng));
    std::vector<float> q(q_dim), k(kv_dim), v(kv_dim), ff(d / 2);
    for (auto& x : q) x = u(rng);
    for (auto& x : k) x = u(rng);
    for (auto& x : v) x = u(rng);
    for (auto& x : ff) x = 1.0f + 3.0f * (u(rng) + 1.5f);
    std::vector<int> step = {c.pos, 1};
    const size_t half_cells = (size_t)c.cells * kv_dim;
    const size_t part_len = (size_t)c.n_head * c.splits * (d + 2);

    int* dstep = to_device(step);
    unsigned* dcount = to_device(std::vector<unsigned>(c.n_head, 0u));
    float* dff = c.factors ? to_device(ff) : nullptr;
    float kq_scale = 1.0f / sqrtf((float)d);
    dim3 grid(1, c.n_head, c.splits), block(32 * c.warps);
    std::vector<float> outs[2];
    std::vector<__half> caches[2];
    std::vector<uint8_t> q16s[2];
    for (int fused = 0; fused < 2; fused++) {
        float *dq = to_device(q), *dk = to_device(k), *dv = to_device(v);
        __half* dcache = to_device(cache);
        __half *kc = dcache, *vc = dcache + half_cells;
        float* out = to_device(std::vector<float>(q_dim, -7.0f));
        float* part = to_device(std::vector<float>(part_len, -9.0f));
        uint8_t* dq16 = to_device(std::vector<uint8_t>(2 * (size_t)q_dim + 8 * (size_t)(q_dim / 32), 0xa5));
        if (fused) {
#define ROPE_ATT(K)                                                                                         \
    GQ_LAUNCH(grid, block, 0, K)(dq, dk, dv, kc, vc, out, part, c.n_head, c.n_head_kv, c.cells, dstep, c.window, \
                                 kq_scale, c.rope, dff, dcount, dq16)
            if (d == 64) vu8 ? ROPE_ATT(rope_attention_vec64_vu8) : ROPE_ATT(rope_attention_vec64);
            if (d == 128) vu8 ? ROPE_ATT(rope_attention_vec128_vu8) : ROPE_ATT(rope_attention_vec128);
            if (d == 256) vu8 ? ROPE_ATT(rope_attention_vec256_vu8) : ROPE_ATT(rope_attention_vec256);
        } else {
            // A decode step's blocks of ROPE_HEADS_PER_BLOCK heads, or (with
            // vu8) a prompt batch's one block for all of a token's heads.
            const int rope_y = vu8 ? 1 : (c.n_head + c.n_head_kv + ROPE_HEADS_PER_BLOCK - 1) / ROPE_HEADS_PER_BLOCK;
            GQ_LAUNCH(dim3(1, rope_y, 1), dim3(ROPE_HEADS_PER_BLOCK * ROPE_HEAD_THREADS), 0, rope_store)(
                dq, dk, dv, c.n_head, c.n_head_kv, d, dstep, c.rope, dff, kc, vc, c.cells);
            // attention_vec writes the output (and so the quantised form)
            // with one split; over several, attention_merge does.
            uint8_t* q16 = c.splits == 1 ? dq16 : nullptr;
#define ATT(K) GQ_LAUNCH(grid, block, 0, K)(dq, kc, vc, out, part, c.n_head, c.n_head_kv, c.cells, dstep, c.window, kq_scale, nullptr, q16)
            if (d == 64) vu8 ? ATT(attention_vec64_vu8) : ATT(attention_vec64);
            if (d == 128) vu8 ? ATT(attention_vec128_vu8) : ATT(attention_vec128);
            if (d == 256) vu8 ? ATT(attention_vec256_vu8) : ATT(attention_vec256);
        }
        if (c.splits > 1 && !fused)
            GQ_LAUNCH(dim3(1, c.n_head, 1), dim3(128), 0, attention_merge)(part, out, c.n_head, d, c.splits);
        CK(cudaDeviceSynchronize());
        outs[fused] = to_host(out, q_dim);
        caches[fused] = to_host(dcache, cache.size());
        q16s[fused] = to_host(dq16, 2 * (size_t)q_dim + 8 * (size_t)(q_dim / 32));
        for (void* p : {(void*)dq, (void*)dk, (void*)dv, (void*)dcache, (void*)out, (void*)part, (void*)dq16})
            CK(cudaFree(p));
    }
    const std::vector<unsigned> counts = to_host(dcount, c.n_head);
    bool zeroed = true;
    for (unsigned n : counts) zeroed = zeroed && n == 0;
    CK(cudaFree(dstep));
    CK(cudaFree(dcount));
    if (dff) CK(cudaFree(dff));
    bool ok_out = same_bits(outs[0].data(), outs[1].data(), outs[0].size() * 4);
    bool ok_cache = same_bits(caches[0].data(), caches[1].data(), caches[0].size() * 2);
    // The new cell must have been written (not left as the random history).
    bool wrote = !same_bits(caches[1].data() + (size_t)(c.pos % c.cells) * kv_dim,
                            cache.data() + (size_t)(c.pos % c.cells) * kv_dim, kv_dim * 2);
    bool finite = true;
    for (float x : outs[1]) finite = finite && std::isfinite(x);
    // The merged output quantised in the launch (with several splits and
    // no counters the separate merge writes the output, and nothing is
    // quantised: the backend then does not take it).
    const bool ok_q16 =
        q16s[1] == quantize_x16_host(outs[1]) && (c.splits > 1 || q16s[0] == quantize_x16_host(outs[0]));
    bool ok = ok_out && ok_cache && wrote && finite && zeroed && ok_q16;
    printf("%s rope_attention_vec%d%s: %d heads / %d kv, %d cells, pos %d, window %d, %d splits, %d warps, %s%s%s\n",
           ok ? "ok  " : "FAIL", d, vu8 ? "_vu8" : "", c.n_head, c.n_head_kv, c.cells, c.pos, c.window, c.splits, c.warps,
           c.rope.neox ? "neox" : "normal", c.rope.n_dims < d ? " partial" : "", c.factors ? " factors" : "");
    if (!ok)
        printf("     output %s, cache %s, new cell %s, finite %s, counters %s, quantised %s\n",
               ok_out ? "same" : "differs", ok_cache ? "same" : "differs", wrote ? "written" : "not written",
               finite ? "yes" : "no", zeroed ? "zero" : "left", ok_q16 ? "same" : "differs");
    return ok;
}

static RopeParams plain_rope(int n_dims, float base, bool neox) {
    RopeParams p{};
    p.n_dims = n_dims;
    p.freq_base = base;
    p.freq_scale = 1.0f;
    p.attn_factor = 1.0f;
    p.neox = neox ? 1 : 0;
    return p;
}

// --bench: a 7B's decode attention (32 heads of 128, f16 cache) alone, at
// several depths, splits, block sizes and rounds in flight, in
// microseconds a launch (with attention_merge where it merges) and TB/s of
// cache read; 32 layers' caches in turn, so L2 holds none of them.
static void bench() {
    const int n_head = 32, n_kv = 32, d = 128, layers = 32, kv_dim = n_kv * d;
    const float kq_scale = 1.0f / sqrtf((float)d);
    for (int cells : {513, 1024, 4096, 16384}) {
        const size_t half_cells = (size_t)cells * kv_dim;
        std::vector<__half> cache(2 * half_cells, __float2half_rn(0.01f));
        std::vector<__half*> caches(layers);
        for (auto& c : caches) c = to_device(cache);
        float* q = to_device(std::vector<float>(n_head * d, 0.1f));
        float* out = to_device(std::vector<float>(n_head * d, 0.0f));
        float* part = to_device(std::vector<float>((size_t)n_head * 64 * (d + 2), 0.0f));
        unsigned* count = to_device(std::vector<unsigned>(n_head, 0u));
        int* step = to_device(std::vector<int>{cells - 1, 1});
        const double bytes = 2.0 * half_cells * 2;
        printf("cells %5d (%.1f MB a layer):", cells, bytes / 1e6);
        for (int splits : {1, 8, 16, 28, 32, 64}) {
            if (splits > 1 && cells / splits < 64) continue;
            for (int warps : {4, 8, 16}) {
                if ((splits == 1) != (warps == 16)) continue;
                for (int vu8 = 0; vu8 < 2; vu8++)
                    for (int merged = 0; merged < (splits > 1 ? 2 : 1); merged++) {
                        auto run = [&](int layer) {
                            __half* kc = caches[layer];
                            __half* vc = kc + half_cells;
                            unsigned* cnt = merged ? count : nullptr;
                            dim3 grid(1, n_head, splits), block(32 * warps);
                            if (vu8)
                                GQ_LAUNCH(grid, block, 0, attention_vec128_vu8)(q, kc, vc, out, part, n_head, n_kv, cells,
                                                                               step, 0, kq_scale, cnt, nullptr);
                            else
                                GQ_LAUNCH(grid, block, 0, attention_vec128)(q, kc, vc, out, part, n_head, n_kv, cells,
                                                                           step, 0, kq_scale, cnt, nullptr);
                            if (splits > 1 && !merged)
                                GQ_LAUNCH(dim3(1, n_head, 1), dim3(128), 0, attention_merge)(part, out, n_head, d, splits);
                        };
                        for (int l = 0; l < layers; l++) run(l);
                        cudaEvent_t a, b;
                        CK(cudaEventCreate(&a));
                        CK(cudaEventCreate(&b));
                        CK(cudaEventRecord(a));
                        const int rounds = 4;
                        for (int r = 0; r < rounds; r++)
                            for (int l = 0; l < layers; l++) run(l);
                        CK(cudaEventRecord(b));
                        CK(cudaEventSynchronize(b));
                        float ms = 0;
                        CK(cudaEventElapsedTime(&ms, a, b));
                        const double us = 1e3 * ms / (rounds * layers);
                        printf(" s%d w%d%s%s %.1fus %.2f", splits, warps, vu8 ? " vu8" : "", merged ? " m" : "", us,
                               bytes / (us * 1e6));
                        CK(cudaEventDestroy(a));
                        CK(cudaEventDestroy(b));
                    }
            }
        }
        printf("\n");
        for (auto c : caches) CK(cudaFree(c));
        for (void* p : {(void*)q, (void*)out, (void*)part, (void*)count, (void*)step}) CK(cudaFree(p));
    }
}

struct PromptCase {
    int d, n_head, n_head_kv, cells, pos0, tokens, window;
};

// True where cell c holds a position that the query at `pos` attends to
// (the kernels' ring rule: the batch's last position is in cell last % cells).
static bool cell_visible(int c, int pos, int last, int cells, int window) {
    const int lm = last % cells;
    const int p = last - (lm - c + (c > lm ? cells : 0));
    return p >= 0 && p <= pos && !(window > 0 && pos - p >= window);
}

// Launches the prompt kernel `fa` (else tc) of head size d.
static void prompt_launch(bool fa, int d, dim3 grid, const float* q, const __half* kc, const __half* vc, float* out,
                          const PromptCase& c, const int* step, float kq_scale) {
    const int shared = fa ? attn_fa::shared_bytes(d) : attn_tc::shared_bytes(d);
#define PROMPT(K)                                                                                            \
    do {                                                                                                     \
        CK(cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, shared));                    \
        GQ_LAUNCH(grid, dim3(128), shared, K)(q, kc, vc, out, c.n_head, c.n_head_kv, d, c.cells, step, c.window, \
                                              kq_scale);                                                     \
    } while (0)
    if (d == 64 && fa) PROMPT(attention_prompt_fa64);
    if (d == 64 && !fa) PROMPT(attention_prompt_tc64);
    if (d == 128 && fa) PROMPT(attention_prompt_fa128);
    if (d == 128 && !fa) PROMPT(attention_prompt_tc128);
#undef PROMPT
}

static bool check_prompt(const PromptCase& c, std::mt19937& rng) {
    const int d = c.d, kv_dim = c.n_head_kv * d, q_dim = c.n_head * d;
    std::uniform_real_distribution<float> u(-1.5f, 1.5f);
    std::vector<__half> cache(2 * (size_t)c.cells * kv_dim);
    for (auto& h : cache) h = __float2half_rn(u(rng));
    std::vector<float> q((size_t)c.tokens * q_dim);
    for (auto& x : q) x = u(rng);
    const float kq_scale = 1.0f / sqrtf((float)d);
    // The reference: every visible cell, in double.
    const int last = c.pos0 + c.tokens - 1, group = c.n_head / c.n_head_kv;
    std::vector<double> ref(q.size(), 0.0);
    for (int t = 0; t < c.tokens; t++)
        for (int h = 0; h < c.n_head; h++) {
            const float* qh = &q[((size_t)t * c.n_head + h) * d];
            std::vector<double> score(c.cells, 0.0);
            double mx = -INFINITY;
            for (int cell = 0; cell < c.cells; cell++) {
                if (!cell_visible(cell, c.pos0 + t, last, c.cells, c.window)) continue;
                const __half* k = &cache[(size_t)cell * kv_dim + (h / group) * d];
                double sc = 0.0;
                for (int i = 0; i < d; i++) sc += (double)qh[i] * __half2float(k[i]);
                score[cell] = sc * kq_scale;
                mx = std::max(mx, score[cell]);
            }
            double sum = 0.0;
            double* o = &ref[((size_t)t * c.n_head + h) * d];
            for (int cell = 0; cell < c.cells; cell++) {
                if (!cell_visible(cell, c.pos0 + t, last, c.cells, c.window)) continue;
                const double e = exp(score[cell] - mx);
                sum += e;
                const __half* v = &cache[(size_t)(c.cells + cell) * kv_dim + (h / group) * d];
                for (int i = 0; i < d; i++) o[i] += e * __half2float(v[i]);
            }
            for (int i = 0; i < d; i++) o[i] = sum > 0.0 ? o[i] / sum : 0.0;
        }
    __half* dcache = to_device(cache);
    float* dq = to_device(q);
    int* dstep = to_device(std::vector<int>{c.pos0, c.tokens});
    double err[2] = {0.0, 0.0};
    bool finite = true;
    for (int fa = 0; fa < 2; fa++) {
        float* out = to_device(std::vector<float>(q.size(), -7.0f));
        prompt_launch(fa, d, dim3((c.tokens + 63) / 64, c.n_head, 1), dq, dcache, dcache + (size_t)c.cells * kv_dim, out,
                      c, dstep, kq_scale);
        CK(cudaDeviceSynchronize());
        const std::vector<float> got = to_host(out, q.size());
        for (size_t i = 0; i < got.size(); i++) {
            finite = finite && std::isfinite(got[i]);
            err[fa] = std::max(err[fa], fabs(got[i] - ref[i]));
        }
        CK(cudaFree(out));
    }
    for (void* p : {(void*)dcache, (void*)dq, (void*)dstep}) CK(cudaFree(p));
    // Both round q and the weights to f16; the one pass rounds weights
    // against a running maximum, so allow it a little more.
    const bool ok = finite && err[1] <= 1.5 * err[0] + 2e-4 && err[1] < 2e-2;
    printf("%s attention_prompt_fa%d: %d heads / %d kv, %d cells, pos %d, %d tokens, window %d: max |error| %.2e "
           "(two passes %.2e)\n",
           ok ? "ok  " : "FAIL", d, c.n_head, c.n_head_kv, c.cells, c.pos0, c.tokens, c.window, err[1], err[0]);
    return ok;
}

// --bench: a 7B's prompt attention (32 heads of 128) of a batch of 512
// and of 2048 tokens from an empty cache, both kernels, in us a launch.
static void bench_prompt() {
    for (int tokens : {512, 2048}) {
        const PromptCase c{128, 32, 32, tokens + 16, 0, tokens, 0};
        const int kv_dim = c.n_head_kv * c.d;
        __half* cache = to_device(std::vector<__half>(2 * (size_t)c.cells * kv_dim, __float2half_rn(0.01f)));
        float* q = to_device(std::vector<float>((size_t)tokens * c.n_head * c.d, 0.1f));
        float* out = to_device(std::vector<float>((size_t)tokens * c.n_head * c.d, 0.0f));
        int* step = to_device(std::vector<int>{0, tokens});
        printf("prompt attention, %d tokens:", tokens);
        for (int fa = 0; fa < 2; fa++) {
            auto run = [&]() {
                prompt_launch(fa, c.d, dim3((tokens + 63) / 64, c.n_head, 1), q, cache, cache + (size_t)c.cells * kv_dim,
                              out, c, step, 0.088f);
            };
            run();
            cudaEvent_t a, b;
            CK(cudaEventCreate(&a));
            CK(cudaEventCreate(&b));
            CK(cudaEventRecord(a));
            const int rounds = 20;
            for (int r = 0; r < rounds; r++) run();
            CK(cudaEventRecord(b));
            CK(cudaEventSynchronize(b));
            float ms = 0;
            CK(cudaEventElapsedTime(&ms, a, b));
            const double us = 1e3 * ms / rounds;
            const double flop = 4.0 * c.n_head * c.d * (double)tokens * (tokens + 1) / 2;
            printf(" %s %.1f us (%.0f TFLOP/s)", fa ? "one pass" : "two passes", us, flop / (us * 1e6));
            CK(cudaEventDestroy(a));
            CK(cudaEventDestroy(b));
        }
        printf("\n");
        for (void* p : {(void*)cache, (void*)q, (void*)out, (void*)step}) CK(cudaFree(p));
    }
}

int main(int argc, char** argv) {
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        bench_prompt();
        bench();
        return 0;
    }
    std::mt19937 rng(12345);
    RopeParams yarn = plain_rope(128, 10000.0f, true);
    yarn.freq_scale = 0.25f;
    yarn.ext_factor = 1.0f;
    yarn.corr_low = 8.0f;
    yarn.corr_high = 40.0f;
    const Case cases[] = {
        // One split; the new cell inside a cache not yet full.
        {64, 4, 2, 96, 40, 0, 1, 4, plain_rope(64, 10000.0f, false), false},
        {128, 4, 4, 64, 63, 0, 1, 16, plain_rope(128, 500000.0f, false), true},
        {256, 2, 1, 48, 20, 0, 1, 8, plain_rope(256, 10000.0f, true), false},
        // Partial rotation; a ring that has wrapped, with a window.
        {128, 8, 2, 80, 233, 50, 1, 4, plain_rope(32, 10000.0f, true), false},
        {64, 4, 1, 70, 69, 0, 1, 2, plain_rope(48, 10000.0f, false), false},
        // Splits: the new cell in the last, a middle or the first one.
        {128, 4, 2, 300, 299, 0, 3, 4, yarn, true},
        {128, 4, 2, 200, 530, 0, 4, 4, plain_rope(128, 10000.0f, false), false},
        {64, 6, 3, 120, 360, 0, 5, 2, plain_rope(64, 10000.0f, true), false},
        {256, 4, 2, 150, 401, 100, 2, 8, plain_rope(256, 1000000.0f, false), true},
    };
    int failed = 0;
    for (const Case& c : cases)
        for (bool vu8 : {false, true}) failed += !check(c, vu8, rng);
    const PromptCase prompts[] = {
        // A fresh batch (a partial last block of queries), and one after earlier tokens.
        {64, 4, 2, 160, 0, 150, 0},
        {128, 4, 4, 256, 0, 130, 0},
        {128, 6, 2, 320, 100, 70, 0},
        {64, 2, 1, 90, 17, 64, 0},
        // A window over a ring that has wrapped (the cache holds window + batch cells).
        {128, 4, 2, 96, 200, 40, 56},
        {64, 4, 4, 72, 61, 33, 30},
        // Fewer tokens than a warp's 16 queries.
        {128, 2, 2, 64, 5, 7, 0},
    };
    for (const PromptCase& c : prompts) failed += !check_prompt(c, rng);
    if (failed) {
        printf("%d failed\n", failed);
        return 1;
    }
    printf("all ok\n");
    return 0;
}
