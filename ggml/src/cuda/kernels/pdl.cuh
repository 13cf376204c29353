// Programmatic dependent launch (sm_90 on). On such GPUs the host may
// launch a kernel so that it starts while the kernel before it in the
// stream is still running (by default every kernel; LLM_CUDA_PDL=chosen:
// the one-token products only, LLM_CUDA_PDL=0: none). Any kernel may be so launched, so every kernel calls pdl_begin() before it reads anything an
// earlier kernel wrote or writes anything an earlier kernel reads: it waits
// until the kernel before has finished and its writes are visible, then lets
// the next kernel start early in turn. A kernel that waits also finishes
// after the one before it, so the chain keeps the stream's order. Before
// sm_90, and where the host launches normally, these are no-ops.
#pragma once

namespace gq {

// `release_first`: the next kernel may start before this one has waited
// (it waits in turn for this one to finish, which waits for the one
// before). For a kernel too short to overlap anything itself, so that the
// kernel after it can ask for its weights while the one before runs.
__device__ __forceinline__ void pdl_begin(bool release_first = false) {
#if __CUDA_ARCH__ >= 900
    if (release_first) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    if (!release_first) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace gq
