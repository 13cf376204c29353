// ggml's block layouts of the weight types the CPU runs, as MSL structs.
// Each size is asserted here, and ggml/src/metal/mod.rs's test reads these
// assertions back and holds them to the Rust type table (elements a block,
// bytes a block), so the two sides cannot drift apart.
#pragma once

#define QK 32     // elements of a legacy block
#define QK_K 256  // elements of a k-quant super-block

struct block_q4_0 { half d; uchar qs[QK / 2]; };
struct block_q4_1 { half d; half m; uchar qs[QK / 2]; };
struct block_q5_0 { half d; uchar qh[4]; uchar qs[QK / 2]; };
struct block_q5_1 { half d; half m; uchar qh[4]; uchar qs[QK / 2]; };
struct block_q8_0 { half d; char qs[QK]; };
struct block_q2_K { uchar scales[QK_K / 16]; uchar qs[QK_K / 4]; half d; half dmin; };
struct block_q3_K { uchar hmask[QK_K / 8]; uchar qs[QK_K / 4]; uchar scales[12]; half d; };
struct block_q4_K { half d; half dmin; uchar scales[12]; uchar qs[QK_K / 2]; };
struct block_q5_K { half d; half dmin; uchar scales[12]; uchar qh[QK_K / 8]; uchar qs[QK_K / 2]; };
struct block_q6_K { uchar ql[QK_K / 2]; uchar qh[QK_K / 4]; char scales[QK_K / 16]; half d; };
struct block_iq4_nl { half d; uchar qs[QK / 2]; };
struct block_iq4_xs { half d; ushort scales_h; uchar scales_l[QK_K / 64]; uchar qs[QK_K / 2]; };

// "TYPE ELEMENTS": the Rust test parses these lines.
static_assert(sizeof(float) == 4, "F32 1");
static_assert(sizeof(half) == 2, "F16 1");
static_assert(sizeof(ushort) == 2, "BF16 1");
static_assert(sizeof(block_q4_0) == 18, "Q4_0 32");
static_assert(sizeof(block_q4_1) == 20, "Q4_1 32");
static_assert(sizeof(block_q5_0) == 22, "Q5_0 32");
static_assert(sizeof(block_q5_1) == 24, "Q5_1 32");
static_assert(sizeof(block_q8_0) == 34, "Q8_0 32");
static_assert(sizeof(block_q2_K) == 84, "Q2_K 256");
static_assert(sizeof(block_q3_K) == 110, "Q3_K 256");
static_assert(sizeof(block_q4_K) == 144, "Q4_K 256");
static_assert(sizeof(block_q5_K) == 176, "Q5_K 256");
static_assert(sizeof(block_q6_K) == 210, "Q6_K 256");
static_assert(sizeof(block_iq4_nl) == 18, "IQ4_NL 32");
static_assert(sizeof(block_iq4_xs) == 136, "IQ4_XS 256");
