// What the kernels' standalone test programs (test_matmul.cu, test_ops.cu)
// share on the host side: a launch the CPU emulator (emu/cuda_runtime.h)
// can take too, and a check of every runtime call.
#pragma once

#include <cstdio>
#include <cstdlib>

#ifndef GQ_LAUNCH
#define GQ_LAUNCH(grid, block, shared, ...) __VA_ARGS__<<<grid, block, shared>>>
#endif

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(2);                                                                           \
        }                                                                                      \
    } while (0)
