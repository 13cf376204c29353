//! Round trips through `quantize` and `dequantize`. Bit-exactness with ggml is
//! checked against the oracle in the main crate's `tests/oracle_kernels.rs`.

use super::{dequantize, quantize, QuantizeError, WEIGHT_TYPES};
use crate::GgmlType;

/// xorshift64: deterministic data without a dependency.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// Roughly normal (a sum of four uniforms), unit variance.
    fn normal(&mut self) -> f32 {
        (self.unit() + self.unit() + self.unit() + self.unit()) * 0.866
    }
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut q = vec![0u8; ty.row_size(x.len() as u64).unwrap() as usize];
    quantize(ty, x, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize(ty, &q, &mut y).unwrap();
    y
}

/// Root-mean-square error relative to the data's root mean square.
fn relative_rmse(x: &[f32], y: &[f32]) -> f64 {
    let err: f64 = x.iter().zip(y).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let mag: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
    (err / mag).sqrt()
}

/// What each type manages on roughly normal data (measured: F16 2e-4, BF16
/// 1.7e-3, Q8_0 0.005, Q6_K 0.017, Q5 0.035-0.04, Q4 and IQ4 0.07-0.083,
/// Q3_K 0.148, Q2_K 0.292), with some margin.
fn rmse_bound(ty: GgmlType) -> f64 {
    use GgmlType::*;
    match ty {
        F32 => 0.0,
        F16 => 3e-4,
        BF16 => 2.5e-3,
        Q8_0 => 0.0075,
        Q6_K => 0.025,
        Q5_0 | Q5_1 | Q5_K => 0.05,
        Q4_0 | Q4_1 | Q4_K | IQ4_NL | IQ4_XS => 0.1,
        Q3_K => 0.18,
        Q2_K => 0.35,
        _ => unreachable!("{ty}"),
    }
}

#[test]
fn round_trip_error_is_small() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for scale in [1.0, 1e-2, 1e3] {
        let x: Vec<f32> = (0..4096).map(|_| rng.normal() * scale).collect();
        for &ty in WEIGHT_TYPES {
            let err = relative_rmse(&x, &round_trip(ty, &x));
            assert!(
                err <= rmse_bound(ty),
                "{ty} at scale {scale}: relative rmse {err:.4}"
            );
        }
    }
}

#[test]
fn outliers_cost_little_elsewhere() {
    let mut rng = Rng(12345);
    let x: Vec<f32> = (0..4096)
        .map(|i| rng.normal() * if i % 101 == 0 { 30.0 } else { 1.0 })
        .collect();
    for &ty in WEIGHT_TYPES {
        let err = relative_rmse(&x, &round_trip(ty, &x));
        // An outlier stretches its block's scale: allow double.
        assert!(err <= 2.0 * rmse_bound(ty), "{ty}: relative rmse {err:.4}");
    }
}

#[test]
fn zeros_stay_zero() {
    for &ty in WEIGHT_TYPES {
        let y = round_trip(ty, &[0.0; 512]);
        assert!(y.iter().all(|&v| v == 0.0), "{ty}: {y:?}");
    }
}

#[test]
fn zero_blocks_among_others_stay_zero() {
    let mut rng = Rng(7);
    // Values in the second half of each 256 only: zero sub-blocks and
    // super-blocks next to full ones.
    let x: Vec<f32> = (0..1024)
        .map(|i| if i % 256 < 128 { 0.0 } else { rng.normal() })
        .collect();
    for &ty in WEIGHT_TYPES {
        let y = round_trip(ty, &x);
        let leaked = (0..x.len()).find(|&i| x[i] == 0.0 && y[i] != 0.0);
        assert_eq!(leaked, None, "{ty}");
    }
}

#[test]
fn constant_rows_come_back_nearly_constant() {
    for c in [1.0f32, -0.37, 250.0] {
        let x = vec![c; 512];
        for &ty in WEIGHT_TYPES {
            let y = round_trip(ty, &x);
            let worst = y
                .iter()
                .map(|v| (v - c).abs() / c.abs())
                .fold(0f32, f32::max);
            assert!(worst < 0.01, "{ty} on {c}: off by {worst}");
        }
    }
}

/// Magnitudes whose scales leave f16's range give infinities or zeros, as in
/// ggml, but must not panic; NaN and infinities likewise.
#[test]
fn extreme_values_do_not_panic() {
    let mut rng = Rng(99);
    let cases: Vec<Vec<f32>> = vec![
        (0..256).map(|_| rng.normal() * 1e30).collect(),
        (0..256).map(|_| rng.normal() * 1e-30).collect(),
        (0..256).map(|_| rng.normal() * 1e-40).collect(),
        (0..256)
            .map(|i| match i % 3 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                _ => rng.normal(),
            })
            .collect(),
        vec![f32::NEG_INFINITY; 256],
        vec![f32::MAX; 256],
    ];
    for x in &cases {
        for &ty in WEIGHT_TYPES {
            round_trip(ty, x);
        }
    }
}

#[test]
fn wrong_lengths_are_errors() {
    for &ty in WEIGHT_TYPES {
        let bs = ty.block_size() as usize;
        let ts = ty.type_size() as usize;
        let good = vec![0.5f32; 2 * bs];
        let mut out = vec![0u8; 2 * ts];
        assert_eq!(quantize(ty, &good, &mut out), Ok(()));
        let mut short = vec![0u8; 2 * ts - 1];
        assert!(matches!(
            quantize(ty, &good, &mut short),
            Err(QuantizeError::Length { .. })
        ));
        let mut long = vec![0u8; 3 * ts];
        assert!(quantize(ty, &good, &mut long).is_err(), "{ty}");
        if bs > 1 {
            let partial = vec![0.5f32; 2 * bs - 1];
            assert!(quantize(ty, &partial, &mut out).is_err(), "{ty}");
        }
    }
}

#[test]
fn other_types_are_unsupported() {
    let err = quantize(GgmlType::Q8_K, &[0.0; 256], &mut [0u8; 292]);
    assert_eq!(err, Err(QuantizeError::Unsupported(GgmlType::Q8_K)));
    assert!(err.unwrap_err().to_string().contains("not supported"));
}

#[test]
fn empty_rows_are_fine() {
    for &ty in WEIGHT_TYPES {
        assert_eq!(quantize(ty, &[], &mut []), Ok(()));
    }
}
