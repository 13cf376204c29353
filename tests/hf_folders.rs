//! Hugging Face model folders through the forward pass: the fixtures of
//! ../shared/fixtures (a tiny random Llama, plain and quantised by the
//! libraries themselves) against the logits those libraries' reference
//! computed (README there).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{llm, path_str};

use llm::format::model_folder::ModelFolder;
use llm::model::config::Config;
use llm::model::forward::{Device, Layout};
use llm::model::Model;
use serde_json::Value;

/// A fixture of tests/data (the AWQ one), ../shared/fixtures, or
/// LLM_FIXTURES (the GPU machine's copy of some of them).
fn fixture(name: &str) -> Option<PathBuf> {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    if ours.is_dir() {
        return Some(ours);
    }
    let root = std::env::var_os("LLM_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
        PathBuf::from,
    );
    let p = root.join(name);
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

/// Where the layers run: all on the CPU, or the first `n` of them on GPU 0
/// (with the head when all are).
#[derive(Clone, Copy)]
enum Place {
    Cpu,
    Gpu(usize),
}

fn model(dir: &Path, place: Place) -> Model {
    let folder = Arc::new(ModelFolder::open(dir).unwrap_or_else(|e| panic!("{e}")));
    let config = Config::from_folder(&folder).unwrap();
    let n = config.n_layer;
    let layout = match place {
        Place::Cpu => Layout::cpu(n),
        Place::Gpu(g) => {
            let layers: Vec<Device> = (0..n)
                .map(|i| if i < g { Device::Gpu(0) } else { Device::Cpu })
                .collect();
            let head = if g >= n { Device::Gpu(0) } else { Device::Cpu };
            Layout::from_layers(&layers, head)
        }
    };
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
fn greedy(dir: &Path, place: Place, prompts: &Value, reference: &Value) -> (usize, usize) {
    let model = model(dir, place);
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
fn compare(dir: &Path, place: Place, prompts: &Value, logits: &Value) -> (f32, usize, usize) {
    let model = model(dir, place);
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

/// Last-position logits within `1e-2` of `reference`'s with the same
/// argmax, and greedy continuations equal to its up to the first near-tie.
fn agrees_with(name: &str, dir: &Path, place: Place, r: &Value, reference: &Value, against: &str) {
    let (worst, same, n) = compare(dir, place, r, reference);
    eprintln!("{name}: max |logit diff| {worst:.2e} vs {against}; argmax {same}/{n}");
    assert!(worst < 1e-2, "{name}: max |logit diff| {worst}");
    assert_eq!(same, n, "{name}");
    let (compared, equal) = greedy(dir, place, r, reference);
    eprintln!("{name}: greedy {equal}/{compared} tokens equal up to the first near-tie");
    assert!(
        compared > 0 && equal == compared,
        "{name}: greedy {equal}/{compared}"
    );
}

#[test]
fn the_fp16_folder_gives_the_f32_reference_logits() {
    let Some(dir) = fixture("tiny-llama-fp16") else {
        return;
    };
    let r = reference(&dir);
    // The same f16 weights; our CPU path (llama.cpp's) rounds each product's
    // activations to f16 (2^-11 relative), transformers keeps f32: measured
    // 3.7e-3 on logits of about +-3, so 1e-2 leaves room without hiding a
    // wrong rope or layout (those move logits by tenths).
    agrees_with(
        "tiny-llama-fp16",
        &dir,
        Place::Cpu,
        &r,
        &r,
        "transformers in f32",
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
        "tiny-llama-awq-4bit-g64",
    ] {
        let Some(dir) = fixture(name) else { return };
        let r = reference(&dir);
        // Blocks that hold the libraries' weights exactly
        // (format::group_blocks tests), multiplied with activations kept to
        // within 3.1e-5 of a block's largest value (two 8-bit levels on one
        // scale, ggml::cpu::fine): measured 3.3e-3 to 4.4e-3, the f16
        // rounding of the KV cache and of the head's activations as above.
        // One 8-bit level, as ggml quantises activations for these blocks,
        // measured 9e-2: a bound of 1e-2 tells the two apart.
        let against = "its fp32 dequant reference";
        agrees_with(
            name,
            &dir,
            Place::Cpu,
            &r,
            &r["fp32_dequant_reference"],
            against,
        );
        // And within the library's own f16 noise of its logits: how far they
        // are from that reference, plus the bound above.
        let noise = r["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p["last_logits_max_abs_diff_vs_fp32_dequant"]
                    .as_f64()
                    .unwrap() as f32
            })
            .fold(0f32, f32::max);
        let (worst, same, n) = compare(&dir, Place::Cpu, &r, &r);
        eprintln!(
            "{name}: max |logit diff| {worst:.2e} vs the library's own logits (its noise {noise:.2e}); argmax {same}/{n}"
        );
        assert!(worst < noise + 1e-2, "{name}: {worst} vs the library");
    }
}

/// Every architecture a folder may hold, through both readers: a random
/// f16 model written as GGUF, that file written back as a Hugging Face
/// folder (names, llama's rotate-half Q/K rows, Gemma's norms less one,
/// rope factors in config.json), and the same tokens through each.
#[test]
fn every_architecture_reads_the_same_from_a_folder_as_from_gguf() {
    use ggml::GgmlType;
    use llm::format::folder_from_gguf::write_folder_from_gguf;
    use llm::format::gguf::{Array, GgufFile, Metadata, Value};
    use llm::model::synth::{synthesize, Spec};

    let mut vocab = Metadata::default();
    let tokens: Vec<String> = (0..512).map(|i| format!("t{i}")).collect();
    vocab.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(Array::String(tokens)),
    );
    vocab.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    let spec = |arch: &str, seed: u64| Spec {
        arch: arch.to_string(),
        weight: GgmlType::F16,
        n_layer: 2,
        n_embd: 256,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 512,
        n_ctx: 128,
        tied: seed.is_multiple_of(2) && arch != "phi3",
        seed,
        longrope_orig: None,
        rope_scaling: None,
    };
    let cases: Vec<(&str, Spec, bool)> = vec![
        ("llama", spec("llama", 1), false),
        ("llama as mistral", spec("llama", 2), true),
        ("qwen2", spec("qwen2", 3), false),
        ("qwen3", spec("qwen3", 4), false),
        ("gemma3", spec("gemma3", 5), false),
        ("phi3", spec("phi3", 6), false),
        (
            "phi3 longrope, long factors",
            Spec {
                longrope_orig: Some(64),
                ..spec("phi3", 7)
            },
            false,
        ),
        (
            "phi3 longrope, short factors",
            Spec {
                longrope_orig: Some(512),
                ..spec("phi3", 9)
            },
            false,
        ),
        (
            "llama, yarn",
            Spec {
                rope_scaling: Some(("yarn", 4.0, 32)),
                ..spec("llama", 10)
            },
            false,
        ),
        (
            "qwen2, linear",
            Spec {
                rope_scaling: Some(("linear", 2.0, 64)),
                ..spec("qwen2", 11)
            },
            false,
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (name, spec, mistral)) in cases.iter().enumerate() {
        let gguf = tmp.path().join(format!("{i}.gguf"));
        synthesize(spec, &vocab).unwrap().write_to(&gguf).unwrap();
        let dir = tmp.path().join(format!("{i}"));
        write_folder_from_gguf(&GgufFile::open(&gguf).unwrap(), &dir, *mistral).unwrap();
        let from_file = Model::load(&gguf, 2).unwrap();
        let from_folder = model(&dir, Place::Cpu);
        let mut worst = 0f32;
        // Past Gemma's window of 8, and past every rope's original context.
        for len in [1usize, 9, 70] {
            let ids: Vec<u32> = (0..len).map(|k| ((k * 7919 + len) % 512) as u32).collect();
            let mut a = from_file.new_state(128).unwrap();
            let mut b = from_folder.new_state(128).unwrap();
            from_file.forward(&mut a, &ids, false).unwrap();
            from_folder.forward(&mut b, &ids, false).unwrap();
            for (x, y) in a.logits.iter().zip(&b.logits) {
                worst = worst.max((x - y).abs());
            }
        }
        eprintln!("{name}: max |logit diff| {worst:.2e} between the GGUF file and its folder");
        // The same weights and arithmetic, but a llama folder keeps each
        // head in rotate-half order where its GGUF file interleaves it, so
        // q.k adds in another order; where that f32 sum rounds differently
        // (rarely: the products of f16 values are exact), llama.cpp's f16
        // accumulation of V passes it on. Measured 0 everywhere but llama
        // with YaRN: 4-6e-4 at a few lengths. A wrong norm, rope or layout
        // moves logits by tenths.
        if worst > 1e-3 {
            failures.push(format!("{name}: {worst}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// On the GPU, whole and split with the CPU: the same bound against the
/// fp32 reference (the GPU keeps activations in 16 bits or f16) and the same
/// greedy tokens. The GPU suite carries these three fixtures: group order
/// with Q4_0 and Q8_0 blocks (the EXL2 head among them), and Q5_0.
#[test]
fn quantised_folders_on_the_gpu_give_their_fp32_dequant_reference() {
    if !ggml::cuda::devices().iter().any(|d| d.problem.is_none()) {
        eprintln!("skipped: no GPU");
        return;
    }
    for name in [
        "tiny-llama-gptq-4bit-g64-actorder",
        "tiny-llama-gptq-4bit-g64-asym",
        "tiny-llama-exl2-4.0bpw",
        "tiny-llama-awq-4bit-g64",
    ] {
        let Some(dir) = fixture(name) else {
            panic!("{name} is not there: set LLM_FIXTURES")
        };
        let r = reference(&dir);
        for (place, how) in [(Place::Gpu(4), "all on the GPU"), (Place::Gpu(2), "half")] {
            let against = format!("its fp32 dequant reference, {how}");
            agrees_with(
                name,
                &dir,
                place,
                &r,
                &r["fp32_dequant_reference"],
                &against,
            );
        }
    }
}

/// The command line takes a folder as it takes a GGUF file: `llm run` reads
/// its tokenizer.json, and greedy decoding gives the reference's
/// continuation up to its first near-tie.
#[test]
fn llm_run_takes_a_model_folder() {
    for name in [
        "tiny-llama-fp16",
        "tiny-llama-gptq-4bit-g64-actorder",
        "tiny-llama-gptq-3bit-g64",
        "tiny-llama-exl2-3.0bpw",
    ] {
        let Some(dir) = fixture(name) else { return };
        let r = reference(&dir);
        let want_from = if name.ends_with("fp16") {
            &r
        } else {
            &r["fp32_dequant_reference"]
        };
        let prompts = r["prompts"].as_array().unwrap();
        let wants = want_from["prompts"].as_array().unwrap();
        let mut compared = 0;
        for (p, w) in prompts.iter().zip(wants) {
            let want: Vec<u32> = numbers(&w["greedy_ids"]).map(|x| x as u32).collect();
            let margins: Vec<f64> = numbers(&w["greedy_top1_top2_margin"]).collect();
            let n = want.len().to_string();
            let text = p["text"].as_str().unwrap();
            let run = llm(&[
                "run",
                path_str(&dir),
                "-p",
                text,
                "-n",
                &n,
                "--temp",
                "0",
                "--print-ids",
            ]);
            assert_eq!(run.code, Some(0), "{name}: {}", run.stderr);
            let got: Vec<u32> = run
                .stdout
                .split_whitespace()
                .map(|t| t.parse().unwrap())
                .collect();
            let sure = margins.iter().take_while(|&&m| m >= NEAR_TIE).count();
            compared += sure;
            // We stop at the end of text; the reference ran on past it.
            let k = sure.min(got.len());
            assert_eq!(got[..k], want[..k], "{name}: {text:?}");
            if k < sure {
                assert_eq!(want[k], eos(&dir), "{name}: {text:?} stopped early");
            }
        }
        assert!(compared > 0, "{name}: every prompt starts with a near-tie");
    }
}

/// The end-of-text id of generation_config.json.
fn eos(dir: &Path) -> u32 {
    let c: Value =
        serde_json::from_slice(&std::fs::read(dir.join("generation_config.json")).unwrap())
            .unwrap();
    c["eos_token_id"].as_u64().unwrap() as u32
}

/// `llm chat` on a folder: its tokenizer and, lacking a template of its
/// own, the plain format, said once.
#[test]
fn llm_chat_takes_a_model_folder() {
    let Some(dir) = fixture("tiny-llama-gptq-4bit-g64") else {
        return;
    };
    let run = llm(&[
        "chat",
        path_str(&dir),
        "-p",
        "Hello",
        "-n",
        "4",
        "--temp",
        "0",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("no chat template"), "{}", run.stderr);
    assert!(!run.stdout.trim().is_empty(), "no reply");
}

/// `llm info` and `llm info --plan` on a folder: its shape from config.json,
/// its tokenizer, its quantisation, and a plan without loading it.
#[test]
fn llm_info_reads_a_model_folder() {
    let Some(dir) = fixture("tiny-llama-exl2-4.0bpw") else {
        return;
    };
    let run = llm(&["info", path_str(&dir)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for want in [
        "quantisation: exl2",
        "architecture    llama",
        "layers          4",
        "eos 1 \"</s>\"",
    ] {
        assert!(run.stdout.contains(want), "{want:?} in:\n{}", run.stdout);
    }
    let run = llm(&["info", path_str(&dir), "--plan", "--gpu-mem", "1GiB"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("5 of 5 layers on the GPU"),
        "{}",
        run.stdout
    );
    let run = llm(&["info", path_str(&dir), "--json"]);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["hparams"]["n_layer"], 4);
}

/// Writes a random-weight folder for benchmarks (run by hand and by the
/// GPU session): LLM_WRITE_FOLDER (the directory), LLM_WRITE_SHAPE (7b or
/// 1b), LLM_WRITE_FORMAT (f16, gptq4 (group 128), gptq4-act (act-order),
/// gptq4-asym (zero points, as Q5_0 blocks), gptq8, awq (group 128), exl2-4
/// (every group 4 bits) or exl2 (the 4.0 bpw fixture's mix of widths)).
#[test]
#[ignore]
fn write_a_bench_folder() {
    use llm::format::folder_writer::{write_folder, FolderSpec, FolderWeights};
    let dir = std::env::var("LLM_WRITE_FOLDER").expect("LLM_WRITE_FOLDER");
    let shape = std::env::var("LLM_WRITE_SHAPE").unwrap_or_else(|_| "7b".into());
    let format = std::env::var("LLM_WRITE_FORMAT").unwrap_or_else(|_| "gptq4".into());
    let gptq = |bits, act_order, sym| FolderWeights::Gptq {
        bits,
        group: 128,
        act_order,
        sym,
    };
    let weights = match format.as_str() {
        "f16" => FolderWeights::F16,
        "gptq4" => gptq(4, false, true),
        "gptq4-act" => gptq(4, true, true),
        "gptq4-asym" => gptq(4, false, false),
        "gptq8" => gptq(8, false, true),
        "awq" => FolderWeights::Awq { group: 128 },
        "exl2-4" => FolderWeights::Exl2 {
            bits: Some(4),
            head_bits: 6,
        },
        "exl2" => FolderWeights::Exl2 {
            bits: None,
            head_bits: 6,
        },
        other => panic!("unknown LLM_WRITE_FORMAT {other}"),
    };
    let spec = FolderSpec::named(&shape, weights).expect("LLM_WRITE_SHAPE: 7b or 1b");
    write_folder(&spec, Path::new(&dir)).unwrap();
}
