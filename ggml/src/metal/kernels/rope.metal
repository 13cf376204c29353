// Rotary position embedding of every head of `tokens` rows, in place: a
// threadgroup a (token, head), its threads taking pairs. Normal (adjacent
// pairs) and NeoX (halves) orders, YaRN's extrapolation mix, frequency
// factors (Llama 3's long-context scaling); only the first n_dims of each
// head rotate. Each pair's angle is pos * theta_scale^pair in f32 with
// precise functions (Metal's default fast cos and sin lose accuracy at the
// large angles of long contexts).
#include <metal_stdlib>
using namespace metal;

struct RopeArgs {
    uint n_heads;
    uint head_dim;
    uint n_dims;
    uint pos0;
    float freq_base;
    float freq_scale;
    float ext_factor;
    float attn_factor;
    float corr_low;
    float corr_high;
    uint neox;
    uint has_ff;  // ff holds n_dims / 2 frequency factors
};

kernel void rope_f32(device float* x [[buffer(0)]], device const float* ff [[buffer(1)]],
                     constant RopeArgs& a [[buffer(2)]], uint tg [[threadgroup_position_in_grid]],
                     uint tid [[thread_index_in_threadgroup]], uint threads [[threads_per_threadgroup]]) {
    const uint token = tg / a.n_heads;
    device float* head = x + (ulong)tg * a.head_dim;
    const float pos = (float)(a.pos0 + token);
    const float theta_scale = precise::pow(a.freq_base, -2.0f / (float)a.n_dims);
    float mscale0 = a.attn_factor;
    if (a.ext_factor != 0.0f) mscale0 *= 1.0f + 0.1f * precise::log(1.0f / a.freq_scale);
    for (uint pair = tid; pair < a.n_dims / 2; pair += threads) {
        const float theta = pos * precise::pow(theta_scale, (float)pair);
        const float extrap = theta / (a.has_ff ? ff[pair] : 1.0f);
        const float interp = a.freq_scale * extrap;
        float th = interp;
        float mscale = a.attn_factor;
        if (a.ext_factor != 0.0f) {
            const float y = ((float)pair - a.corr_low) / max(0.001f, a.corr_high - a.corr_low);
            const float mix = (1.0f - min(1.0f, max(0.0f, y))) * a.ext_factor;
            th = interp * (1.0f - mix) + extrap * mix;
            mscale = mscale0;
        }
        const float c = precise::cos(th) * mscale, s = precise::sin(th) * mscale;
        const uint i = a.neox ? pair : 2 * pair;
        const uint j = a.neox ? pair + a.n_dims / 2 : 2 * pair + 1;
        const float x0 = head[i], x1 = head[j];
        head[i] = x0 * c - x1 * s;
        head[j] = x0 * s + x1 * c;
    }
}
