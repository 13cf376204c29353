//! Slash commands: what the user can type besides messages, parsed into
//! values the REPL (and a scripted chat) carries out.

use std::path::PathBuf;

use crate::engine::sampler::{check_option, SamplingParams};

/// Every command with a one-line description, for `/help` and completion.
pub const COMMANDS: &[(&str, &str)] = &[
    ("/help", "this list"),
    ("/exit", "quit (also /bye, Ctrl-D)"),
    ("/bye", "quit"),
    (
        "/clear",
        "start a new conversation (the system prompt stays)",
    ),
    ("/regen", "write the last reply again"),
    ("/undo", "drop the last question and its reply"),
    (
        "/system",
        "/system TEXT sets the system prompt; /system alone shows it",
    ),
    (
        "/set",
        "/set NAME VALUE changes a sampling option; /set alone lists them",
    ),
    ("/show", "/show info|template|params|stats"),
    ("/save", "/save FILE writes the conversation as JSON"),
    ("/load", "/load FILE restores a saved conversation"),
    (
        "/read",
        "/read FILE sends the file's text as your next message",
    ),
];

/// Commands that take nothing after them: `/exit is a builtin?` in a
/// script is a message, not a command.
const NO_ARGUMENTS: &[&str] = &[
    "/help", "/?", "/exit", "/bye", "/quit", "/clear", "/regen", "/undo",
];

pub const SHOW_TOPICS: &[&str] = &["info", "template", "params", "stats"];

/// Options `/set` knows, with the help each gets.
pub const SETTINGS: &[(&str, &str)] = &[
    ("temp", "temperature (0: greedy)"),
    ("top-k", "keep the k most likely tokens (0: all)"),
    ("top-p", "nucleus sampling threshold (1: off)"),
    ("min-p", "drop tokens below min-p times the best (0: off)"),
    ("repeat-penalty", "penalty for repeated tokens (1: off)"),
    ("repeat-last-n", "tokens the penalties look back over"),
    ("presence-penalty", "subtracted once per present token"),
    ("frequency-penalty", "subtracted per occurrence"),
    ("seed", "random seed"),
    ("n-predict", "most tokens per reply (-1: no limit)"),
];

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Help,
    Exit,
    Clear,
    Regen,
    Undo,
    System(Option<String>),
    Set(Option<(String, String)>),
    Show(String),
    Save(PathBuf),
    Load(PathBuf),
    Read(PathBuf),
}

/// `Ok(None)`: not a command (a message). `Err`: a command used wrongly.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if !line.starts_with('/') || line.contains('\n') {
        return Ok(None);
    }
    let (name, rest) = match line.split_once(char::is_whitespace) {
        Some((n, r)) => (n, r.trim()),
        None => (line, ""),
    };
    let path = |what: &str| -> Result<PathBuf, String> {
        if rest.is_empty() {
            Err(format!("{name} needs a file name: {name} FILE ({what})"))
        } else {
            Ok(PathBuf::from(expand_home(rest)))
        }
    };
    if NO_ARGUMENTS.contains(&name) && !rest.is_empty() {
        return Err(format!("{name} takes no arguments"));
    }
    let command = match name {
        "/help" | "/?" => Command::Help,
        "/exit" | "/bye" | "/quit" => Command::Exit,
        "/clear" => Command::Clear,
        "/regen" => Command::Regen,
        "/undo" => Command::Undo,
        "/system" => Command::System((!rest.is_empty()).then(|| rest.to_string())),
        "/set" => {
            if rest.is_empty() {
                Command::Set(None)
            } else {
                let (key, value) = rest
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("/set {rest} needs a value: /set NAME VALUE"))?;
                Command::Set(Some((key.to_string(), value.trim().to_string())))
            }
        }
        "/show" => {
            let topic = if rest.is_empty() { "info" } else { rest };
            if !SHOW_TOPICS.contains(&topic) {
                return Err(format!(
                    "/show {topic}: unknown; try /show {}",
                    SHOW_TOPICS.join("|")
                ));
            }
            Command::Show(topic.to_string())
        }
        "/save" => Command::Save(path("where to write the conversation")?),
        "/load" => Command::Load(path("a file written by /save")?),
        "/read" => Command::Read(path("its text becomes your message")?),
        _ => return Err(format!("unknown command {name} (type /help for the list)")),
    };
    Ok(Some(command))
}

/// Whether `line` reads as a command we do not have (`/bogus`, `/sve x`): a
/// slash and letters, then nothing or a space. A scripted chat reports such
/// a line as the REPL does instead of sending a typo to the model; a path
/// (`/usr/bin is ...`), `/5`, or a known command used as prose (`/exit is
/// a builtin`) stays a message.
pub fn looks_like_command(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    let letters = first
        .strip_prefix('/')
        .is_some_and(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic()));
    let known = COMMANDS.iter().any(|(c, _)| *c == first) || matches!(first, "/?" | "/quit");
    letters && !known && !line.contains('\n')
}

/// Whether `line` starts with one of our commands.
pub fn is_known(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or("");
    let known = COMMANDS.iter().any(|(c, _)| *c == name) || matches!(name, "/?" | "/quit");
    known && !(NO_ARGUMENTS.contains(&name) && words.next().is_some())
}

fn expand_home(path: &str) -> String {
    match (path.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => path.to_string(),
    }
}

/// Applies `/set key value` to the sampling options (and the reply limit).
pub fn apply_setting(
    params: &mut SamplingParams,
    n_predict: &mut Option<usize>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let bad = || format!("/set {key}: '{value}' is not a valid value");
    let f = || {
        value
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(bad)
    };
    let i = || value.parse::<i32>().map_err(|_| bad());
    if SETTINGS.iter().any(|(k, _)| *k == key.replace('_', "-")) || key == "temperature" {
        if let Ok(v) = value.trim().parse::<f64>() {
            check_option(key, v).map_err(|e| format!("/set {key} {value}: {e}"))?;
        }
    }
    match key.replace('_', "-").as_str() {
        "temp" | "temperature" => params.temp = f()?,
        "top-k" => params.top_k = i()?,
        "top-p" => params.top_p = f()?,
        "min-p" => params.min_p = f()?,
        "repeat-penalty" => params.repeat_penalty = f()?,
        "repeat-last-n" => params.repeat_last_n = i()?,
        "presence-penalty" => params.presence_penalty = f()?,
        "frequency-penalty" => params.frequency_penalty = f()?,
        "seed" => params.seed = value.parse::<u64>().map_err(|_| bad())?,
        "n-predict" => {
            let n = value.parse::<i64>().map_err(|_| bad())?;
            *n_predict = (n >= 0).then_some(n as usize);
        }
        _ => {
            let names: Vec<&str> = SETTINGS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "/set: unknown option '{key}' (options: {})",
                names.join(", ")
            ));
        }
    }
    Ok(())
}

/// The options and their values, for `/set` alone and `/show params`.
pub fn settings_table(params: &SamplingParams, n_predict: Option<usize>) -> String {
    let value = |key: &str| match key {
        "temp" => format!("{}", params.temp),
        "top-k" => format!("{}", params.top_k),
        "top-p" => format!("{}", params.top_p),
        "min-p" => format!("{}", params.min_p),
        "repeat-penalty" => format!("{}", params.repeat_penalty),
        "repeat-last-n" => format!("{}", params.repeat_last_n),
        "presence-penalty" => format!("{}", params.presence_penalty),
        "frequency-penalty" => format!("{}", params.frequency_penalty),
        "seed" => format!("{}", params.seed),
        "n-predict" => n_predict.map_or("-1".to_string(), |n| n.to_string()),
        _ => String::new(),
    };
    SETTINGS
        .iter()
        .map(|(k, help)| format!("  {k:<18} {:<10} {help}", value(k)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_leaves_messages() {
        assert_eq!(parse("hello"), Ok(None));
        assert_eq!(parse("/exit"), Ok(Some(Command::Exit)));
        assert_eq!(parse("/bye"), Ok(Some(Command::Exit)));
        assert_eq!(
            parse("/set temp 0.7"),
            Ok(Some(Command::Set(Some(("temp".into(), "0.7".into())))))
        );
        assert_eq!(parse("/set"), Ok(Some(Command::Set(None))));
        assert_eq!(
            parse("/system be brief"),
            Ok(Some(Command::System(Some("be brief".into()))))
        );
        assert_eq!(parse("/show"), Ok(Some(Command::Show("info".into()))));
        assert!(parse("/show nothing").is_err());
        assert!(parse("/save").unwrap_err().contains("needs a file name"));
        assert!(parse("/frobnicate")
            .unwrap_err()
            .contains("unknown command"));
        // A multi-line message that starts with a slash is a message.
        assert_eq!(parse("/usr/bin\nis a directory"), Ok(None));
        assert!(is_known("/set temp 1"));
        assert!(is_known("/exit"));
        assert!(!is_known("/exit is a bash builtin?"));
        assert!(parse("/clear now")
            .unwrap_err()
            .contains("takes no arguments"));
        assert!(!is_known("/usr/bin is where"));
        assert!(looks_like_command("/bogus"));
        assert!(looks_like_command("/sve notes.txt"));
        assert!(!looks_like_command("/usr/bin is where"));
        assert!(!looks_like_command("/5 of them"));
        assert!(!looks_like_command("hello /bogus"));
        assert!(!looks_like_command("/exit is a bash builtin?"));
    }

    #[test]
    fn settings_apply_and_reject_nonsense() {
        let mut p = SamplingParams::default();
        let mut n = None;
        apply_setting(&mut p, &mut n, "temp", "0.25").unwrap();
        apply_setting(&mut p, &mut n, "top_k", "7").unwrap();
        apply_setting(&mut p, &mut n, "n-predict", "12").unwrap();
        assert_eq!((p.temp, p.top_k, n), (0.25, 7, Some(12)));
        assert!(apply_setting(&mut p, &mut n, "temp", "hot").is_err());
        assert!(apply_setting(&mut p, &mut n, "temp", "NaN").is_err());
        let e = apply_setting(&mut p, &mut n, "top_p", "2").unwrap_err();
        assert!(
            e.contains("/set top_p 2: out of range: give a number from 0 to 1"),
            "{e}"
        );
        assert!(apply_setting(&mut p, &mut n, "temp", "-1").is_err());
        assert!(apply_setting(&mut p, &mut n, "repeat-penalty", "0").is_err());
        assert_eq!(p.temp, 0.25);
        assert!(apply_setting(&mut p, &mut n, "warmth", "1")
            .unwrap_err()
            .contains("options: temp"));
        assert!(settings_table(&p, n).contains("0.25"));
    }
}
