// Rotary position embedding of one head, shared by ops.cu (rope,
// rope_store) and kvcache.cu (rope_store_q). RopeParams is laid out as
// ggml/src/cuda/backend.rs's struct of the same name.
#pragma once

struct RopeParams {
    int n_dims;
    float freq_base, freq_scale, ext_factor, attn_factor, corr_low, corr_high;
    int neox;
};

// Heads a block of the prompt-sized rope kernels (ops.cu's rope and
// rope_store) takes, ROPE_HEAD_THREADS threads each: a block a head left
// most of a 7B's 32768 blocks of a 512-token batch with a few hundred
// instructions, and their scheduling, not the work, set the time (43 us a
// layer on the H200). backend.rs's ROPE_HEADS_PER_BLOCK.
#define ROPE_HEADS_PER_BLOCK 4
#define ROPE_HEAD_THREADS 64

// Rope's cosine and sine of pair `pair` at position `pos_i`, times its
// magnitude scale (`ff`: frequency factors, n_dims / 2, or null).
__device__ __forceinline__ void rope_cs(int pos_i, const RopeParams& p, const float* ff, int pair, float& c,
                                        float& s) {
    float pos = (float)pos_i;
    float theta_scale = powf(p.freq_base, -2.0f / (float)p.n_dims);
    float mscale0 = p.attn_factor;
    if (p.ext_factor != 0.0f) mscale0 *= 1.0f + 0.1f * logf(1.0f / p.freq_scale);
    float theta = pos * powf(theta_scale, (float)pair);
    float f = ff ? ff[pair] : 1.0f;
    float extrap = theta / f;
    float interp = p.freq_scale * extrap;
    float th = interp;
    float mscale = p.attn_factor;
    if (p.ext_factor != 0.0f) {
        float y = ((float)pair - p.corr_low) / fmaxf(0.001f, p.corr_high - p.corr_low);
        float ramp = 1.0f - fminf(1.0f, fmaxf(0.0f, y));
        float mix = ramp * p.ext_factor;
        th = interp * (1.0f - mix) + extrap * mix;
        mscale = mscale0;
    }
    c = cosf(th) * mscale;
    s = sinf(th) * mscale;
}

// Where pair `pair`'s two values sit in a head.
__device__ __forceinline__ int rope_a(const RopeParams& p, int pair) { return p.neox ? pair : 2 * pair; }
__device__ __forceinline__ int rope_b(const RopeParams& p, int pair) {
    return p.neox ? pair + p.n_dims / 2 : 2 * pair + 1;
}

// Pair (x0, x1) turned by (c, s): what every rope kernel writes back.
__device__ __forceinline__ void rope_turn(float x0, float x1, float c, float s, float& y0, float& y1) {
    y0 = x0 * c - x1 * s;
    y1 = x0 * s + x1 * c;
}

// Rotates one head at position `pos`, the threads taking pairs first,
// first + stride, ... (by default the block's threads, each its own).
__device__ __forceinline__ void rope_head(float* head, int pos_i, const RopeParams& p, const float* ff,
                                          int first = threadIdx.x, int stride = blockDim.x) {
    for (int pair = first; pair < p.n_dims / 2; pair += stride) {
        float c, s;
        rope_cs(pos_i, p, ff, pair, c, s);
        const int a = rope_a(p, pair), b = rope_b(p, pair);
        rope_turn(head[a], head[b], c, s, head[a], head[b]);
    }
}
