//! Our kernels against ggml's on fresh random data (issue 3).
#![cfg(feature = "oracle")]

use ggml::blocks::{dequantize, WEIGHT_TYPES};
use ggml::GgmlType;
use llm::oracle;

/// A fresh seed per run (printed, so a failure can be replayed with LLM_SEED).
fn seed() -> u64 {
    let seed = std::env::var("LLM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("LLM_SEED={seed}");
    seed
}

use llm::model::synth::Rng;

/// Random blocks; f16/bf16/f32 scales and values are kept finite so every
/// output can be compared bit for bit.
fn random_blocks(ty: GgmlType, blocks: usize, rng: &mut Rng) -> Vec<u8> {
    let mut b = rng.bytes(blocks * ty.type_size() as usize);
    let finite_f16 = |rng: &mut Rng| -> [u8; 2] {
        // Exponent below 31 (not inf/NaN); any sign and mantissa.
        let h = (rng.next_u64() as u16) & 0xfbff;
        h.to_le_bytes()
    };
    let scale_offsets: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            &[0]
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        GgmlType::F16 => &[0],
        _ => &[],
    };
    let ts = ty.type_size() as usize;
    for block in b.chunks_exact_mut(ts) {
        for &at in scale_offsets {
            block[at..at + 2].copy_from_slice(&finite_f16(rng));
        }
        if ty == GgmlType::F32 {
            let x = (rng.next_u64() as u32 & 0x3fff_ffff) as f32 / 1e6 - 500.0;
            block.copy_from_slice(&x.to_le_bytes());
        }
        if ty == GgmlType::BF16 {
            block[1] &= 0xbf; // exponent below 255
        }
    }
    b
}

#[test]
fn dequantised_blocks_are_bit_identical_to_ggml() {
    let mut rng = Rng::new(seed());
    let mut failures = Vec::new();
    for &ty in WEIGHT_TYPES {
        let blocks = 4096 / ty.block_size() as usize * 4;
        let src = random_blocks(ty, blocks, &mut rng);
        // ggml has no to_float for F32: its values are the bytes themselves.
        let want = match ty {
            GgmlType::F32 => src
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            _ => oracle::to_float(ty, &src).expect("ggml has to_float for every other weight type"),
        };
        let mut got = vec![0f32; want.len()];
        dequantize(ty, &src, &mut got).unwrap();
        let bad = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits());
        if let Some(i) = bad {
            failures.push(format!(
                "{ty}: element {i}: ours {} ggml {}",
                got[i], want[i]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Activations like a model's: mostly small, a few outliers, some exact zeros.
fn activations(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let v = (u * 2.0 - 1.0) as f32;
            match i % 97 {
                0 => v * 40.0,
                1 => 0.0,
                _ => v,
            }
        })
        .collect()
}

#[test]
fn activation_quantisers_match_ggml_bytes() {
    let mut rng = Rng::new(seed());
    for isa in ggml::cpu::Isa::available() {
        for act in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
            let x = activations(4096, &mut rng);
            let want = oracle::from_float(act, &x).expect("ggml quantises activations");
            let quantize = ggml::cpu::quantizer(act, isa).unwrap();
            let mut got = vec![0u8; want.len()];
            quantize(&x, &mut got);
            let first = (0..got.len()).find(|&i| got[i] != want[i]);
            assert!(
                first.is_none(),
                "{act} on {isa:?}: first differing byte {first:?}"
            );
        }
    }
}

#[test]
fn dot_products_match_ggml() {
    let mut rng = Rng::new(seed());
    let n = 4096;
    let mut failures = Vec::new();
    for isa in ggml::cpu::Isa::available() {
        for &ty in WEIGHT_TYPES {
            let k = ggml::cpu::kernels_for(ty, isa).unwrap();
            let ggml::cpu::Act::Ggml(act) = k.act else {
                panic!("{ty}: GGUF weights take ggml's activation blocks");
            };
            assert_eq!(
                Some(act),
                oracle::vec_dot_type(ty),
                "{ty}: activation partner"
            );
            let w = random_blocks(ty, n / ty.block_size() as usize, &mut rng);
            let x = activations(n, &mut rng);
            // Both sides dot the same activation bytes (ggml's own quantisation).
            let a = oracle::from_float(act, &x).unwrap();
            let want = oracle::vec_dot(ty, n, &w, &a).unwrap();
            let got = (k.dot)(&w, &a);
            // Relative to the sum of magnitudes: cancellation makes the plain
            // relative error of a near-zero sum meaningless.
            let mut mag = vec![0f32; n];
            dequantize(ty, &w, &mut mag).unwrap();
            let scale: f64 = mag
                .iter()
                .zip(&x)
                .map(|(a, b)| (a * b).abs() as f64)
                .sum::<f64>()
                .max(1e-30);
            let err = (got as f64 - want as f64).abs() / scale;
            let plain = (got as f64 - want as f64).abs() / (want as f64).abs().max(1e-30);
            // Plainly relative within 1e-5; a sum that cancels to near zero is
            // judged against the magnitudes that went into it instead.
            if !(plain <= 1e-5 || err <= 1e-7) {
                failures.push(format!(
                    "{ty} on {isa:?}: ours {got} ggml {want} (relative {plain:.2e})"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Rows for weight quantisation, each in one of several shapes: the
/// quantisers' searches and tie-breaks take different paths on each.
fn weight_row(kind: usize, n: usize, rng: &mut Rng) -> Vec<f32> {
    let mut gauss = || {
        // Box-Muller on (0, 1] uniforms.
        let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    let mut x: Vec<f32> = (0..n).map(|_| gauss()).collect();
    match kind {
        // Uniform in [-1, 1).
        0 => x.iter_mut().for_each(|v| *v = rng.unit()),
        // Gaussian as drawn.
        1 => {}
        // Outliers, as trained weights have.
        2 => {
            for v in x.iter_mut() {
                if rng.next_u64().is_multiple_of(50) {
                    *v *= 30.0;
                }
            }
        }
        // Scattered zeros, whole zero 32-blocks and a zero 256-block.
        3 => {
            for (i, v) in x.iter_mut().enumerate() {
                if rng.next_u64().is_multiple_of(5) || (i / 32) % 7 == 3 || i / 256 == 1 {
                    *v = 0.0;
                }
            }
        }
        // All positive: the minimum-fitting types' other branch.
        4 => x.iter_mut().for_each(|v| *v = v.abs() + 0.5),
        // Multiples of 1/8: rounding ties everywhere.
        5 => x.iter_mut().for_each(|v| *v = (*v * 8.0).round() / 8.0),
        _ => {}
    }
    // Magnitudes from 1e-4 to 1e3, whose scales stay within f16.
    let scale = 10f32.powi((rng.next_u64() % 8) as i32 - 4);
    x.iter_mut().for_each(|v| *v *= scale);
    x
}

#[test]
fn weight_quantisers_match_ggml_bytes() {
    let mut rng = Rng::new(seed());
    let rows: Vec<Vec<f32>> = (0..64)
        .map(|r| {
            let n = 256 * (1 + (rng.next_u64() % 16) as usize);
            weight_row(r % 6, n, &mut rng)
        })
        .collect();
    let mut failures = Vec::new();
    for &ty in WEIGHT_TYPES {
        let (bs, ts) = (ty.block_size() as usize, ty.type_size() as usize);
        let (mut blocks, mut bad, mut first) = (0, 0, None);
        for (r, x) in rows.iter().enumerate() {
            let want = oracle::from_float(ty, x).expect("ggml has from_float");
            let mut got = vec![0u8; want.len()];
            ggml::blocks::quantize(ty, x, &mut got).unwrap();
            let pairs = got.chunks_exact(ts).zip(want.chunks_exact(ts));
            for (i, ((g, w), xb)) in pairs.zip(x.chunks_exact(bs)).enumerate() {
                blocks += 1;
                // ggml leaves an all-zero IQ4_NL block's indices as its scratch
                // buffer held them (stale or uninitialised): compare d only.
                let stale = ty == GgmlType::IQ4_NL && xb.iter().all(|v| v.abs() < 1e-15);
                let n = if stale { 2 } else { ts };
                if g[..n] != w[..n] {
                    bad += 1;
                    first.get_or_insert((r, i, g.to_vec(), w.to_vec()));
                }
            }
        }
        eprintln!("{ty}: {bad} of {blocks} blocks differ");
        if let Some((r, i, g, w)) = first {
            failures.push(format!(
                "{ty}: {bad} of {blocks} blocks differ; first: row {r} block {i}\n  ours {g:02x?}\n  ggml {w:02x?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
