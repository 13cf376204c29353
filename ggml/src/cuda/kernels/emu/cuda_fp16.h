// The emulator's stand-in for CUDA's <cuda_fp16.h> (see emu.h): IEEE half
// precision stored as 16 bits, conversions rounding to nearest even.
#pragma once

#include "emu.h"

struct __half {
    unsigned short x;
};
struct alignas(4) __half2 {
    __half x, y;
};
typedef __half half;
typedef __half2 half2;

namespace gq_emu {
inline unsigned short f32_to_f16(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    const unsigned sign = (u >> 16) & 0x8000u;
    const unsigned abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return static_cast<unsigned short>(sign | 0x7e00u);  // NaN
    if (abs >= 0x477ff000u) return static_cast<unsigned short>(sign | 0x7c00u);  // rounds past 65504
    if (abs < 0x38800000u) {
        // Subnormal half (or zero): the value in units of 2^-24, rounded.
        float a;
        memcpy(&a, &abs, 4);
        return static_cast<unsigned short>(sign | static_cast<unsigned>(nearbyintf(a * 16777216.0f)));
    }
    const unsigned mant = abs & 0x7fffffu, exp = (abs >> 23) - 112;
    unsigned h = (exp << 10) | (mant >> 13);
    const unsigned rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;
    return static_cast<unsigned short>(sign | h);
}
}  // namespace gq_emu

inline float __half2float(__half h) { return gq_emu::f16_to_f32(h.x); }
inline __half __float2half_rn(float f) { return __half{gq_emu::f32_to_f16(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half_rn(a), __float2half_rn(b)}; }
inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
