// A kernel's dynamic shared memory, declared through a macro so that the
// CPU emulator (emu/emu.h, GQ_EMU) can hand each block its own.
#pragma once

#ifdef GQ_EMU
#define GQ_DYNAMIC_SHARED(align, type, name) type* const name = static_cast<type*>(::gq_emu::dynamic_shared())
#else
#define GQ_DYNAMIC_SHARED(align, type, name) extern __shared__ __align__(align) type name[]
#endif
