// Moving activations: K and V into the f16 cache's ring, columns out of a
// fused projection, and a group-quantised layer's inputs into its stored
// order. One thread an element; each only copies (and K/V round to f16 as
// the CPU's cache does, to nearest even), so each is exact.
#include <metal_stdlib>
using namespace metal;

struct KvStoreArgs {
    uint kv_dim;  // a cache row's values (K and V alike)
    uint cells;   // the ring's cells: position p lives in cell p % cells
    uint pos0;    // the first token's position
    uint tokens;
};

// A batch never holds more tokens than the ring has cells (the ring is a
// window plus a batch), so no two threads write one cell.
kernel void kv_store_f16(device const float* k [[buffer(0)]], device const float* v [[buffer(1)]],
                         device half* kc [[buffer(2)]], device half* vc [[buffer(3)]],
                         constant KvStoreArgs& a [[buffer(4)]], uint i [[thread_position_in_grid]]) {
    if (i >= a.tokens * a.kv_dim) return;
    const uint t = i / a.kv_dim, d = i % a.kv_dim;
    const ulong at = (ulong)((a.pos0 + t) % a.cells) * a.kv_dim + d;
    kc[at] = (half)k[i];
    vc[at] = (half)v[i];
}

struct CopyArgs {
    uint rows;
    uint width;      // values copied a row
    uint src_width;  // the source's row
    uint col0;       // the first column copied
};

// dst[r][c] = src[r][col0 + c] (a source bound at an offset gives rows too).
kernel void copy_cols_f32(device const float* src [[buffer(0)]], device float* dst [[buffer(1)]],
                          constant CopyArgs& a [[buffer(2)]], uint i [[thread_position_in_grid]]) {
    if (i >= a.rows * a.width) return;
    const uint r = i / a.width, c = i % a.width;
    dst[i] = src[(ulong)r * a.src_width + a.col0 + c];
}

// dst[r][k] = src[r][order[k]]: the inputs as a group-quantised layer stores
// its columns (rows of src_width = width values).
kernel void gather_cols_f32(device const float* src [[buffer(0)]], device const uint* order [[buffer(1)]],
                            device float* dst [[buffer(2)]], constant CopyArgs& a [[buffer(3)]],
                            uint i [[thread_position_in_grid]]) {
    if (i >= a.rows * a.width) return;
    const uint r = i / a.width, c = i % a.width;
    dst[i] = src[(ulong)r * a.src_width + order[c]];
}
