//! `llm perplexity` on the real models and the shipped text
//! (tests/data/gpl-3.0.txt): its report, its errors, and (with the oracle)
//! llama.cpp's own perplexity of the same chunks.

mod common;

use std::path::Path;

use common::*;

const TEXT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gpl-3.0.txt");

/// (PPL, uncertainty) from the report's last line.
fn final_estimate(stdout: &str) -> (f64, f64) {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Final estimate: PPL = "))
        .unwrap_or_else(|| panic!("no final estimate in {stdout:?}"));
    let (ppl, err) = line.split_once(" +/- ").expect("PPL = x +/- y");
    (ppl.parse().unwrap(), err.parse().unwrap())
}

fn perplexity(model: &Path, chunks: usize) -> (f64, f64) {
    let chunks = chunks.to_string();
    let run = llm(&[
        "perplexity",
        path_str(model),
        "-f",
        TEXT,
        "-c",
        "256",
        "--chunks",
        &chunks,
        "-t",
        "2",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // llama.cpp's running estimates: [1]x,[2]y,...
    assert!(run.stdout.starts_with("[1]"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("[{chunks}]")),
        "{}",
        run.stdout
    );
    final_estimate(&run.stdout)
}

#[test]
fn reports_a_perplexity_with_its_uncertainty() {
    let (ppl, err) = perplexity(&real_model(SMOLLM2), 3);
    // A small chat model on a legal text: well above 1, far below its
    // vocabulary (49152), and an uncertainty a fraction of it.
    assert!(ppl > 2.0 && ppl < 200.0, "PPL {ppl}");
    assert!(err > 0.0 && err < ppl / 2.0, "+/- {err}");
}

#[test]
fn too_short_a_text_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Only a few words here.").unwrap();
    let model = real_model(SMOLLM2);
    let run = llm(&["perplexity", path_str(&model), "-f", path_str(&short)]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("needs at least 1024"), "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    let run = llm(&["perplexity", path_str(&model), "-f", "/nonexistent.txt"]);
    assert_eq!(run.code, Some(1));
}

/// llama.cpp's perplexity of the same chunks, its logits from one batch a
/// chunk (as llama-perplexity runs them), scored the same way: ours falls
/// within its printed uncertainty (batched products sum in another order,
/// so the two are close, not equal).
#[cfg(feature = "oracle")]
#[test]
fn agrees_with_llama_cpp_within_its_uncertainty() {
    use llm::engine::perplexity::Scored;
    use llm::oracle::OracleModel;
    use llm::tokenizer::Tokenizer;

    for name in [SMOLLM2, GEMMA3] {
        let model = real_model(name);
        let (ours, _) = perplexity(&model, 3);
        let tok = Tokenizer::from_gguf_file(&model).unwrap();
        let text = std::fs::read_to_string(TEXT).unwrap();
        let tokens = tok.encode(&text, true, false).unwrap();
        let n_ctx = 256;
        let mut oracle = OracleModel::load(&model, n_ctx as u32, 2).unwrap();
        let mut scored = Scored::default();
        for chunk in tokens.chunks_exact(n_ctx).take(3) {
            let mut chunk = chunk.to_vec();
            if let (Some(bos), true) = (tok.bos(), tok.add_bos()) {
                chunk[0] = bos;
            }
            let logits = oracle.eval_all(&chunk).unwrap();
            for j in n_ctx / 2..n_ctx - 1 {
                scored.add(&logits[j], chunk[j + 1]);
            }
        }
        let (theirs, err) = (scored.ppl(), scored.uncertainty().unwrap());
        eprintln!("{name}: PPL ours {ours:.4}, llama.cpp {theirs:.4} +/- {err:.4}");
        assert!(
            (ours - theirs).abs() <= err,
            "{name}: {ours} vs {theirs} +/- {err}"
        );
    }
}

/// KL divergence across formats: the fixtures' f16 folder saved as the base,
/// its GPTQ, EXL2 and AWQ renditions compared (small positive divergences
/// that grow as bits fall), the base against itself (none), and a base of
/// another context refused.
#[test]
fn kl_divergence_of_a_quantisation_against_its_f16_folder() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let (f16, gptq) = (
        fixtures.join("tiny-llama-fp16"),
        fixtures.join("tiny-llama-gptq-4bit-g64"),
    );
    if !f16.is_dir() || !gptq.is_dir() {
        eprintln!("skipped: {} is not there", fixtures.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.kld");
    let ppl = |model: &Path, extra: &[&str]| {
        let mut args = vec![
            "perplexity",
            path_str(model),
            "-f",
            TEXT,
            "-c",
            "128",
            "--chunks",
            "8",
        ];
        args.extend(extra);
        llm(&args)
    };
    let run = ppl(&f16, &["--kl-divergence-base", path_str(&base)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let kld = |run: &Run| -> f64 {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let line = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Mean    KLD:"))
            .unwrap();
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    let compare = ["--kl-divergence-base", path_str(&base), "--kl-divergence"];
    assert_eq!(kld(&ppl(&f16, &compare)), 0.0);
    let q = kld(&ppl(&gptq, &compare));
    assert!(q > 1e-4 && q < 0.1, "KLD {q}");
    // Every other rendition: fewer bits, more divergence, for each library.
    let other = |name: &str| kld(&ppl(&fixtures.join(format!("tiny-llama-{name}")), &compare));
    let (g3, g8) = (other("gptq-3bit-g64"), other("gptq-8bit-g64"));
    let (e3, e4) = (other("exl2-3.0bpw"), other("exl2-4.0bpw"));
    eprintln!(
        "KLD vs fp16: GPTQ 3/4/8-bit {g3:.6} {q:.6} {g8:.6}; EXL2 3.0/4.0 bpw {e3:.6} {e4:.6}"
    );
    assert!(g8 < q && q < g3, "GPTQ: 8-bit {g8}, 4-bit {q}, 3-bit {g3}");
    assert!(e4 < e3 && e4 > 1e-4, "EXL2: 4.0 bpw {e4}, 3.0 bpw {e3}");
    // GPTQModel's AWQ of the same model ships with the tests.
    let awq = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama-awq-4bit-g64");
    let a4 = kld(&ppl(&awq, &compare));
    eprintln!("KLD vs fp16: AWQ 4-bit {a4:.6}");
    assert!(a4 > 1e-4 && a4 < g3, "AWQ 4-bit {a4}");
    let mut other = vec!["perplexity", path_str(&gptq), "-f", TEXT, "-c", "64"];
    other.extend(compare);
    let run = llm(&other);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("saved at -c 128"), "{}", run.stderr);
}
