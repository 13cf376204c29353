//! One sequence on one model: prompt tokens in, sampled tokens out. The
//! session remembers which tokens its KV cache holds, so a new prompt that
//! shares a prefix with them runs only the rest. `chat`, `run` and `bench`
//! all drive the model through it: there is one token loop.
//!
//! What the caller shows, and what it does when the context fills up, comes
//! back through [`Events`]; the session knows nothing of templates, stop
//! strings or terminals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;

use crate::engine::sampler::Sampler;
use crate::model::{Model, State, MAX_BATCH};
use crate::tokenizer::TokenId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its turn (an end token, or the caller said stop).
    EndOfTurn,
    /// The token limit was reached.
    Limit,
    /// The cancel flag was raised (Ctrl-C).
    Interrupted,
    /// The context is full and the caller made no room.
    ContextFull,
}

/// What one reply cost.
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

/// The caller's answer to a generated token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// End the reply here (a stop string was written).
    Stop,
}

/// What an end token (end of generation, or a stop token) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnEnd {
    /// It ends the reply, unwritten.
    Stop,
    /// It cannot be sampled: its logit is made -inf (llama.cpp's
    /// `--ignore-eos`, which `chat` follows).
    Forbid,
    /// It is written like any other token (`run --ignore-eos`).
    Pass,
}

/// How a reply is generated.
pub struct Generate<'a> {
    /// Most tokens in the reply; None: until an end or a full context.
    pub limit: Option<usize>,
    /// The end tokens: end-of-generation tokens and any stop tokens.
    pub is_end: &'a dyn Fn(TokenId) -> bool,
    pub on_end: OnEnd,
}

/// The caller's side of a reply.
pub trait Events {
    /// The prompt is about to run (`n` tokens, re-used ones included).
    fn prompt_started(&mut self, _n: usize) {}
    /// The prompt is in the cache; generation starts.
    fn prompt_done(&mut self) {}
    /// A generated token, already in the sampler's history.
    fn token(&mut self, id: TokenId) -> Result<Flow>;
    /// The context is full mid-reply. The caller may make room by syncing
    /// `session` to a shorter history that ends with the reply so far less
    /// its last token (which the session runs next), and return true to go
    /// on; false stops the reply with [`StopReason::ContextFull`].
    fn context_full(
        &mut self,
        _session: &mut Session,
        _generated: &[TokenId],
        _cancel: &AtomicBool,
    ) -> Result<bool> {
        Ok(false)
    }
}

/// What bringing the cache to a token sequence took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synced {
    /// Tokens run through the model.
    pub run: usize,
    /// Tokens kept from the cache.
    pub reused: usize,
    /// The cancel flag stopped it part way (the cache holds what was run).
    pub cancelled: bool,
}

pub struct Session {
    model: Model,
    state: State,
    n_ctx: usize,
    /// The tokens whose keys and values are in `state`, in order.
    cached: Vec<TokenId>,
}

impl Session {
    pub fn new(model: Model, n_ctx: usize) -> Session {
        let state = model.new_state(n_ctx);
        Session {
            model,
            state,
            n_ctx,
            cached: Vec::new(),
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn into_model(self) -> Model {
        self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The tokens in the KV cache, in order.
    pub fn cached(&self) -> &[TokenId] {
        &self.cached
    }

    /// The logits after the last token run.
    pub fn logits(&self) -> &[f32] {
        &self.state.logits
    }

    /// No room for another token.
    pub fn is_full(&self) -> bool {
        self.state.n_past >= self.n_ctx
    }

    /// An empty cache of `n_ctx` tokens (a new allocation when the size
    /// changes).
    pub fn set_context(&mut self, n_ctx: usize) {
        if n_ctx != self.n_ctx {
            self.state = self.model.new_state(n_ctx);
            self.n_ctx = n_ctx;
            self.cached.clear();
        }
        self.clear();
    }

    /// Keeps the first `n` cached tokens. False, and the cache unchanged,
    /// when it cannot: a sliding-window ring has overwritten what attention
    /// at position `n` would need.
    pub fn truncate(&mut self, n: usize) -> bool {
        if n > self.cached.len() || !self.state.rewind(n) {
            return false;
        }
        self.cached.truncate(n);
        true
    }

    /// Empties the cache. A ring that will not rewind that far is replaced
    /// by a fresh one.
    pub fn clear(&mut self) {
        if !self.state.rewind(0) {
            self.state = self.model.new_state(self.n_ctx);
        }
        self.cached.clear();
    }

    /// Runs `tokens` after the cached ones, a batch at a time, checking
    /// `cancel` before each batch. Returns (tokens run, cancelled).
    pub fn prefill(&mut self, tokens: &[TokenId], cancel: &AtomicBool) -> Result<(usize, bool)> {
        let mut run = 0;
        for chunk in tokens.chunks(MAX_BATCH) {
            if cancel.load(Ordering::Relaxed) {
                return Ok((run, true));
            }
            self.model.forward(&mut self.state, chunk, false)?;
            self.cached.extend_from_slice(chunk);
            run += chunk.len();
        }
        Ok((run, false))
    }

    /// Runs one token after the cached ones.
    pub fn decode(&mut self, token: TokenId) -> Result<()> {
        self.model.forward(&mut self.state, &[token], false)?;
        self.cached.push(token);
        Ok(())
    }

    /// Brings the cache to `tokens`: keeps the longest common prefix with
    /// what is cached and runs the rest; starts again from nothing when the
    /// cache cannot be rewound to that prefix.
    pub fn sync(&mut self, tokens: &[TokenId], cancel: &AtomicBool) -> Result<Synced> {
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        // The last token is always run again: its logits start the reply.
        let mut keep = common.min(tokens.len().saturating_sub(1));
        if !self.truncate(keep) {
            keep = 0;
            self.clear();
        }
        let (run, cancelled) = self.prefill(&tokens[keep..], cancel)?;
        Ok(Synced {
            run,
            reused: keep,
            cancelled,
        })
    }

    /// Samples tokens after the cached ones until an end, the limit, a full
    /// context the caller makes no room in, or `cancel`. `generated` is the
    /// reply so far; `resume` is its last token when it has not been run yet
    /// (going on after [`Events::context_full`]).
    pub fn generate(
        &mut self,
        sampler: &mut Sampler,
        opts: &Generate,
        resume: Option<TokenId>,
        generated: &mut Vec<TokenId>,
        cancel: &AtomicBool,
        events: &mut dyn Events,
    ) -> Result<StopReason> {
        if let Some(t) = resume {
            if cancel.load(Ordering::Relaxed) {
                return Ok(StopReason::Interrupted);
            }
            self.decode(t)?;
        }
        let limit = opts.limit.unwrap_or(usize::MAX);
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Ok(StopReason::Interrupted);
            }
            if generated.len() >= limit {
                return Ok(StopReason::Limit);
            }
            if opts.on_end == OnEnd::Forbid {
                // As llama.cpp does: the end is made impossible, not skipped.
                for (id, l) in self.state.logits.iter_mut().enumerate() {
                    if (opts.is_end)(id as TokenId) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            let next = sampler.sample(&self.state.logits);
            if opts.on_end != OnEnd::Pass && (opts.is_end)(next) {
                return Ok(StopReason::EndOfTurn);
            }
            sampler.accept(next);
            generated.push(next);
            if events.token(next)? == Flow::Stop {
                return Ok(StopReason::EndOfTurn);
            }
            if generated.len() >= limit {
                return Ok(StopReason::Limit);
            }
            if self.is_full() {
                return Ok(StopReason::ContextFull);
            }
            if cancel.load(Ordering::Relaxed) {
                return Ok(StopReason::Interrupted);
            }
            self.decode(next)?;
        }
    }

    /// A whole reply: the prompt is synced with the cache (re-using the
    /// common prefix), the sampler's history set to it, and tokens generated
    /// as [`Session::generate`] does, giving the caller the chance to make
    /// room each time the context fills up.
    pub fn complete(
        &mut self,
        prompt: &[TokenId],
        sampler: &mut Sampler,
        opts: &Generate,
        cancel: &AtomicBool,
        events: &mut dyn Events,
    ) -> Result<ReplyStats> {
        events.prompt_started(prompt.len());
        let t_prompt = Instant::now();
        let synced = self.sync(prompt, cancel)?;
        // As llama.cpp's server: the penalties look back over the prompt too.
        sampler.reset();
        prompt.iter().for_each(|&t| sampler.accept(t));
        let prompt_secs = t_prompt.elapsed().as_secs_f64();
        events.prompt_done();

        let mut stats = ReplyStats {
            prompt_tokens: synced.run,
            reused_tokens: synced.reused,
            prompt_secs,
            generated_tokens: 0,
            generation_secs: 0.0,
            stop: StopReason::Interrupted,
        };
        if synced.cancelled {
            return Ok(stats);
        }
        let t_gen = Instant::now();
        let mut generated = Vec::new();
        let mut resume = None;
        let stop = loop {
            let stop = self.generate(sampler, opts, resume, &mut generated, cancel, events)?;
            if stop != StopReason::ContextFull || !events.context_full(self, &generated, cancel)? {
                break stop;
            }
            resume = generated.last().copied();
        };
        stats.generation_secs = t_gen.elapsed().as_secs_f64();
        stats.generated_tokens = generated.len();
        stats.stop = stop;
        Ok(stats)
    }
}
