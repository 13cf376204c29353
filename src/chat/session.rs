//! One chat with one model: the conversation, its template and stop
//! strings, on top of the engine's session. Each turn renders the whole
//! conversation again and the session re-uses its cache for the longest
//! common token prefix, so templates may rewrite history freely. When the
//! context fills up, the oldest exchanges are dropped (here: that is chat
//! policy) and the session is synced to what remains.

use std::ops::Range;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Result};

use crate::chat::conversation::Conversation;
use crate::chat::repeat::{Loop, LoopGuard};
use crate::chat::stop::StopMatcher;
use crate::chat::template::{ChatTemplate, Message};
use crate::chat::think::{self, Part, ThinkSplitter};
use crate::engine::sampler::{Sampler, SamplingParams};
use crate::engine::session::{Events, Flow, Generate, OnEnd, Session};
pub use crate::engine::session::{ReplyStats, StopReason};
use crate::model::Model;
use crate::tokenizer::{TokenId, Tokenizer, Utf8Stream};

/// What the front end shows while a reply is made.
pub trait Observer {
    /// The prompt is about to be run (`n` tokens); a spinner may start.
    fn prompt_started(&mut self, _n: usize) {}
    /// The first reply text is about to appear; the spinner stops.
    fn prompt_done(&mut self) {}
    /// Reply text, as it is made.
    fn text(&mut self, text: &str) -> Result<()>;
    /// A reasoning model's thinking (`<think>...</think>`), as it is made;
    /// never part of the answer kept in the conversation.
    fn thinking(&mut self, _text: &str) -> Result<()> {
        Ok(())
    }
    /// A warning for stderr (older turns dropped, a full context).
    fn warn(&mut self, message: &str);
}

pub struct ChatSession {
    pub tok: Tokenizer,
    pub template: ChatTemplate,
    pub conversation: Conversation,
    pub sampler: Sampler,
    /// Tokens a reply may have at most (None: until the turn ends).
    pub n_predict: Option<usize>,
    pub ignore_eos: bool,
    /// Print each rendered prompt on stderr (`--verbose-prompt`).
    pub verbose_prompt: bool,
    /// Cut a reply that keeps repeating itself. Off unless the caller asks:
    /// `llm chat` turns it on when the user gave no `-n` of their own.
    pub loop_check: bool,
    /// The loop that cut the last reply, if one did.
    pub last_loop: Option<Loop>,
    pub last_stats: Option<ReplyStats>,
    stop_strings: Vec<String>,
    stop_tokens: Vec<TokenId>,
    bos_text: String,
    eos_text: String,
    engine: Session,
}

impl ChatSession {
    pub fn new(
        model: Model,
        tok: Tokenizer,
        template: ChatTemplate,
        extra_stops: &[String],
        n_ctx: usize,
        sampling: SamplingParams,
    ) -> anyhow::Result<ChatSession> {
        let text_of = |id: Option<TokenId>| {
            id.and_then(|id| tok.token_text(id))
                .unwrap_or_default()
                .to_string()
        };
        let (bos_text, eos_text) = (text_of(tok.bos()), text_of(tok.eos()));
        // A stop string that is one special token is matched as that token:
        // special tokens are never decoded into text.
        let mut stop_strings = Vec::new();
        let mut stop_tokens = Vec::new();
        for s in template.stop.iter().chain(extra_stops) {
            match tok
                .token_id(s)
                .filter(|&id| tok.token_attr(id).is_special())
            {
                Some(id) => stop_tokens.push(id),
                None if !s.is_empty() => stop_strings.push(s.clone()),
                None => {}
            }
        }
        stop_strings.sort();
        stop_strings.dedup();
        stop_tokens.sort_unstable();
        stop_tokens.dedup();
        Ok(ChatSession {
            tok,
            template,
            conversation: Conversation::default(),
            sampler: Sampler::new(sampling),
            n_predict: None,
            ignore_eos: false,
            verbose_prompt: false,
            loop_check: false,
            last_loop: None,
            last_stats: None,
            stop_strings,
            stop_tokens,
            bos_text,
            eos_text,
            engine: Session::new(model, n_ctx)?,
        })
    }

    pub fn model(&self) -> &Model {
        self.engine.model()
    }

    /// The engine session underneath (its cache, its logits).
    pub fn engine(&self) -> &Session {
        &self.engine
    }

    pub fn n_ctx(&self) -> usize {
        self.engine.n_ctx()
    }

    /// Tokens in the KV cache now.
    pub fn n_cached(&self) -> usize {
        self.engine.cached().len()
    }

    pub fn stop_strings(&self) -> impl Iterator<Item = String> + '_ {
        let tokens = self
            .stop_tokens
            .iter()
            .filter_map(|&id| self.tok.token_text(id).map(str::to_string));
        self.stop_strings.iter().cloned().chain(tokens)
    }

    pub fn bos_eos(&self) -> (&str, &str) {
        (&self.bos_text, &self.eos_text)
    }

    fn prompter(&self) -> Prompter<'_> {
        Prompter {
            tok: &self.tok,
            template: &self.template,
            bos_text: &self.bos_text,
            eos_text: &self.eos_text,
        }
    }

    /// The text the model sees for `messages`, ending with the assistant's
    /// cue.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        self.prompter().render(messages)
    }

    /// The tokens of the rendered conversation. A template that writes the
    /// BOS token itself does not get a second one from the tokenizer.
    /// Control-token text inside a message stays text: only the template
    /// writes turn markers.
    pub fn prompt_tokens(&self, conversation: &Conversation) -> Result<Vec<TokenId>> {
        self.prompter().prompt_tokens(conversation)
    }

    /// Answers the conversation's last (user) message, appending the reply
    /// (whole or, when stopped, partial) to the conversation.
    pub fn reply(&mut self, ui: &mut dyn Observer, cancel: &AtomicBool) -> Result<ReplyStats> {
        self.last_loop = None;
        let n_ctx = self.n_ctx();
        // Disjoint borrows: the turn writes the conversation while the
        // engine and the sampler run.
        let prompter = Prompter {
            tok: &self.tok,
            template: &self.template,
            bos_text: &self.bos_text,
            eos_text: &self.eos_text,
        };
        let fit = Fit {
            n_ctx,
            n_predict: self.n_predict,
        };
        let prompt = fit.prompt(&prompter, &mut self.conversation, ui, &[])?;
        let rendered = prompter.render(&self.conversation.to_messages())?;
        if self.verbose_prompt {
            crate::chat::ui::err_line(&rendered);
        }
        let opens_thinking = think::prompt_opens_thinking(&rendered);
        let (tok, stop_tokens) = (&self.tok, &self.stop_tokens);
        let is_end = |id: TokenId| tok.is_eog(id) || stop_tokens.contains(&id);
        let opts = Generate {
            limit: self.n_predict,
            is_end: &is_end,
            on_end: if self.ignore_eos {
                OnEnd::Forbid
            } else {
                OnEnd::Stop
            },
        };
        let mut turn = Turn {
            ui,
            tok,
            // Bytes of each token, held back while a character is cut (the
            // tokenizer's own stream decoder would borrow it for the turn).
            decoder: Utf8Stream::new(),
            stops: StopMatcher::new(&self.stop_strings),
            text: String::new(),
            think: ThinkSplitter::new(opens_thinking),
            answer: String::new(),
            prompted: false,
            prompter,
            fit,
            conversation: &mut self.conversation,
            prompt: prompt.clone(),
            guard: self.loop_check.then(LoopGuard::default),
            looped: None,
        };
        let result = self
            .engine
            .complete(&prompt, &mut self.sampler, &opts, cancel, &mut turn)
            .and_then(|stats| turn.finish(stats.stop).map(|()| stats));
        let stats = match result {
            Ok(stats) => stats,
            Err(e) => {
                // Keep what was written (a closed stdout, a full disk); a
                // turn that failed before its reply began leaves nothing.
                if turn.prompted {
                    turn.conversation.push("assistant", turn.answer);
                }
                return Err(e);
            }
        };
        turn.conversation.push("assistant", turn.answer);
        self.last_loop = turn.looped;
        self.last_stats = Some(stats.clone());
        Ok(stats)
    }
}

/// Turns a conversation into prompt tokens.
struct Prompter<'a> {
    tok: &'a Tokenizer,
    template: &'a ChatTemplate,
    bos_text: &'a str,
    eos_text: &'a str,
}

impl Prompter<'_> {
    fn render(&self, messages: &[Message]) -> Result<String> {
        self.template
            .render(messages, true, self.bos_text, self.eos_text)
    }

    fn prompt_tokens(&self, conversation: &Conversation) -> Result<Vec<TokenId>> {
        let messages = conversation.to_messages();
        let rendered = self.render(&messages)?;
        // A template that writes nothing would get an empty reply to every
        // message, with no word of why.
        if rendered.trim().is_empty() {
            anyhow::bail!(
                "the chat template rendered an empty prompt for this conversation: nothing for the model to answer"
            );
        }
        let text = self.without_bos(&rendered);
        self.tok
            .encode_chat(text, true, &self.message_spans(text, &messages))
    }

    fn without_bos<'t>(&self, text: &'t str) -> &'t str {
        match text.strip_prefix(self.bos_text) {
            Some(rest) if self.tok.add_bos() && !self.bos_text.is_empty() => rest,
            _ => text,
        }
    }

    /// Where the messages' text sits in the rendered prompt `text`. The
    /// template is rendered again with a marker for each message; where
    /// putting the messages back in gives `text` exactly, the places are
    /// known. A template that changes messages (strips, splits) falls back
    /// to finding each message in order.
    fn message_spans(&self, text: &str, messages: &[Message]) -> Vec<Range<usize>> {
        const OPEN: char = '\u{F8FF}';
        const CLOSE: char = '\u{F8FE}';
        let marked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message {
                role: m.role.clone(),
                content: format!("{OPEN}{i}{CLOSE}"),
            })
            .collect();
        if let Ok(rendered) = self.render(&marked) {
            let mut rest = self.without_bos(&rendered);
            let mut rebuilt = String::with_capacity(text.len());
            let mut spans = Vec::new();
            let mut ok = true;
            while let Some(at) = rest.find(OPEN) {
                rebuilt.push_str(&rest[..at]);
                let after = &rest[at + OPEN.len_utf8()..];
                let Some(end) = after.find(CLOSE) else {
                    ok = false;
                    break;
                };
                let Some(m) = after[..end]
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| messages.get(i))
                else {
                    ok = false;
                    break;
                };
                spans.push(rebuilt.len()..rebuilt.len() + m.content.len());
                rebuilt.push_str(&m.content);
                rest = &after[end + CLOSE.len_utf8()..];
            }
            rebuilt.push_str(rest);
            if ok && rebuilt == text {
                return spans;
            }
        }
        find_in_order(text, messages)
    }
}

/// How much of a conversation fits in the context.
#[derive(Clone, Copy)]
struct Fit {
    n_ctx: usize,
    n_predict: Option<usize>,
}

impl Fit {
    /// The prompt tokens of `conversation`, after dropping its oldest
    /// exchanges until the prompt, `extra` tokens and room to reply fit.
    fn prompt(
        &self,
        prompter: &Prompter,
        conversation: &mut Conversation,
        ui: &mut dyn Observer,
        extra: &[TokenId],
    ) -> Result<Vec<TokenId>> {
        let n_ctx = self.n_ctx;
        self.refuse_what_cannot_fit(prompter, conversation)?;
        let room = self.n_predict.unwrap_or(n_ctx / 4).clamp(1, n_ctx / 4 + 1);
        // Turns are dropped from a copy: a message that cannot fit at all
        // leaves the conversation as it was.
        let mut fitted = conversation.clone();
        loop {
            let prompt = prompter.prompt_tokens(&fitted)?;
            let need = prompt.len() + extra.len();
            if need + room <= n_ctx || (need < n_ctx && fitted.messages.len() <= 1) {
                let dropped = conversation.messages.len() - fitted.messages.len();
                if dropped > 0 {
                    ui.warn(&format!(
                        "llm: the context is full: dropped the {dropped} oldest message{} (the system prompt stays)",
                        if dropped == 1 { "" } else { "s" }
                    ));
                }
                *conversation = fitted;
                return Ok(prompt);
            }
            if !fitted.drop_oldest() {
                bail!(
                    "the message needs {need} tokens with the system prompt and template, but the context holds {n_ctx} (raise -c/--ctx-size)"
                );
            }
        }
    }
}

impl Fit {
    /// Refuses at once a conversation whose newest message and system prompt
    /// (which are never dropped) cannot fit by their size alone, before
    /// spending seconds and gigabytes tokenizing, say, a 10 MB line. Each
    /// token stands for at most the longest token's bytes; the margin of 2
    /// leaves room for normalization that shortens text.
    fn refuse_what_cannot_fit(
        &self,
        prompter: &Prompter,
        conversation: &Conversation,
    ) -> Result<()> {
        let messages = conversation.to_messages();
        let kept: usize = messages
            .iter()
            .enumerate()
            .filter(|(i, m)| *i + 1 == messages.len() || m.role == "system")
            .map(|(_, m)| m.content.len())
            .sum();
        let at_least = kept / (2 * prompter.tok.longest_token_bytes());
        if at_least >= self.n_ctx {
            bail!(
                "the message is too long: {} bytes need at least {at_least} tokens, but the context holds {} (raise -c/--ctx-size)",
                kept,
                self.n_ctx
            );
        }
        Ok(())
    }
}

/// One reply being made: its text, shown as it comes, and the conversation
/// it may shorten when the context fills up.
struct Turn<'a, 'u> {
    ui: &'u mut dyn Observer,
    tok: &'a Tokenizer,
    decoder: Utf8Stream,
    stops: StopMatcher,
    /// All of the reply so far, thinking included.
    text: String,
    think: ThinkSplitter,
    /// The reply less its thinking: what the conversation keeps.
    answer: String,
    /// The prompt is in the cache: from here on a failed turn keeps its text.
    prompted: bool,
    prompter: Prompter<'a>,
    fit: Fit,
    conversation: &'a mut Conversation,
    /// The prompt now in the cache, before the reply.
    prompt: Vec<TokenId>,
    guard: Option<LoopGuard>,
    looped: Option<Loop>,
}

impl Turn<'_, '_> {
    fn show(&mut self, text: &str) -> Result<()> {
        self.text.push_str(text);
        let parts = self.think.push(text);
        self.show_parts(parts)
    }

    fn show_parts(&mut self, parts: Vec<(Part, String)>) -> Result<()> {
        for (part, text) in parts {
            match part {
                Part::Thinking => self.ui.thinking(&text)?,
                Part::Answer => {
                    self.answer.push_str(&text);
                    self.ui.text(&text)?;
                }
            }
        }
        Ok(())
    }

    /// Shows what was held back (a cut character, a possible stop string)
    /// and says why a full context ended the reply.
    fn finish(&mut self, stop: StopReason) -> Result<()> {
        if stop != StopReason::EndOfTurn || !self.text.is_empty() {
            let (shown, _) = self.stops.push(&self.decoder.finish());
            let rest = shown + &self.stops.finish();
            self.show(&rest)?;
        }
        let rest = self.think.finish();
        self.show_parts(rest)?;
        if stop == StopReason::ContextFull {
            self.ui.warn(&format!(
                "llm: the context is full ({} tokens) and there is no older turn to drop; the reply stops here (raise -c/--ctx-size)",
                self.fit.n_ctx
            ));
        }
        Ok(())
    }
}

impl Events for Turn<'_, '_> {
    fn prompt_started(&mut self, n: usize) {
        self.ui.prompt_started(n);
    }

    fn prompt_done(&mut self) {
        self.prompted = true;
        self.ui.prompt_done();
    }

    fn token(&mut self, id: TokenId) -> Result<Flow> {
        let bytes = self.decoder.push(self.tok.token_bytes(id, false));
        let (shown, hit) = self.stops.push(&bytes);
        self.show(&shown)?;
        if let Some(found) = self.guard.as_mut().and_then(|g| g.push(id)) {
            self.looped = Some(found);
            return Ok(Flow::Stop);
        }
        Ok(if hit { Flow::Stop } else { Flow::Continue })
    }

    /// Makes room in a full context mid-reply: drops the oldest exchanges,
    /// renders the conversation again and runs it with the reply so far.
    /// False when nothing can be dropped.
    fn context_full(
        &mut self,
        session: &mut Session,
        generated: &[TokenId],
        cancel: &AtomicBool,
    ) -> Result<bool> {
        // The reply so far minus its last token, which is run next.
        let fed = &generated[..generated.len() - 1];
        if self.conversation.messages.len() <= 1 {
            return Ok(false);
        }
        let new_prompt = match self
            .fit
            .prompt(&self.prompter, self.conversation, self.ui, fed)
        {
            Ok(p) if p.len() + fed.len() < self.fit.n_ctx && p.len() < self.prompt.len() => p,
            _ => return Ok(false),
        };
        self.prompt = new_prompt;
        let mut all = self.prompt.clone();
        all.extend_from_slice(fed);
        let synced = session.sync(&all, cancel)?;
        Ok(!synced.cancelled)
    }
}

/// Each message's text found in the rendered prompt, in order; a message
/// the template changed is looked for trimmed, and skipped if not there.
fn find_in_order(text: &str, messages: &[Message]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut from = 0;
    for m in messages {
        for needle in [m.content.as_str(), m.content.trim()] {
            if needle.is_empty() {
                continue;
            }
            if let Some(at) = text[from..].find(needle) {
                let start = from + at;
                spans.push(start..start + needle.len());
                from = start + needle.len();
                break;
            }
        }
    }
    spans
}
