//! `llm chat` against llama.cpp: with `--temp 0`, the one-shot reply and
//! each reply of a scripted chat are exactly the text of llama.cpp's greedy
//! tokens for the same conversation. The prompt is rendered by Python's
//! jinja2 (scripts/render_templates.py), not by us; llama.cpp tokenizes it
//! and generates token by token (its generation path).
#![cfg(feature = "oracle")]

mod common;

use common::*;
use llm::format::gguf::read_metadata;
use llm::oracle::OracleModel;
use llm::oracle_tokenizer::OracleVocab;

const N_CTX: u32 = 2048;
const MAX_TOKENS: usize = 48;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Oracle {
    vocab: OracleVocab,
    model: OracleModel,
    template: String,
    bos: String,
    eos: String,
}

impl Oracle {
    /// `template`: the model's own, or the source of a built-in one.
    fn new(file: &str, template: Option<&str>) -> Oracle {
        let path = real_model(file);
        let vocab = OracleVocab::load(&path).unwrap();
        let model = OracleModel::load(&path, N_CTX, 2).expect("llama.cpp loads the model");
        let md = read_metadata(&path).unwrap();
        let template = match template {
            Some(t) => t.to_string(),
            None => md
                .str("tokenizer.chat_template")
                .unwrap()
                .unwrap()
                .to_string(),
        };
        let text = |id: Option<u32>| {
            id.map(|id| String::from_utf8(vocab.piece(id, true)).unwrap())
                .unwrap_or_default()
        };
        let (bos, eos) = (text(vocab.bos()), text(vocab.eos()));
        Oracle {
            vocab,
            model,
            template,
            bos,
            eos,
        }
    }

    /// llama.cpp's greedy reply to the conversation, as text, with the
    /// bytes of it chosen before the first near-tie (top two logits within
    /// `NEAR_TIE`): past one, a prompt summed in another order (batched, as
    /// llama.cpp's own batched path also sums) may rightly pick the other.
    fn reply(&mut self, messages: &[(&str, &str)]) -> Reply {
        let rendered = render_with_python(&self.template, &self.bos, &self.eos, messages);
        // llama.cpp drops a BOS the template wrote when the tokenizer adds one.
        let text = match rendered.strip_prefix(self.bos.as_str()) {
            Some(rest) if self.vocab.add_bos() && !self.bos.is_empty() => rest,
            _ => rendered.as_str(),
        };
        let prompt = self.vocab.tokenize(text, true, true);
        self.model.clear();
        let mut logits = self.model.eval_one_by_one(&prompt).unwrap();
        let mut bytes = Vec::new();
        let mut sure = None;
        for _ in 0..MAX_TOKENS {
            if sure.is_none() && top2_gap(&logits) < NEAR_TIE {
                sure = Some(bytes.len());
            }
            let next = argmax(&logits);
            if self.vocab.is_eog(next) {
                break;
            }
            bytes.extend(self.vocab.piece(next, false));
            logits = self.model.eval(&[next]).unwrap();
        }
        Reply {
            sure,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

const NEAR_TIE: f32 = 0.1;

/// llama.cpp's reply, and how much of it (bytes) came before a near-tie;
/// None: no near-tie, all of it must match.
struct Reply {
    text: String,
    sure: Option<usize>,
}

impl Reply {
    /// `got` (a reply and what follows it on stdout) agrees with this one.
    fn check(&self, got: &str, what: &str) {
        match self.sure {
            None => assert!(
                got.starts_with(&self.text),
                "{what}: {got:?} is not llama.cpp's greedy reply {:?}",
                self.text
            ),
            Some(n) => {
                let lossy_prefix: String = self
                    .text
                    .chars()
                    .scan(0, |len, c| {
                        *len += c.len_utf8();
                        (*len <= n).then_some(c)
                    })
                    .collect();
                assert!(
                    got.starts_with(&lossy_prefix),
                    "{what}: {got:?} departs from llama.cpp's greedy reply {:?} before its first near-tie (byte {n})",
                    self.text
                );
                eprintln!(
                    "{what}: compared up to llama.cpp's first near-tie, byte {n} of {}",
                    self.text.len()
                );
            }
        }
    }
}

fn argmax(x: &[f32]) -> u32 {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best }) as u32
}

fn chat_args<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "chat", model, "--temp", "0", "-t", "2", "-c", "2048", "-n", "48",
    ];
    args.extend_from_slice(extra);
    args
}

const QUESTIONS: &[&str] = &[
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers, then explain why 1 is not prime.",
];

/// The prompt's matmuls in ggml's one-token order (batches of regrouped
/// weights otherwise sum a block in one integer): llama.cpp's reply to the
/// byte.
const EXACT: &[(&str, &str)] = &[("LLM_REPACK", "0")];

fn one_shot_matches(file: &str, template: Option<&str>) {
    let _guard = serial();
    let mut oracle = Oracle::new(file, template);
    let model = real_model(file);
    for q in QUESTIONS {
        let expected = oracle.reply(&[("user", q)]);
        let args = chat_args(path_str(&model), &["-p", q]);
        let exact = llm_env(&args, EXACT);
        assert_eq!(exact.code, Some(0), "{}", exact.stderr);
        assert_eq!(
            exact.stdout,
            format!("{}\n", expected.text),
            "{file}: one-shot reply to {q:?} differs from llama.cpp's greedy reply"
        );
        let run = llm(&args);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        expected.check(&run.stdout, &format!("{file}: one-shot reply to {q:?}"));
    }
}

/// The template models.toml gives Gemma-3-270M (it has none of its own).
fn gemma_template() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/gemma.jinja")).unwrap()
}

#[test]
fn smollm2_one_shot_is_llama_cpp_greedy_reply() {
    one_shot_matches(SMOLLM2, None);
}

#[test]
fn gemma3_one_shot_via_catalogue_template_is_llama_cpp_greedy_reply() {
    let gemma =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/gemma.jinja"))
            .unwrap();
    one_shot_matches(GEMMA3, Some(&gemma));
}

fn scripted_chat_matches(file: &str, template: Option<&str>) {
    let _guard = serial();
    let mut oracle = Oracle::new(file, template);
    let model = real_model(file);
    let (q1, q2) = ("Hi, my name is Bob.", "What did I just say?");
    let args = chat_args(path_str(&model), &[]);
    let input = format!("{q1}\n{q2}\n");
    let exact = llm_stdin_env(&args, input.as_bytes(), EXACT);
    assert_eq!(exact.code, Some(0), "{}", exact.stderr);
    let a1 = oracle.reply(&[("user", q1)]);
    let a2 = oracle.reply(&[("user", q1), ("assistant", &a1.text), ("user", q2)]);
    // Nothing but the replies on stdout, each followed by a blank line.
    assert_eq!(
        exact.stdout,
        format!("{}\n\n{}\n\n", a1.text, a2.text),
        "{file}"
    );
    let run = llm_stdin(&args, input.as_bytes());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    a1.check(&run.stdout, &format!("{file}: first reply"));
    if a1.sure.is_none() {
        let second = &run.stdout[a1.text.len()..];
        a2.check(
            second.trim_start_matches('\n'),
            &format!("{file}: second reply"),
        );
    }
}

#[test]
fn smollm2_scripted_chat_keeps_context_and_matches_llama_cpp() {
    scripted_chat_matches(SMOLLM2, None);
}

#[test]
fn gemma3_scripted_chat_keeps_context_and_matches_llama_cpp() {
    scripted_chat_matches(GEMMA3, Some(&gemma_template()));
}
