// What the one-token products of matmul.cu and matvec1_lean.cu share: the
// chunk quantiser's reduction, the L2 prefetch, the block's warps, the
// epilogues, the input norm's scale, float X as float weights' products read
// it and the parts of a launch.
#pragma once
#include <stdint.h>

// A chunk of 32 held as float4s by 8 consecutive lanes: its largest
// magnitude and its sum, in every one of the 8 (one fixed order, so that
// every quantiser of X gives the same scales and sums).
__device__ __forceinline__ void chunk_amax_sum(float4 v, float& amax, float& sum) {
    amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    sum = (v.x + v.y) + (v.z + v.w);
#pragma unroll
    for (int off = 1; off < 8; off <<= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
        sum += __shfl_xor_sync(0xffffffffu, sum, off);
    }
}

// Asks L2 for `bytes` (a multiple of 16) at 16-byte-aligned `p`.
__device__ __forceinline__ void prefetch_l2(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// Warps a block of the one-token products.
constexpr int MV1_WARPS = 8;
// What a launch does with its products.
enum Mv1Out { MV1_STORE = 0, MV1_ADD = 1, MV1_SWIGLU = 2, MV1_GEGLU = 3 };

// A layer's input norm applied as a block reads X (the host passes a norm
// only where X needs no input order): 1 / rms(X), by the whole block (256
// threads), each thread's squares in float4s, then warp and block sums in a
// fixed order, so every block of a launch gets the same scale. The values
// are then x * scale * w, as the rms_norm kernel writes them. U of a
// thread's loads go out together (one at a time, a 7B's four were four L2
// round trips in a row; matvec1_lean.cu takes 4), the sum in the same order
// whatever U; matmul.cu's products keep 1 (unrolled in its many kernels for
// every architecture, the form grew its fatbin past 5 MiB).
template <int U = 1>
__device__ __forceinline__ float mv1_norm_scale(const float* __restrict__ X, int cols, float eps) {
    __shared__ float part[MV1_WARPS];
    float ss = 0.0f;
    const float4* x4 = reinterpret_cast<const float4*>(X);
    const int n4 = cols >> 2;
    for (int q0 = threadIdx.x; q0 < n4; q0 += U * blockDim.x) {
        float4 v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int q = q0 + u * static_cast<int>(blockDim.x);
            v[u] = q < n4 ? __ldg(x4 + q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        // A value past the end is +0 and adds nothing, bit for bit.
#pragma unroll
        for (int u = 0; u < U; ++u) ss += v[u].x * v[u].x + v[u].y * v[u].y + v[u].z * v[u].z + v[u].w * v[u].w;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    ss = 0.0f;
#pragma unroll
    for (int w = 0; w < MV1_WARPS; ++w) ss += part[w];
    return rsqrtf(ss / static_cast<float>(cols) + eps);
}

// X's elements e..e+7, through `order` where there is one, normed where
// there is a norm (never both: see mv1_norm_scale).
__device__ __forceinline__ void mv1f_x(const float* __restrict__ X, const unsigned* __restrict__ order, int e,
                                       float x[8], const float* __restrict__ norm_w, float nscale) {
    if (order) {
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] = __ldg(X + __ldg(order + e + i));
    } else {
        const float4 a = __ldg(reinterpret_cast<const float4*>(X + e));
        const float4 b = __ldg(reinterpret_cast<const float4*>(X + e + 4));
        x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
    }
    if (norm_w) {
        const float4 g0 = __ldg(reinterpret_cast<const float4*>(norm_w + e));
        const float4 g1 = __ldg(reinterpret_cast<const float4*>(norm_w + e + 4));
        const float g[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] = x[i] * nscale * g[i];
    }
}

// The products of one launch: part p is W[p] (rows[p] rows) into Y[p].
struct Mv1Parts {
    const uint8_t* W[3];
    float* Y[3];
    int rows[3];
    // Element `p` of a three-element array by selects, not indexing: a
    // runtime index would put the array in local memory.
    template <typename V>
    __device__ __forceinline__ static V pick(const V (&a)[3], int p) {
        return p == 0 ? a[0] : (p == 1 ? a[1] : a[2]);
    }
};
