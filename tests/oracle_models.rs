//! The forward pass against llama.cpp on the real models (issue 3).
//!
//! Oracle settings (src/oracle.rs): flash attention off, no weight repacking,
//! CPU only, f16 KV cache, 2 threads, and every token decoded on its own, as
//! llama.cpp generates. Batches of two or more tokens take ggml's llamafile
//! sgemm path, whose different summation order llama.cpp's own re-quantised
//! activations amplify to ~0.5 in the logits: against that path no
//! implementation can be held to 1e-2, including llama.cpp's own decode path.
#![cfg(feature = "oracle")]

mod common;

use common::*;
use ggml::backend::KvTypes;
use llm::model::Model;
use llm::oracle::OracleModel;
use llm::tokenizer::Tokenizer;

const THREADS: usize = 2;

/// Model tests run one at a time: each already uses every core, and spinning
/// thread pools on an oversubscribed machine slow everything down.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
const N_CTX: usize = 2048;
const CONTINUATION: usize = 64;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn argmax(x: &[f32]) -> u32 {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best }) as u32
}

/// The gap between the two largest logits.
fn prompts() -> Vec<String> {
    let mut p: Vec<String> = [
        "The capital of France is",
        "Once upon a time, in a small village by the sea,",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "Q: What is 17 times 23?\nA:",
        "The three primary colors are",
        "Translate to French: I would like a cup of coffee, please.\n",
        "東京は日本の首都で、",
        "List of prime numbers: 2, 3, 5, 7, 11,",
        "In 1969, Neil Armstrong",
        "<|im_start|>user\nWrite a haiku about autumn.<|im_end|>\n<|im_start|>assistant\n",
        "The quick brown fox",
        "SELECT name, age FROM users WHERE",
        "Photosynthesis is the process by which",
        "Dear Sir or Madam,\n\nI am writing to",
        "🙂 Emoji are small pictures that",
        "A recipe for pancakes:\n1.",
        "The theory of relativity states that",
        "https://www.example.com/path?query=",
        "Water boils at 100 degrees Celsius, which is",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // One prompt longer than 600 tokens, past Gemma's 512-token window.
    let mut long = String::from("Here is a long story about a lighthouse keeper. ");
    for i in 0..60 {
        long += &format!("On day {i} the keeper climbed the stairs, trimmed the wick and watched the ships pass. ");
    }
    long += "At the end of the season, the keeper";
    p.push(long);
    p
}

struct Outcome {
    worst_logit_diff: f32,
    identical: usize,
    forgiven: usize,
    failures: Vec<String>,
}

fn compare(name: &str) -> Outcome {
    compare_with(name, KvTypes::F16, &prompts())
}

/// Our logits and greedy continuations against llama.cpp's with a KV cache
/// of `kv` types (flash attention on in llama.cpp where it is not f16).
fn compare_with(name: &str, kv: KvTypes, all: &[String]) -> Outcome {
    let path = real_model(name);
    let tok = Tokenizer::from_gguf_file(&path).unwrap();
    let model = Model::load_with_cache(&path, THREADS, kv).unwrap();
    let mut oracle = OracleModel::load_with_cache(&path, N_CTX as u32, THREADS as i32, kv)
        .expect("llama.cpp loads the model");
    let mut out = Outcome {
        worst_logit_diff: 0.0,
        identical: 0,
        forgiven: 0,
        failures: Vec::new(),
    };
    let mut long_seen = false;
    for (i, prompt) in all.iter().enumerate() {
        let ids = tok.encode(prompt, true, true).unwrap();
        long_seen |= ids.len() > 600;
        let mut state = model.new_state(N_CTX).unwrap();
        model.forward(&mut state, &ids, false).unwrap();
        oracle.clear();
        let mut want = oracle.eval_one_by_one(&ids).unwrap();
        let d = max_diff(&state.logits, &want);
        out.worst_logit_diff = out.worst_logit_diff.max(d);
        if d > 1e-2 {
            out.failures
                .push(format!("prompt {i}: next-token logits differ by {d}"));
        }
        // Greedy continuation, token by token on both sides.
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut diverged = None;
        for step in 0..CONTINUATION {
            let (a, b) = (argmax(&state.logits), argmax(&want));
            ours.push(a);
            theirs.push(b);
            if a != b {
                diverged = Some((step, top2_gap(&want)));
                break;
            }
            if tok.is_eog(b) {
                break;
            }
            model.forward(&mut state, &[a], false).unwrap();
            want = oracle.eval(&[b]).unwrap();
        }
        match diverged {
            None => out.identical += 1,
            Some((step, gap)) if gap <= 0.05 => {
                out.forgiven += 1;
                eprintln!("{name} prompt {i}: diverged at step {step} on a near-tie (gap {gap})");
            }
            Some((step, gap)) => out.failures.push(format!(
                "prompt {i}: greedy ids diverge at step {step} (llama.cpp's top-2 gap {gap}): ours {ours:?} llama.cpp {theirs:?}"
            )),
        }
    }
    assert!(
        long_seen || all.len() < prompts().len(),
        "the corpus needs a prompt over 600 tokens"
    );
    eprintln!(
        "{name} ({kv} cache): worst next-token logit difference {:.3e}; greedy continuations identical {}/{} (forgiven near-ties {})",
        out.worst_logit_diff,
        out.identical,
        all.len(),
        out.forgiven
    );
    out
}

fn check(name: &str) {
    let _one_at_a_time = serial();
    let o = compare(name);
    assert!(o.failures.is_empty(), "{name}:\n{}", o.failures.join("\n"));
    assert!(
        o.identical >= 18,
        "{name}: only {} of 20 continuations identical",
        o.identical
    );
}

/// Every cache type, and mixes that take each of llama.cpp's value paths
/// (f16 values summed in f16; quantised values dequantised to f32; keys
/// and values rotated or not), against llama.cpp with the same cache on a
/// few prompts, with the long one where `long` (Gemma's ring of
/// sliding-window cells wraps there).
fn check_cache_types(name: &str, long: bool) {
    let _one_at_a_time = serial();
    let all = prompts();
    let n = if long { 3 } else { 4 };
    let some: Vec<String> = all[..n]
        .iter()
        .chain(all.last().filter(|_| long))
        .cloned()
        .collect();
    use ggml::GgmlType::*;
    let pairs = [
        (Q8_0, Q8_0),
        (Q4_0, Q4_0),
        (Q4_1, Q5_1),
        (Q5_0, IQ4_NL),
        (BF16, BF16),
        (F16, Q8_0),
        (Q8_0, F16),
        (IQ4_NL, Q4_1),
    ];
    let mut failures = Vec::new();
    for (k, v) in pairs {
        let kv = KvTypes { k, v };
        let o = compare_with(name, kv, &some);
        failures.extend(o.failures.iter().map(|f| format!("{kv}: {f}")));
        if o.identical + 1 < some.len() {
            failures.push(format!(
                "{kv}: only {} of {} continuations identical",
                o.identical,
                some.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
}

#[test]
fn smollm2_cache_types_match_llama_cpp() {
    check_cache_types(SMOLLM2, false);
}

#[test]
fn gemma3_cache_types_match_llama_cpp() {
    check_cache_types(GEMMA3, true);
}

#[test]
fn smollm2_matches_llama_cpp() {
    check(SMOLLM2);
}

#[test]
fn gemma3_matches_llama_cpp() {
    check(GEMMA3);
}

/// The example: 32 greedy ids for "The capital of France is".
#[test]
fn capital_of_france_32_greedy_ids() {
    let _one_at_a_time = serial();
    let path = real_model(SMOLLM2);
    let run = llm(&[
        "run",
        path_str(&path),
        "-p",
        "The capital of France is",
        "-n",
        "32",
        "--temp",
        "0",
        "--print-ids",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let ours: Vec<u32> = run
        .stdout
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    let tok = Tokenizer::from_gguf_file(&path).unwrap();
    let ids = tok.encode("The capital of France is", true, true).unwrap();
    let mut oracle = OracleModel::load(&path, 512, THREADS as i32).unwrap();
    let mut logits = oracle.eval_one_by_one(&ids).unwrap();
    let mut want = Vec::new();
    for _ in 0..32 {
        let t = argmax(&logits);
        want.push(t);
        if tok.is_eog(t) {
            break;
        }
        logits = oracle.eval(&[t]).unwrap();
    }
    assert_eq!(ours, want);
}

/// Every traced tensor of every layer equals llama.cpp's, token by token: the
/// place to look first when the logits part.
#[test]
fn gemma3_layer_tensors_equal_llama_cpp() {
    let _one_at_a_time = serial();
    use std::sync::{Arc, Mutex};
    type Traced = Arc<Mutex<Vec<(String, Vec<f32>)>>>;
    static STORE: llm::oracle::Captured = Mutex::new(Vec::new());
    let path = real_model(GEMMA3);
    let tok = Tokenizer::from_gguf_file(&path).unwrap();
    let ids = tok
        .encode("The lighthouse keeper climbed the stairs", true, false)
        .unwrap();
    let mut oracle = OracleModel::load_capturing(&path, 512, THREADS as i32, &STORE).unwrap();
    let model = Model::load(&path, THREADS).unwrap();
    let mut state = model.new_state(512).unwrap();
    let ours: Traced = Arc::new(Mutex::new(Vec::new()));
    let sink = ours.clone();
    state.trace = Some(Box::new(move |name, il, v| {
        sink.lock()
            .unwrap()
            .push((format!("{name}-{il}"), v.to_vec()))
    }));
    let mut compared = 0;
    for (k, &t) in ids.iter().enumerate() {
        STORE.lock().unwrap().clear();
        ours.lock().unwrap().clear();
        oracle.eval(&[t]).unwrap();
        model.forward(&mut state, &[t], false).unwrap();
        let theirs = STORE.lock().unwrap();
        for (name, v) in ours.lock().unwrap().iter() {
            // llama.cpp names several stages alike; the last of the right size
            // is ours. Gemma's graph has no `ffn_inp` (it says `sa_out`).
            let alias = name.replace("ffn_inp", "sa_out");
            let t = theirs
                .iter()
                .rev()
                .find(|t| (t.0 == *name || t.0 == alias) && t.2.len() == v.len());
            let t = t.unwrap_or_else(|| panic!("llama.cpp computed no {name}"));
            assert_eq!(max_diff(v, &t.2), 0.0, "token {k}: {name} differs");
            compared += 1;
        }
    }
    assert!(compared > 100);
}
