//! A chat being held: sending messages, showing replies, and carrying out
//! slash commands. Shared by the REPL, scripted chats and one-shot prompts.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::chat::commands::{self, Command};
use crate::chat::conversation::SavedChat;
use crate::chat::session::{ChatSession, Observer, ReplyStats, StopReason};
use crate::chat::setup::origin_text;
use crate::chat::ui::{self, Spinner, Ui};
use crate::chat::wrap::Wrapper;
use crate::chat::{interrupt, text_input};

pub struct Chat {
    pub session: ChatSession,
    pub ui: Ui,
    pub model_path: PathBuf,
    /// A few lines about the model for `/show info`.
    pub model_summary: String,
    /// The token limit when it is ours, not the user's: a reply it cuts
    /// gets a note saying how to lift it.
    pub default_limit: Option<usize>,
    /// Show a reasoning model's thinking (dimmed in a terminal).
    pub show_thinking: bool,
    /// `-n` was on the command line: it wins over a loaded chat's limit.
    pub n_predict_given: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    Exit,
}

/// Streams the reply to stdout and keeps the spinner going until it starts.
struct Screen<'a> {
    ui: &'a Ui,
    spinner: Option<Spinner>,
    out: io::StdoutLock<'static>,
    started: bool,
    /// Word wrap, in a terminal.
    wrap: Option<Wrapper>,
    show_thinking: bool,
    /// Whether the last text written was thinking (it has its own style).
    in_thinking: bool,
}

/// Thinking is dimmed, without the reply's colour.
const THINKING_STYLE: &str = "\x1b[0;2m";

impl Screen<'_> {
    fn write(&mut self, text: &str, thinking: bool) -> Result<()> {
        if let Some(mut s) = self.spinner.take() {
            s.stop();
        }
        let mut styled = String::new();
        if !self.started {
            self.started = true;
            styled += self.ui.reply_start();
        }
        if thinking != self.in_thinking && self.ui.color_out {
            // The word held back by the wrapper belongs to the old style.
            if let Some(w) = &mut self.wrap {
                styled += &w.flush();
            }
            styled += if thinking { THINKING_STYLE } else { "\x1b[0m" };
            if !thinking {
                styled += self.ui.reply_start();
            }
        }
        self.in_thinking = thinking;
        match &mut self.wrap {
            Some(w) => styled += &w.push(text),
            None => styled += text,
        }
        self.out.write_all(styled.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    /// Writes what the wrapper holds back: the reply has ended.
    fn finish(&mut self) -> Result<()> {
        if let Some(rest) = self.wrap.as_mut().map(Wrapper::flush) {
            self.out.write_all(rest.as_bytes())?;
        }
        Ok(())
    }
}

impl Observer for Screen<'_> {
    fn prompt_started(&mut self, _n: usize) {
        self.spinner = Some(self.ui.spinner("thinking"));
    }

    fn prompt_done(&mut self) {
        if let Some(mut s) = self.spinner.take() {
            s.stop();
        }
    }

    fn text(&mut self, text: &str) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        self.write(text, false)
    }

    fn thinking(&mut self, text: &str) -> Result<()> {
        if self.show_thinking {
            self.write(text, true)
        } else {
            // Hidden thinking can take a while: the spinner says so.
            if self.spinner.is_none() && !self.started {
                self.spinner = Some(self.ui.spinner("thinking"));
            }
            Ok(())
        }
    }

    fn warn(&mut self, message: &str) {
        // A warning mid-reply starts on its own line.
        if self.started {
            if let Some(w) = &mut self.wrap {
                let _ = self.out.write_all(w.flush().as_bytes());
                w.at_line_start();
            }
            let _ = self.out.write_all(self.ui.reply_end().as_bytes());
            let _ = self.out.flush();
            ui::err_line("");
        }
        self.ui.warn(message);
        if self.started {
            let _ = self.out.write_all(self.ui.reply_start().as_bytes());
        }
    }
}

impl Chat {
    /// Sends `text` as the user's message and streams the reply to stdout,
    /// ending it with `end`. A failed turn leaves the conversation as it
    /// was.
    pub fn say(&mut self, text: &str, end: &str) -> Result<ReplyStats> {
        let before = self.session.conversation.messages.len();
        self.session.conversation.push("user", text);
        self.reply(end).inspect_err(|_| {
            // Keep a partial reply (it was shown); drop a turn that failed
            // before anything was written.
            let conv = &mut self.session.conversation;
            if conv.messages.len() == before + 1 {
                conv.messages.truncate(before);
            }
        })
    }

    /// Answers the conversation as it stands (its last message is the
    /// user's).
    pub fn reply(&mut self, end: &str) -> Result<ReplyStats> {
        // The flag is not cleared here: a Ctrl-C since the user's last
        // input (while loading, say) stops this reply before it starts.
        let cancel = interrupt::flag();
        interrupt::replying(true);
        let _idle = scopeguard_idle();

        // The terminal's width now: it may have been resized since.
        let wrap = self
            .ui
            .out_tty
            .then(crossterm::terminal::size)
            .and_then(Result::ok)
            .map(|(cols, _)| Wrapper::new(cols.into()));
        let mut screen = Screen {
            ui: &self.ui,
            spinner: None,
            out: io::stdout().lock(),
            started: false,
            wrap,
            show_thinking: self.show_thinking,
            in_thinking: false,
        };
        let result = self.session.reply(&mut screen, cancel);
        screen.prompt_done();
        screen.finish()?;
        if screen.started {
            screen.out.write_all(self.ui.reply_end().as_bytes())?;
        }
        let stats = result?;
        screen.out.write_all(end.as_bytes())?;
        screen.out.flush()?;
        drop(screen);
        if stats.stop == StopReason::Interrupted {
            self.ui.note("(stopped: the partial reply is kept)");
        }
        if let Some(l) = self.session.last_loop {
            self.ui.warn(&format!(
                "llm: the reply was cut: it kept repeating itself (the same {} token{} over its last {} tokens); -n -1 lets replies run on",
                l.period,
                if l.period == 1 { "" } else { "s" },
                l.span
            ));
        }
        if let (StopReason::Limit, Some(n)) = (stats.stop, self.default_limit) {
            self.ui.warn(&format!(
                "llm: the reply was cut at {n} tokens, the default limit for a reply without a terminal; -n N sets another, -n -1 none"
            ));
        }
        self.ui.show_stats(&stats);
        Ok(stats)
    }

    /// Carries out a slash command.
    pub fn run(&mut self, command: Command, end: &str) -> Result<Next> {
        match command {
            Command::Help => {
                let mut text = String::from("Commands:\n");
                for (name, help) in commands::COMMANDS {
                    text += &format!("  {name:<8} {help}\n");
                }
                text += "Keys: Enter sends; end a line with \\ or open a \"\"\" block for several lines;\n      Ctrl-C stops a reply; Ctrl-D or /exit quits; Up/Down and Ctrl-R search history.";
                self.ui.info(&text);
            }
            Command::Exit => return Ok(Next::Exit),
            Command::Clear => {
                self.session.conversation.messages.clear();
                self.session.last_stats = None;
                self.ui.note("(new conversation)");
            }
            Command::Regen => match self.session.conversation.take_last_reply() {
                Some(old) => {
                    if let Err(e) = self.reply(end) {
                        self.session.conversation.messages.push(old);
                        return Err(e);
                    }
                }
                None => self
                    .ui
                    .warn("nothing to write again: there is no reply yet"),
            },
            Command::Undo => {
                if self.session.conversation.undo() {
                    if self.session.conversation.messages.is_empty() {
                        self.session.last_stats = None;
                    }
                    self.ui.note("(dropped the last exchange)");
                } else {
                    self.ui.warn("nothing to undo");
                }
            }
            Command::System(None) => match &self.session.conversation.system {
                Some(s) => self.ui.info(s),
                None => self.ui.note("(no system prompt)"),
            },
            Command::System(Some(text)) => {
                self.session.conversation.system = Some(text);
                self.ui.note("(system prompt set)");
            }
            Command::Set(None) => {
                let p = &self.session.sampler.params;
                self.ui
                    .info(&commands::settings_table(p, self.session.n_predict));
            }
            Command::Set(Some((key, value))) => {
                let mut params = self.session.sampler.params.clone();
                let mut n_predict = self.session.n_predict;
                match commands::apply_setting(&mut params, &mut n_predict, &key, &value) {
                    Ok(()) => {
                        self.session.sampler.set_params(params);
                        if key == "n-predict" {
                            // The user's limit replaces ours, as -n does.
                            self.default_limit = None;
                            self.session.loop_check = false;
                        }
                        self.session.n_predict = n_predict;
                        self.ui.note(&format!("({key} = {value})"));
                    }
                    // An error, so that a scripted chat's exit status says so.
                    Err(e) => return Err(anyhow!(e)),
                }
            }
            Command::Show(topic) => self.ui.info(&self.show(&topic)?),
            Command::Save(path) => {
                self.saved().save(&path)?;
                self.ui.note(&format!(
                    "(saved {} messages to {})",
                    self.session.conversation.messages.len(),
                    path.display()
                ));
            }
            Command::Load(path) => self.load(&path)?,
            Command::Read(path) => {
                let text = read_message_file(&path)?;
                self.say(&text, end)?;
            }
        }
        Ok(Next::Continue)
    }

    fn saved(&self) -> SavedChat {
        let conv = &self.session.conversation;
        SavedChat {
            model: std::fs::canonicalize(&self.model_path)
                .unwrap_or_else(|_| self.model_path.clone()),
            system: conv.system.clone(),
            messages: conv.messages.clone(),
            sampling: self.session.sampler.params.clone(),
            n_predict: self.session.n_predict.map(|n| n as i64),
        }
    }

    fn load(&mut self, path: &Path) -> Result<()> {
        let saved = SavedChat::load(path)?;
        let ours = std::fs::canonicalize(&self.model_path).unwrap_or(self.model_path.clone());
        if saved.model != ours {
            self.ui.warn(&format!(
                "note: {} was saved with {}; continuing it with {}",
                path.display(),
                saved.model.display(),
                ours.display()
            ));
        }
        self.session.conversation = saved.conversation();
        self.session.sampler.set_params(saved.sampling.clone());
        if !self.n_predict_given {
            self.session.n_predict = saved.n_predict.and_then(|n| usize::try_from(n).ok());
        }
        // Show the restored conversation as it was seen, in a terminal.
        if self.ui.out_tty {
            let mut out = io::stdout().lock();
            for m in &self.session.conversation.messages {
                match m.role.as_str() {
                    "user" => writeln!(out, "{}{}", self.ui.prompt(), m.content)?,
                    _ => writeln!(
                        out,
                        "{}{}{}\n",
                        self.ui.reply_start(),
                        m.content,
                        self.ui.reply_end()
                    )?,
                }
            }
        }
        self.ui.note(&format!(
            "(loaded {} messages from {})",
            self.session.conversation.messages.len(),
            path.display()
        ));
        Ok(())
    }

    fn show(&self, topic: &str) -> Result<String> {
        let s = &self.session;
        Ok(match topic {
            "template" => {
                let (bos, eos) = s.bos_eos();
                let stops: Vec<String> = s.stop_strings().map(|x| format!("{x:?}")).collect();
                format!(
                    "template: {}\nfrom:     {}\nstops:    {}\nexample:\n{}",
                    s.template.name,
                    origin_text(&s.template),
                    if stops.is_empty() {
                        "(end-of-generation tokens only)".to_string()
                    } else {
                        stops.join(", ")
                    },
                    s.template.example(bos, eos)?
                )
            }
            "params" => commands::settings_table(&s.sampler.params, s.n_predict),
            "stats" => {
                let last = s
                    .last_stats
                    .as_ref()
                    .map_or("no reply yet".to_string(), |st| {
                        format!(
                            "{} ({} prompt tokens re-used from the cache, {} run)",
                            ui::stats_line(st),
                            st.reused_tokens,
                            st.prompt_tokens
                        )
                    });
                // The conversation as it stands now: the cache may still hold
                // turns that were undone until the next reply re-uses it.
                let in_use = if s.conversation.messages.is_empty() {
                    0
                } else {
                    s.prompt_tokens(&s.conversation)
                        .map_or(s.n_cached(), |t| t.len())
                };
                format!(
                    "last reply: {last}\ncontext:    {} of {} tokens in use\nmessages:   {}",
                    in_use,
                    s.n_ctx(),
                    s.conversation.messages.len()
                )
            }
            _ => format!(
                "{}\ncontext: {} tokens ({} in use)\ntemplate: {} ({})",
                self.model_summary,
                s.n_ctx(),
                s.n_cached(),
                s.template.name,
                origin_text(&s.template)
            ),
        })
    }
}

/// Leaves the reply phase however the reply ends.
fn scopeguard_idle() -> impl Drop {
    struct Idle;
    impl Drop for Idle {
        fn drop(&mut self) {
            interrupt::replying(false);
        }
    }
    Idle
}

/// A file's text as a message: it must be text.
pub fn read_message_file(path: &Path) -> Result<String> {
    let bytes = text_input::read(path).map_err(|e| {
        anyhow!(
            "cannot read {}: {}",
            path.display(),
            text_input::describe(&e)
        )
    })?;
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))?;
    if text.trim().is_empty() {
        return Err(anyhow!("{} is empty", path.display()));
    }
    Ok(text)
}
