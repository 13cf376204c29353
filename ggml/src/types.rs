//! The ggml tensor type table: every id a GGUF file may name, with its block
//! geometry. Ids and sizes follow ggml's `enum ggml_type` and `type_traits`.

use std::fmt;

/// A tensor element type that ggml (and so GGUF) knows how to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    Q2_0,
}

/// Why a type id cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeError {
    /// The id once named a type that ggml has since removed from files.
    Removed { id: u32, name: &'static str },
    /// The id is beyond every type ggml has ever defined.
    Unknown { id: u32 },
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeError::Removed { id, name } => write!(
                f,
                "ggml type id {id} ({name}) was removed from ggml and is no longer valid in GGUF files"
            ),
            TypeError::Unknown { id } => write!(
                f,
                "unknown ggml type id {id} (this build knows ids 0 to {})",
                GgmlType::ID_COUNT - 1
            ),
        }
    }
}

impl std::error::Error for TypeError {}

/// (type, id, name, elements per block, bytes per block)
const TABLE: &[(GgmlType, u32, &str, u64, u64)] = &[
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
    (GgmlType::NVFP4, 40, "NVFP4", 64, 36),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 18),
    (GgmlType::Q2_0, 42, "Q2_0", 64, 18),
];

/// Ids that files once used and ggml has since removed (online repacking took
/// their place); a file naming one is rejected by name.
const REMOVED: &[(u32, &str)] = &[
    (4, "Q4_2"),
    (5, "Q4_3"),
    (31, "Q4_0_4_4"),
    (32, "Q4_0_4_8"),
    (33, "Q4_0_8_8"),
    (36, "IQ4_NL_4_4"),
    (37, "IQ4_NL_4_8"),
    (38, "IQ4_NL_8_8"),
];

impl GgmlType {
    /// One past the largest id ggml defines (`GGML_TYPE_COUNT`).
    pub const ID_COUNT: u32 = 43;

    /// Every valid type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|row| row.0)
    }

    fn row(self) -> &'static (GgmlType, u32, &'static str, u64, u64) {
        // The table is in declaration order, so the discriminant indexes it.
        let row = &TABLE[self as usize];
        debug_assert_eq!(row.0, self);
        row
    }

    /// Looks up a type id read from a file.
    pub fn from_id(id: u32) -> Result<GgmlType, TypeError> {
        if let Some(row) = TABLE.iter().find(|row| row.1 == id) {
            return Ok(row.0);
        }
        match REMOVED.iter().find(|(removed, _)| *removed == id) {
            Some(&(id, name)) => Err(TypeError::Removed { id, name }),
            None => Err(TypeError::Unknown { id }),
        }
    }

    /// Looks a type up by its name, ignoring case (`q4_k`, `Q4_K`).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|row| row.2.eq_ignore_ascii_case(name))
            .map(|row| row.0)
    }

    pub fn id(self) -> u32 {
        self.row().1
    }

    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements in one block.
    pub fn block_size(self) -> u64 {
        self.row().3
    }

    /// Bytes in one block.
    pub fn type_size(self) -> u64 {
        self.row().4
    }

    /// Whether the type packs elements into blocks with shared scales.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bits per weight of the stored form.
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }

    /// Bytes of one row of `n` elements, or `None` when `n` is not a whole
    /// number of blocks or the size overflows.
    pub fn row_size(self, n: u64) -> Option<u64> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_is_valid_removed_or_unknown() {
        let mut valid = 0;
        for id in 0..GgmlType::ID_COUNT {
            match GgmlType::from_id(id) {
                Ok(ty) => {
                    assert_eq!(ty.id(), id);
                    valid += 1;
                }
                Err(TypeError::Removed { id: got, .. }) => assert_eq!(got, id),
                Err(TypeError::Unknown { .. }) => panic!("id {id} inside the table is unknown"),
            }
        }
        assert_eq!(valid, TABLE.len());
        assert_eq!(valid + REMOVED.len(), GgmlType::ID_COUNT as usize);
        assert_eq!(
            GgmlType::from_id(GgmlType::ID_COUNT),
            Err(TypeError::Unknown { id: 43 })
        );
        assert_eq!(
            GgmlType::from_id(u32::MAX),
            Err(TypeError::Unknown { id: u32::MAX })
        );
    }

    #[test]
    fn removed_ids_are_named() {
        let err = GgmlType::from_id(31).unwrap_err().to_string();
        assert!(err.contains("Q4_0_4_4"), "{err}");
        assert!(err.contains("removed"), "{err}");
    }

    #[test]
    fn discriminants_index_the_table() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.0 as usize, i, "{} is out of place", row.2);
        }
    }

    #[test]
    fn names_round_trip() {
        for ty in GgmlType::all() {
            assert_eq!(GgmlType::from_name(ty.name()), Some(ty));
            assert_eq!(GgmlType::from_name(&ty.name().to_lowercase()), Some(ty));
        }
        assert_eq!(GgmlType::from_name("Q4_2"), None);
    }

    /// Block sizes and bytes follow from each layout in ggml-common.h; spelling
    /// the arithmetic out guards the table against a typo.
    #[test]
    fn sizes_match_the_block_layouts() {
        let f16 = 2;
        let expect: &[(GgmlType, u64, u64)] = &[
            (GgmlType::F32, 1, 4),
            (GgmlType::F16, 1, 2),
            (GgmlType::BF16, 1, 2),
            (GgmlType::F64, 1, 8),
            (GgmlType::I8, 1, 1),
            (GgmlType::I16, 1, 2),
            (GgmlType::I32, 1, 4),
            (GgmlType::I64, 1, 8),
            (GgmlType::Q4_0, 32, f16 + 16),
            (GgmlType::Q4_1, 32, 2 * f16 + 16),
            (GgmlType::Q5_0, 32, f16 + 4 + 16),
            (GgmlType::Q5_1, 32, 2 * f16 + 4 + 16),
            (GgmlType::Q8_0, 32, f16 + 32),
            (GgmlType::Q8_1, 32, 2 * f16 + 32),
            (GgmlType::Q2_K, 256, 16 + 64 + 2 * f16),
            (GgmlType::Q3_K, 256, 32 + 64 + 12 + f16),
            (GgmlType::Q4_K, 256, 2 * f16 + 12 + 128),
            (GgmlType::Q5_K, 256, 2 * f16 + 12 + 32 + 128),
            (GgmlType::Q6_K, 256, 128 + 64 + 16 + f16),
            (GgmlType::Q8_K, 256, 4 + 256 + 2 * 16),
            (GgmlType::IQ2_XXS, 256, f16 + 2 * 32),
            (GgmlType::IQ2_XS, 256, f16 + 2 * 32 + 8),
            (GgmlType::IQ3_XXS, 256, f16 + 3 * 256 / 8),
            (GgmlType::IQ1_S, 256, f16 + 32 + 2 * 8),
            (GgmlType::IQ4_NL, 32, f16 + 16),
            (GgmlType::IQ3_S, 256, f16 + 64 + 8 + 32 + 4),
            (GgmlType::IQ2_S, 256, f16 + 64 + 8 + 8),
            (GgmlType::IQ4_XS, 256, f16 + 2 + 4 + 128),
            (GgmlType::IQ1_M, 256, 32 + 16 + 8),
            (GgmlType::TQ1_0, 256, 48 + 4 + f16),
            (GgmlType::TQ2_0, 256, 64 + f16),
            (GgmlType::MXFP4, 32, 1 + 16),
            (GgmlType::NVFP4, 64, 4 + 32),
            (GgmlType::Q1_0, 128, f16 + 16),
            (GgmlType::Q2_0, 64, f16 + 16),
        ];
        assert_eq!(expect.len(), TABLE.len());
        for &(ty, block, bytes) in expect {
            assert_eq!(ty.block_size(), block, "{ty} block size");
            assert_eq!(ty.type_size(), bytes, "{ty} bytes per block");
        }
    }

    #[test]
    fn row_sizes() {
        assert_eq!(GgmlType::Q4_K.row_size(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_size(100), None);
        assert_eq!(GgmlType::Q8_0.row_size(0), Some(0));
        assert_eq!(GgmlType::F32.row_size(u64::MAX), None);
        assert_eq!(GgmlType::I8.row_size(u64::MAX), Some(u64::MAX));
        assert!((GgmlType::Q4_K.bits_per_weight() - 4.5).abs() < 1e-12);
        assert!((GgmlType::Q6_K.bits_per_weight() - 6.5625).abs() < 1e-12);
    }
}
