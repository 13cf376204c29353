// rms_norm: a threadgroup a row; each thread sums the squares of its strided
// share, simdgroups reduce in registers and their sums meet in threadgroup
// memory; then every thread scales its share by the weight.
#include <metal_stdlib>
using namespace metal;

struct NormArgs {
    uint width;  // a row's elements (the weight's length)
    float eps;
};

kernel void rms_norm_f32(device const float* src [[buffer(0)]], device const float* w [[buffer(1)]],
                         device float* dst [[buffer(2)]], constant NormArgs& a [[buffer(3)]],
                         uint row [[threadgroup_position_in_grid]], uint tid [[thread_index_in_threadgroup]],
                         uint threads [[threads_per_threadgroup]], uint lane [[thread_index_in_simdgroup]],
                         uint simd [[simdgroup_index_in_threadgroup]]) {
    threadgroup float partial[32];
    device const float* x = src + (ulong)row * a.width;
    device float* y = dst + (ulong)row * a.width;
    float sum = 0.0f;
    for (uint i = tid; i < a.width; i += threads) sum += x[i] * x[i];
    sum = simd_sum(sum);
    if (lane == 0) partial[simd] = sum;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    const uint groups = (threads + 31) / 32;
    sum = lane < groups ? partial[lane] : 0.0f;
    sum = simd_sum(sum);
    const float scale = rsqrt(sum / (float)a.width + a.eps);
    for (uint i = tid; i < a.width; i += threads) y[i] = x[i] * scale * w[i];
}
