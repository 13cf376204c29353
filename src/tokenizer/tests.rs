//! Tokenizers built from tiny synthetic vocabularies, where the expected ids
//! can be worked out by hand. The comparison with llama.cpp on real models is
//! in tests/tokenizer_oracle.rs.

use super::*;
use crate::format::gguf::{parse, Array, GgufWriter, Value};

fn s(x: &str) -> Value {
    Value::String(x.into())
}

fn strings(xs: &[String]) -> Value {
    Value::Array(Array::String(xs.to_vec()))
}

/// Metadata from key/value pairs, through our writer and reader.
fn metadata(entries: Vec<(&str, Value)>) -> Metadata {
    let mut w = GgufWriter::new();
    w.set("general.architecture", s("llama"));
    for (k, v) in entries {
        w.set(k, v);
    }
    parse(&w.to_bytes().0).expect("valid GGUF").metadata
}

/// A SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, 256 byte tokens, then
/// the pieces below (ids from 259), a control and a user-defined token.
const SPM_PIECES: &[(&str, f32, i32)] = &[
    ("▁", -1.0, 1),       // 259
    ("a", -2.0, 1),       // 260
    ("b", -3.0, 1),       // 261
    ("c", -4.0, 1),       // 262
    ("ab", -5.0, 1),      // 263
    ("bc", -1.5, 1),      // 264: preferred over "ab"
    ("▁a", -6.0, 1),      // 265
    ("▁ab", -7.0, 1),     // 266
    ("<|user|>", 0.0, 3), // 267
    ("<think>", 0.0, 4),  // 268
    ("▁▁", -9.0, 1),      // 269
    ("▁b", -10.0, 1),     // 270
];

fn spm_vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut scores = vec![0.0; 3];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    for &(t, sc, ty) in SPM_PIECES {
        tokens.push(t.into());
        scores.push(sc);
        types.push(ty);
    }
    (tokens, scores, types)
}

fn spm(extra: Vec<(&str, Value)>) -> Tokenizer {
    let (tokens, scores, types) = spm_vocab();
    let mut entries = vec![
        ("tokenizer.ggml.model", s("llama")),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
    ];
    entries.extend(extra);
    Tokenizer::from_gguf_metadata(&metadata(entries)).expect("SPM tokenizer")
}

fn id(t: &Tokenizer, text: &str) -> TokenId {
    t.token_id(text)
        .unwrap_or_else(|| panic!("{text:?} not in vocab"))
}

#[test]
fn spm_defaults_add_bos_and_a_space_prefix() {
    let t = spm(vec![]);
    assert_eq!(t.vocab_type(), VocabType::Spm);
    assert_eq!((t.bos(), t.eos()), (Some(1), Some(2)));
    assert!(t.add_bos() && !t.add_eos());
    // " ab" -> "▁ab"
    assert_eq!(t.encode("ab", true, false).unwrap(), vec![1, 266]);
    assert_eq!(t.encode("ab", false, false).unwrap(), vec![266]);
    assert_eq!(t.encode("", true, false).unwrap(), vec![1]);
    assert!(t.encode("", false, false).unwrap().is_empty());
}

#[test]
fn spm_merges_the_best_scoring_pair_first() {
    let t = spm(vec![(
        "tokenizer.ggml.add_space_prefix",
        Value::Bool(false),
    )]);
    // "bc" outscores "ab", so "abc" is a + bc, not ab + c.
    assert_eq!(t.encode("abc", false, false).unwrap(), vec![260, 264]);
    assert_eq!(t.encode("ab", false, false).unwrap(), vec![263]);
    // Spaces are SentencePiece's "▁", merged like any piece.
    assert_eq!(t.encode("a  b", false, false).unwrap(), vec![260, 269, 261]);
    assert_eq!(t.encode(" b", false, false).unwrap(), vec![270]);
}

#[test]
fn spm_falls_back_to_bytes() {
    let t = spm(vec![(
        "tokenizer.ggml.add_space_prefix",
        Value::Bool(false),
    )]);
    // "é" is not a piece: its two UTF-8 bytes are.
    let ids = t.encode("aé", false, false).unwrap();
    assert_eq!(ids, vec![260, 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(t.decode(&ids, false), "aé");
    assert_eq!(t.token_bytes(3 + 0xC3, false), &[0xC3]);
}

#[test]
fn control_tokens_only_when_parsing_special() {
    let t = spm(vec![]);
    let user = 267;
    let plain = t.encode("<|user|>ab", false, false).unwrap();
    assert!(!plain.contains(&user), "{plain:?}");
    // After a special token the text gets its own space prefix, as in llama.cpp.
    assert_eq!(
        t.encode("<|user|>ab", false, true).unwrap(),
        vec![user, 266]
    );
    assert_eq!(
        t.encode("ab<|user|>ab", true, true).unwrap(),
        vec![1, 266, user, 266]
    );
}

#[test]
fn user_defined_tokens_match_everywhere() {
    let t = spm(vec![]);
    let think = 268;
    for parse_special in [false, true] {
        assert_eq!(
            t.encode("<think>ab", false, parse_special).unwrap(),
            vec![think, 266]
        );
    }
}

#[test]
fn add_bos_and_add_eos_follow_the_file() {
    let t = spm(vec![
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
    ]);
    assert_eq!(t.encode("ab", true, false).unwrap(), vec![266, 2]);
    assert_eq!(t.encode("ab", false, false).unwrap(), vec![266]);
}

#[test]
fn spm_decode_drops_the_space_prefix() {
    let t = spm(vec![]);
    let ids = t.encode("ab ab", true, false).unwrap();
    assert_eq!(t.decode(&ids, false), "ab ab");
    // Control tokens print only when asked.
    assert_eq!(t.decode(&[267, 266], false), "ab");
    assert_eq!(t.decode(&[267, 266], true), "<|user|> ab");
}

/// GPT-2's byte-to-character mapping, for building byte-level vocabularies.
fn byte_char(b: u8) -> char {
    byte_level_chars()[b as usize]
}

/// A byte-level BPE vocabulary: the 256 byte characters (id = byte), then
/// merged tokens in merge order, then special tokens.
fn bpe(pre: Option<&str>, extra: Vec<(&str, Value)>) -> Result<Tokenizer> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "1 2", "12 3",
    ];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("xyz".into()); // in the vocabulary, but no merge makes it
    tokens.push("<|endoftext|>".into());
    tokens.push("<think>".into());
    let mut types = vec![1; tokens.len()];
    let n = types.len();
    types[n - 2] = 3;
    types[n - 1] = 4;
    let mut entries = vec![
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ("tokenizer.ggml.merges", strings(&merges.map(String::from))),
        ("tokenizer.ggml.bos_token_id", Value::U32(n as u32 - 2)),
        ("tokenizer.ggml.eos_token_id", Value::U32(n as u32 - 2)),
    ];
    if let Some(p) = pre {
        entries.push(("tokenizer.ggml.pre", s(p)));
    }
    entries.extend(extra);
    Tokenizer::from_gguf_metadata(&metadata(entries))
}

#[test]
fn bpe_merges_by_rank_on_byte_level_words() {
    let t = bpe(Some("gpt-2"), vec![]).unwrap();
    assert_eq!(t.vocab_type(), VocabType::Bpe);
    assert!(!t.add_bos(), "gpt2 vocabularies add no BOS by default");
    let hello = id(&t, "hello");
    let wor = id(&t, "Ġwor");
    let ld = id(&t, "ld");
    let ids = t.encode("hello world", true, false).unwrap();
    assert_eq!(ids, vec![hello, wor, ld]);
    assert_eq!(t.decode(&ids, false), "hello world");
    // Bytes outside ASCII are byte-level characters too.
    assert_eq!(t.encode("é", false, false).unwrap(), vec![0xC3, 0xA9]);
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
}

#[test]
fn bpe_special_tokens() {
    let t = bpe(Some("gpt-2"), vec![]).unwrap();
    let eot = id(&t, "<|endoftext|>");
    let think = id(&t, "<think>");
    let plain = t.encode("<|endoftext|>", false, false).unwrap();
    assert!(!plain.contains(&eot) && plain.len() > 1, "{plain:?}");
    assert_eq!(t.encode("<|endoftext|>", false, true).unwrap(), vec![eot]);
    assert_eq!(t.encode("<think>", false, false).unwrap(), vec![think]);
    assert!(t.is_eog(eot));
    assert_eq!(t.decode(&[eot, id(&t, "hello")], false), "hello");
    assert_eq!(
        t.decode(&[eot, id(&t, "hello")], true),
        "<|endoftext|>hello"
    );
}

#[test]
fn pre_tokenizer_decides_how_digits_split() {
    let gpt2 = bpe(Some("gpt-2"), vec![]).unwrap();
    assert_eq!(
        gpt2.encode("123", false, false).unwrap(),
        vec![id(&gpt2, "123")]
    );
    // SmolLM splits every digit before the merges.
    let smollm = bpe(Some("smollm"), vec![]).unwrap();
    assert_eq!(
        smollm.encode("123", false, false).unwrap(),
        vec![b'1' as u32, b'2' as u32, b'3' as u32]
    );
    // Qwen 2 too.
    let qwen2 = bpe(Some("qwen2"), vec![]).unwrap();
    assert_eq!(qwen2.encode("12", false, false).unwrap().len(), 2);
}

#[test]
fn llama3_takes_whole_words_that_are_tokens() {
    let gpt2 = bpe(Some("gpt-2"), vec![]).unwrap();
    assert_eq!(
        gpt2.encode("xyz", false, false).unwrap(),
        b"xyz".map(u32::from)
    );
    let llama3 = bpe(Some("llama-bpe"), vec![]).unwrap();
    assert_eq!(
        llama3.encode("xyz", false, false).unwrap(),
        vec![id(&llama3, "xyz")]
    );
    assert!(llama3.add_bos(), "llama-bpe adds BOS by default");
    let bos = llama3.bos().unwrap();
    assert_eq!(llama3.encode("xyz", true, false).unwrap()[0], bos);
}

#[test]
fn unknown_pre_tokenizer_is_an_error_naming_it() {
    let err = bpe(Some("frobnicator-7"), vec![]).unwrap_err().to_string();
    assert!(
        err.contains("'frobnicator-7'") && err.contains("tokenizer.ggml.pre"),
        "{err}"
    );
    let err = bpe(Some("kimi-k2"), vec![]).unwrap_err().to_string();
    assert!(
        err.contains("'kimi-k2'") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn missing_pre_tokenizer_uses_default_with_a_warning() {
    let t = bpe(None, vec![]).unwrap();
    assert_eq!(t.warnings().len(), 1, "{:?}", t.warnings());
    assert!(t.warnings()[0].contains("default"));
}

#[test]
fn every_known_pre_tokenizer_compiles() {
    for name in pretok::KNOWN {
        let t = bpe(Some(name), vec![]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        // And tokenizes something with every kind of character.
        let text = "Hello, World! 123 héllo 世界 'll\n\n  x";
        let ids = t.encode(text, false, false).unwrap();
        assert_eq!(t.decode(&ids, false), text, "{name}");
    }
}

#[test]
fn partition_tries_longer_special_tokens_first() {
    let (mut tokens, mut scores, mut types) = spm_vocab();
    for (t, ty) in [("<a>", 4), ("<a><b>", 4), ("<b>", 4)] {
        tokens.push(t.into());
        scores.push(0.0);
        types.push(ty);
    }
    let n = tokens.len() as u32;
    let t = Tokenizer::from_gguf_metadata(&metadata(vec![
        ("tokenizer.ggml.model", s("llama")),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
    ]))
    .unwrap();
    let (a, ab, b) = (n - 3, n - 2, n - 1);
    assert_eq!(t.encode("<a><b>", false, false).unwrap(), vec![ab]);
    assert_eq!(
        t.encode("<a><a><b><b>", false, false).unwrap(),
        vec![a, ab, b]
    );
}

#[test]
fn phi3_special_tokens_swallow_following_whitespace() {
    let t = spm(vec![("general.name", s("Phi-3 mini"))]);
    // "<think>" is special, so it gets RSTRIP: the spaces after it vanish.
    assert_eq!(
        t.encode("<think>  ab", false, false).unwrap(),
        vec![268, 266]
    );
    let plain = spm(vec![]);
    assert_ne!(
        plain.encode("<think>  ab", false, false).unwrap(),
        vec![268, 266]
    );
}

#[test]
fn control_looking_tokens_become_control() {
    // "<|im_end|>" marked user-defined in the file is still control, as in llama.cpp.
    let (mut tokens, mut scores, mut types) = spm_vocab();
    tokens.push("<|im_end|>".into());
    scores.push(0.0);
    types.push(4);
    let n = tokens.len() as u32;
    let t = Tokenizer::from_gguf_metadata(&metadata(vec![
        ("tokenizer.ggml.model", s("llama")),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
    ]))
    .unwrap();
    let im_end = n - 1;
    assert!(t.token_attr(im_end).has(Attr::CONTROL));
    assert!(!t
        .encode("<|im_end|>", false, false)
        .unwrap()
        .contains(&im_end));
    assert_eq!(t.encode("<|im_end|>", false, true).unwrap(), vec![im_end]);
    assert!(t.is_eog(im_end));
    assert_eq!(t.eot(), Some(im_end));
}

#[test]
fn bad_vocabularies_are_one_line_errors() {
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (vec![], "no vocabulary"),
        (vec![("tokenizer.ggml.model", s("bert"))], "'bert'"),
        (
            vec![("tokenizer.ggml.model", s("llama"))],
            "tokenizer.ggml.tokens",
        ),
        (
            vec![
                ("tokenizer.ggml.model", s("llama")),
                ("tokenizer.ggml.tokens", Value::U32(3)),
            ],
            "expected an array of strings",
        ),
        (
            vec![
                ("tokenizer.ggml.model", s("llama")),
                ("tokenizer.ggml.tokens", strings(&["a".into(), "a".into()])),
            ],
            "same text",
        ),
        (
            vec![
                ("tokenizer.ggml.model", s("llama")),
                ("tokenizer.ggml.tokens", strings(&["a".into(), "b".into()])),
                ("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0]))),
            ],
            "1 entries for 2 tokens",
        ),
        (
            vec![
                ("tokenizer.ggml.model", s("gpt2")),
                ("tokenizer.ggml.pre", s("gpt-2")),
                ("tokenizer.ggml.tokens", strings(&["a".into(), "b".into()])),
            ],
            "no merges",
        ),
        (
            vec![
                ("tokenizer.ggml.model", s("gpt2")),
                ("tokenizer.ggml.pre", s("gpt-2")),
                ("tokenizer.ggml.tokens", strings(&["a".into(), "b".into()])),
                ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ],
            "BOS",
        ),
    ];
    for (entries, expect) in cases {
        let err = Tokenizer::from_gguf_metadata(&metadata(entries))
            .expect_err(expect)
            .to_string();
        assert!(err.contains(expect), "{err:?} should mention {expect:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

#[test]
fn utf8_stream_holds_back_split_characters() {
    let mut st = Utf8Stream::new();
    let crab = "🦀".as_bytes();
    assert_eq!(st.push(b"a"), "a");
    assert_eq!(st.push(&crab[..1]), "");
    assert_eq!(st.push(&crab[1..3]), "");
    assert_eq!(st.pending().len(), 3);
    assert_eq!(st.push(&crab[3..]), "🦀");
    // A byte that can never start a character is shown as U+FFFD at once.
    assert_eq!(st.push(b"\xFFb"), "\u{FFFD}b");
    // A character that never completes is shown at the end.
    assert_eq!(st.push(&crab[..2]), "");
    assert_eq!(st.finish(), "\u{FFFD}");
    assert_eq!(st.finish(), "");
}

#[test]
fn stream_decoder_never_prints_half_a_character() {
    let t = spm(vec![]);
    let ids = t.encode("a€é", false, false).unwrap();
    let mut dec = t.stream_decoder(false);
    let mut out = String::new();
    for &id in &ids {
        let piece = dec.push(id);
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        out.push_str(&piece);
    }
    out.push_str(&dec.finish());
    assert_eq!(out, " a€é");
}

#[test]
fn tokenizer_json_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama");
    let t = Tokenizer::open(&dir).unwrap();
    assert_eq!(t.vocab_type(), VocabType::HfJson);
    assert_eq!((t.bos(), t.eos()), (Some(0), Some(1)));
    assert!(t.add_bos() && !t.add_eos());
    let prompts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("prompts.json")).unwrap()).unwrap();
    for p in prompts.as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let want: Vec<TokenId> = p["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as TokenId)
            .collect();
        assert_eq!(t.encode(text, true, false).unwrap(), want, "{text}");
        assert_eq!(t.decode(&want, false), text);
    }
    // Special tokens: text unless parsed.
    assert_eq!(t.encode("</s>", false, true).unwrap(), vec![1]);
    assert_ne!(t.encode("</s>", false, false).unwrap(), vec![1]);
    // The file itself works too.
    let t = Tokenizer::open(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(t.bos(), Some(0));
}

#[test]
fn missing_tokenizer_json_is_an_error() {
    let err = Tokenizer::open(Path::new("/nonexistent/dir/tokenizer.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such file"), "{err}");
}

#[test]
fn vocabulary_of_a_file_whose_tensors_are_cut_short() {
    let (tokens, scores, types) = spm_vocab();
    let mut w = GgufWriter::new();
    w.set("general.architecture", s("llama"));
    w.set("tokenizer.ggml.model", s("llama"));
    w.set("tokenizer.ggml.tokens", strings(&tokens));
    w.set("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    w.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w.add_tensor(
        "token_embd.weight",
        ggml::GgmlType::F32,
        &[64, 64],
        vec![0; 64 * 64 * 4],
    )
    .unwrap();
    let (bytes, layout) = w.to_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    std::fs::write(&path, &bytes[..layout.data_offset as usize + 100]).unwrap();
    assert!(crate::format::gguf::GgufFile::open(&path).is_err());
    let t = Tokenizer::from_gguf_file(&path).unwrap();
    assert_eq!(t.encode("ab", true, false).unwrap(), vec![1, 266]);
}
