//! Perplexity as llama.cpp's llama-perplexity measures it: the text's tokens
//! (with BOS where the model adds one) in chunks of `n_ctx`, each chunk's
//! first token made BOS, each chunk run from an empty cache and scored on
//! its second half, the log-softmax taken as llama.cpp takes it.

use anyhow::{bail, Result};

use crate::model::forward::{Model, State};

/// One row's log-softmax as llama.cpp takes it: the largest logit in f32,
/// the exponentials summed in f64. Computed once a position, for every use.
#[derive(Clone, Copy, Debug)]
pub struct LogSoftmax {
    max: f32,
    log_sum: f64,
}

impl LogSoftmax {
    pub fn of(logits: &[f32]) -> LogSoftmax {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
        LogSoftmax {
            max,
            log_sum: sum.ln(),
        }
    }

    /// log p(token `i`).
    pub fn log_prob(&self, logits: &[f32], i: u32) -> f64 {
        f64::from(logits[i as usize] - self.max) - self.log_sum
    }
}

/// Negative log-likelihoods summed over the tokens scored so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scored {
    pub nll: f64,
    pub nll2: f64,
    pub count: usize,
}

impl Scored {
    /// Adds the token `target` scored by one position's `logits`.
    pub fn add(&mut self, logits: &[f32], target: u32) {
        self.add_logprob(LogSoftmax::of(logits).log_prob(logits, target));
    }

    /// Adds a token's log-probability as another run saved it.
    pub fn add_logprob(&mut self, log_p: f64) {
        self.nll -= log_p;
        self.nll2 += log_p * log_p;
        self.count += 1;
    }

    /// e to the mean negative log-likelihood.
    pub fn ppl(&self) -> f64 {
        (self.nll / self.count.max(1) as f64).exp()
    }

    /// llama.cpp's "+/-": the perplexity times the standard error of the
    /// mean negative log-likelihood; None until it is defined.
    pub fn uncertainty(&self) -> Option<f64> {
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        (self.count > 1 && var > 0.0).then(|| self.ppl() * (var / (n - 1.0)).sqrt())
    }
}

/// The chunks `tokens` makes at `n_ctx` (at most `limit`); llama.cpp's
/// error where there are fewer than two.
pub fn chunk_count(tokens: usize, n_ctx: usize, limit: Option<usize>) -> Result<usize> {
    if n_ctx < 2 {
        bail!("-c {n_ctx}: perplexity needs a context of at least 2 tokens");
    }
    if tokens < 2 * n_ctx {
        bail!(
            "the text has {tokens} tokens; perplexity at a context of {n_ctx} needs at least {} (use a longer text or a smaller -c)",
            2 * n_ctx
        );
    }
    let n = tokens / n_ctx;
    Ok(limit.map_or(n, |l| l.min(n)).max(1))
}

/// Runs one chunk of `n_ctx` tokens from an empty cache (its first token
/// replaced by `bos`, where given) and hands each position of its second
/// half to `visit` with its logits and the token that came next, in order.
pub fn score_chunk(
    model: &Model,
    state: &mut Option<State>,
    chunk: &[u32],
    bos: Option<u32>,
    mut visit: impl FnMut(&[f32], u32) -> Result<()>,
) -> Result<()> {
    let n_ctx = chunk.len();
    let first = n_ctx / 2;
    let mut tokens = chunk.to_vec();
    if let Some(b) = bos {
        tokens[0] = b;
    }
    // A cache that will not rewind to empty (a sliding-window ring) is
    // replaced by a fresh one.
    if !state.as_mut().is_some_and(|s| s.rewind(0)) {
        *state = Some(model.new_state(n_ctx)?);
    }
    let Some(state) = state.as_mut() else {
        unreachable!("a state was just made");
    };
    // Logits of the second half only: positions first.. score first + 1..
    model.forward(state, &tokens[..first], false)?;
    model.forward(state, &tokens[first..], true)?;
    let n_vocab = model.config.shape.n_vocab;
    for (i, &target) in tokens[first + 1..].iter().enumerate() {
        visit(&state.logits[i * n_vocab..(i + 1) * n_vocab], target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        let mut s = Scored::default();
        for t in 0..10 {
            s.add(&[0.5; 40], t);
        }
        assert!((s.ppl() - 40.0).abs() < 1e-9, "{}", s.ppl());
        // Every token equally likely: no spread, so no uncertainty yet.
        assert_eq!(s.uncertainty(), None);
    }

    #[test]
    fn the_uncertainty_is_the_standard_error() {
        let mut s = Scored::default();
        // log p of 0 and of -ln 3 (one token of three at 1/3 vs certain).
        s.add(&[0.0, -100.0, -100.0], 0);
        s.add(&[0.0, 0.0, 0.0], 1);
        let nll = [0.0f64, 3f64.ln()];
        let mean = (nll[0] + nll[1]) / 2.0;
        let var = (nll[0] * nll[0] + nll[1] * nll[1]) / 2.0 - mean * mean;
        assert!((s.ppl() - mean.exp()).abs() < 1e-9);
        let want = mean.exp() * var.sqrt();
        assert!((s.uncertainty().unwrap() - want).abs() < 1e-9);
    }

    #[test]
    fn too_short_a_text_is_refused() {
        assert!(chunk_count(1023, 512, None).is_err());
        assert_eq!(chunk_count(1024, 512, None).unwrap(), 2);
        assert_eq!(chunk_count(5000, 512, Some(3)).unwrap(), 3);
        assert!(chunk_count(10, 1, None).is_err());
    }
}
