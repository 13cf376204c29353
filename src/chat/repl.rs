//! The interactive chat: rustyline for editing, history and completion; the
//! chat driver for replies and commands.

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::Result;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Behavior, Config, Context, Editor, Helper};

use crate::chat::driver::{Chat, Next};
use crate::chat::{commands, interrupt};

const FENCE: &str = "\"\"\"";
const PROMPT: &str = ">>> ";
/// The prompt for the next line of an entry not yet complete.
const CONTINUATION: &str = "... ";

/// The history file: $XDG_STATE_HOME/llm/history (~/.local/state/llm/history).
pub fn history_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("llm/history"))
}

struct ChatHelper {
    files: FilenameCompleter,
    prompt_color: Option<String>,
}

impl Completer for ChatHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        if !head.starts_with('/') {
            return Ok((0, Vec::new()));
        }
        let pairs = |words: &mut dyn Iterator<Item = &str>, typed: &str| -> Vec<Pair> {
            words
                .filter(|w| w.starts_with(typed))
                .map(|w| Pair {
                    display: w.to_string(),
                    replacement: format!("{w} "),
                })
                .collect()
        };
        match head.split_once(' ') {
            None => Ok((
                0,
                pairs(&mut commands::COMMANDS.iter().map(|(c, _)| *c), head),
            )),
            Some(("/show", typed)) => {
                Ok((6, pairs(&mut commands::SHOW_TOPICS.iter().copied(), typed)))
            }
            Some(("/set", typed)) if !typed.contains(' ') => Ok((
                5,
                pairs(&mut commands::SETTINGS.iter().map(|(s, _)| *s), typed),
            )),
            Some(("/save" | "/load" | "/read", _)) => self.files.complete(line, pos, ctx),
            _ => Ok((pos, Vec::new())),
        }
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Highlighter for ChatHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        match &self.prompt_color {
            Some(colored) if prompt == PROMPT => Cow::Borrowed(colored.as_str()),
            _ => Cow::Borrowed(prompt),
        }
    }
}

// Entries are checked for completeness by the REPL itself, which reads the
// rest of a block line by line behind a `...` prompt, as ollama does.
impl Validator for ChatHelper {}

impl Helper for ChatHelper {}

/// A `"""` block not yet closed, or a line ending in `\`, goes on.
fn is_incomplete(input: &str) -> bool {
    let trimmed = input.trim_start();
    if let Some(rest) = trimmed.strip_prefix(FENCE) {
        return !rest.trim_end().ends_with(FENCE);
    }
    input.ends_with('\\')
}

/// The message an entry stands for: fences and line-continuation
/// backslashes removed.
fn message_of(entry: &str) -> String {
    let trimmed = entry.trim();
    if let Some(rest) = trimmed.strip_prefix(FENCE) {
        let inner = rest.strip_suffix(FENCE).unwrap_or(rest);
        return inner.trim_matches('\n').to_string();
    }
    entry
        .split('\n')
        .map(|l| l.strip_suffix('\\').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

pub fn run(chat: &mut Chat, banner: &str) -> Result<()> {
    let config = Config::builder()
        .max_history_size(1000)?
        .history_ignore_dups(true)?
        .history_ignore_space(true)
        .auto_add_history(false)
        .bracketed_paste(true)
        // Draw on the terminal itself: with `llm chat m > log` stdout must
        // carry the model's words only, not the prompt and keystrokes.
        .behavior(Behavior::PreferTerm)
        .build();
    let mut editor: Editor<ChatHelper, FileHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ChatHelper {
        files: FilenameCompleter::new(),
        prompt_color: chat.ui.color_err.then(|| chat.ui.prompt()),
    }));
    // The editor put its own SIGINT handler in place; Ctrl-C during a reply
    // must reach ours.
    interrupt::install();
    let mut history = open_history(chat, &mut editor);
    chat.ui.note(banner);
    loop {
        let mut entry = match editor.readline(PROMPT) {
            Ok(entry) => entry,
            Err(ReadlineError::Interrupted) => {
                chat.ui.note("(Ctrl-C: use Ctrl-D or /exit to quit)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        // A `"""` block or a line ending in `\` goes on behind `...`;
        // Ctrl-C drops the block, Ctrl-D quits.
        let mut dropped = false;
        while is_incomplete(&entry) {
            match editor.readline(CONTINUATION) {
                Ok(line) => {
                    entry.push('\n');
                    entry.push_str(&line);
                }
                Err(ReadlineError::Interrupted) => {
                    chat.ui.note("(Ctrl-C: the message is dropped)");
                    dropped = true;
                    break;
                }
                Err(ReadlineError::Eof) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        if dropped {
            continue;
        }
        if entry.trim().is_empty() {
            continue;
        }
        // Something new: an earlier Ctrl-C no longer applies.
        interrupt::reset();
        if let Some(path) = &history {
            if !remember(chat, &mut editor, path, &entry) {
                history = None;
            }
        }
        let message = message_of(&entry);
        let outcome = match commands::parse(&message) {
            Ok(Some(command)) => chat.run(command, "\n\n"),
            Ok(None) => chat.say(&message, "\n\n").map(|_| Next::Continue),
            Err(e) => {
                chat.ui.error(&e);
                Ok(Next::Continue)
            }
        };
        match outcome {
            Ok(Next::Exit) => break,
            Ok(Next::Continue) => {}
            Err(e) => chat.ui.error(&format!("llm: {e:#}")),
        }
    }
    Ok(())
}

/// Loads the history; a history that cannot be kept is a warning only.
fn open_history(chat: &Chat, editor: &mut Editor<ChatHelper, FileHistory>) -> Option<PathBuf> {
    let path = history_path()?;
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            chat.ui.warn(&format!(
                "llm: cannot keep history in {}: {e} (the chat goes on without it)",
                dir.display()
            ));
            return None;
        }
    }
    match editor.load_history(&path) {
        Ok(()) => {}
        Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => chat.ui.warn(&format!(
            "llm: cannot read history {}: {e} (starting without it)",
            path.display()
        )),
    }
    Some(path)
}

/// Adds an entry to the history file; false (after one warning) when the
/// file cannot be written.
fn remember(
    chat: &Chat,
    editor: &mut Editor<ChatHelper, FileHistory>,
    path: &PathBuf,
    entry: &str,
) -> bool {
    let _ = editor.add_history_entry(entry);
    match editor.append_history(path) {
        Ok(()) => true,
        Err(e) => {
            chat.ui.warn(&format!(
                "llm: cannot write history to {}: {e} (the chat goes on without it)",
                path.display()
            ));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_entries() {
        assert!(is_incomplete("\"\"\""));
        assert!(is_incomplete("\"\"\"\nfirst line"));
        assert!(!is_incomplete("\"\"\"\nfirst\nlast\"\"\""));
        assert!(is_incomplete("a line \\"));
        assert!(!is_incomplete("a line"));
        assert_eq!(message_of("\"\"\"\nfirst\nsecond\n\"\"\""), "first\nsecond");
        assert_eq!(message_of("one \\\ntwo"), "one \ntwo");
        assert_eq!(message_of("  plain  "), "plain");
    }
}
