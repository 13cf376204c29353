//! One chat with one model: the conversation, the KV cache of what was last
//! rendered, and how a reply is made. Each turn renders the whole
//! conversation again and re-uses the cache for the longest common token
//! prefix, so templates may rewrite history freely.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};

use crate::chat::conversation::Conversation;
use crate::chat::stop::StopMatcher;
use crate::chat::template::{ChatTemplate, Message};
use crate::engine::sampler::{Sampler, SamplingParams};
use crate::model::{Model, State, MAX_BATCH};
use crate::tokenizer::{TokenId, Tokenizer, Utf8Stream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its turn (an end-of-generation token or stop string).
    EndOfTurn,
    /// `-n/--n-predict` tokens were written.
    Limit,
    /// The user pressed Ctrl-C.
    Interrupted,
    /// Nothing older was left to drop and the context is full.
    ContextFull,
}

#[derive(Clone, Debug)]
pub struct ReplyStats {
    /// Prompt tokens run through the model this turn (not the re-used ones).
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub prompt_secs: f64,
    pub generated_tokens: usize,
    pub generation_secs: f64,
    pub stop: StopReason,
}

/// What the front end shows while a reply is made.
pub trait Observer {
    /// The prompt is about to be run (`n` tokens); a spinner may start.
    fn prompt_started(&mut self, _n: usize) {}
    /// The first reply text is about to appear; the spinner stops.
    fn prompt_done(&mut self) {}
    /// Reply text, as it is made.
    fn text(&mut self, text: &str) -> Result<()>;
    /// A warning for stderr (older turns dropped, a full context).
    fn warn(&mut self, message: &str);
}

pub struct ChatSession {
    pub model: Model,
    pub tok: Tokenizer,
    pub template: ChatTemplate,
    pub conversation: Conversation,
    pub sampler: Sampler,
    /// Tokens a reply may have at most (None: until the turn ends).
    pub n_predict: Option<usize>,
    pub ignore_eos: bool,
    /// Print each rendered prompt on stderr (`--verbose-prompt`).
    pub verbose_prompt: bool,
    pub last_stats: Option<ReplyStats>,
    stop_strings: Vec<String>,
    stop_tokens: Vec<TokenId>,
    bos_text: String,
    eos_text: String,
    state: State,
    /// The tokens whose keys and values are in `state`, in order.
    cached: Vec<TokenId>,
}

impl ChatSession {
    pub fn new(
        model: Model,
        tok: Tokenizer,
        template: ChatTemplate,
        extra_stops: &[String],
        n_ctx: usize,
        sampling: SamplingParams,
    ) -> ChatSession {
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
        let state = model.new_state(n_ctx);
        ChatSession {
            model,
            tok,
            template,
            conversation: Conversation::default(),
            sampler: Sampler::new(sampling),
            n_predict: None,
            ignore_eos: false,
            verbose_prompt: false,
            last_stats: None,
            stop_strings,
            stop_tokens,
            bos_text,
            eos_text,
            state,
            cached: Vec::new(),
        }
    }

    pub fn n_ctx(&self) -> usize {
        self.state.kv.n_ctx
    }

    /// Tokens in the KV cache now.
    pub fn n_cached(&self) -> usize {
        self.cached.len()
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

    /// The text the model sees for `messages`, ending with the assistant's
    /// cue.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        self.template
            .render(messages, true, &self.bos_text, &self.eos_text)
    }

    /// The tokens of the rendered conversation. A template that writes the
    /// BOS token itself does not get a second one from the tokenizer.
    /// Control-token text inside a message stays text: only the template
    /// writes turn markers.
    pub fn prompt_tokens(&self, conversation: &Conversation) -> Result<Vec<TokenId>> {
        let messages = conversation.to_messages();
        let rendered = self.render(&messages)?;
        let text = self.without_bos(&rendered);
        self.tok
            .encode_chat(text, true, &self.message_spans(text, &messages))
    }

    fn without_bos<'t>(&self, text: &'t str) -> &'t str {
        match text.strip_prefix(self.bos_text.as_str()) {
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
    /// Answers the conversation's last (user) message, appending the reply
    /// (whole or, when stopped, partial) to the conversation.
    pub fn reply(&mut self, ui: &mut dyn Observer, cancel: &AtomicBool) -> Result<ReplyStats> {
        let mut prompt = self.fit_prompt(ui, &[])?;
        if self.verbose_prompt {
            crate::chat::ui::err_line(&self.render(&self.conversation.to_messages())?);
        }
        ui.prompt_started(prompt.len());
        let t_prompt = Instant::now();
        let (processed, reused, cancelled) = self.sync(&prompt, cancel)?;
        // As llama.cpp's server: the penalties look back over the prompt too.
        self.sampler.reset();
        prompt.iter().for_each(|&t| self.sampler.accept(t));
        let prompt_secs = t_prompt.elapsed().as_secs_f64();
        ui.prompt_done();

        let mut stats = ReplyStats {
            prompt_tokens: processed,
            reused_tokens: reused,
            prompt_secs,
            generated_tokens: 0,
            generation_secs: 0.0,
            stop: StopReason::Interrupted,
        };
        let mut text = String::new();
        let mut generated: Vec<TokenId> = Vec::new();
        if !cancelled {
            let t_gen = Instant::now();
            let result = self.generate(ui, cancel, &mut prompt, &mut generated, &mut text);
            stats.generation_secs = t_gen.elapsed().as_secs_f64();
            stats.generated_tokens = generated.len();
            match result {
                Ok(stop) => stats.stop = stop,
                Err(e) => {
                    // Keep what was written (a closed stdout, a full disk).
                    self.conversation.push("assistant", text);
                    return Err(e);
                }
            }
        }
        self.conversation.push("assistant", text);
        self.last_stats = Some(stats.clone());
        Ok(stats)
    }

    /// The prompt tokens of the conversation, after dropping the oldest
    /// exchanges until the prompt, `extra` tokens and room to reply fit.
    fn fit_prompt(&mut self, ui: &mut dyn Observer, extra: &[TokenId]) -> Result<Vec<TokenId>> {
        let n_ctx = self.n_ctx();
        let room = self.n_predict.unwrap_or(n_ctx / 4).clamp(1, n_ctx / 4 + 1);
        // Turns are dropped from a copy: a message that cannot fit at all
        // leaves the conversation as it was.
        let mut fitted = self.conversation.clone();
        loop {
            let prompt = self.prompt_tokens(&fitted)?;
            let need = prompt.len() + extra.len();
            if need + room <= n_ctx || (need < n_ctx && fitted.messages.len() <= 1) {
                let dropped = self.conversation.messages.len() - fitted.messages.len();
                if dropped > 0 {
                    ui.warn(&format!(
                        "llm: the context is full: dropped the {dropped} oldest message{} (the system prompt stays)",
                        if dropped == 1 { "" } else { "s" }
                    ));
                }
                self.conversation = fitted;
                return Ok(prompt);
            }
            if !fitted.drop_oldest() {
                bail!(
                    "the message needs {need} tokens with the system prompt and template, but the context holds {n_ctx} (raise -c/--ctx-size)"
                );
            }
        }
    }

    /// Brings the KV cache to `tokens`: keeps the longest common prefix with
    /// what is cached and runs the rest. Returns (tokens run, tokens re-used,
    /// cancelled).
    fn sync(&mut self, tokens: &[TokenId], cancel: &AtomicBool) -> Result<(usize, usize, bool)> {
        let mut keep = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        // The last token is always run again: its logits start the reply.
        keep = keep.min(tokens.len().saturating_sub(1));
        if !self.state.rewind(keep) {
            keep = 0;
            self.state.rewind(0);
        }
        self.cached.truncate(keep);
        let mut run = 0;
        for chunk in tokens[keep..].chunks(MAX_BATCH) {
            if cancel.load(Ordering::Relaxed) {
                return Ok((run, keep, true));
            }
            self.model.forward(&mut self.state, chunk, false)?;
            self.cached.extend_from_slice(chunk);
            run += chunk.len();
        }
        Ok((run, keep, false))
    }

    fn generate(
        &mut self,
        ui: &mut dyn Observer,
        cancel: &AtomicBool,
        prompt: &mut Vec<TokenId>,
        generated: &mut Vec<TokenId>,
        text: &mut String,
    ) -> Result<StopReason> {
        // Bytes of each token, held back while a character is cut (the
        // tokenizer's own stream decoder would borrow it for the whole loop).
        let mut decoder = Utf8Stream::new();
        let mut stops = StopMatcher::new(&self.stop_strings);
        let limit = self.n_predict.unwrap_or(usize::MAX);
        let stop = loop {
            if cancel.load(Ordering::Relaxed) {
                break StopReason::Interrupted;
            }
            if generated.len() >= limit {
                break StopReason::Limit;
            }
            if self.ignore_eos {
                // As llama.cpp does: the end is made impossible, not skipped.
                for (id, l) in self.state.logits.iter_mut().enumerate() {
                    if self.tok.is_eog(id as TokenId) || self.stop_tokens.contains(&(id as u32)) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            let next = self.sampler.sample(&self.state.logits);
            if self.tok.is_eog(next) || self.stop_tokens.contains(&next) {
                break StopReason::EndOfTurn;
            }
            self.sampler.accept(next);
            generated.push(next);
            let (shown, hit) = stops.push(&decoder.push(self.tok.token_bytes(next, false)));
            text.push_str(&shown);
            ui.text(&shown)?;
            if hit {
                break StopReason::EndOfTurn;
            }
            if generated.len() >= limit {
                break StopReason::Limit;
            }
            if self.state.n_past >= self.n_ctx() && !self.shift(ui, prompt, generated, cancel)? {
                break StopReason::ContextFull;
            }
            if cancel.load(Ordering::Relaxed) {
                break StopReason::Interrupted;
            }
            self.model.forward(&mut self.state, &[next], false)?;
            self.cached.push(next);
        };
        if stop != StopReason::EndOfTurn || !text.is_empty() {
            let (shown, _) = stops.push(&decoder.finish());
            let rest = shown + &stops.finish();
            text.push_str(&rest);
            ui.text(&rest)?;
        }
        if stop == StopReason::ContextFull {
            ui.warn(&format!(
                "llm: the context is full ({} tokens) and there is no older turn to drop; the reply stops here (raise -c/--ctx-size)",
                self.n_ctx()
            ));
        }
        Ok(stop)
    }

    /// Makes room in a full context mid-reply: drops the oldest exchanges,
    /// renders the conversation again and runs it with the reply so far.
    /// False when nothing can be dropped.
    fn shift(
        &mut self,
        ui: &mut dyn Observer,
        prompt: &mut Vec<TokenId>,
        generated: &[TokenId],
        cancel: &AtomicBool,
    ) -> Result<bool> {
        // The reply so far minus its last token, which is run next.
        let fed = &generated[..generated.len() - 1];
        if self.conversation.messages.len() <= 1 {
            return Ok(false);
        }
        let new_prompt = match self.fit_prompt(ui, fed) {
            Ok(p) if p.len() + fed.len() < self.n_ctx() && p.len() < prompt.len() => p,
            _ => return Ok(false),
        };
        *prompt = new_prompt;
        let mut all = prompt.clone();
        all.extend_from_slice(fed);
        let (_, _, cancelled) = self.sync(&all, cancel)?;
        Ok(!cancelled)
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
