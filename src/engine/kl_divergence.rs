//! KL divergence of a model's next-token distributions from a base
//! model's, over the chunks perplexity scores (llama-perplexity's
//! `--kl-divergence-base` / `--kl-divergence`).
//!
//! The base's distributions are saved top-k compressed, in this file format
//! (little-endian):
//!
//! ```text
//! "LLMKLD01"                       8-byte magic
//! u32 n_ctx, n_vocab, n_chunk, top_k
//! u32 tokens[n_chunk * n_ctx]      the text's tokens as scored
//! per scored position (n_chunk * (n_ctx - 1 - n_ctx / 2)):
//!   f32 target_logprob             log p(next token)
//!   top_k x (u32 id, f32 logprob)  the k likeliest tokens, likeliest first
//! ```
//!
//! so the file is bounded by the positions scored, not the vocabulary. The
//! KL divergence sums the top k exactly and the rest of the base's mass as
//! one bucket against the same tokens' mass under the model: a lower bound
//! of the full sum (log-sum inequality), tight where the top k hold most of
//! the mass.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::perplexity::LogSoftmax;

const MAGIC: &[u8; 8] = b"LLMKLD01";
/// Tokens kept a position: enough that the rest of the mass is small.
pub const TOP_K: usize = 32;

/// The shape of a saved run, checked against the run that compares.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    pub tokens: Vec<u32>,
}

pub struct BaseWriter {
    out: BufWriter<std::fs::File>,
}

impl BaseWriter {
    pub fn create(path: &Path, h: &Header) -> Result<BaseWriter> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("{}: cannot create it", path.display()))?;
        let mut out = BufWriter::new(file);
        out.write_all(MAGIC)?;
        for v in [h.n_ctx, h.n_vocab, h.n_chunk, TOP_K] {
            out.write_all(&(v as u32).to_le_bytes())?;
        }
        for &t in &h.tokens {
            out.write_all(&t.to_le_bytes())?;
        }
        Ok(BaseWriter { out })
    }

    /// One scored position: its logits, their log-softmax and the token
    /// that came next.
    pub fn position(&mut self, logits: &[f32], norm: &LogSoftmax, target: u32) -> Result<()> {
        let lp = |i: u32| norm.log_prob(logits, i) as f32;
        self.out.write_all(&lp(target).to_le_bytes())?;
        for i in top_k(logits) {
            self.out.write_all(&(i as u32).to_le_bytes())?;
            self.out.write_all(&lp(i as u32).to_le_bytes())?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// The indices of the TOP_K largest logits, largest first.
fn top_k(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    let k = TOP_K.min(idx.len());
    idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
        logits[b].total_cmp(&logits[a])
    });
    idx.truncate(k);
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx
}

/// One saved position.
pub struct BasePosition {
    pub target_logprob: f32,
    pub top: Vec<(u32, f32)>,
}

pub struct BaseReader {
    input: BufReader<std::fs::File>,
    pub header: Header,
    top_k: usize,
}

fn read_u32(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

impl BaseReader {
    pub fn open(path: &Path) -> Result<BaseReader> {
        let what = || {
            format!(
                "{}: not a file of saved logits (--kl-divergence-base)",
                path.display()
            )
        };
        let file = std::fs::File::open(path)
            .with_context(|| format!("{}: cannot open it", path.display()))?;
        let len = file.metadata()?.len();
        let mut input = BufReader::new(file);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).with_context(what)?;
        if &magic != MAGIC {
            bail!("{}", what());
        }
        let mut v = [0usize; 4];
        for x in &mut v {
            *x = read_u32(&mut input).with_context(what)? as usize;
        }
        let [n_ctx, n_vocab, n_chunk, top_k] = v;
        // The sizes the header claims must be the file's, before any is read.
        let positions = n_chunk as u64 * (n_ctx as u64).saturating_sub(1 + n_ctx as u64 / 2);
        let want = 24 + 4 * (n_chunk as u64 * n_ctx as u64) + positions * (4 + 8 * top_k as u64);
        if n_ctx < 2 || top_k == 0 || top_k > n_vocab || want != len {
            bail!(
                "{}: its header does not match its size ({len} bytes)",
                what()
            );
        }
        let mut tokens = Vec::with_capacity(n_chunk * n_ctx);
        for _ in 0..n_chunk * n_ctx {
            tokens.push(read_u32(&mut input)?);
        }
        Ok(BaseReader {
            input,
            header: Header {
                n_ctx,
                n_vocab,
                n_chunk,
                tokens,
            },
            top_k,
        })
    }

    pub fn position(&mut self) -> Result<BasePosition> {
        let mut b = [0u8; 4];
        self.input.read_exact(&mut b)?;
        let target_logprob = f32::from_le_bytes(b);
        let mut top = Vec::with_capacity(self.top_k);
        for _ in 0..self.top_k {
            let id = read_u32(&mut self.input)?;
            self.input.read_exact(&mut b)?;
            top.push((id, f32::from_le_bytes(b)));
        }
        top_check(top, self.header.n_vocab, target_logprob)
    }
}

fn top_check(top: Vec<(u32, f32)>, n_vocab: usize, target_logprob: f32) -> Result<BasePosition> {
    if top
        .iter()
        .any(|&(id, lp)| id as usize >= n_vocab || lp.is_nan() || lp > 0.0)
    {
        bail!("saved logits: a token id or log-probability out of range");
    }
    Ok(BasePosition {
        target_logprob,
        top,
    })
}

/// The comparison's running sums.
#[derive(Default)]
pub struct KlStats {
    kld: Vec<f64>,
    /// p(next token) under the model minus under the base.
    dp: Vec<f64>,
    same_top: usize,
}

impl KlStats {
    pub fn position(
        &mut self,
        logits: &[f32],
        norm: &LogSoftmax,
        target: u32,
        base: &BasePosition,
    ) {
        let lq = |i: u32| norm.log_prob(logits, i);
        let (mut kld, mut p_top, mut q_top) = (0.0, 0.0, 0.0);
        for &(id, lp) in &base.top {
            let (lp, lq) = (f64::from(lp), lq(id));
            kld += lp.exp() * (lp - lq);
            p_top += lp.exp();
            q_top += lq.exp();
        }
        let (p_rest, q_rest) = ((1.0 - p_top).max(0.0), (1.0 - q_top).max(1e-30));
        if p_rest > 0.0 {
            kld += p_rest * (p_rest.ln() - q_rest.ln());
        }
        self.kld.push(kld.max(0.0));
        self.dp
            .push(lq(target).exp() - f64::from(base.target_logprob).exp());
        let our_top = (0..logits.len() as u32).fold(0, |b, i| {
            if logits[i as usize] > logits[b as usize] {
                i
            } else {
                b
            }
        });
        self.same_top += usize::from(base.top.first().is_some_and(|&(id, _)| id == our_top));
    }

    /// llama.cpp's report: KLD mean and percentiles, Δp, same top token.
    pub fn report(&self) -> String {
        let n = self.kld.len().max(1) as f64;
        let mean_err = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0).max(1.0);
            (m, (var / n).sqrt())
        };
        let pct = |v: &[f64], p: f64| {
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            s.get(((s.len().saturating_sub(1)) as f64 * p).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let (kld, kld_err) = mean_err(&self.kld);
        let (dp, dp_err) = mean_err(&self.dp);
        let same = self.same_top as f64 / n;
        let mut r = String::new();
        r += &format!("Mean    KLD: {kld:10.6} +/- {kld_err:.6}\n");
        for (name, p) in [
            ("Maximum", 1.0),
            ("99.9%", 0.999),
            ("99.0%", 0.99),
            ("Median", 0.5),
            ("Minimum", 0.0),
        ] {
            r += &format!("{name:<7} KLD: {:10.6}\n", pct(&self.kld, p));
        }
        r += &format!(
            "Mean    Δp: {:8.3} +/- {:.3} %\n",
            100.0 * dp,
            100.0 * dp_err
        );
        r += &format!(
            "Same top p: {:6.3} +/- {:.3} %\n",
            100.0 * same,
            100.0 * (same * (1.0 - same) / (n - 1.0).max(1.0)).sqrt()
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peaked(n: usize, hot: usize, shift: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                if i == hot {
                    8.0
                } else {
                    shift * ((i * 37 % 11) as f32) / 11.0
                }
            })
            .collect()
    }

    fn exact_kld(p: &[f32], q: &[f32]) -> f64 {
        let (np, nq) = (LogSoftmax::of(p), LogSoftmax::of(q));
        (0..p.len() as u32)
            .map(|i| {
                let (lp, lq) = (np.log_prob(p, i), nq.log_prob(q, i));
                lp.exp() * (lp - lq)
            })
            .sum()
    }

    #[test]
    fn saved_positions_read_back_and_compare() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.kld");
        let (n_ctx, n_vocab) = (6, 100);
        let header = Header {
            n_ctx,
            n_vocab,
            n_chunk: 1,
            tokens: vec![1, 2, 3, 4, 5, 6],
        };
        let base: Vec<Vec<f32>> = (0..2).map(|i| peaked(n_vocab, 7 + i, 2.0)).collect();
        let mut w = BaseWriter::create(&path, &header).unwrap();
        // n_ctx 6 scores positions 3 and 4.
        for b in &base {
            w.position(b, &LogSoftmax::of(b), 7).unwrap();
        }
        w.finish().unwrap();
        let mut r = BaseReader::open(&path).unwrap();
        assert_eq!(r.header, header);
        let mut same = KlStats::default();
        let mut other = KlStats::default();
        for b in &base {
            let saved = r.position().unwrap();
            assert_eq!(saved.top.len(), TOP_K);
            assert_eq!(
                saved.top[0].0 as usize,
                b.iter()
                    .enumerate()
                    .fold(0, |m, (i, &v)| if v > b[m] { i } else { m })
            );
            same.position(b, &LogSoftmax::of(b), 7, &saved);
            let q = peaked(n_vocab, 7, 3.0);
            other.position(&q, &LogSoftmax::of(&q), 7, &saved);
            // Top 32 of 100 plus the rest as one bucket: close to the full sum.
            let exact = exact_kld(b, &q);
            let got = *other.kld.last().unwrap();
            assert!(
                got <= exact + 1e-9 && exact - got < 0.1 * exact + 1e-6,
                "{got} vs {exact}"
            );
        }
        assert!(same.kld.iter().all(|&k| k.abs() < 1e-6));
        assert_eq!(same.same_top, 2);
        assert!(same.report().contains("Same top p: 100.000"));
    }

    #[test]
    fn a_file_that_is_not_saved_logits_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"not at all").unwrap();
        assert!(BaseReader::open(&path).is_err());
        // A header claiming more than the file holds.
        let mut bytes = MAGIC.to_vec();
        for v in [512u32, 32000, 1_000_000, 32] {
            bytes.extend(v.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let e = BaseReader::open(&path).err().unwrap().to_string();
        assert!(e.contains("does not match its size"), "{e}");
    }
}
