//! Chat templates: the Jinja programs that turn a conversation into the
//! prompt text a model was trained on.
//!
//! Rendering follows Hugging Face transformers' `apply_chat_template`, the
//! reference every model's template was written and tested against: a
//! sandboxed jinja2 environment with `trim_blocks` and `lstrip_blocks`, loop
//! controls, its own `tojson`, `raise_exception` and `strftime_now`, and the
//! context `messages`, `add_generation_prompt`, `bos_token`, `eos_token`
//! (plus `tools` and `documents` as none, as transformers passes them).
//! scripts/render_templates.py does the same with jinja2 itself, and
//! tests/template_golden.rs holds our output to it.
//!
//! Undefined values keep minijinja's lenient default, which is what jinja2's
//! default `Undefined` does: printing one gives nothing, iterating one gives
//! nothing, testing it is false, and looking anything up in it is an error.
//!
//! Templates from model files are untrusted: each render has an instruction
//! budget (fuel) that grows with the conversation and a recursion limit, so
//! a runaway template fails with an error instead of hanging the chat.
//! Fuel bounds work, not memory: memory has a budget of its own (see
//! crate::alloc_budget), so a template that doubles a string forty times
//! fails too, as it would not in transformers.
//!
//! Known differences from jinja2, outside what chat templates do: a list
//! printed whole shows non-printable characters as they are where Python's
//! `repr` escapes them, and `strftime_now` formats UTC, not local time.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};

use crate::alloc_budget::run_with_budget;
use crate::format::gguf::human_bytes;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{context, AutoEscape, Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// "system", "user" or "assistant".
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    pub fn system(content: &str) -> Message {
        Message::new("system", content)
    }

    pub fn user(content: &str) -> Message {
        Message::new("user", content)
    }

    pub fn assistant(content: &str) -> Message {
        Message::new("assistant", content)
    }
}

/// Where a chat template came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// The model file's `tokenizer.chat_template`.
    Gguf,
    /// Named by the user among the built-in templates.
    BuiltIn,
    File(PathBuf),
    /// A built-in template picked for a model family (the family's name).
    Catalogue(String),
    /// The model has no template: the plain transcript format.
    Fallback,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Gguf => write!(f, "from the model file"),
            Origin::BuiltIn => write!(f, "built-in"),
            Origin::File(path) => write!(f, "from {}", path.display()),
            Origin::Catalogue(family) => write!(f, "built-in, chosen for the {family} family"),
            Origin::Fallback => write!(f, "fallback, as the model has no chat template"),
        }
    }
}

/// A chat template, known to compile, and the stop strings that go with it.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    pub name: String,
    pub origin: Origin,
    pub source: String,
    /// Text that ends the assistant's turn when the model writes it.
    pub stop: Vec<String>,
}

/// The built-in templates, in the order they are listed to users.
const BUILT_IN: &[(&str, &str)] = &[
    ("chatml", include_str!("../../prompts/chatml.jinja")),
    ("llama2", include_str!("../../prompts/llama2.jinja")),
    ("llama3", include_str!("../../prompts/llama3.jinja")),
    ("mistral", include_str!("../../prompts/mistral.jinja")),
    ("gemma", include_str!("../../prompts/gemma.jinja")),
    ("phi3", include_str!("../../prompts/phi3.jinja")),
    ("zephyr", include_str!("../../prompts/zephyr.jinja")),
    ("deepseek", include_str!("../../prompts/deepseek.jinja")),
    ("deepseek3", include_str!("../../prompts/deepseek3.jinja")),
    ("plain", include_str!("../../prompts/plain.jinja")),
];

const FALLBACK: &str = "plain";

/// Instruction budget of one render. Real templates spend well under a
/// thousand instructions per message (measured: DeepSeek-R1's, the busiest
/// here, about 60), so this is ample for any honest template while a loop
/// nest that would run for minutes stops within milliseconds.
const FUEL_BASE: u64 = 200_000;
const FUEL_PER_MESSAGE: u64 = 20_000;

/// Deep enough for macros that walk nested JSON schemas (a macro call counts
/// 4), shallow enough to stay far from the stack's end.
const RECURSION_LIMIT: usize = 200;

/// Memory budget of one render: what the engine needs plus room for the
/// conversation's text many times over (a template that writes each message
/// once, escaped as JSON, uses about twice its text). Doubling a string
/// reaches it within a few dozen steps, in milliseconds.
const MEMORY_BASE: usize = 64 << 20;
const MEMORY_PER_TEXT_BYTE: usize = 16;

impl ChatTemplate {
    pub fn builtin(name: &str) -> Result<ChatTemplate> {
        let Some((name, source)) = BUILT_IN.iter().find(|(n, _)| *n == name) else {
            return Err(anyhow!(
                "unknown chat template '{name}' (built-in: {})",
                ChatTemplate::builtin_names().join(", ")
            ));
        };
        ChatTemplate::from_source(name, Origin::BuiltIn, source)
    }

    pub fn builtin_names() -> Vec<&'static str> {
        BUILT_IN.iter().map(|(name, _)| *name).collect()
    }

    pub fn from_file(path: &Path) -> Result<ChatTemplate> {
        let bytes = crate::chat::text_input::read(path).map_err(|e| {
            anyhow!(
                "chat template {}: {}",
                path.display(),
                crate::chat::text_input::describe(&e)
            )
        })?;
        let source = String::from_utf8(bytes).map_err(|e| {
            anyhow!(
                "chat template {}: not UTF-8 text (bad byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        ChatTemplate::from_source(&name, Origin::File(path.to_path_buf()), &source)
    }

    /// Compiles the template once so that a broken one fails at start, not
    /// at the first message.
    pub fn from_source(name: &str, origin: Origin, source: &str) -> Result<ChatTemplate> {
        let stop = match declared_stop_strings(source) {
            Some(declared) => declared.map_err(|e| anyhow!("chat template {name}: {e}"))?,
            None => guess_stop_strings(source),
        };
        let template = ChatTemplate {
            name: name.into(),
            origin,
            source: source.into(),
            stop,
        };
        let source = rewrite_generation_tags(source);
        environment(0)
            .template_from_named_str(name, &source)
            .map_err(|e| template.error(e))?;
        Ok(template)
    }

    pub fn fallback() -> ChatTemplate {
        let mut template = ChatTemplate::builtin(FALLBACK).expect("the fallback template compiles");
        template.origin = Origin::Fallback;
        template
    }

    /// Renders on a thread of its own under a memory budget that grows with
    /// the conversation, so that a template that blows up strings or lists
    /// fails with an error instead of taking the process's memory.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let text_bytes: usize = messages
            .iter()
            .map(|m| m.content.len() + m.role.len())
            .sum::<usize>()
            + bos_token.len()
            + eos_token.len();
        let limit = MEMORY_BASE.saturating_add(text_bytes.saturating_mul(MEMORY_PER_TEXT_BYTE));
        let (template, messages) = (self.clone(), messages.to_vec());
        let (bos, eos) = (bos_token.to_string(), eos_token.to_string());
        let rendered = run_with_budget(limit, move || {
            template
                .render_here(&messages, add_generation_prompt, &bos, &eos)
                .map_err(|e| format!("{e:#}"))
        });
        match rendered {
            Some(result) => result.map_err(|e| anyhow!(e)),
            None => Err(anyhow!(
                "chat template {} went over its memory limit ({})",
                self.name,
                human_bytes(limit as u64)
            )),
        }
    }

    fn render_here(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let fuel = FUEL_BASE + FUEL_PER_MESSAGE * messages.len() as u64;
        let env = environment(fuel);
        let source = rewrite_generation_tags(&self.source);
        let template = env
            .template_from_named_str(&self.name, &source)
            .map_err(|e| self.error(e))?;
        template
            .render(context! {
                messages => Value::from(Serde(messages)),
                tools => (),
                documents => (),
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token,
                eos_token => eos_token,
            })
            .map_err(|e| self.error(e))
    }

    /// The prompt for a short sample conversation, to show what the template
    /// makes of each kind of turn.
    pub fn example(&self, bos: &str, eos: &str) -> Result<String> {
        let messages = [
            Message::system("You are a helpful assistant."),
            Message::user("Hello!"),
            Message::assistant("Hi! How can I help you today?"),
            Message::user("What is the capital of France?"),
        ];
        self.render(&messages, true, bos, eos)
    }

    fn error(&self, err: Error) -> anyhow::Error {
        let name = &self.name;
        if err.kind() == ErrorKind::OutOfFuel {
            return anyhow!("chat template {name} ran too long (out of fuel)");
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(Raised(message)) = e.downcast_ref::<Raised>() {
                return anyhow!("chat template {name} raised: {}", one_line(message));
            }
            source = e.source();
        }
        anyhow!("chat template {name}: {}", one_line(&err.to_string()))
    }
}

/// The stop strings a template declares in an opening comment such as
/// `{#- stop: ["<|im_end|>"] -#}`; `None` when it declares none.
fn declared_stop_strings(source: &str) -> Option<Result<Vec<String>>> {
    let comment = source.trim_start().strip_prefix("{#")?;
    let comment = &comment[..comment.find("#}")?];
    let comment = comment
        .trim_start_matches(['-', '+'])
        .trim_end_matches(['-', '+']);
    let list = comment.trim().strip_prefix("stop:")?;
    Some(serde_json::from_str(list).map_err(|e| anyhow!("bad stop list in its header: {e}")))
}

/// Stop strings for a template that declares none (a model's own): the
/// end-of-turn markers of the well-known formats that it writes out. Formats
/// that end turns with `eos_token` need none, as generation stops at the
/// end-of-sequence token anyway.
pub fn guess_stop_strings(source: &str) -> Vec<String> {
    const TURN_ENDS: &[&str] = &[
        "<|im_end|>",            // ChatML
        "<|eot_id|>",            // Llama 3
        "<end_of_turn>",         // Gemma
        "<|end|>",               // Phi-3
        "<|EOT|>",               // DeepSeek-Coder
        "<｜end▁of▁sentence｜>", // DeepSeek V3, R1
        "</s>",                  // Zephyr and others that spell out eos
    ];
    TURN_ENDS
        .iter()
        .filter(|end| source.contains(*end))
        .map(|end| end.to_string())
        .collect()
}

/// The environment transformers renders in, with a fuel budget (0: compile
/// only).
fn environment<'s>(fuel: u64) -> Environment<'s> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("default delimiters are valid");
    env.set_syntax(syntax);
    // minijinja would HTML-escape templates whose name ends in .html; jinja2
    // as transformers sets it up never escapes.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(fuel));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env
}

/// What `raise_exception` leaves in the error chain, so that the template's
/// own message can be told apart from engine errors.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: Value) -> Result<Value, Error> {
    let message = message.to_string();
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

/// transformers formats the local time; UTC is close enough for the dates
/// templates put in system prompts, and needs no time zone database.
fn strftime_now(format: String) -> Result<String, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    format_time(&format, now)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// strftime for UTC, with the directives date lines in templates use. `%-d`
/// (glibc's unpadded form) works for numbers; an unknown directive is an
/// error rather than a wrong date.
fn format_time(format: &str, unix_seconds: i64) -> Result<String, Error> {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = WEEKDAYS[(days + 3).rem_euclid(7) as usize]; // 1970-01-01 was a Thursday
    let month_name = MONTHS[month as usize - 1];
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut directive = chars.next();
        let unpadded = directive == Some('-');
        if unpadded {
            directive = chars.next();
        }
        let number = |n: i64, width: usize| {
            if unpadded {
                n.to_string()
            } else {
                format!("{n:0width$}")
            }
        };
        match directive {
            Some('Y') => out += &year.to_string(),
            Some('y') => out += &number(year.rem_euclid(100), 2),
            Some('m') => out += &number(month, 2),
            Some('d') => out += &number(day, 2),
            Some('H') => out += &number(hour, 2),
            Some('I') => out += &number((hour + 11) % 12 + 1, 2),
            Some('M') => out += &number(minute, 2),
            Some('S') => out += &number(second, 2),
            Some('p') => out += if hour < 12 { "AM" } else { "PM" },
            Some('B') => out += month_name,
            Some('b') | Some('h') => out += &month_name[..3],
            Some('A') => out += weekday,
            Some('a') => out += &weekday[..3],
            Some('Z') => out += "UTC",
            Some('z') => out += "+0000",
            Some('%') => out.push('%'),
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported directive %{other}"),
                ))
            }
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "strftime_now: format ends in %",
                ))
            }
        }
    }
    Ok(out)
}

/// (year, month, day) of a day counted from 1970-01-01, after Howard
/// Hinnant's `civil_from_days`: shifting the year to start in March puts the
/// leap day last, so month lengths follow a fixed 153-day cycle.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// transformers' `tojson`: Python's `json.dumps` with `ensure_ascii=False`
/// and no HTML escaping (minijinja's own filter escapes `<`, `>`, `&` and
/// `'`, which would change prompts that show JSON to the model).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        Some(v) if v.is_integer() => Some(" ".repeat(usize::try_from(v).unwrap_or(0))),
        Some(v) if v.kind() == ValueKind::String => Some(v.to_string()),
        _ => None,
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<Value>>("separators")? {
        Some(v) if !v.is_none() => (
            v.get_item_by_index(0)?.to_string(),
            v.get_item_by_index(1)?.to_string(),
        ),
        // Python drops the space after commas when lines break there.
        _ if indent.is_some() => (",".into(), ": ".into()),
        _ => (", ".into(), ": ".into()),
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let json = Json {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    json.value(&mut out, &value, 0)?;
    Ok(Value::from(out))
}

struct Json {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl Json {
    fn value(&self, out: &mut String, value: &Value, depth: usize) -> Result<(), Error> {
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&json_number(value)),
            ValueKind::String => self.string(out, value.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.container(out, ('[', ']'), &items, depth, |out, item| {
                    self.value(out, item, depth + 1)
                })?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    entries.push((json_key(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container(out, ('{', '}'), &entries, depth, |out, (key, item)| {
                    self.string(out, key);
                    out.push_str(&self.key_sep);
                    self.value(out, item, depth + 1)
                })?;
            }
            kind => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a value of type {kind} is not JSON serializable"),
                ))
            }
        }
        Ok(())
    }

    fn container<T>(
        &self,
        out: &mut String,
        (open, close): (char, char),
        items: &[T],
        depth: usize,
        mut item: impl FnMut(&mut String, &T) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            self.newline(out, depth + 1);
            item(out, x)?;
        }
        if !items.is_empty() {
            self.newline(out, depth);
        }
        out.push(close);
        Ok(())
    }

    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    }

    /// Escapes as Python's json module does: short escapes where JSON has
    /// them, lowercase `\u00xx` for other control characters, and with
    /// `ensure_ascii` everything outside printable ASCII as UTF-16 units.
    fn string(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if c < ' ' || (self.ensure_ascii && !(' '..='~').contains(&c)) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Map keys as Python's json module converts them.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => Ok(json_number(key)),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::None => Ok("null".into()),
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
        )),
    }
}

/// Numbers as Python writes them: floats by `repr` (`1.0`, `1e+16`,
/// `1.5e-05`, `NaN`, `Infinity`).
fn json_number(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    let x = f64::try_from(value.clone()).unwrap_or(f64::NAN);
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's Debug and Python's repr agree on digits and on when to switch
    // to an exponent; only the exponent's spelling differs.
    let repr = format!("{x:?}");
    match repr.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => repr,
    }
}

/// transformers' `{% generation %}…{% endgeneration %}` marks assistant text
/// for training masks and renders its body in a scope of its own, which is
/// what `{% with %}` does; the tag's `-`/`+` markers and the line count are
/// kept, so whitespace control and error lines stay the same.
fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let (before, tag) = rest.split_at(start);
        out.push_str(before);
        let inner = &tag[2..];
        let word = inner.strip_prefix(['-', '+']).unwrap_or(inner).trim_start();
        let word_at = tag.len() - word.len();
        let renamed = [("endgeneration", "endwith"), ("generation", "with")]
            .into_iter()
            .find(|(keyword, _)| {
                word.strip_prefix(keyword).is_some_and(|after| {
                    let after = after.trim_start();
                    after
                        .strip_prefix(['-', '+'])
                        .unwrap_or(after)
                        .starts_with("%}")
                })
            });
        match renamed {
            Some((keyword, replacement)) => {
                out.push_str(&tag[..word_at]);
                out.push_str(replacement);
                rest = &tag[word_at + keyword.len()..];
            }
            None => {
                out.push_str("{%");
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Error text on one line, for a terminal status line or a log.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<Message> {
        vec![
            Message::system("Be brief."),
            Message::user("Hi"),
            Message::assistant("Hello."),
            Message::user("Bye"),
        ]
    }

    fn render_source(source: &str) -> Result<String> {
        ChatTemplate::from_source("t", Origin::BuiltIn, source)?.render(
            &conversation(),
            true,
            "<s>",
            "</s>",
        )
    }

    #[test]
    fn unknown_builtin_lists_the_names() {
        let err = ChatTemplate::builtin("chatml2").unwrap_err().to_string();
        assert!(
            err.starts_with("unknown chat template 'chatml2' (built-in: chatml, llama2, "),
            "{err}"
        );
        for name in ChatTemplate::builtin_names() {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn every_builtin_compiles_and_declares_stop_strings() {
        for name in ChatTemplate::builtin_names() {
            let t = ChatTemplate::builtin(name).unwrap();
            assert_eq!(t.origin, Origin::BuiltIn);
            assert!(!t.stop.is_empty(), "{name} declares no stop strings");
            t.example("<s>", "</s>").unwrap();
        }
        assert_eq!(
            ChatTemplate::builtin("chatml").unwrap().stop,
            ["<|im_end|>", "<|im_start|>"]
        );
        assert_eq!(ChatTemplate::builtin("plain").unwrap().stop, ["\nUser:"]);
    }

    #[test]
    fn fallback_is_plain() {
        let t = ChatTemplate::fallback();
        assert_eq!(t.origin, Origin::Fallback);
        assert_eq!(
            t.render(&conversation(), true, "", "").unwrap(),
            "Be brief.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:"
        );
    }

    #[test]
    fn raise_exception_is_reported_as_the_templates_message() {
        let err = render_source("{{ raise_exception('Roles must\nalternate') }}")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "chat template t raised: Roles must alternate");
        // The built-ins that cannot express two user turns in a row say so.
        let err = ChatTemplate::builtin("llama2")
            .unwrap()
            .render(&[Message::user("a"), Message::user("b")], true, "", "")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("chat template llama2 raised: Conversation roles must alternate"),
            "{err}"
        );
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let start = std::time::Instant::now();
        let err = render_source(
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "chat template t ran too long (out of fuel)");
        assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
    }

    #[test]
    fn fuel_grows_with_the_conversation() {
        // A template doing a fixed, honest amount of work per message never
        // runs dry, however long the conversation.
        let t = ChatTemplate::builtin("deepseek3").unwrap();
        let long: Vec<Message> = (0..5000)
            .map(|i| {
                if i % 2 == 0 {
                    Message::user("question")
                } else {
                    Message::assistant("<think>hmm</think>answer")
                }
            })
            .collect();
        t.render(&long, true, "", "").unwrap();
    }

    #[test]
    fn deep_recursion_is_an_error() {
        let err = render_source("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("chat template t: "), "{err}");
        assert!(err.contains("recursion"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_line_and_surface_at_load() {
        let err = ChatTemplate::from_source(
            "broken",
            Origin::Gguf,
            "{% for m in messages %}\n{{ m.content }}\n{% if %}\n{% endfor %}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("chat template broken: syntax error: "),
            "{err}"
        );
        assert!(err.ends_with("(in broken:3)"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn builtin_names_and_file_paths_are_never_confused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatml");
        std::fs::write(&path, "{{ 'from the file' }}").unwrap();
        let from_file = ChatTemplate::from_file(&path).unwrap();
        assert_eq!(from_file.name, "chatml");
        assert_eq!(from_file.origin, Origin::File(path.clone()));
        assert_eq!(
            from_file.render(&[], false, "", "").unwrap(),
            "from the file"
        );
        let builtin = ChatTemplate::builtin("chatml").unwrap();
        assert_ne!(builtin.source, from_file.source);

        // A path is not a built-in name, even when that file exists.
        let err = ChatTemplate::builtin(path.to_str().unwrap()).unwrap_err();
        assert!(
            err.to_string().starts_with("unknown chat template"),
            "{err}"
        );
        // And a built-in name is not a file.
        let missing = dir.path().join("gemma");
        let err = ChatTemplate::from_file(&missing).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("chat template {}: no such file", missing.display())
        );
    }

    #[test]
    fn from_file_rejects_non_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jinja");
        std::fs::write(&path, b"{{ 'a' }}\xff").unwrap();
        let err = ChatTemplate::from_file(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "chat template {}: not UTF-8 text (bad byte at offset 9)",
                path.display()
            )
        );
    }

    #[test]
    fn stop_strings_come_from_the_header_or_are_guessed() {
        let t = ChatTemplate::from_source("t", Origin::Gguf, "{#- stop: [\"<x>\", \"\\n\"] -#}a")
            .unwrap();
        assert_eq!(t.stop, ["<x>", "\n"]);
        let err = ChatTemplate::from_source("t", Origin::Gguf, "{# stop: [oops] #}")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("chat template t: bad stop list"), "{err}");

        let smollm =
            "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'}}";
        assert_eq!(guess_stop_strings(smollm), ["<|im_end|>"]);
        assert_eq!(
            guess_stop_strings("{{ '<end_of_turn>\n' }}"),
            ["<end_of_turn>"]
        );
        assert_eq!(guess_stop_strings("{{ '<|eot_id|>' }}"), ["<|eot_id|>"]);
        assert!(guess_stop_strings("{{ '[INST]' + eos_token }}").is_empty());
        assert_eq!(
            ChatTemplate::from_source("t", Origin::Gguf, smollm)
                .unwrap()
                .stop,
            ["<|im_end|>"]
        );
    }

    #[test]
    fn html_looking_names_are_not_escaped() {
        let t = ChatTemplate::from_source("t.html", Origin::Gguf, "{{ '<b>&</b>' }}").unwrap();
        assert_eq!(t.render(&[], false, "", "").unwrap(), "<b>&</b>");
    }

    #[test]
    fn generation_tags_become_scopes() {
        assert_eq!(
            rewrite_generation_tags(
                "{%- generation -%}x{% endgeneration %}{{ '{% generation %}' }}"
            ),
            "{%- with -%}x{% endwith %}{{ '{% with %}' }}"
        );
        assert_eq!(
            rewrite_generation_tags("{% if generation %}"),
            "{% if generation %}"
        );
        assert_eq!(
            render_source("{% generation %}\n  {{- 'a' }}\n{% endgeneration %}b").unwrap(),
            "a\nb"
        );
    }

    #[test]
    fn tojson_matches_python() {
        let out = |expr: &str| render_source(&format!("{{{{ {expr} }}}}")).unwrap();
        assert_eq!(
            out("{'a': [1, 2.5, none, true], 'b': 'é<\"\n\u{1}'}|tojson"),
            r#"{"a": [1, 2.5, null, true], "b": "é<\"\n\u0001"}"#
        );
        assert_eq!(
            out("{'b': [], 'a': {}}|tojson(indent=2, sort_keys=true)"),
            "{\n  \"a\": {},\n  \"b\": []\n}"
        );
        assert_eq!(out("[1, [2]]|tojson(indent=1)"), "[\n 1,\n [\n  2\n ]\n]");
        assert_eq!(out("{'a': 1}|tojson(separators=(',', ':'))"), r#"{"a":1}"#);
        assert_eq!(
            out("'é😀'|tojson(ensure_ascii=true)"),
            r#""\u00e9\ud83d\ude00""#
        );
        assert_eq!(
            out("[1e16, 1.5e-05, 0.0001, 1.0]|tojson"),
            "[1e+16, 1.5e-05, 0.0001, 1.0]"
        );
        assert!(render_source("{{ undefined_thing|tojson }}").is_err());
        assert!(render_source("{{ 1|tojson(indnet=2) }}").is_err());
    }

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday; checked with Python's
        // time.strftime(fmt, time.gmtime(1709211909)).
        let t = 1_709_211_909;
        assert_eq!(
            format_time("%Y-%m-%d %H:%M:%S %A %a %B %b %y %I%p %%", t).unwrap(),
            "2024-02-29 13:05:09 Thursday Thu February Feb 24 01PM %"
        );
        assert_eq!(format_time("%-d %b %Y", t).unwrap(), "29 Feb 2024");
        assert_eq!(format_time("%d %B %Y", 0).unwrap(), "01 January 1970");
        assert_eq!(
            format_time("%d %m %Y %A", -1).unwrap(),
            "31 12 1969 Wednesday"
        );
        assert_eq!(format_time("%Y-%m-%d", 951_782_400).unwrap(), "2000-02-29");
        assert_eq!(
            format_time("%Y-%m-%d", 4_107_542_400).unwrap(),
            "2100-03-01"
        );
        assert!(format_time("%Q", t).is_err());
        let today = render_source("{{ strftime_now('%Y') }}").unwrap();
        assert!(today.parse::<u32>().unwrap() >= 2024, "{today}");
    }

    #[test]
    fn undefined_values_behave_as_in_jinja2() {
        assert_eq!(
            render_source("[{{ nothing }}]{% for x in nothing %}x{% endfor %}").unwrap(),
            "[]"
        );
        assert_eq!(render_source("{{ nothing is defined }}").unwrap(), "False");
        assert_eq!(render_source("{{ tools is none }}").unwrap(), "True");
        assert!(render_source("{{ nothing.attribute }}").is_err());
    }

    #[test]
    fn python_string_methods_work() {
        assert_eq!(
            render_source("{{ ' a b '.strip().split(' ')|join(',') }}{{ 'xy'.startswith('x') }}{{ 'a-b'.replace('-', '+') }}")
                .unwrap(),
            "a,bTruea+b"
        );
    }
}
