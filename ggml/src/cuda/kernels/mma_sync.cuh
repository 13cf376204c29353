// One warp's f16 tensor-core product in the PTX ISA's documented fragment
// layouts (mma.sync m16n8k16, sm_80 on), for kernels that must know which
// lane holds which element (wmma's layouts are unspecified): attention's
// online softmax rescales rows of its accumulators.
#pragma once

#include <stdint.h>

namespace gq {

// d += A B for A 16x16 (row-major), B 16x8 (k-major), f16 operands, f32
// sums. With g = lane / 4, t = lane % 4: a[0] = A[g][2t..2t+1], a[1] =
// A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]; b[0] =
// B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g] (each word two halves, the lower
// k in the low half); d[0..1] = D[g][2t..2t+1], d[2..3] = D[g+8][2t..].
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(GQ_EMU)
    gq_emu::mma_16816(d, a, b);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // the host takes these kernels from compute capability 8.0 on
#endif
}

// Four 8x8 matrices of halves from shared memory, lanes 8i..8i+7 giving the
// addresses of matrix i's rows (16 bytes each, 16-byte aligned): lane (g, t)
// gets r[i] = M_i[g][2t..2t+1] (an A or B fragment word of rows), or with
// TRANS M_i[2t][g], M_i[2t+1][g] (a B fragment word from k-major rows).
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#if defined(GQ_EMU)
    gq_emu::ldmatrix_x4(r, row, TRANS);
#elif __CUDA_ARCH__ >= 800
    const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(row));
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
#else
    __trap();
#endif
}

// Two floats as the halves of one fragment word (x in the low half).
__device__ __forceinline__ uint32_t pack_halves(float x, float y) {
    const __half2 h = __floats2half2_rn(x, y);
    uint32_t w;
    memcpy(&w, &h, 4);
    return w;
}

}  // namespace gq
