// Hopper's warpgroup tensor-core instructions (wgmma, sm_90a), for f16
// operands in shared memory laid out K-major with the 128-byte swizzle,
// f32 accumulators; and their stand-ins on the CPU emulator (GQ_EMU), which
// compute the same products from the same descriptors and let them land
// only when the kernel waits for them, as the GPU may.
//
// The layout (PTX ISA, "Shared Memory Matrix Layout", K-major, 128B
// swizzling): a row of 64 halves is 128 bytes, eight rows make a
// 1024-byte atom (the stride byte offset), atoms follow one another; the
// 16-byte piece c of row r sits at piece c ^ (r % 8), which is the swizzle
// of address bits 4-6 by bits 7-9, so a tile must start 1024-byte aligned.
// A K step of 16 halves inside the 128-byte row moves the descriptor's
// start by 32 bytes: the hardware swizzles the address it computes.
#pragma once

#include <stdint.h>

// Device code for other architectures than sm_90a (a module built for a
// list of them) traps where it would issue these.
#if defined(GQ_EMU) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define GQ_WG_ASM 1
#endif

namespace gq {

// Where the 16-byte piece `c` (0..7) of row `r` of a swizzled tile goes,
// in bytes from the tile's start.
__host__ __device__ constexpr int swizzled_piece(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }

__device__ __forceinline__ unsigned shared_address(const void* p) {
#ifdef GQ_EMU
    return gq_emu::shared_address(p);
#else
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
#endif
}

// A K-major, 128B-swizzled operand starting at shared address `addr`
// (rows 8 apart by 1024 bytes).
__device__ __forceinline__ uint64_t wg_descriptor(unsigned addr) {
    return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (1ull << 16) | (static_cast<uint64_t>(1024 >> 4) << 32) |
           (1ull << 62);
}

// Orders this thread's shared-memory writes (cp.async landed, plain
// stores) before the tensor cores read them through the async proxy.
__device__ __forceinline__ void fence_proxy_async() {
#if !defined(GQ_EMU) && defined(GQ_WG_ASM)
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wg_fence() {
#if !defined(GQ_EMU) && defined(GQ_WG_ASM)
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wg_commit() {
#ifdef GQ_EMU
    gq_emu::wg_commit();
#elif defined(GQ_WG_ASM)
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void wg_wait() {
#ifdef GQ_EMU
    gq_emu::wg_wait(N);
#elif defined(GQ_WG_ASM)
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Keeps the compiler from moving reads or writes of the accumulators across
// an asynchronous product that owns them.
template <int R>
__device__ __forceinline__ void wg_hold(float (&d)[R]) {
#ifndef GQ_EMU
#pragma unroll
    for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
#endif
}

#ifndef GQ_EMU
#define GQ_WG_R8(b)                                                                                              \
    "+f"(d[b + 0]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3]), "+f"(d[b + 4]), "+f"(d[b + 5]), "+f"(d[b + 6]), \
        "+f"(d[b + 7])
#endif

// D (64 x N, f32, the warpgroup's fragments) += A (64 x 16) * B^T (N x 16),
// both K-major f16 in shared memory. N 64, 128 or 256.
template <int N>
__device__ __forceinline__ void wg_mma(float (&d)[N / 2], uint64_t a, uint64_t b) {
#ifdef GQ_EMU
    gq_emu::wg_mma_f16(d, N, a, b);
#elif !defined(GQ_WG_ASM)
    __trap();
#else
    static_assert(N == 64 || N == 128 || N == 256, "wgmma shapes in use");
    if constexpr (N == 256) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
            "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
            "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
            "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
            "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
            "%128, %129, p, 1, 1, 0, 0;\n}\n"
            : GQ_WG_R8(0), GQ_WG_R8(8), GQ_WG_R8(16), GQ_WG_R8(24), GQ_WG_R8(32), GQ_WG_R8(40), GQ_WG_R8(48),
              GQ_WG_R8(56), GQ_WG_R8(64), GQ_WG_R8(72), GQ_WG_R8(80), GQ_WG_R8(88), GQ_WG_R8(96), GQ_WG_R8(104),
              GQ_WG_R8(112), GQ_WG_R8(120)
                : "l"(a), "l"(b), "r"(1));
    } else if constexpr (N == 128) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
            "%64, %65, p, 1, 1, 0, 0;\n}\n"
            : GQ_WG_R8(0), GQ_WG_R8(8), GQ_WG_R8(16), GQ_WG_R8(24), GQ_WG_R8(32), GQ_WG_R8(40), GQ_WG_R8(48),
              GQ_WG_R8(56)
                : "l"(a), "l"(b), "r"(1));
    } else {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
            "%32, %33, p, 1, 1, 0, 0;\n}\n"
            : GQ_WG_R8(0), GQ_WG_R8(8), GQ_WG_R8(16), GQ_WG_R8(24)
                : "l"(a), "l"(b), "r"(1));
    }
#endif
}

// Where a warpgroup thread's accumulator i sits in the 64 x N tile: row
// (16 * warp + lane / 4, plus 8 for the odd pairs) and column (8 * (i / 4) +
// 2 * (lane % 4) + i % 2).
__device__ __forceinline__ int wg_row(int thread_in_group, int i) {
    return 16 * (thread_in_group >> 5) + ((thread_in_group & 31) >> 2) + 8 * ((i >> 1) & 1);
}
__device__ __forceinline__ int wg_col(int thread_in_group, int i) {
    return 8 * (i >> 2) + 2 * (thread_in_group & 3) + (i & 1);
}

}  // namespace gq
