//! Chat templates rendered by us against jinja2 set up as Hugging Face
//! transformers sets it up (scripts/render_templates.py): every built-in
//! template, the templates of two real models and a template of Jinja
//! corner cases, each over a set of conversations, with and without the
//! generation prompt. The expected strings only ever come from Python.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use llm::chat::template::{ChatTemplate, Message, Origin};
use serde::{Deserialize, Serialize};

struct Case {
    template: ChatTemplate,
    bos: String,
    eos: String,
}

fn conversations() -> Vec<(&'static str, Vec<Message>)> {
    let (s, u, a) = (Message::system, Message::user, Message::assistant);
    vec![
        ("one_question", vec![u("Hello!")]),
        (
            "with_system",
            vec![
                s("You are a pirate."),
                u("Hi"),
                a("Arr, hello."),
                u("Where is the treasure?"),
            ],
        ),
        (
            "multi_turn",
            vec![
                u("What is 2+2?"),
                a("4"),
                u("And 3+3?"),
                a("6"),
                u("Thanks"),
                a("You're welcome."),
                u("Bye"),
            ],
        ),
        (
            "thinking",
            vec![
                s("Think first."),
                u("Is 7 prime?"),
                a("<think>x</think>answer"),
                u("And 9?"),
                a("<think>\n9 = 3 * 3\n</think>\n\nNo, 9 = 3 × 3."),
                u("Sure?"),
            ],
        ),
        (
            "unicode",
            vec![
                s("Réponds en français 🇫🇷"),
                u("日本語で答えて 😀"),
                a("はい！🎉 Ελληνικά, עברית, 👩‍👩‍👧"),
                u("\u{200b}zero width\u{feff}"),
            ],
        ),
        (
            "whitespace",
            vec![
                s("  padded system \n"),
                u("\n\n  leading and trailing  \n\n"),
                a("  answer with\n\ninner lines  \n"),
                u("\tlast\t"),
            ],
        ),
        (
            "jinja_in_content",
            vec![
                u("{{ x }} and {% if true %}block{% endif %} and {# c #}"),
                a("{{ messages }} {%- raw %}"),
                u("'single' \"double\" \\ backslash {{"),
            ],
        ),
        (
            "ends_with_answer",
            vec![u("Hi"), a("Hello, how can I help?")],
        ),
        ("system_only", vec![s("Only a system prompt.")]),
        ("two_users", vec![u("first"), u("second")]),
        ("empty", vec![]),
    ]
}

fn builtin_cases() -> Vec<Case> {
    ChatTemplate::builtin_names()
        .into_iter()
        .map(|name| {
            let (bos, eos) = match name {
                "llama3" => ("<|begin_of_text|>", "<|end_of_text|>"),
                "gemma" => ("<bos>", "<eos>"),
                "deepseek" | "deepseek3" => ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
                _ => ("<s>", "</s>"),
            };
            Case {
                template: ChatTemplate::builtin(name).unwrap(),
                bos: bos.into(),
                eos: eos.into(),
            }
        })
        .collect()
}

/// A model's own template, with its real bos and eos text. Only metadata is
/// read, so the truncated DeepSeek file serves.
fn gguf_case(path: &Path) -> Case {
    let metadata = llm::format::gguf::read_metadata(path).unwrap();
    let source = metadata
        .str("tokenizer.chat_template")
        .unwrap()
        .unwrap_or_else(|| panic!("{} has no chat template", path.display()));
    let tok = llm::tokenizer::Tokenizer::from_gguf_file(path).unwrap();
    let text = |id: Option<_>| tok.token_text(id.unwrap()).unwrap().to_string();
    let name = path.file_name().unwrap().to_str().unwrap();
    Case {
        template: ChatTemplate::from_source(name, Origin::Gguf, source).unwrap(),
        bos: text(tok.bos()),
        eos: text(tok.eos()),
    }
}

/// Jinja features real templates lean on, where minijinja and jinja2 could
/// part ways: whitespace control around blocks and comments, printing
/// Python values, filters, Python string methods, loop controls,
/// namespaces, the `{% generation %}` tag and transformers' globals.
const CORNER_CASES: &str = r#"{#- a comment opening the template -#}
{% for m in messages %}
  {% if m.role == 'user' %}
    U: {{ m.content }}
  {% else %}
    {{ m.role|upper }}: {{ m.content|trim }}
  {% endif %}
  {# a comment on its own line #}
{% endfor %}
{{ messages|length }} {{ messages|map(attribute='role')|join(',') }}
{{ messages|tojson }}
{{ messages|tojson(indent=2) }}
{{ messages|selectattr('role', 'equalto', 'user')|list|length }}
{% if messages %}{{ messages[-1].content.upper() }} {{ messages[-1]['content'].strip().split(' ')|join('|') }}{% endif %}
{{ [1, 'a', none, true, 2.5] }} {{ {'a': 1, 'b': [none]} }} {{ none }} {{ 1.0 }} {{ add_generation_prompt }} {{ (1, 2) }}
{{ 'x' ~ true }} {{ 'a,b'.split(',') }} {{ 'abc'[::-1] }} {{ 'x' in 'xyz' }} {{ 7 // 2 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ -7 % 3 }}
{{ 'title case'.title() }} {{ 'Hello'.startswith('He') }} {{ 'a-b'.replace('-', '+') }} {{ '  x  '.lstrip() }}|
{{ {'b': 1, 'a': 2}.items()|list }} {{ {'b': 1}.get('b') }} {{ {'b': 1}.get('z', 'none') }} {{ {'k': 'v'}|tojson(sort_keys=true) }}
{{ 'é'|tojson }} {{ 'é'|tojson(ensure_ascii=true) }} {{ '<&>'|tojson }} {{ 1e20|tojson }}
{% generation %}
  generated {{ bos_token }}
{% endgeneration %}
{%- if tools is not none %}TOOLS{% endif %}[{{ documents }}][{{ undefined_name }}]
{% if messages|length == 2 and messages[1].content == 'second' %}{{ undefined_name.attribute }}{% endif %}
{% set ns = namespace(n=0) %}
{% for m in messages %}
    {% if loop.index > 2 %}{% break %}{% endif %}
    {% if m.role == 'system' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
{% endfor %}
counted {{ ns.n }}, {{ loop is defined }}
    {%- if add_generation_prompt %}
        {{ '<gen>' }}
    {% endif %}
{{ eos_token }}
"#;

fn corner_case() -> Case {
    Case {
        template: ChatTemplate::from_source("corner_cases", Origin::Gguf, CORNER_CASES).unwrap(),
        bos: "<s>".into(),
        eos: "</s>".into(),
    }
}

#[derive(Deserialize)]
struct Expected {
    template: String,
    conversation: String,
    add_generation_prompt: bool,
    output: Option<String>,
    /// The message of the template's own raise_exception.
    raised: Option<String>,
    /// Any other error.
    failed: Option<String>,
}

const INSTALL: &str =
    "the chat template tests need python3 with jinja2: apt-get install python3-jinja2";

/// What scripts/render_templates.py reads. Serialized from structs, not
/// `serde_json::Value`, so that messages keep their key order (role, then
/// content) as they do in transformers: `tojson` shows it.
#[derive(Serialize)]
struct Job<'a> {
    templates: BTreeMap<&'a str, TemplateJob<'a>>,
    conversations: BTreeMap<&'a str, &'a [Message]>,
}

#[derive(Serialize)]
struct TemplateJob<'a> {
    source: &'a str,
    bos_token: &'a str,
    eos_token: &'a str,
}

fn render_in_python(cases: &[Case], conversations: &[(&str, Vec<Message>)]) -> Vec<Expected> {
    let job = Job {
        templates: cases
            .iter()
            .map(|c| {
                let job = TemplateJob {
                    source: &c.template.source,
                    bos_token: &c.bos,
                    eos_token: &c.eos,
                };
                (c.template.name.as_str(), job)
            })
            .collect(),
        conversations: conversations
            .iter()
            .map(|(name, messages)| (*name, messages.as_slice()))
            .collect(),
    };

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/render_templates.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = serde_json::to_string(&job).unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'jinja2'") {
        panic!("python3 has no jinja2: {INSTALL}");
    }
    assert!(
        out.status.success(),
        "{} failed:\n{stderr}",
        script.display()
    );
    serde_json::from_slice(&out.stdout).expect("the script answers JSON")
}

/// Renders every case with us and with Python and lists every difference.
fn check(cases: &[Case]) {
    let conversations = conversations();
    let expected = render_in_python(cases, &conversations);
    assert_eq!(expected.len(), cases.len() * conversations.len() * 2);

    let mut failures = Vec::new();
    for e in &expected {
        let case = cases
            .iter()
            .find(|c| c.template.name == e.template)
            .unwrap();
        let messages = &conversations
            .iter()
            .find(|c| c.0 == e.conversation)
            .unwrap()
            .1;
        let ours = case
            .template
            .render(messages, e.add_generation_prompt, &case.bos, &case.eos);
        let what = format!(
            "template {}, conversation {}, add_generation_prompt {}",
            e.template, e.conversation, e.add_generation_prompt
        );
        let agrees = match (&ours, &e.output, &e.raised) {
            (Ok(ours), Some(theirs), _) => ours == theirs,
            (Err(err), None, Some(raised)) => {
                err.to_string() == format!("chat template {} raised: {raised}", e.template)
            }
            (Err(_), None, None) => e.failed.is_some(),
            _ => false,
        };
        if !agrees {
            let theirs = match (&e.output, &e.raised, &e.failed) {
                (Some(output), _, _) => format!("{output:?}"),
                (_, Some(raised), _) => format!("raised {raised:?}"),
                (_, _, failed) => format!("failed: {}", failed.as_deref().unwrap_or("?")),
            };
            let ours = match &ours {
                Ok(output) => format!("{output:?}"),
                Err(err) => format!("error: {err}"),
            };
            failures.push(format!("{what}\n  jinja2: {theirs}\n  ours:   {ours}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} renders differ from jinja2:\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n")
    );
}

#[test]
fn builtin_templates_render_as_in_transformers() {
    check(&builtin_cases());
}

#[test]
fn model_templates_render_as_in_transformers() {
    check(&[
        gguf_case(&real_model(SMOLLM2)),
        gguf_case(&real_model(QWEN2_TRUNCATED)),
    ]);
}

#[test]
fn jinja_corner_cases_render_as_in_transformers() {
    check(&[corner_case()]);
}

#[test]
fn every_prompt_file_is_a_builtin() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut names: Vec<String> = ChatTemplate::builtin_names()
        .into_iter()
        .map(|name| format!("{name}.jinja"))
        .collect();
    names.sort();
    assert_eq!(files, names);
    for name in ChatTemplate::builtin_names() {
        let on_disk = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        assert_eq!(ChatTemplate::builtin(name).unwrap().source, on_disk);
    }
}
