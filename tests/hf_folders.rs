//! Hugging Face model folders through the forward pass: the fixtures of
//! ../shared/fixtures (a tiny random Llama, plain and quantised by the
//! libraries themselves) against the logits those libraries' reference
//! computed (README there).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llm::format::model_folder::ModelFolder;
use llm::model::config::Config;
use llm::model::forward::Layout;
use llm::model::Model;
use serde_json::Value;

fn fixture(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipped: {} is not there", p.display());
        None
    }
}

/// Our logits sit within 5e-3 of the references' (below), so a step whose
/// top two are closer than this may go either way.
const NEAR_TIE: f64 = 0.02;

fn model(dir: &Path) -> Model {
    let folder = Arc::new(ModelFolder::open(dir).unwrap_or_else(|e| panic!("{e}")));
    let config = Config::from_folder(&folder).unwrap();
    let layout = Layout::cpu(config.n_layer);
    Model::build(folder, config, 2, ggml::cpu::isa(), &layout).unwrap()
}

/// A reference.json list of numbers (ids, logits, margins).
fn numbers(v: &Value) -> impl Iterator<Item = f64> + '_ {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap()
}

/// Greedy continuations (one token at a time through the KV cache) against
/// the reference's `greedy_ids`, up to its first near-tie: (tokens
/// compared, tokens equal) over all prompts.
fn greedy(dir: &Path, prompts: &Value, reference: &Value) -> (usize, usize) {
    let model = model(dir);
    let (mut compared, mut equal) = (0, 0);
    for (p, r) in prompts["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["prompts"].as_array().unwrap())
    {
        let ids: Vec<u32> = numbers(&p["input_ids"]).map(|x| x as u32).collect();
        let want: Vec<u32> = numbers(&r["greedy_ids"]).map(|x| x as u32).collect();
        let margins: Vec<f64> = numbers(&r["greedy_top1_top2_margin"]).collect();
        let mut state = model.new_state(256).unwrap();
        model.forward(&mut state, &ids, false).unwrap();
        for (step, &w) in want.iter().enumerate() {
            if margins[step] < NEAR_TIE {
                break;
            }
            let next = argmax(&state.logits) as u32;
            compared += 1;
            if next != w {
                break;
            }
            equal += 1;
            model.forward(&mut state, &[next], false).unwrap();
        }
    }
    (compared, equal)
}

/// Max |logit - reference| at each prompt's last position, and how many of
/// the prompts have the reference's argmax: the prompts' ids from
/// `prompts`, their logits from `logits` (the same list or another
/// reference's).
fn compare(dir: &Path, prompts: &Value, logits: &Value) -> (f32, usize, usize) {
    let model = model(dir);
    let prompts = prompts["prompts"].as_array().unwrap();
    let logits = logits["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), logits.len());
    let (mut worst, mut same) = (0f32, 0);
    for (p, l) in prompts.iter().zip(logits) {
        let ids: Vec<u32> = numbers(&p["input_ids"]).map(|x| x as u32).collect();
        let want: Vec<f32> = numbers(&l["last_logits"]).map(|x| x as f32).collect();
        let mut state = model.new_state(256).unwrap();
        model.forward(&mut state, &ids, false).unwrap();
        let got = &state.logits[state.logits.len() - want.len()..];
        for (a, b) in got.iter().zip(&want) {
            worst = worst.max((a - b).abs());
        }
        same += usize::from(argmax(got) == argmax(&want));
    }
    (worst, same, prompts.len())
}

fn reference(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap()
}

#[test]
fn the_fp16_folder_gives_the_f32_reference_logits() {
    let Some(dir) = fixture("tiny-llama-fp16") else {
        return;
    };
    let r = reference(&dir);
    let (worst, same, n) = compare(&dir, &r, &r);
    eprintln!(
        "tiny-llama-fp16: max |logit diff| {worst:.2e} vs transformers in f32; argmax {same}/{n}"
    );
    // The same f16 weights; our CPU path (llama.cpp's) rounds each product's
    // activations to f16 (2^-11 relative), transformers keeps f32: measured
    // 3.7e-3 on logits of about +-3, so 1e-2 leaves room without hiding a
    // wrong rope or layout (those move logits by tenths).
    assert!(worst < 1e-2, "max |logit diff| {worst}");
    assert_eq!(same, n);
    let (compared, equal) = greedy(&dir, &r, &r);
    eprintln!("tiny-llama-fp16: greedy {equal}/{compared} tokens equal up to the first near-tie");
    assert!(
        compared > 0 && equal == compared,
        "greedy {equal}/{compared}"
    );
}

#[test]
fn quantised_folders_give_their_fp32_dequant_reference() {
    for name in [
        "tiny-llama-gptq-4bit-g64",
        "tiny-llama-gptq-4bit-g64-actorder",
        "tiny-llama-gptq-4bit-g64-asym",
        "tiny-llama-gptq-3bit-g64",
        "tiny-llama-gptq-8bit-g64",
        "tiny-llama-exl2-4.0bpw",
        "tiny-llama-exl2-3.0bpw",
    ] {
        let Some(dir) = fixture(name) else { return };
        let r = reference(&dir);
        let (worst, same, n) = compare(&dir, &r, &r["fp32_dequant_reference"]);
        eprintln!(
            "{name}: max |logit diff| {worst:.2e} vs its fp32 dequant reference; argmax {same}/{n}"
        );
        // Bit-exact f16 weights (format::gptq, format::exl2 tests); the
        // rest is the f16-activation rounding above.
        assert!(worst < 1e-2, "{name}: max |logit diff| {worst}");
        assert_eq!(same, n, "{name}");
        let (compared, equal) = greedy(&dir, &r, &r["fp32_dequant_reference"]);
        eprintln!("{name}: greedy {equal}/{compared} tokens equal up to the first near-tie");
        assert!(
            compared > 0 && equal == compared,
            "{name}: greedy {equal}/{compared}"
        );
    }
}
