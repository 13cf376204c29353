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
    // The state first: dropped before the model whose devices it lives on.
    state: State,
    model: Model,
    n_ctx: usize,
    /// The tokens whose keys and values are in `state`, in order.
    cached: Vec<TokenId>,
}

impl Session {
    pub fn new(model: Model, n_ctx: usize) -> Result<Session> {
        let state = model.new_state(n_ctx)?;
        Ok(Session {
            model,
            state,
            n_ctx,
            cached: Vec::new(),
        })
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
    pub fn set_context(&mut self, n_ctx: usize) -> Result<()> {
        if n_ctx != self.n_ctx {
            self.replace_state(n_ctx)?;
            self.n_ctx = n_ctx;
            self.cached.clear();
        }
        self.clear()
    }

    /// A fresh state, the old one's device memory freed first so that both
    /// never need to fit at once.
    fn replace_state(&mut self, n_ctx: usize) -> Result<()> {
        self.state.release();
        self.state = self.model.new_state(n_ctx)?;
        Ok(())
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
    pub fn clear(&mut self) -> Result<()> {
        self.cached.clear();
        if !self.state.rewind(0) {
            self.replace_state(self.n_ctx)?;
        }
        Ok(())
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
            self.clear()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sampler::SamplingParams;
    use crate::format::gguf::{Array, Metadata, Value};
    use crate::model::synth::{synthesize, Spec};

    /// A tiny random model: `gemma3` has a sliding window of 8, so its
    /// local layers keep a ring of 8 + MAX_BATCH cells.
    fn model(arch: &str) -> Model {
        let mut vocab = Metadata::default();
        vocab.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String((0..64).map(|i| format!("t{i}")).collect())),
        );
        let spec = Spec {
            arch: arch.into(),
            weight: ggml::GgmlType::Q8_0,
            n_layer: 2,
            n_embd: 64,
            n_head: 2,
            n_head_kv: 1,
            n_ff: 64,
            n_ctx: 2048,
            tied: true,
            seed: 3,
            longrope_orig: None,
            rope_scaling: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        synthesize(&spec, &vocab).unwrap().write_to(&path).unwrap();
        Model::load(&path, 1).unwrap()
    }

    fn tokens(n: usize, salt: usize) -> Vec<TokenId> {
        (0..n).map(|i| ((i * 7 + salt) % 64) as TokenId).collect()
    }

    static NO: AtomicBool = AtomicBool::new(false);

    /// The logits of `prompt` run in a fresh cache.
    fn fresh(session: &mut Session, prompt: &[TokenId]) -> Vec<f32> {
        session.clear().unwrap();
        session.prefill(prompt, &NO).unwrap();
        session.logits().to_vec()
    }

    #[test]
    fn sync_reuses_the_common_prefix_and_agrees_with_a_fresh_run() {
        let mut s = Session::new(model("llama"), 64).unwrap();
        let first = tokens(20, 1);
        let synced = s.sync(&first, &NO).unwrap();
        assert_eq!((synced.run, synced.reused), (20, 0));
        let mut second = first[..12].to_vec();
        second.extend(tokens(5, 9));
        let synced = s.sync(&second, &NO).unwrap();
        assert_eq!((synced.run, synced.reused), (5, 12));
        assert_eq!(s.cached(), second.as_slice());
        let reused = s.logits().to_vec();
        assert_eq!(reused, fresh(&mut s, &second));
        // The same prompt again: its last token runs again for its logits.
        let again = s.sync(&second, &NO).unwrap();
        assert_eq!((again.run, again.reused), (1, 16));
    }

    #[test]
    fn a_ring_that_moved_on_restarts_from_nothing() {
        let mut s = Session::new(model("gemma3"), 1024).unwrap();
        let long = tokens(700, 2);
        s.sync(&long, &NO).unwrap();
        // Rewinding 690 tokens would need cells the ring has overwritten.
        assert!(!s.truncate(10));
        assert_eq!(s.cached().len(), 700);
        let mut short = long[..10].to_vec();
        short.extend(tokens(4, 5));
        let synced = s.sync(&short, &NO).unwrap();
        assert_eq!((synced.run, synced.reused), (14, 0));
        let restarted = s.logits().to_vec();
        assert_eq!(restarted, fresh(&mut s, &short));
        // A short step back inside the window is rewound.
        s.sync(&tokens(30, 2), &NO).unwrap();
        assert!(s.truncate(25));
    }

    struct Count {
        seen: Vec<TokenId>,
        stop_after: Option<usize>,
        room_made: usize,
    }

    impl Events for Count {
        fn token(&mut self, id: TokenId) -> Result<Flow> {
            self.seen.push(id);
            Ok(match self.stop_after {
                Some(n) if self.seen.len() >= n => Flow::Stop,
                _ => Flow::Continue,
            })
        }

        fn context_full(
            &mut self,
            session: &mut Session,
            generated: &[TokenId],
            cancel: &AtomicBool,
        ) -> Result<bool> {
            if self.room_made > 0 {
                return Ok(false);
            }
            self.room_made += 1;
            // Keep the last 8 prompt tokens and the reply less its last token.
            let mut history = session.cached()[..8].to_vec();
            history.extend_from_slice(&generated[..generated.len() - 1]);
            Ok(!session.sync(&history, cancel)?.cancelled)
        }
    }

    fn greedy() -> Sampler {
        Sampler::new(SamplingParams {
            temp: 0.0,
            ..SamplingParams::default()
        })
    }

    fn reply(s: &mut Session, opts: &Generate, stop_after: Option<usize>) -> (ReplyStats, Count) {
        let mut events = Count {
            seen: Vec::new(),
            stop_after,
            room_made: 0,
        };
        let stats = s
            .complete(&tokens(10, 3), &mut greedy(), opts, &NO, &mut events)
            .unwrap();
        (stats, events)
    }

    #[test]
    fn limits_ends_and_a_full_context() {
        let mut s = Session::new(model("llama"), 24).unwrap();
        let never = |_: TokenId| false;
        let opts = |limit, is_end, on_end| Generate {
            limit,
            is_end,
            on_end,
        };
        let (stats, ev) = reply(&mut s, &opts(Some(5), &never, OnEnd::Stop), None);
        assert_eq!((stats.stop, stats.generated_tokens), (StopReason::Limit, 5));
        assert_eq!((stats.prompt_tokens, ev.seen.len()), (10, 5));

        let (stats, ev) = reply(&mut s, &opts(Some(5), &never, OnEnd::Stop), Some(2));
        assert_eq!((stats.stop, ev.seen.len()), (StopReason::EndOfTurn, 2));

        // The first greedy token, made an end token: stopped, forbidden, or
        // written.
        let first = reply(&mut s, &opts(Some(1), &never, OnEnd::Stop), None)
            .1
            .seen[0];
        let is_first = move |id: TokenId| id == first;
        let (stats, ev) = reply(&mut s, &opts(Some(3), &is_first, OnEnd::Stop), None);
        assert_eq!((stats.stop, ev.seen.len()), (StopReason::EndOfTurn, 0));
        let (_, ev) = reply(&mut s, &opts(Some(3), &is_first, OnEnd::Forbid), None);
        assert!(!ev.seen.contains(&first), "{:?}", ev.seen);
        let (_, ev) = reply(&mut s, &opts(Some(3), &is_first, OnEnd::Pass), None);
        assert_eq!(ev.seen[0], first);

        // 10 prompt tokens in 24: the 15th token finds it full (10 + 14
        // run); the caller makes room once (8 + the reply so far, 22 with
        // the 15th), and the 17th finds it full again.
        let (stats, ev) = reply(&mut s, &opts(None, &never, OnEnd::Stop), None);
        assert_eq!(stats.stop, StopReason::ContextFull);
        assert_eq!(ev.room_made, 1);
        assert_eq!(stats.generated_tokens, 17);
        assert!(s.is_full());
    }

    #[test]
    fn cancel_stops_before_the_prompt_runs() {
        let mut s = Session::new(model("llama"), 32).unwrap();
        let cancel = AtomicBool::new(true);
        let mut events = Count {
            seen: Vec::new(),
            stop_after: None,
            room_made: 0,
        };
        let never = |_: TokenId| false;
        let opts = Generate {
            limit: None,
            is_end: &never,
            on_end: OnEnd::Stop,
        };
        let stats = s
            .complete(&tokens(10, 3), &mut greedy(), &opts, &cancel, &mut events)
            .unwrap();
        assert_eq!(
            (stats.stop, stats.prompt_tokens),
            (StopReason::Interrupted, 0)
        );
        assert!(events.seen.is_empty() && s.cached().is_empty());
    }
}
