// The MSL kernels run on the CPU for ggml/src/metal/tests.rs: each command
// reads its inputs (f32 files), runs one kernel's grid through run.hpp and
// writes its output. Built with g++ by the test, which includes the real
// kernel sources through one change (threadgroup arrays made static).
#include <metal_stdlib>

#include "run.hpp"

using namespace metal;

#include "elementwise.metal"
#include "norm.metal"
#include "matvec.metal"
#include "rope.metal"
#include "attention.metal"
#include "matmul.metal"
#include "cache.metal"

#include <string>

static std::vector<float> load(const char* path) {
    FILE* f = std::fopen(path, "rb");
    if (!f) { std::perror(path); std::exit(2); }
    std::vector<float> v;
    float x;
    while (std::fread(&x, 4, 1, f) == 1) v.push_back(x);
    std::fclose(f);
    return v;
}

static std::vector<uchar> load_bytes(const char* path) {
    FILE* f = std::fopen(path, "rb");
    if (!f) { std::perror(path); std::exit(2); }
    std::vector<uchar> v;
    int c;
    while ((c = std::fgetc(f)) != EOF) v.push_back((uchar)c);
    std::fclose(f);
    return v;
}

static void save(const char* path, const std::vector<float>& v) {
    FILE* f = std::fopen(path, "wb");
    if (!f || std::fwrite(v.data(), 4, v.size(), f) != v.size()) { std::perror(path); std::exit(2); }
    std::fclose(f);
}

// One thread an element: groups of 256, thread_position_in_grid.
static bool elementwise(uint len, const std::function<void(uint)>& k) {
    return emu::run((len + 255) / 256, 256, [&](uint g, const emu::Thread& t) { k(g * 256 + t.tid); });
}

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    const std::string op = argv[1];
    bool ok = false;
    if (op == "add" && argc == 5) {  // add X Y OUT
        auto x = load(argv[2]), y = load(argv[3]);
        ElementArgs a{(uint)x.size(), 0, 0.0f};
        ok = elementwise(a.len, [&](uint i) { add_f32(x.data(), y.data(), a, i); });
        save(argv[4], x);
    } else if (op == "add_bias" && argc == 5) {  // add_bias X BIAS OUT
        auto x = load(argv[2]), b = load(argv[3]);
        ElementArgs a{(uint)x.size(), (uint)b.size(), 0.0f};
        ok = elementwise(a.len, [&](uint i) { add_bias_f32(x.data(), b.data(), a, i); });
        save(argv[4], x);
    } else if (op == "scale" && argc == 5) {  // scale S X OUT
        auto x = load(argv[3]);
        ElementArgs a{(uint)x.size(), 0, std::stof(argv[2])};
        ok = elementwise(a.len, [&](uint i) { scale_f32(x.data(), a, i); });
        save(argv[4], x);
    } else if (op == "glu" && argc == 6) {  // glu GELU(0|1) GATE UP OUT
        GLU_GELU = std::stoi(argv[2]) != 0;
        auto g = load(argv[3]), u = load(argv[4]);
        ElementArgs a{(uint)g.size(), 0, 0.0f};
        ok = elementwise(a.len, [&](uint i) { glu_f32(g.data(), u.data(), a, i); });
        save(argv[5], g);
    } else if (op == "rms_norm" && argc == 8) {  // rms_norm WIDTH EPS THREADS X W OUT
        NormArgs a{(uint)std::stoul(argv[2]), std::stof(argv[3])};
        const uint threads = std::stoul(argv[4]);
        auto x = load(argv[5]), w = load(argv[6]);
        std::vector<float> y(x.size());
        const uint rows = x.size() / a.width;
        ok = emu::run(rows, threads, [&](uint row, const emu::Thread& t) {
            rms_norm_f32(x.data(), w.data(), y.data(), a, row, t.tid, threads, t.lane, t.simd);
        });
        save(argv[7], y);
    } else if (op == "matvec" && argc == 8) {  // matvec TYPE ROWS COLS W X OUT (4 simdgroups a group)
        const std::string ty = argv[2];
        MatvecArgs a{(uint)std::stoul(argv[3]), (uint)std::stoul(argv[4])};
        auto w = load_bytes(argv[5]);
        auto x = load(argv[6]);
        std::vector<float> y(a.rows);
        const uint simds = 4, groups = (a.rows + simds - 1) / simds;
        bool known = false;
#define MV(NAME, BLOCK)                                                                                 \
    if (ty == #NAME) {                                                                                  \
        known = true;                                                                                   \
        ok = emu::run(groups, 32 * simds, [&](uint g, const emu::Thread& t) {                           \
            matvec_##NAME(reinterpret_cast<const BLOCK*>(w.data()), x.data(), y.data(), a, g, t.simd, simds, \
                          t.lane);                                                                      \
        });                                                                                             \
    }
        MV(f32, float) MV(f16, half) MV(bf16, ushort) MV(q4_0, block_q4_0) MV(q4_1, block_q4_1)
        MV(q5_0, block_q5_0) MV(q5_1, block_q5_1) MV(q8_0, block_q8_0) MV(iq4_nl, block_iq4_nl)
        MV(q2_k, block_q2_K) MV(q3_k, block_q3_K) MV(q4_k, block_q4_K) MV(q5_k, block_q5_K)
        MV(q6_k, block_q6_K) MV(iq4_xs, block_iq4_xs)
#undef MV
        if (!known) {
            std::fprintf(stderr, "kernels: no matvec for %s\n", ty.c_str());
            ok = false;
        }
        save(argv[7], y);
    } else if (op == "rope" && argc == 16) {
        // rope N_HEADS HEAD_DIM N_DIMS POS0 BASE SCALE EXT ATTN LOW HIGH NEOX X FF|- (then OUT)
        RopeArgs a{(uint)std::stoul(argv[2]), (uint)std::stoul(argv[3]), (uint)std::stoul(argv[4]),
                   (uint)std::stoul(argv[5]), std::stof(argv[6]), std::stof(argv[7]), std::stof(argv[8]),
                   std::stof(argv[9]), std::stof(argv[10]), std::stof(argv[11]), (uint)std::stoul(argv[12]), 0};
        auto x = load(argv[13]);
        std::vector<float> ff;
        if (std::string(argv[14]) != "-") {
            ff = load(argv[14]);
            a.has_ff = 1;
        }
        const uint rows = x.size() / a.head_dim;
        ok = emu::run(rows, 32, [&](uint g, const emu::Thread& t) { rope_f32(x.data(), ff.data(), a, g, t.tid, 32); });
        save(argv[15], x);
    } else if (op == "attention" && argc == 15) {
        // attention N_HEAD N_HEAD_KV HEAD_DIM CELLS POS0 TOKENS WINDOW KQ_SCALE SIMDS Q K V OUT
        AttentionArgs a{(uint)std::stoul(argv[2]), (uint)std::stoul(argv[3]), (uint)std::stoul(argv[4]),
                        (uint)std::stoul(argv[5]), (uint)std::stoul(argv[6]), (uint)std::stoul(argv[7]),
                        (uint)std::stoul(argv[8]), std::stof(argv[9])};
        const uint simds = std::stoul(argv[10]);
        auto qv = load(argv[11]);
        auto kb = load_bytes(argv[12]), vb = load_bytes(argv[13]);
        std::vector<float> o((size_t)a.tokens * a.n_head * a.head_dim);
        const half* k = reinterpret_cast<const half*>(kb.data());
        const half* v = reinterpret_cast<const half*>(vb.data());
        ok = emu::run(a.tokens * a.n_head, 32 * simds, [&](uint g, const emu::Thread& t) {
            attention_f16(qv.data(), k, v, o.data(), a, g, t.simd, simds, t.lane);
        });
        save(argv[14], o);
    } else if (op == "matmul" && argc == 9) {  // matmul TYPE ROWS COLS TOKENS W X OUT
        const std::string ty = argv[2];
        MatmulArgs a{(uint)std::stoul(argv[3]), (uint)std::stoul(argv[4]), (uint)std::stoul(argv[5])};
        auto w = load_bytes(argv[6]);
        auto x = load(argv[7]);
        std::vector<float> o((size_t)a.tokens * a.rows);
        const uint gx = (a.rows + MM_R - 1) / MM_R, gy = (a.tokens + MM_T - 1) / MM_T;
        bool known = false;
#define MM(NAME, BLOCK)                                                                                       \
    if (ty == #NAME) {                                                                                        \
        known = true;                                                                                         \
        ok = emu::run(gx * gy, 128, [&](uint g, const emu::Thread& t) {                                       \
            matmul_##NAME(reinterpret_cast<const BLOCK*>(w.data()), x.data(), o.data(), a, uint2{g % gx, g / gx}, \
                          t.tid, t.simd);                                                                     \
        });                                                                                                   \
    }
        MM(f32, float) MM(f16, half) MM(bf16, ushort) MM(q4_0, block_q4_0) MM(q4_1, block_q4_1)
        MM(q5_0, block_q5_0) MM(q5_1, block_q5_1) MM(q8_0, block_q8_0) MM(iq4_nl, block_iq4_nl)
        MM(q2_k, block_q2_K) MM(q3_k, block_q3_K) MM(q4_k, block_q4_K) MM(q5_k, block_q5_K)
        MM(q6_k, block_q6_K) MM(iq4_xs, block_iq4_xs)
#undef MM
        if (!known) ok = false;
        save(argv[8], o);
    } else if (op == "kv_store" && argc == 10) {  // kv_store KV_DIM CELLS POS0 K V KC VC (then OUT: K cache, V cache)
        KvStoreArgs a{(uint)std::stoul(argv[2]), (uint)std::stoul(argv[3]), (uint)std::stoul(argv[4]), 0};
        auto k = load(argv[5]), v = load(argv[6]);
        auto kb = load_bytes(argv[7]), vb = load_bytes(argv[8]);
        a.tokens = k.size() / a.kv_dim;
        half* kc = reinterpret_cast<half*>(kb.data());
        half* vc = reinterpret_cast<half*>(vb.data());
        ok = elementwise(a.tokens * a.kv_dim, [&](uint i) { kv_store_f16(k.data(), v.data(), kc, vc, a, i); });
        std::vector<float> o;
        for (size_t i = 0; i < kb.size() / 2; i++) o.push_back((float)kc[i]);
        for (size_t i = 0; i < vb.size() / 2; i++) o.push_back((float)vc[i]);
        save(argv[9], o);
    } else if (op == "copy_cols" && argc == 8) {  // copy_cols ROWS WIDTH SRC_WIDTH COL0 SRC OUT
        CopyArgs a{(uint)std::stoul(argv[2]), (uint)std::stoul(argv[3]), (uint)std::stoul(argv[4]),
                   (uint)std::stoul(argv[5])};
        auto src = load(argv[6]);
        std::vector<float> o((size_t)a.rows * a.width);
        ok = elementwise(a.rows * a.width, [&](uint i) { copy_cols_f32(src.data(), o.data(), a, i); });
        save(argv[7], o);
    } else if (op == "gather_cols" && argc == 6) {  // gather_cols WIDTH SRC ORDER OUT (order as u32 bytes)
        auto src = load(argv[3]);
        auto ob = load_bytes(argv[4]);
        const uint width = std::stoul(argv[2]);
        CopyArgs a{(uint)(src.size() / width), width, width, 0};
        std::vector<float> o(src.size());
        const uint* order = reinterpret_cast<const uint*>(ob.data());
        ok = elementwise(a.rows * a.width, [&](uint i) { gather_cols_f32(src.data(), order, o.data(), a, i); });
        save(argv[5], o);
    } else if (op == "diverge") {  // a barrier half the group skips: must be reported
        ok = emu::run(1, 64, [&](uint, const emu::Thread& t) {
            if (t.tid < 32) threadgroup_barrier(mem_flags::mem_threadgroup);
        });
    } else {
        std::fprintf(stderr, "kernels: unknown command %s\n", op.c_str());
        return 2;
    }
    return ok ? 0 : 1;
}
