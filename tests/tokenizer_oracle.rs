//! Our tokenizer against llama.cpp's, on the real test models' vocabularies:
//! the same ids for every string of a corpus (tests/data/tokenizer-corpus.json
//! plus a few long texts), with and without BOS, as user text and as template
//! text; the same bytes for every token; the same special-token roles.
#![cfg(feature = "oracle")]

mod common;

use std::path::Path;

use common::{real_model, GEMMA3, QWEN2_TRUNCATED, SMOLLM2};
use llm::format::gguf::{read_metadata, GgufWriter};
use llm::oracle_tokenizer::OracleVocab;
use llm::tokenizer::Tokenizer;

fn corpus() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer-corpus.json");
    let text = std::fs::read_to_string(&path).expect("the tokenizer corpus");
    let mut corpus: Vec<String> = serde_json::from_str(&text).expect("a JSON array of strings");
    // Long texts: everything at once, a long run of each kind of whitespace,
    // and a wall of digits.
    corpus.push(corpus.join("\n"));
    corpus.push(corpus[..50].concat());
    corpus.push(" ".repeat(1000) + "end");
    corpus.push("\n".repeat(300) + "end");
    corpus.push("\t \n".repeat(200));
    corpus.push("0123456789".repeat(50));
    corpus.push("The quick brown fox. ".repeat(100));
    corpus
}

const MODES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

/// Compares ids on the corpus and pieces for every token; panics with the
/// first differences, after printing the match rate.
fn compare(label: &str, path: &Path) {
    let ours = Tokenizer::from_gguf_file(path).unwrap_or_else(|e| panic!("{label}: {e:#}"));
    let theirs = OracleVocab::load(path).unwrap_or_else(|e| panic!("{label}: {e}"));

    assert_eq!(ours.n_vocab(), theirs.n_vocab(), "{label}: vocabulary size");
    assert_eq!(ours.bos(), theirs.bos(), "{label}: BOS");
    assert_eq!(ours.eos(), theirs.eos(), "{label}: EOS");
    assert_eq!(ours.add_bos(), theirs.add_bos(), "{label}: add_bos");
    assert_eq!(ours.add_eos(), theirs.add_eos(), "{label}: add_eos");

    let corpus = corpus();
    let mut cases = 0;
    let mut failures = Vec::new();
    for text in &corpus {
        for (add_special, parse_special) in MODES {
            cases += 1;
            let want = theirs.tokenize(text, add_special, parse_special);
            let got = ours
                .encode(text, add_special, parse_special)
                .unwrap_or_else(|e| panic!("{label}: {text:?}: {e:#}"));
            if got != want {
                failures.push(format!(
                    "{text:?} (add_special {add_special}, parse_special {parse_special})\n  llama.cpp {want:?}\n  ours      {got:?}"
                ));
            }
        }
    }
    let matched = cases - failures.len();
    eprintln!(
        "{label}: {matched} of {cases} encodings match llama.cpp ({:.2}%) on {} strings",
        100.0 * matched as f64 / cases as f64,
        corpus.len()
    );
    assert!(
        failures.is_empty(),
        "{label}: {} encodings differ from llama.cpp:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );

    let mut bad_pieces = Vec::new();
    for id in 0..ours.n_vocab() as u32 {
        for special in [false, true] {
            let want = theirs.piece(id, special);
            if ours.token_bytes(id, special) != want.as_slice() {
                bad_pieces.push(format!(
                    "token {id} {:?} (special {special}): llama.cpp {want:?}, ours {:?}",
                    ours.token_text(id),
                    ours.token_bytes(id, special)
                ));
            }
        }
        assert_eq!(ours.is_eog(id), theirs.is_eog(id), "{label}: is_eog({id})");
    }
    assert!(
        bad_pieces.is_empty(),
        "{label}: {} token pieces differ:\n{}",
        bad_pieces.len(),
        bad_pieces[..bad_pieces.len().min(10)].join("\n")
    );
}

#[test]
fn smollm2_matches_llama_cpp() {
    compare("SmolLM2 (gpt2, smollm)", &real_model(SMOLLM2));
}

#[test]
fn gemma3_matches_llama_cpp() {
    compare("Gemma 3 (llama, 262k)", &real_model(GEMMA3));
}

/// The DeepSeek-R1 file is cut short in its tensor data, which llama.cpp
/// refuses even for its vocabulary; its metadata is whole, so we write it to a
/// vocabulary-only file that both tokenizers read.
#[test]
fn deepseek_r1_qwen2_matches_llama_cpp() {
    let truncated = real_model(QWEN2_TRUNCATED);
    let md = read_metadata(&truncated).expect("the metadata of the truncated file");
    let mut w = GgufWriter::new();
    for (key, value) in md.iter() {
        w.set(key, value.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let vocab_only = dir.path().join("deepseek-r1-vocab.gguf");
    w.write_to(&vocab_only).unwrap();
    compare("DeepSeek-R1 (gpt2, deepseek-r1-qwen)", &vocab_only);

    // Our tokenizer reads the truncated file itself just as well.
    let ours = Tokenizer::from_gguf_file(&truncated).unwrap();
    let text = "<think>\nLet me see: 12345 + 678 = 13023.\n</think>\n\nIt is 13023.";
    let copy = Tokenizer::from_gguf_file(&vocab_only).unwrap();
    assert_eq!(
        ours.encode(text, true, false).unwrap(),
        copy.encode(text, true, false).unwrap()
    );
}
