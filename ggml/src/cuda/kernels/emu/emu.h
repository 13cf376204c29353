// A CPU stand-in for the CUDA execution model, so that the kernels' logic
// (lane mappings, shared-memory layouts, barriers, warp shuffles) can be
// tested on machines without a GPU: g++ compiles the same .cu sources with
// -I emu, which puts this directory's cuda_runtime.h, cuda_fp16.h and mma.h
// first. Only behaviour is emulated, never timing.
//
// Each CUDA thread of a block is a fiber (ucontext) with its own stack; the
// blocks of a grid run one after another on one OS thread, so `__shared__`
// variables can be plain statics. A fiber runs until it reaches a barrier
// (__syncthreads, __syncwarp, a shuffle or vote), which yields to a
// scheduler (passes in a random order, letting warps sleep) until every
// live thread of the block (or warp) has arrived. Threads that have returned no longer count, as on the GPU.
// Dynamic shared memory is filled with a byte pattern before each block, so
// a kernel that reads it before writing it gets garbage, not zeros.
// Inline PTX is not emulated: the kernels keep it behind __CUDA_ARCH__ (never
// defined here) or GQ_EMU.
#pragma once

#ifndef GQ_EMU
#define GQ_EMU 1
#endif

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(8) float2 { float x, y; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline float2 make_float2(float x, float y) { return {x, y}; }

// The built-in variables: the scheduler sets them before it resumes a
// thread (one runs at a time).
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace gq_emu {

struct Barrier {
    int arrived = 0;
    unsigned gen = 0;
};

// Switching fibers. glibc's swapcontext saves and restores the signal mask
// (two system calls a switch, most of an emulated run's time), so on x86-64
// a switch saves the callee-saved registers on the fiber's own stack and
// swaps stack pointers; elsewhere ucontext does it.
#if defined(__x86_64__)
extern "C" void gq_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .pushsection .text
    .weak gq_emu_switch
    .type gq_emu_switch, @function
gq_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size gq_emu_switch, .-gq_emu_switch
    .popsection
)");
struct Context {
    void* sp = nullptr;
};
#else
struct Context {
    ucontext_t uc;
};
#endif

// A warpgroup product (wgmma m64nNk16, f16 in, f32 accumulators) not yet
// computed: this thread's N/2 accumulators, the operands' descriptors.
struct WgOp {
    float* d;
    int n;
    uint64_t a, b;
};

// A 16-byte asynchronous copy (cp.async) not yet landed.
struct Copy16 {
    void* dst;
    const void* src;
};

// Asynchronous work a thread issued and has not yet waited for: what it
// issued since its last commit, then the committed groups, oldest first.
// `land(pending, f)` does (f) the oldest groups until `pending` are left,
// as the GPU's wait_group instructions let them complete.
template <typename Op>
struct AsyncQueue {
    std::vector<Op> open;
    std::vector<std::vector<Op>> groups;

    void commit() {
        groups.push_back(std::move(open));
        open.clear();
    }
    template <typename F>
    void land(int pending, F f) {
        while (static_cast<int>(groups.size()) > pending) {
            for (const Op& op : groups.front()) f(op);
            groups.erase(groups.begin());
        }
    }
    void clear() {
        open.clear();
        groups.clear();
    }
};

struct Fiber {
    Context ctx;
    std::vector<char> stack;
    dim3 tid;
    int linear = 0;
    bool done = false;
    // This thread's cp.async copies not yet landed (copy16_async lands half
    // of them at once, the others only when a wait lets them).
    AsyncQueue<Copy16> copies;
    // This thread's warpgroup products (wgmma), computed only when a wait
    // lets them, from the shared memory as it is then (so a kernel that
    // overwrites an operand too early gets the new bytes, as the GPU may
    // give it).
    AsyncQueue<WgOp> products;
};

struct State {
    std::vector<Fiber> fibers;
    Context sched;
    int cur = -1;
    dim3 grid, block, bid;
    int live = 0;
    Barrier block_bar;
    std::vector<Barrier> warp_bar;
    std::vector<int> warp_live;
    std::vector<unsigned long long> exchange;  // two words a thread: shuffles and votes
    std::vector<unsigned char> share;          // 24 bytes a thread: a warp's mma fragments
    std::vector<unsigned char> dynamic_shared;
    size_t dynamic_shared_bytes = 0;
    // The order the scheduler resumes threads in, reshuffled every pass,
    // and the passes each warp still sleeps through (a warp falls asleep
    // for 1 to 32 passes now and then): so that a race between warps that a
    // barrier should have ordered can show (a fixed order always lets lower
    // warps go first, and a warp released by a barrier would always run
    // before the others get far).
    std::vector<int> order;
    std::vector<int> asleep;
    unsigned long long rng = 0x9e3779b97f4a7c15ull;
    std::function<void()> body;
    long spins = 0;
};

inline State& st() {
    static State s;
    return s;
}
inline Fiber& self() { return st().fibers[st().cur]; }

// Stack of each fiber: the kernels keep their per-thread arrays small, but
// a fragment of the wmma stand-in is a whole 16x16 tile.
constexpr size_t STACK_BYTES = 256 << 10;

inline void switch_to(Context& save, Context& load) {
#if defined(__x86_64__)
    gq_emu_switch(&save.sp, load.sp);
#else
    swapcontext(&save.uc, &load.uc);
#endif
}

inline void yield() { switch_to(self().ctx, st().sched); }

// Waits at `b` until `live` threads have arrived (read again after every
// yield: a thread that returns lowers it).
inline void wait(Barrier& b, const int& live) {
    State& s = st();
    const unsigned gen = b.gen;
    s.spins = 0;
    if (++b.arrived >= live) {
        b.arrived = 0;
        ++b.gen;
        return;
    }
    for (;;) {
        yield();
        if (b.gen != gen) return;
        if (b.arrived >= live) {
            b.arrived = 0;
            ++b.gen;
            return;
        }
        // Waiting threads resumed 64 passes' worth and none arrived anywhere
        // (a warp they wait for may sleep through 32, below).
        if (++s.spins > 64L * (s.live + 2)) {
            fprintf(stderr, "emu: deadlock in block (%u,%u,%u): threads wait at barriers others never reach\n",
                    s.bid.x, s.bid.y, s.bid.z);
            abort();
        }
    }
}

inline void sync_block() { wait(st().block_bar, st().live); }
inline void sync_warp() {
    const int w = self().linear >> 5;
    wait(st().warp_bar[w], st().warp_live[w]);
}

// Every live lane of the warp publishes `v`; returns what `src` (a lane of
// this warp) published. Two warp barriers: all have written before any
// reads, all have read before any writes again.
template <typename T>
inline T exchange(T v, int src) {
    static_assert(sizeof(T) <= 16, "shuffles move at most 16 bytes");
    State& s = st();
    const int t = self().linear, base = t & ~31;
    memcpy(&s.exchange[2 * t], &v, sizeof(T));
    sync_warp();
    T r;
    memcpy(&r, &s.exchange[2 * (base + src)], sizeof(T));
    sync_warp();
    return r;
}

// A thread's life: the kernel, then back to the scheduler for good.
inline void entry() {
    State& s = st();
    s.body();
    Fiber& f = self();
    f.done = true;
    --s.live;
    --s.warp_live[f.linear >> 5];
    s.spins = 0;
#if defined(__x86_64__)
    Context dead;
    switch_to(dead, s.sched);
    __builtin_unreachable();
#endif
}

// Makes `f` start at entry() when first switched to.
inline void start(Fiber& f) {
#if defined(__x86_64__)
    // The stack gq_emu_switch pops: six registers, then entry's address as
    // the return address, with the stack 16-byte aligned at entry's call
    // boundary (rsp + 8 a multiple of 16 on entering a function).
    uintptr_t top = reinterpret_cast<uintptr_t>(f.stack.data() + f.stack.size()) & ~static_cast<uintptr_t>(15);
    void** sp = reinterpret_cast<void**>(top - 16);
    sp[0] = reinterpret_cast<void*>(&entry);
    sp -= 6;
    for (int i = 0; i < 6; ++i) sp[i] = nullptr;
    f.ctx.sp = sp;
#else
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc.uc_stack.ss_size = f.stack.size();
    f.ctx.uc.uc_link = &st().sched.uc;
    makecontext(&f.ctx.uc, entry, 0);
#endif
}

inline void* dynamic_shared() {
    const uintptr_t p = reinterpret_cast<uintptr_t>(st().dynamic_shared.data());
    return reinterpret_cast<void*>((p + 1023) & ~static_cast<uintptr_t>(1023));
}

// Bytes past a block's dynamic shared memory, checked after the block: a
// kernel that writes past what it was given aborts.
constexpr size_t SHARED_GUARD = 256;
constexpr unsigned char POISON = 0x5a;

inline unsigned next_random() {
    State& s = st();
    s.rng ^= s.rng << 13;
    s.rng ^= s.rng >> 7;
    s.rng ^= s.rng << 17;
    return static_cast<unsigned>(s.rng >> 32);
}

// cp.async: queued, committed, landed by waits.
// Half land at once, half only when waited for: a GPU's copy may land any
// time in between, so a kernel must neither read a slot before its wait
// nor give a slot new copies while something may still read it.
inline void copy16_async(void* dst, const void* src) {
    if (next_random() & 1)
        memcpy(dst, src, 16);
    else
        self().copies.open.push_back(Copy16{dst, src});
}
inline void async_commit() { self().copies.commit(); }
inline void async_wait(int pending) {
    self().copies.land(pending, [](const Copy16& c) { memcpy(c.dst, c.src, 16); });
}

// The half-precision value of 16 bits, exactly.
inline float f16_to_f32(unsigned short h) {
    const unsigned sign = static_cast<unsigned>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    unsigned bits;
    if (exp == 0) {
        const float v = static_cast<float>(mant) / 16777216.0f;
        memcpy(&bits, &v, 4);
        bits |= sign;
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 for the calling lane:
// every lane of the warp hands in its fragments (the PTX ISA's layouts,
// g = lane / 4, t = lane % 4: a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..],
// a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]; b[0] = B[2t..2t+1][g],
// b[1] = B[2t+8..2t+9][g]; the low half the lower k), and each gets its
// own four sums d[0..1] = D[g][2t..2t+1], d[2..3] = D[g+8][2t..2t+1].
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    State& s = st();
    const int t = self().linear, base = t & ~31, lane = t & 31;
    uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    memcpy(&s.share[24 * t], mine, 24);
    sync_warp();
    uint32_t all[32][6];
    memcpy(all, &s.share[24 * base], sizeof all);
    sync_warp();
    auto half = [](uint32_t w, int k) { return f16_to_f32(static_cast<unsigned short>(k & 1 ? w >> 16 : w & 0xffffu)); };
    auto A = [&](int r, int k) { return half(all[(r & 7) * 4 + ((k & 7) >> 1)][(r >> 3) + 2 * (k >> 3)], k); };
    auto B = [&](int k, int n) { return half(all[n * 4 + ((k & 7) >> 1)][4 + (k >> 3)], k); };
    const int g = lane >> 2, tq = lane & 3;
    for (int i = 0; i < 4; ++i) {
        const int r = g + 8 * (i >> 1), n = 2 * tq + (i & 1);
        float acc = d[i];
        for (int k = 0; k < 16; ++k) acc += A(r, k) * B(k, n);
        d[i] = acc;
    }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 for the calling lane:
// lanes 8i..8i+7 name rows 0..7 of matrix i (8 halves, 16 bytes each); lane
// (g = lane / 4, t = lane % 4) gets of each matrix M the halves M[g][2t],
// M[g][2t+1], or with `trans` M[2t][g], M[2t+1][g] (the first low).
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row, bool trans) {
    State& s = st();
    const int t = self().linear, base = t & ~31, lane = t & 31;
    memcpy(&s.share[24 * t], &row, sizeof row);
    sync_warp();
    const unsigned short* rows[32];
    for (int l = 0; l < 32; ++l) memcpy(&rows[l], &s.share[24 * (base + l)], sizeof rows[l]);
    sync_warp();
    const int g = lane >> 2, tq = lane & 3;
    for (int i = 0; i < 4; ++i) {
        auto at = [&](int rr, int c) { return static_cast<uint32_t>(rows[8 * i + rr][c]); };
        r[i] = trans ? at(2 * tq, g) | at(2 * tq + 1, g) << 16 : at(g, 2 * tq) | at(g, 2 * tq + 1) << 16;
    }
}

// A shared-memory address (what cvta.to.shared gives): bytes from the
// block's dynamic shared memory, which the emulator aligns to 1024 bytes.
inline unsigned shared_address(const void* p) {
    return static_cast<unsigned>(static_cast<const unsigned char*>(p) - static_cast<const unsigned char*>(dynamic_shared()));
}

// Element (row, k) of a K-major, 128B-swizzled f16 operand whose descriptor
// is `desc`: rows 8 apart by the stride byte offset, 128 bytes a row, the
// address's bits 4-6 swizzled by its bits 7-9.
inline float wg_operand(uint64_t desc, int row, int k) {
    if ((desc >> 62) != 1) {
        fprintf(stderr, "emu: a wgmma descriptor without the 128-byte swizzle\n");
        abort();
    }
    const unsigned start = static_cast<unsigned>(desc & 0x3FFF) << 4;
    const unsigned stride = static_cast<unsigned>((desc >> 32) & 0x3FFF) << 4;
    unsigned addr = start + (row >> 3) * stride + (row & 7) * 128 + 2 * k;
    addr ^= ((addr >> 7) & 7) << 4;
    if (addr + 2 > st().dynamic_shared_bytes) {
        fprintf(stderr, "emu: a wgmma operand at %u past %zu bytes of shared memory\n", addr, st().dynamic_shared_bytes);
        abort();
    }
    unsigned short h;
    memcpy(&h, static_cast<const unsigned char*>(dynamic_shared()) + addr, 2);
    return f16_to_f32(h);
}

// Computes one product for the thread `t` of its warpgroup (its
// accumulators' places as the PTX ISA's figure for m64nNk16 gives them).
inline void wg_compute(const WgOp& op, int t) {
    for (int i = 0; i < op.n / 2; ++i) {
        const int row = 16 * (t >> 5) + ((t & 31) >> 2) + 8 * ((i >> 1) & 1);
        const int col = 8 * (i >> 2) + 2 * (t & 3) + (i & 1);
        float s = op.d[i];
        for (int k = 0; k < 16; ++k) s += wg_operand(op.a, row, k) * wg_operand(op.b, col, k);
        op.d[i] = s;
    }
}

inline void wg_mma_f16(float* d, int n, uint64_t a, uint64_t b) { self().products.open.push_back(WgOp{d, n, a, b}); }
inline void wg_commit() { self().products.commit(); }
inline void wg_wait(int pending) {
    const int t = self().linear & 127;
    self().products.land(pending, [t](const WgOp& op) { wg_compute(op, t); });
}

// Runs `body` as every thread of every block of `grid`.
inline void run_grid(dim3 grid, dim3 block, size_t shared_bytes, std::function<void()> body) {
    State& s = st();
    const int n = static_cast<int>(block.x * block.y * block.z);
    if (n <= 0 || n > 1024) {
        fprintf(stderr, "emu: a block of %d threads\n", n);
        abort();
    }
    s.grid = grid;
    s.block = block;
    ::gridDim = grid;
    ::blockDim = block;
    s.body = std::move(body);
    if (static_cast<int>(s.fibers.size()) < n) s.fibers.resize(n);
    s.exchange.assign(2 * ((n + 31) & ~31), 0);
    s.share.assign(24 * ((n + 31) & ~31), 0);
    s.dynamic_shared.assign(shared_bytes + 1024 + SHARED_GUARD, 0);
    s.dynamic_shared_bytes = shared_bytes;
    s.order.resize(n);
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                s.bid = dim3(bx, by, bz);
                ::blockIdx = s.bid;
                memset(s.dynamic_shared.data(), POISON, s.dynamic_shared.size());
                s.live = n;
                s.block_bar = Barrier{};
                s.warp_bar.assign((n + 31) / 32, Barrier{});
                s.warp_live.assign((n + 31) / 32, 0);
                for (int t = 0; t < n; ++t) {
                    Fiber& f = s.fibers[t];
                    if (f.stack.empty()) f.stack.resize(STACK_BYTES);
                    f.linear = t;
                    f.tid = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                    f.done = false;
                    f.copies.clear();
                    f.products.clear();
                    s.order[t] = t;
                    ++s.warp_live[t >> 5];
                    start(f);
                }
                s.asleep.assign((n + 31) / 32, 0);
                while (s.live > 0) {
                    for (int i = n - 1; i > 0; --i) std::swap(s.order[i], s.order[next_random() % (i + 1)]);
                    for (int& a : s.asleep) {
                        if (a > 0)
                            --a;
                        else if (next_random() % 16 == 0)
                            a = 1 + static_cast<int>(next_random() % 32);
                    }
                    for (int t : s.order) {
                        if (s.fibers[t].done || s.asleep[t >> 5] > 0) continue;
                        s.cur = t;
                        ::threadIdx = s.fibers[t].tid;
                        switch_to(s.sched, s.fibers[t].ctx);
                    }
                }
                s.cur = -1;
                const unsigned char* guard =
                    static_cast<const unsigned char*>(dynamic_shared()) + s.dynamic_shared_bytes;
                for (size_t i = 0; i < SHARED_GUARD; ++i)
                    if (guard[i] != POISON) {
                        fprintf(stderr, "emu: block (%u,%u,%u) wrote past its %zu bytes of dynamic shared memory\n",
                                bx, by, bz, s.dynamic_shared_bytes);
                        abort();
                    }
            }
}

// A kernel launch: the arguments converted to the kernel's parameter types,
// as a launch would pass them.
template <typename... P, typename... A>
inline void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared_bytes, A&&... args) {
    std::tuple<typename std::decay<P>::type...> params(static_cast<P>(args)...);
    run_grid(grid, block, shared_bytes, [&]() { std::apply(kernel, params); });
}


}  // namespace gq_emu

#define warpSize 32

inline void __syncthreads() { gq_emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { gq_emu::sync_warp(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
    const int lane = gq_emu::self().linear & 31;
    int src = lane ^ mask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
    return gq_emu::exchange(v, src);
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    const int lane = gq_emu::self().linear & 31;
    return gq_emu::exchange(v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    const int lane = gq_emu::self().linear & 31;
    const int src = lane + static_cast<int>(delta);
    return gq_emu::exchange(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <typename T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
    const int lane = gq_emu::self().linear & 31;
    const int src = lane - static_cast<int>(delta);
    return gq_emu::exchange(v, src >= (lane & ~(width - 1)) ? src : lane);
}
inline unsigned __ballot_sync(unsigned, int pred) {
    const int base = gq_emu::self().linear & ~31;
    unsigned bits = 0;
    const unsigned mine = pred ? 1u : 0u;
    // Each lane's vote, read back from every lane.
    for (int l = 0; l < 32; ++l) {
        (void)base;
        bits |= gq_emu::exchange(mine, l) << l;
    }
    return bits;
}
inline int __any_sync(unsigned m, int pred) { return __ballot_sync(m, pred) != 0; }
inline int __all_sync(unsigned m, int pred) { return __ballot_sync(m, !pred) == 0; }

template <typename T>
inline T __ldg(const T* p) {
    return *p;
}
template <typename T>
inline T __ldcg(const T* p) {
    return *p;
}
// Blocks run one after another here: every write is seen by the next.
inline void __threadfence() {}

inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int u) { return __uint_as_float(static_cast<unsigned>(u)); }
inline int __float_as_int(float f) { return static_cast<int>(__float_as_uint(f)); }
inline int __float2int_rn(float f) { return static_cast<int>(nearbyintf(f)); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
    return static_cast<unsigned>(v >> (shift & 31));
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
    const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
    return static_cast<unsigned>((v << (shift & 31)) >> 32);
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
inline unsigned __vsub4(unsigned a, unsigned b) {
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (((a >> (8 * i)) - (b >> (8 * i))) & 0xffu) << (8 * i);
    return r;
}

// Integer dot products: a's 16-bit (dp2a) or 8-bit (dp4a) halves times b's
// bytes (dp2a: bytes 0-1 for lo, 2-3 for hi), each signed or not as the
// overload (or the _su helpers: a signed, b unsigned) says.
namespace gq_emu {
template <bool SA, bool SB>
inline int dp2a(unsigned a, unsigned b, bool hi, int c) {
    const unsigned bb = hi ? b >> 16 : b;
    for (int i = 0; i < 2; ++i) {
        const int x = SA ? static_cast<int16_t>(a >> (16 * i)) : static_cast<int>((a >> (16 * i)) & 0xffff);
        const int y = SB ? static_cast<int8_t>(bb >> (8 * i)) : static_cast<int>((bb >> (8 * i)) & 0xff);
        c += x * y;
    }
    return c;
}
template <bool SA, bool SB>
inline int dp4a(unsigned a, unsigned b, int c) {
    for (int i = 0; i < 4; ++i) {
        const int x = SA ? static_cast<int8_t>(a >> (8 * i)) : static_cast<int>((a >> (8 * i)) & 0xff);
        const int y = SB ? static_cast<int8_t>(b >> (8 * i)) : static_cast<int>((b >> (8 * i)) & 0xff);
        c += x * y;
    }
    return c;
}
}  // namespace gq_emu
inline int __dp2a_lo(int a, int b, int c) { return gq_emu::dp2a<true, true>(a, b, false, c); }
inline int __dp2a_hi(int a, int b, int c) { return gq_emu::dp2a<true, true>(a, b, true, c); }
inline unsigned __dp2a_lo(unsigned a, unsigned b, unsigned c) {
    return static_cast<unsigned>(gq_emu::dp2a<false, false>(a, b, false, static_cast<int>(c)));
}
inline unsigned __dp2a_hi(unsigned a, unsigned b, unsigned c) {
    return static_cast<unsigned>(gq_emu::dp2a<false, false>(a, b, true, static_cast<int>(c)));
}
inline int __dp4a(int a, int b, int c) { return gq_emu::dp4a<true, true>(a, b, c); }
inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    return static_cast<unsigned>(gq_emu::dp4a<false, false>(a, b, static_cast<int>(c)));
}

// Device min and max for mixed integer and float arguments.
template <typename A, typename B>
inline typename std::common_type<A, B>::type min(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(a) : static_cast<C>(b);
}
template <typename A, typename B>
inline typename std::common_type<A, B>::type max(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

[[noreturn]] inline void __trap() {
    fprintf(stderr, "emu: a kernel trapped\n");
    abort();
}

inline float atomicAdd(float* p, float v) {
    const float old = *p;
    *p = old + v;
    return old;
}
inline int atomicAdd(int* p, int v) {
    const int old = *p;
    *p = old + v;
    return old;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    const unsigned old = *p;
    *p = old + v;
    return old;
}
