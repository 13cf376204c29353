//! The footprint that `llm info`, the planner and the loader count with is
//! what a load really holds (issue 8): each layer's weights as the model keeps
//! them, and the KV cache a fresh sequence allocates, sliding-window rings
//! included, at several contexts.

mod common;

use common::*;
use ggml::backend::KvTypes;
use ggml::GgmlType;
use llm::engine::load::{load, LoadOptions};
use llm::engine::planner::{Options, Placement};

fn check(name: &str, n_ctx: usize) {
    check_with(name, n_ctx, KvTypes::F16);
}

fn check_with(name: &str, n_ctx: usize, kv_types: KvTypes) {
    let path = real_model(name);
    let opts = LoadOptions {
        ctx_size: Some(n_ctx),
        threads: 1,
        gpu_layers: None,
        planner: Options::default(),
        kv_types,
    };
    let loaded = load(&path, &opts).unwrap();
    assert_eq!(loaded.n_ctx, n_ctx);
    let plan = &loaded.plan;
    // No GPU here: everything is planned for the CPU, and said nowhere.
    assert!(plan.layers.iter().all(|p| *p == Placement::Cpu));
    assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);

    let model = &loaded.model;
    let state = model.new_state(n_ctx).unwrap();
    assert_eq!(
        model.kv_allocated(&state) as u64,
        plan.cpu.usage.kv_bytes,
        "{name} at {n_ctx}: KV allocated vs planned"
    );
    let held: u64 = model.weights.layers.iter().map(|l| l.bytes() as u64).sum();
    // The CPU's weights are its layers and the output head; a tied output
    // is the token embedding the CPU holds already (counted apart).
    let w = &model.weights;
    let tied = w.output.name == w.token_embd.name;
    let head = 4 * w.output_norm.len() as u64 + if tied { 0 } else { w.output.len as u64 };
    assert_eq!(plan.cpu.token_embd_bytes, w.token_embd.len as u64);
    let planned = plan.cpu.usage.weights_bytes - head;
    assert_eq!(held, planned, "{name}: layer weights held vs planned");
}

#[test]
fn smollm2_footprint_is_what_a_load_holds() {
    for n_ctx in [256, 4096] {
        check(SMOLLM2, n_ctx);
    }
}

#[test]
fn gemma3_footprint_counts_sliding_window_rings_as_allocated() {
    // Below, at and above the 512-token window plus one batch.
    for n_ctx in [600, 1024, 1025, 4096] {
        check(GEMMA3, n_ctx);
    }
}

#[test]
fn quantised_caches_are_counted_as_allocated() {
    let q8_q4 = KvTypes {
        k: GgmlType::Q8_0,
        v: GgmlType::Q4_0,
    };
    check_with(SMOLLM2, 1024, q8_q4);
    check_with(GEMMA3, 1025, q8_q4);
    let bf16_iq4 = KvTypes {
        k: GgmlType::BF16,
        v: GgmlType::IQ4_NL,
    };
    check_with(GEMMA3, 600, bf16_iq4);
}
