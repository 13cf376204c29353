//! A chat being held: sending messages, showing replies, and carrying out
//! slash commands. Shared by the REPL, scripted chats and one-shot prompts.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::chat::commands::{self, Command};
use crate::chat::conversation::SavedChat;
use crate::chat::interrupt;
use crate::chat::session::{ChatSession, Observer, ReplyStats, StopReason};
use crate::chat::setup::origin_text;
use crate::chat::ui::{self, Spinner, Ui};

pub struct Chat {
    pub session: ChatSession,
    pub ui: Ui,
    pub model_path: PathBuf,
    /// A few lines about the model for `/show info`.
    pub model_summary: String,
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
        if !self.started {
            self.started = true;
            self.out.write_all(self.ui.reply_start().as_bytes())?;
        }
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    fn warn(&mut self, message: &str) {
        // A warning mid-reply starts on its own line.
        if self.started {
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
        interrupt::reset();
        let cancel = interrupt::flag();

        let mut screen = Screen {
            ui: &self.ui,
            spinner: None,
            out: io::stdout().lock(),
            started: false,
        };
        let result = self.session.reply(&mut screen, cancel);
        screen.prompt_done();
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
                format!(
                    "last reply: {last}\ncontext:    {} of {} tokens in use\nmessages:   {}",
                    s.n_cached(),
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

/// A file's text as a message: it must be text.
pub fn read_message_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))?;
    if text.trim().is_empty() {
        return Err(anyhow!("{} is empty", path.display()));
    }
    Ok(text)
}
