//! Models larger than the CPU's caches, for decode speed against the DRAM
//! roofline: random weights of Llama-3.2-1B's shape (16 layers, 2048 wide,
//! 32 heads, 8 KV heads, 8192 FFN) with SmolLM2's vocabulary, written by
//! our own writer. Not a test: `LLM_WRITE_1B=out.gguf LLM_WRITE_TYPE=Q4_K
//! cargo test --release --test large_models -- --ignored` writes one.

mod common;

use common::*;
use llm::format::gguf::GgufFile;
use llm::model::synth::{synthesize, Spec};

#[test]
#[ignore = "writes a large model where LLM_WRITE_1B says"]
fn write_a_1b_shaped_model() {
    let out = std::env::var("LLM_WRITE_1B").expect("LLM_WRITE_1B names the file to write");
    let weight = weight_type_from_env();
    let vocab = GgufFile::open(&real_model(SMOLLM2)).unwrap();
    let spec = Spec {
        arch: "llama".into(),
        weight,
        n_layer: 16,
        n_embd: 2048,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 8192,
        n_ctx: 4096,
        tied: false,
        seed: 2026,
        longrope_orig: None,
        rope_scaling: None,
    };
    synthesize(&spec, vocab.metadata())
        .unwrap()
        .write_to(std::path::Path::new(&out))
        .unwrap();
}

/// This machine's memory read bandwidth, the roofline's denominator: a
/// 1 GiB buffer (far past the caches) summed by 1 and 2 threads, each its
/// own half, the best of five passes; on 4 KiB pages and on 2 MiB pages
/// (as the CPU backend asks for its regrouped weights: 4 KiB pages cost a
/// streaming read a TLB miss each). Not a test: `cargo test --release
/// --test large_models -- --ignored --nocapture read_bandwidth`.
#[test]
#[ignore = "a measurement: prints GB/s"]
fn read_bandwidth() {
    let words = (1usize << 30) / 8;
    for huge in [false, true] {
        let mut data = vec![0u64; words];
        if huge {
            huge_pages(&mut data);
        }
        for (i, v) in data.iter_mut().enumerate() {
            *v = (i as u64).wrapping_mul(0x9e37_79b9);
        }
        for threads in [1, 2] {
            let mut best = f64::INFINITY;
            let mut check = 0u64;
            for _ in 0..5 {
                let start = std::time::Instant::now();
                check ^= std::thread::scope(|s| {
                    let parts: Vec<_> = data
                        .chunks(words.div_ceil(threads))
                        .map(|part| {
                            s.spawn(move || part.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
                        })
                        .collect();
                    parts.into_iter().fold(0, |a, h| a ^ h.join().unwrap())
                });
                best = best.min(start.elapsed().as_secs_f64());
            }
            let pages = if huge { "2 MiB" } else { "4 KiB" };
            println!(
                "read bandwidth, {pages} pages, {threads} thread(s): {:.1} GB/s (checksum {check:x})",
                (words * 8) as f64 / best / 1e9
            );
        }
    }
}

/// Asks for 2 MiB pages under `data` (fresh, untouched).
fn huge_pages(data: &mut [u64]) {
    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    const HUGE: usize = 2 << 20;
    let base = data.as_mut_ptr() as usize;
    let (start, end) = (
        base.next_multiple_of(HUGE),
        (base + data.len() * 8) / HUGE * HUGE,
    );
    // SAFETY: whole pages of this process's own buffer; MADV_HUGEPAGE (14)
    // changes only how they are backed.
    unsafe { madvise(start as *mut _, end - start, 14) };
}
