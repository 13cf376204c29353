//! The element types of a KV cache (llama.cpp's `-ctk`/`-ctv`): f16 by
//! default, or a quantised type that holds a long context in less memory.

use crate::GgmlType;
use std::fmt;

/// The types llama.cpp offers for its cache, by its names.
pub const CACHE_TYPES: [GgmlType; 8] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
];

/// A cache's key and value types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvTypes {
    pub k: GgmlType,
    pub v: GgmlType,
}

impl Default for KvTypes {
    fn default() -> KvTypes {
        KvTypes::F16
    }
}

impl KvTypes {
    pub const F16: KvTypes = KvTypes {
        k: GgmlType::F16,
        v: GgmlType::F16,
    };

    /// f16 keys and values: the layout and attention of llama.cpp without
    /// flash attention (values transposed). Every other pair is kept as rows
    /// and attended as llama.cpp's CPU flash attention does.
    pub fn is_f16(self) -> bool {
        self == KvTypes::F16
    }

    /// Bytes of one cell's keys plus values, `kv_dim` of each.
    pub fn cell_bytes(self, kv_dim: usize) -> usize {
        row_bytes(self.k, kv_dim) + row_bytes(self.v, kv_dim)
    }

    /// u16 words of one cell's keys and of its values (every row of a
    /// cache type is a whole number of words), as cells cross between
    /// devices.
    pub fn row_words(self, kv_dim: usize) -> (usize, usize) {
        (row_bytes(self.k, kv_dim) / 2, row_bytes(self.v, kv_dim) / 2)
    }

    /// The size of the Walsh-Hadamard rotation that keys (and queries) take
    /// before a quantised K cache, as llama.cpp does since its attention
    /// rotation (quantisation error spreads evenly over a rotated head):
    /// the largest 64 x 2^m that divides the head, for heads a multiple of
    /// 64; None for float keys or other heads.
    pub fn k_rotation(self, head_dim: usize) -> Option<usize> {
        if !self.k.is_quantized() || !head_dim.is_multiple_of(64) {
            return None;
        }
        let mut n = 64;
        while head_dim.is_multiple_of(2 * n) {
            n *= 2;
        }
        Some(n)
    }

    /// The same for a quantised V cache: always 64 (llama.cpp found smaller
    /// rotations better for values); the attention output rotates back.
    pub fn v_rotation(self, head_dim: usize) -> Option<usize> {
        (self.v.is_quantized() && head_dim.is_multiple_of(64)).then_some(64)
    }

    /// Whether heads of `head_dim` values split into whole blocks of both
    /// types (attention reads one head's slice of a cell).
    pub fn check_head_dim(self, head_dim: usize) -> Result<(), String> {
        for (flag, t) in [("-ctk", self.k), ("-ctv", self.v)] {
            let block = t.block_size() as usize;
            if !head_dim.is_multiple_of(block) {
                return Err(format!(
                    "{flag} {}: the cache type needs a head size that is a multiple of {block}, and this model's is {head_dim}",
                    cache_type_name(t)
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for KvTypes {
    /// `q8_0` where keys and values share a type, `K q8_0, V q4_0` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.k == self.v {
            return f.write_str(&cache_type_name(self.k));
        }
        write!(
            f,
            "K {}, V {}",
            cache_type_name(self.k),
            cache_type_name(self.v)
        )
    }
}

/// Rotates each piece of `n` values of `x` by the orthonormal Walsh-Hadamard
/// matrix (its own inverse), in ggml's order: scaled by 1/sqrt(n) first,
/// then butterflies `(u + v, u - v)` over strides 1, 2, 4, ... Every sum has
/// one rounding whatever the vector width, so this is ggml's result exactly.
pub fn hadamard(x: &mut [f32], n: usize) {
    let scale = 1.0 / (n as f32).sqrt();
    for piece in x.chunks_exact_mut(n) {
        for v in piece.iter_mut() {
            *v *= scale;
        }
        let mut len = 1;
        while len < n {
            for pair in piece.chunks_exact_mut(2 * len) {
                let (lo, hi) = pair.split_at_mut(len);
                for (u, v) in lo.iter_mut().zip(hi.iter_mut()) {
                    (*u, *v) = (*u + *v, *u - *v);
                }
            }
            len <<= 1;
        }
    }
}

/// Bytes of `n` values of a cache type (n a multiple of its block).
pub fn row_bytes(t: GgmlType, n: usize) -> usize {
    n / t.block_size() as usize * t.type_size() as usize
}

/// llama.cpp's name of a cache type (`q8_0`, `iq4_nl`).
pub fn cache_type_name(t: GgmlType) -> String {
    t.name().to_ascii_lowercase()
}

/// A cache type from its llama.cpp name; the error lists the names.
pub fn parse_cache_type(s: &str) -> Result<GgmlType, String> {
    let s = s.trim();
    CACHE_TYPES
        .iter()
        .copied()
        .find(|t| cache_type_name(*t).eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let names: Vec<String> = CACHE_TYPES.iter().map(|t| cache_type_name(*t)).collect();
            format!("'{s}' is not a KV cache type (one of {})", names.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_llama_cpps() {
        let names: Vec<String> = CACHE_TYPES.iter().map(|t| cache_type_name(*t)).collect();
        assert_eq!(
            names,
            ["f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"]
        );
        for t in CACHE_TYPES {
            assert_eq!(parse_cache_type(&cache_type_name(t)), Ok(t));
        }
        assert_eq!(parse_cache_type("Q8_0"), Ok(GgmlType::Q8_0));
        let err = parse_cache_type("q4_k").unwrap_err();
        assert!(
            err.contains("'q4_k' is not a KV cache type (one of f16, bf16"),
            "{err}"
        );
        assert!(parse_cache_type("f32").is_err());
    }

    #[test]
    fn rotations_are_llama_cpps() {
        let q = |k, v| KvTypes { k, v };
        use GgmlType::*;
        let t = q(Q8_0, Q4_0);
        assert_eq!(t.k_rotation(64), Some(64));
        assert_eq!(t.k_rotation(128), Some(128));
        assert_eq!(t.k_rotation(256), Some(256));
        assert_eq!(t.k_rotation(192), Some(64));
        assert_eq!(t.k_rotation(96), None);
        assert_eq!(t.v_rotation(256), Some(64));
        assert_eq!(t.v_rotation(80), None);
        assert_eq!(q(BF16, F16).k_rotation(128), None);
        assert_eq!(q(BF16, F16).v_rotation(128), None);
    }

    /// The fast transform is the Sylvester Hadamard matrix over sqrt(n)
    /// (H[i][j] = (-1)^popcount(i & j)), and undoes itself.
    #[test]
    fn hadamard_is_the_orthonormal_sylvester_matrix() {
        let n = 16;
        let x: Vec<f32> = (0..2 * n)
            .map(|i| ((i * 7919) % 23) as f32 - 11.0)
            .collect();
        let mut y = x.clone();
        hadamard(&mut y, n);
        for (p, piece) in x.chunks(n).enumerate() {
            for i in 0..n {
                let want: f64 = (0..n)
                    .map(|j| {
                        let sign = if (i & j).count_ones() % 2 == 0 {
                            1.0
                        } else {
                            -1.0
                        };
                        sign * piece[j] as f64
                    })
                    .sum::<f64>()
                    / (n as f64).sqrt();
                assert!((y[p * n + i] as f64 - want).abs() < 1e-5);
            }
        }
        hadamard(&mut y, n);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn sizes_and_head_checks() {
        let q8 = KvTypes {
            k: GgmlType::Q8_0,
            v: GgmlType::Q4_0,
        };
        assert_eq!(q8.cell_bytes(256), 8 * 34 + 8 * 18);
        assert_eq!(KvTypes::F16.cell_bytes(256), 1024);
        assert!(q8.check_head_dim(64).is_ok());
        let err = q8.check_head_dim(80).unwrap_err();
        assert!(
            err.contains("-ctk q8_0") && err.contains("multiple of 32"),
            "{err}"
        );
        assert!(KvTypes::F16.check_head_dim(80).is_ok());
    }
}
