// The emulator's stand-in for CUDA's <cuda_runtime.h> (see emu.h): device
// memory is host memory, copies are memcpy, a launch runs the grid to the
// end before it returns, and events time nothing. Enough of the runtime for
// test_matmul.cu.
#pragma once

#include "cuda_fp16.h"
#include "emu.h"

enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization };
struct cudaLaunchAttributeValue {
    int programmaticStreamSerializationAllowed;
};
struct cudaLaunchAttribute {
    cudaLaunchAttributeID id;
    cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
    dim3 gridDim, blockDim;
    size_t dynamicSmemBytes;
    void* stream;
    cudaLaunchAttribute* attrs;
    unsigned numAttrs;
};
typedef struct gq_emu_event* cudaEvent_t;

namespace gq_emu {
// Multiprocessors and blocks resident on each that the emulated device
// reports: few, so that grids sized from them make blocks loop over rows.
constexpr int SMS = 4;
constexpr int RESIDENT_BLOCKS = 2;
}  // namespace gq_emu

inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "out of memory"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
template <typename T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) {
    // 256-byte aligned as the driver's, and filled with garbage.
    void* m = aligned_alloc(256, (bytes + 255) & ~static_cast<size_t>(255));
    if (!m) return cudaErrorMemoryAllocation;
    memset(m, 0xa5, bytes);
    *p = static_cast<T*>(m);
    return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
    memcpy(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void* dst, int v, size_t bytes) {
    memset(dst, v, bytes);
    return cudaSuccess;
}
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
    return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
    *v = gq_emu::SMS;
    return cudaSuccess;
}
template <typename F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F, int, size_t) {
    *n = gq_emu::RESIDENT_BLOCKS;
    return cudaSuccess;
}
template <typename... P, typename... A>
inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* c, void (*kernel)(P...), A&&... args) {
    gq_emu::launch(kernel, c->gridDim, c->blockDim, c->dynamicSmemBytes, std::forward<A>(args)...);
    return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
    *e = nullptr;
    return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t, void* = nullptr) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
    *ms = 0.0f;
    return cudaSuccess;
}

// test_matmul.cu's launches: GQ_LAUNCH(grid, block, shared, kernel)(args...).
namespace gq_emu {
template <typename K>
struct Launch {
    K kernel;
    dim3 grid, block;
    size_t shared;
    template <typename... A>
    void operator()(A&&... args) const {
        launch(kernel, grid, block, shared, std::forward<A>(args)...);
    }
};
template <typename K>
inline Launch<K> launcher(K kernel, dim3 grid, dim3 block, size_t shared) {
    return Launch<K>{kernel, grid, block, shared};
}
}  // namespace gq_emu
#define GQ_LAUNCH(grid, block, shared, ...) ::gq_emu::launcher(__VA_ARGS__, grid, block, shared)
