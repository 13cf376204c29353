//! Choosing the next token, in llama.cpp's order: repetition penalties,
//! top-k, top-p, min-p, temperature, then the draw (greedy at temperature 0).

use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    pub temp: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Tokens the penalties look back over (0: none, -1: the whole context).
    pub repeat_last_n: i32,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults.
    fn default() -> Self {
        SamplingParams {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
/// Sampling options some of which are set (a models.toml family, the
/// command line), laid over others.
pub struct SamplingOverrides {
    pub temp: Option<f32>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
}

/// An option's name, its test, and its range as an error says it.
type Range = (&'static str, fn(f64) -> bool, &'static str);

/// The range each sampling option takes, as said in an error: the one check
/// behind the flags, `/set` and models.toml. Keys are spelled as `/set` and
/// the flags spell them; `check_option` also takes models.toml's `top_k`.
const RANGES: &[Range] = &[
    ("temp", |v| v >= 0.0, "a number of 0 or more (0: greedy)"),
    (
        "top-k",
        |v| v >= 0.0,
        "a whole number of 0 or more (0: all)",
    ),
    (
        "top-p",
        |v| (0.0..=1.0).contains(&v),
        "a number from 0 to 1",
    ),
    (
        "min-p",
        |v| (0.0..=1.0).contains(&v),
        "a number from 0 to 1",
    ),
    ("repeat-penalty", |v| v > 0.0, "a number above 0 (1: off)"),
    (
        "repeat-last-n",
        |v| v >= -1.0,
        "a whole number of -1 or more (-1: the whole context, 0: off)",
    ),
    ("presence-penalty", |_| true, "a finite number"),
    ("frequency-penalty", |_| true, "a finite number"),
];

/// Whether `value` is in the range of option `key`; the error says the
/// range ("a number from 0 to 1"). Not-a-number and infinities are never in
/// range. Keys not listed take any finite value.
pub fn check_option(key: &str, value: f64) -> Result<(), String> {
    let key = key.replace('_', "-");
    let key = if key == "temperature" { "temp" } else { &key };
    let (ok, says) = RANGES
        .iter()
        .find(|(k, _, _)| *k == key)
        .map_or((None, "a finite number"), |(_, ok, says)| {
            (Some(*ok), *says)
        });
    if value.is_finite() && ok.is_none_or(|ok| ok(value)) {
        Ok(())
    } else {
        Err(format!("out of range: give {says}"))
    }
}

impl SamplingOverrides {
    /// Every option that is set, in range; the error names the first that is
    /// not, with its value and range (`temp = -5 is out of range: ...`).
    pub fn check(&self) -> Result<(), String> {
        let fields: [(&str, Option<f64>); 8] = [
            ("temp", self.temp.map(f64::from)),
            ("top_k", self.top_k.map(f64::from)),
            ("top_p", self.top_p.map(f64::from)),
            ("min_p", self.min_p.map(f64::from)),
            ("repeat_penalty", self.repeat_penalty.map(f64::from)),
            ("repeat_last_n", self.repeat_last_n.map(f64::from)),
            ("presence_penalty", self.presence_penalty.map(f64::from)),
            ("frequency_penalty", self.frequency_penalty.map(f64::from)),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                check_option(key, v).map_err(|e| format!("{key} = {v} is {e}"))?;
            }
        }
        Ok(())
    }

    pub fn over(&self, base: SamplingParams) -> SamplingParams {
        SamplingParams {
            temp: self.temp.unwrap_or(base.temp),
            top_k: self.top_k.unwrap_or(base.top_k),
            top_p: self.top_p.unwrap_or(base.top_p),
            min_p: self.min_p.unwrap_or(base.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(base.repeat_penalty),
            repeat_last_n: self.repeat_last_n.unwrap_or(base.repeat_last_n),
            presence_penalty: self.presence_penalty.unwrap_or(base.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(base.frequency_penalty),
            seed: base.seed,
        }
    }
}

/// A small, fast generator (SplitMix64) so that a seed reproduces a run.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Sampler {
    pub params: SamplingParams,
    rng: Rng,
    history: Vec<u32>,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = Rng(params.seed);
        Sampler {
            params,
            rng,
            history: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// New options; a new seed restarts the random stream from it.
    pub fn set_params(&mut self, params: SamplingParams) {
        if params.seed != self.params.seed {
            self.rng = Rng(params.seed);
        }
        self.params = params;
    }

    /// Records a token of the context (prompt or generated) for the penalties.
    pub fn accept(&mut self, token: u32) {
        self.history.push(token);
    }

    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// The next token for these logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = self.params.clone();
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        self.apply_penalties(&p);
        if p.temp <= 0.0 {
            return greedy(&self.candidates);
        }
        // Sort by logit, highest first (stable, so ties keep id order).
        self.candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 {
            self.candidates.truncate(p.top_k as usize);
        }
        if p.top_p < 1.0 {
            let probs = softmax(&self.candidates);
            let mut cum = 0.0;
            let mut keep = self.candidates.len();
            for (i, &pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            self.candidates.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let max = self.candidates[0].1;
            let floor = max + p.min_p.ln();
            let keep = self.candidates.iter().take_while(|c| c.1 >= floor).count();
            self.candidates.truncate(keep.max(1));
        }
        for c in self.candidates.iter_mut() {
            c.1 /= p.temp;
        }
        let probs = softmax(&self.candidates);
        let r = self.rng.next_f64();
        let mut cum = 0.0;
        for (c, pr) in self.candidates.iter().zip(&probs) {
            cum += pr;
            if r < cum {
                return c.0;
            }
        }
        self.candidates.last().map_or(0, |c| c.0)
    }

    fn apply_penalties(&mut self, p: &SamplingParams) {
        let neutral =
            p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0;
        if neutral || p.repeat_last_n == 0 {
            return;
        }
        let n = if p.repeat_last_n < 0 {
            self.history.len()
        } else {
            (p.repeat_last_n as usize).min(self.history.len())
        };
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in &self.history[self.history.len() - n..] {
            *counts.entry(t).or_default() += 1;
        }
        for (&tok, &count) in &counts {
            if let Some(c) = self.candidates.get_mut(tok as usize) {
                if c.1 <= 0.0 {
                    c.1 *= p.repeat_penalty;
                } else {
                    c.1 /= p.repeat_penalty;
                }
                c.1 -= count as f32 * p.frequency_penalty + p.presence_penalty;
            }
        }
    }
}

/// The highest logit; the first one on a tie, as llama.cpp's greedy sampler.
pub fn greedy(c: &[(u32, f32)]) -> u32 {
    let mut best = 0;
    for i in 1..c.len() {
        if c[i].1 > c[best].1 {
            best = i;
        }
    }
    c.get(best).map_or(0, |c| c.0)
}

fn softmax(c: &[(u32, f32)]) -> Vec<f64> {
    let max = c.iter().fold(f32::NEG_INFINITY, |m, x| m.max(x.1));
    let e: Vec<f64> = c.iter().map(|x| f64::from(x.1 - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temp: f32) -> SamplingParams {
        SamplingParams {
            temp,
            seed: 7,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn a_seed_reproduces_the_draws() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = || {
            let mut s = Sampler::new(params(1.0));
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.5)
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 1.0, 0.5]), 1);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let mut s = Sampler::new(SamplingParams {
            min_p: 0.5,
            top_k: 0,
            top_p: 1.0,
            ..params(1.0)
        });
        // exp(-3) < 0.5: token 1 can never be drawn.
        for _ in 0..200 {
            assert_eq!(s.sample(&[0.0, -3.0]), 0);
        }
    }

    #[test]
    fn repeat_penalty_pushes_seen_tokens_down() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 4.0,
            ..params(0.0)
        });
        s.accept(0);
        // 2.0 / 4 = 0.5 < 1.0
        assert_eq!(s.sample(&[2.0, 1.0]), 1);
        let mut s = Sampler::new(SamplingParams {
            presence_penalty: 5.0,
            ..params(0.0)
        });
        s.accept(0);
        assert_eq!(s.sample(&[2.0, 1.0]), 1);
    }
}
