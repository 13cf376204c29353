//! `llm info MODEL --plan` (issue 8): the offload plan from the header, for
//! hypothetical cards, checked against the bytes counted here from the file
//! and against what a load allocates.

mod common;

use common::*;
use llm::format::gguf::GgufFile;
use llm::model::{HyperParams, Model};
use serde_json::Value as Json;

fn plan_json(args: &[&str]) -> Json {
    let run = llm(args);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    serde_json::from_str(&run.stdout).expect("--plan --json prints JSON")
}

/// Bytes of the tensors of layers `first..=last`, summed from the file.
fn layer_weights(file: &GgufFile, first: u64, last: u64) -> u64 {
    file.tensors()
        .iter()
        .filter(|t| {
            let mut parts = t.name.split('.');
            parts.next() == Some("blk")
                && parts
                    .next()
                    .and_then(|i| i.parse::<u64>().ok())
                    .is_some_and(|i| (first..=last).contains(&i))
        })
        .map(|t| t.size)
        .sum()
}

/// f16 K and V of layers `first..=last` at context `n_ctx`: window layers
/// hold their window plus one 512-token batch.
fn layer_kv(hp: &HyperParams, n_ctx: u64, first: u64, last: u64) -> u64 {
    (first..=last)
        .map(|il| {
            let cells = match (hp.swa_layers.get(il as usize), hp.sliding_window) {
                (Some(true), Some(w)) => (w + 512).min(n_ctx),
                _ => n_ctx,
            };
            let heads = hp.n_head_kv[il as usize];
            cells * heads * (hp.head_dim_k.unwrap() + hp.head_dim_v.unwrap()) * 2
        })
        .sum()
}

fn size(file: &GgufFile, name: &str) -> Option<u64> {
    file.tensor_info(name).map(|t| t.size)
}

fn check_partial_split(model_name: &str, gpu_mem: &str, usable: u64) {
    let model = real_model(model_name);
    let path = path_str(&model);
    let json = plan_json(&["info", path, "--plan", "--gpu-mem", gpu_mem, "--json"]);
    let file = GgufFile::open(&model).unwrap();
    let hp = HyperParams::from_metadata(file.metadata()).unwrap();
    let plan = &json["plan"];
    let n_layer = hp.n_layer;
    // Chat's default context: 4096, or the model's own if smaller.
    let n_ctx = hp.n_ctx_train.unwrap().min(4096);
    assert_eq!(plan["n_ctx"], n_ctx);
    assert_eq!(plan["requested"], "auto");

    let dev = &plan["devices"][0];
    assert_eq!(dev["usable_bytes"], usable);
    let range = dev["layers"].as_array().expect("some layers on the GPU");
    let (first, last) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
    // Partial: the output and the top layers on the GPU, the rest here.
    assert_eq!(last, n_layer - 1);
    assert!(
        first > 0,
        "everything fit in {gpu_mem}: pick a smaller card"
    );
    assert_eq!(dev["output"], true);
    assert_eq!(plan["gpu_layers"], n_layer - first + 1);
    let cpu = &plan["cpu"];
    assert_eq!(cpu["layers"], serde_json::json!([0, first - 1]));
    assert_eq!(cpu["output"], false);

    // Weights: the GPU's layers and the output layer (a tied one is the
    // token embedding, copied to the GPU).
    let output = size(&file, "output.weight")
        .or(size(&file, "token_embd.weight"))
        .unwrap()
        + size(&file, "output_norm.weight").unwrap();
    let gpu_weights = layer_weights(&file, first, last) + output;
    assert_eq!(dev["weights_bytes"].as_u64().unwrap(), gpu_weights);
    assert_eq!(
        dev["kv_bytes"].as_u64().unwrap(),
        layer_kv(&hp, n_ctx, first, last)
    );
    assert_eq!(
        cpu["weights_bytes"].as_u64().unwrap(),
        layer_weights(&file, 0, first - 1)
    );
    assert_eq!(
        cpu["kv_bytes"].as_u64().unwrap(),
        layer_kv(&hp, n_ctx, 0, first - 1)
    );
    assert_eq!(
        cpu["token_embd_bytes"].as_u64(),
        size(&file, "token_embd.weight")
    );
    let scratch = dev["scratch_bytes"].as_u64().unwrap();
    assert!(scratch > 0);
    let total = gpu_weights + layer_kv(&hp, n_ctx, first, last) + scratch;
    assert!(total <= usable, "{total} > {usable}");
    // One more layer would not fit (auto took all it could).
    let next =
        layer_weights(&file, first - 1, first - 1) + layer_kv(&hp, n_ctx, first - 1, first - 1);
    assert!(
        total + next > usable,
        "auto left room for layer {}",
        first - 1
    );

    // The KV cache counted is the one a load allocates.
    let loaded = Model::load(&model, 1).unwrap();
    assert_eq!(
        layer_kv(&hp, n_ctx, 0, n_layer - 1),
        loaded.kv_bytes(n_ctx as usize) as u64
    );

    // The text form says the same in a few lines.
    let text = llm(&["info", path, "--plan", "--gpu-mem", gpu_mem]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    let want = format!("GPU0 (hypothetical GPU 0): layers {first}-{last} + output:");
    assert!(text.stdout.contains(&want), "{want:?} in\n{}", text.stdout);
    assert!(
        text.stdout
            .contains(&format!("CPU: token embedding + layers 0-{}", first - 1)),
        "{}",
        text.stdout
    );
}

#[test]
fn smollm2_partial_split_on_a_small_card() {
    check_partial_split(
        SMOLLM2,
        "0.1GiB",
        (0.1f64 * (1u64 << 30) as f64).round() as u64,
    );
}

/// Gemma's tied output alone is 170 MiB. At chat's default context (4096)
/// the whole model needs about 0.3 GiB, so 0.4 GiB would hold it all; 0.25
/// GiB splits it.
#[test]
fn gemma3_partial_split_on_a_small_card() {
    check_partial_split(GEMMA3, "256MiB", 256 << 20);
}

#[test]
fn gemma3_at_its_trained_context_splits_at_0_4_gib() {
    let model = real_model(GEMMA3);
    let json = plan_json(&[
        "info",
        path_str(&model),
        "--plan",
        "-c",
        "0",
        "--gpu-mem",
        "0.4GiB",
        "--json",
    ]);
    let plan = &json["plan"];
    assert_eq!(plan["n_ctx"], 32768);
    let n = plan["gpu_layers"].as_u64().unwrap();
    assert!(n > 1 && n < 19, "{n}");
}

#[test]
fn an_ngl_too_large_is_one_line_naming_what_fits() {
    let model = real_model(SMOLLM2);
    let path = path_str(&model);
    let run = llm(&["info", path, "--plan", "--gpu-mem", "0.1GiB", "-ngl", "all"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.is_empty());
    let line = run.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.starts_with("llm: -ngl all: GPU0 (hypothetical GPU 0) needs ")
            && line.contains("but has 102.4 MiB; -ngl "),
        "{line}"
    );
    // The count it names fits, and is what auto picks.
    let fits = line
        .rsplit("-ngl ")
        .next()
        .unwrap()
        .trim_end_matches(" fits");
    let json = plan_json(&[
        "info",
        path,
        "--plan",
        "--gpu-mem",
        "0.1GiB",
        "-ngl",
        fits,
        "--json",
    ]);
    let auto = plan_json(&["info", path, "--plan", "--gpu-mem", "0.1GiB", "--json"]);
    assert_eq!(json["plan"]["gpu_layers"].to_string(), fits);
    assert_eq!(json["plan"]["devices"], auto["plan"]["devices"]);
}

#[test]
fn without_a_gpu_everything_is_on_the_cpu_said_once() {
    let model = real_model(SMOLLM2);
    let path = path_str(&model);
    if !ggml::cuda::devices().is_empty() {
        eprintln!("skipped: this machine has a GPU");
        return;
    }
    let run = llm(&["info", path, "--plan"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout.matches("no NVIDIA driver").count(),
        1,
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("every layer runs on the CPU"));
    assert!(run
        .stdout
        .contains("CPU: token embedding + layers 0-29 + output"));
    let json = plan_json(&["info", path, "--plan", "-ngl", "99", "--json"]);
    assert_eq!(json["plan"]["gpu_layers"], 0);
    assert!(json["plan"]["note"]
        .as_str()
        .unwrap()
        .contains("no NVIDIA driver"));
    assert_eq!(json["plan"]["devices"], serde_json::json!([]));
}

#[test]
fn split_flags_as_llama_cpp_spells_them() {
    let model = real_model(SMOLLM2);
    let path = path_str(&model);
    let json = plan_json(&[
        "info",
        path,
        "--plan",
        "--gpu-mem",
        "1GiB,1GiB",
        "-ngl",
        "all",
        "-ts",
        "3,1",
        "--json",
    ]);
    let devs = &json["plan"]["devices"];
    // 31 slots at 3:1: slots 0-23 on GPU0, 24-29 and the output on GPU1.
    assert_eq!(devs[0]["layers"], serde_json::json!([0, 23]));
    assert_eq!(devs[1]["layers"], serde_json::json!([24, 29]));
    assert_eq!(devs[1]["output"], true);
    let none = plan_json(&[
        "info",
        path,
        "--plan",
        "--gpu-mem",
        "1GiB,1GiB",
        "-sm",
        "none",
        "-mg",
        "1",
        "--json",
    ]);
    assert_eq!(none["plan"]["devices"][0]["index"], 1);
    assert_eq!(
        none["plan"]["devices"][0]["layers"],
        serde_json::json!([0, 29])
    );
    let row = llm(&["info", path, "--plan", "--gpu-mem", "1GiB", "-sm", "row"]);
    assert_eq!(row.code, Some(2));
    assert!(
        row.stderr.contains("'row'") && row.stderr.contains("not supported"),
        "{}",
        row.stderr
    );
}
