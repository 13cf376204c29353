// The gated activations, shared by the element-wise kernels (ops.cu) and the
// mat-vec epilogue that fuses gate, up and activation (matmul.cu), so both
// round the same way.
#pragma once

// silu(g) * u
__device__ __forceinline__ float swiglu_of(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// gelu(g) * u, ggml's tanh approximation (and its cut-offs).
__device__ __forceinline__ float geglu_of(float g, float u) {
    float r;
    if (g <= -10.0f) {
        r = 0.0f;
    } else if (g >= 10.0f) {
        r = g;
    } else {
        const float k = 0.7978845608028654f, a = 0.044715f;
        r = 0.5f * g * (1.0f + tanhf(k * g * fmaf(a * g, g, 1.0f)));
    }
    return r * u;
}
