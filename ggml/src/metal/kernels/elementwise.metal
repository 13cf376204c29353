// Element-wise ops of the layer: the residual add, biases, scaling and the
// gated activations, one thread an element (or a row's element).
#include <metal_stdlib>
using namespace metal;

struct ElementArgs {
    uint len;    // elements
    uint width;  // a row's elements (add_bias)
    float s;     // scale
};

kernel void add_f32(device float* x [[buffer(0)]], device const float* y [[buffer(1)]],
                    constant ElementArgs& a [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    if (i < a.len) x[i] += y[i];
}

kernel void add_bias_f32(device float* x [[buffer(0)]], device const float* bias [[buffer(1)]],
                         constant ElementArgs& a [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    if (i < a.len) x[i] += bias[i % a.width];
}

kernel void scale_f32(device float* x [[buffer(0)]], constant ElementArgs& a [[buffer(1)]],
                      uint i [[thread_position_in_grid]]) {
    if (i < a.len) x[i] *= a.s;
}

// gate = act(gate) * up: SiLU, and GELU in ggml's tanh form (gelu_pytorch_tanh).
constant bool GLU_GELU [[function_constant(0)]];

static float silu(float x) { return x / (1.0f + exp(-x)); }

static float gelu_tanh(float x) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + precise::tanh(c * (x + 0.044715f * x * x * x)));
}

kernel void glu_f32(device float* gate [[buffer(0)]], device const float* up [[buffer(1)]],
                    constant ElementArgs& a [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    if (i >= a.len) return;
    const float g = gate[i];
    gate[i] = (GLU_GELU ? gelu_tanh(g) : silu(g)) * up[i];
}
