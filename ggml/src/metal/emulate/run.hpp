// Runs a 1-D grid of threadgroups of an MSL kernel on the CPU (see
// metal_stdlib): each thread of a group is a fiber (ucontext) that runs
// until it reaches a barrier or a simdgroup function, or ends; a barrier
// releases when every live thread of the group waits at it, a simdgroup
// function when the live threads of its 32 do, which then all read the
// result. Threads that wait at different kinds of rendezvous with no other
// thread left to run are a divergence the GPU would hang or misbehave on:
// run() reports it and stops.
#pragma once
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

namespace emu {

// Where a thread of a threadgroup is (its index, its simdgroup and lane).
struct Thread {
    uint tid, lane, simd;
};

enum class Wait { None, Barrier, Simd, Done };

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    Wait wait = Wait::None;
    float value = 0.0f;  // a simd_* operand, then its result
    int op = 0;
};

struct Group {
    ucontext_t main;
    std::vector<Fiber> fibers;
    int current = -1;
    std::function<void(const Thread&)> body;
};

inline Group*& group() {
    static Group* g = nullptr;
    return g;
}

inline void yield(Wait w) {
    Group& g = *group();
    Fiber& f = g.fibers[g.current];
    f.wait = w;
    swapcontext(&f.ctx, &g.main);
}

inline void barrier() { yield(Wait::Barrier); }

inline float simd_reduce(float x, int op) {
    Group& g = *group();
    Fiber& f = g.fibers[g.current];
    f.value = x;
    f.op = op;
    yield(Wait::Simd);
    return g.fibers[g.current].value;
}

inline void entry(unsigned hi, unsigned lo) {
    (void)hi;
    (void)lo;
    Group& g = *group();
    const uint t = g.current;
    g.body(Thread{t, t % 32, t / 32});
    g.fibers[t].wait = Wait::Done;
    // uc_link returns to main.
}

// Runs `groups` threadgroups of `threads` threads: body(group, thread).
inline bool run(uint groups, uint threads, const std::function<void(uint, const Thread&)>& body) {
    Group g;
    group() = &g;
    g.fibers.resize(threads);
    for (auto& f : g.fibers) f.stack.resize(256 << 10);
    for (uint gid = 0; gid < groups; gid++) {
        g.body = [&](const Thread& t) { body(gid, t); };
        for (uint t = 0; t < threads; t++) {
            Fiber& f = g.fibers[t];
            f.wait = Wait::None;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack.data();
            f.ctx.uc_stack.ss_size = f.stack.size();
            f.ctx.uc_link = &g.main;
            makecontext(&f.ctx, (void (*)())entry, 2, 0u, 0u);
        }
        for (;;) {
            // Run every runnable thread until it waits or ends.
            bool ran = false;
            for (uint t = 0; t < threads; t++) {
                if (g.fibers[t].wait != Wait::None) continue;
                g.current = t;
                swapcontext(&g.main, &g.fibers[t].ctx);
                ran = true;
            }
            (void)ran;
            int live = 0, at_barrier = 0, at_simd = 0;
            for (auto& f : g.fibers) {
                live += f.wait != Wait::Done;
                at_barrier += f.wait == Wait::Barrier;
                at_simd += f.wait == Wait::Simd;
            }
            if (live == 0) break;
            // A barrier is for every thread of the group (Metal leaves one
            // that some threads skip undefined): threads that ended before
            // it make the rest wait forever, which is reported below.
            if (at_barrier == (int)threads) {
                for (auto& f : g.fibers)
                    if (f.wait == Wait::Barrier) f.wait = Wait::None;
                continue;
            }
            // Simdgroups whose live threads all wait at a simd function.
            bool released = false;
            for (uint s = 0; s * 32 < threads; s++) {
                int n = 0, waiting = 0;
                for (uint t = 32 * s; t < threads && t < 32 * s + 32; t++) {
                    n += g.fibers[t].wait != Wait::Done;
                    waiting += g.fibers[t].wait == Wait::Simd;
                }
                if (n == 0 || waiting != n) continue;
                // Lanes at different simd functions (a sum here, a max
                // there) are a divergence too.
                int op = -1;
                for (uint t = 32 * s; t < threads && t < 32 * s + 32; t++) {
                    const Fiber& f = g.fibers[t];
                    if (f.wait != Wait::Simd) continue;
                    if (op >= 0 && f.op != op) {
                        std::fprintf(stderr, "emulate: threadgroup %u diverged (simdgroup %u at different simd functions)\n", gid, s);
                        group() = nullptr;
                        return false;
                    }
                    op = f.op;
                }
                float acc = 0.0f;
                bool first = true;
                for (uint t = 32 * s; t < threads && t < 32 * s + 32; t++) {
                    Fiber& f = g.fibers[t];
                    if (f.wait != Wait::Simd) continue;
                    if (first) acc = f.value;
                    else if (f.op == 0) acc += f.value;
                    else if (f.op == 1) acc = acc > f.value ? acc : f.value;
                    else acc = acc < f.value ? acc : f.value;
                    first = false;
                }
                for (uint t = 32 * s; t < threads && t < 32 * s + 32; t++) {
                    Fiber& f = g.fibers[t];
                    if (f.wait == Wait::Simd) {
                        f.value = acc;
                        f.wait = Wait::None;
                    }
                }
                released = true;
            }
            if (!released) {
                std::fprintf(stderr, "emulate: threadgroup %u diverged (%d threads at a barrier, %d at a simd function, %d live)\n",
                             gid, at_barrier, at_simd, live);
                group() = nullptr;
                return false;
            }
        }
    }
    group() = nullptr;
    return true;
}

}  // namespace emu
