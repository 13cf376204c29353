// Asynchronous 16-byte global -> shared copies (cp.async, sm_80 on; plain
// copies before; queued until waited for on the CPU emulator), shared by
// the tiled kernels.
#pragma once

#include <stdint.h>

namespace gq {

__device__ __forceinline__ void copy16_async(void* smem, const void* gmem) {
#if defined(GQ_EMU)
    gq_emu::copy16_async(smem, gmem);
#elif __CUDA_ARCH__ >= 800
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
#else
    *reinterpret_cast<uint4*>(smem) = __ldg(reinterpret_cast<const uint4*>(gmem));
#endif
}

__device__ __forceinline__ void async_commit() {
#if defined(GQ_EMU)
    gq_emu::async_commit();
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
__device__ __forceinline__ void async_wait() {
#if defined(GQ_EMU)
    gq_emu::async_wait(N);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

}  // namespace gq
