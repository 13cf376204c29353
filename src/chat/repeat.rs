//! Spotting a reply that has fallen into a loop: small models, greedy ones
//! above all, often end up writing the same few tokens over and over until
//! the context is full ("la femme, la femme, la femme, ..."). A reply whose
//! tail is one run of tokens repeated many times is cut.

use crate::tokenizer::TokenId;

/// The longest run of tokens looked for, and how many times a run must
/// repeat (and over how many tokens at least) to count as a loop. A short
/// run must repeat for longer: a row of dashes or a list of ones is fine.
const MAX_PERIOD: usize = 64;
const MIN_REPEATS: usize = 8;
const MIN_SPAN: usize = 48;

/// Watches a reply's tokens, one at a time.
pub struct LoopGuard {
    tokens: Vec<TokenId>,
    /// For each period p (index p - 1): how many tokens in a row, ending
    /// with the latest, equal the token p places before them.
    runs: [usize; MAX_PERIOD],
}

/// A loop found: `period` tokens repeated over the last `span` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loop {
    pub period: usize,
    pub span: usize,
}

impl Default for LoopGuard {
    fn default() -> Self {
        LoopGuard {
            tokens: Vec::new(),
            runs: [0; MAX_PERIOD],
        }
    }
}

impl LoopGuard {
    /// Adds the reply's next token; a loop when the reply now ends in one.
    pub fn push(&mut self, id: TokenId) -> Option<Loop> {
        self.tokens.push(id);
        let n = self.tokens.len();
        let mut found = None;
        for p in 1..=MAX_PERIOD.min(n - 1) {
            let run = &mut self.runs[p - 1];
            *run = if self.tokens[n - 1 - p] == id {
                *run + 1
            } else {
                0
            };
            // The first p tokens of the span are the run itself.
            let span = *run + p;
            if found.is_none() && span >= (MIN_REPEATS * p).max(MIN_SPAN) {
                found = Some(Loop { period: p, span });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_loop(tokens: &[TokenId]) -> Option<(usize, Loop)> {
        let mut g = LoopGuard::default();
        tokens
            .iter()
            .enumerate()
            .find_map(|(i, &t)| g.push(t).map(|l| (i + 1, l)))
    }

    #[test]
    fn a_repeated_phrase_is_a_loop_once_it_has_gone_on() {
        let mut reply: Vec<TokenId> = (100..120).collect();
        for _ in 0..20 {
            reply.extend([7, 8, 9, 10, 11]);
        }
        let (at, l) = first_loop(&reply).expect("a loop");
        assert_eq!(l.period, 5);
        // 20 tokens of text, then the phrase until it spans 48 tokens.
        assert_eq!(at, 20 + 48);
    }

    #[test]
    fn one_token_repeated_needs_a_long_row() {
        assert_eq!(first_loop(&[5; 47]), None);
        assert_eq!(first_loop(&[5; 48]).unwrap().0, 48);
    }

    #[test]
    fn long_periods_need_eight_repeats_and_varied_text_is_no_loop() {
        let phrase: Vec<TokenId> = (0..40).collect();
        let reply: Vec<TokenId> = phrase.iter().cycle().take(40 * 8 - 1).copied().collect();
        assert_eq!(first_loop(&reply), None);
        let reply: Vec<TokenId> = phrase.iter().cycle().take(40 * 8).copied().collect();
        assert_eq!(first_loop(&reply).unwrap().1.period, 40);
        // A list that counts up shares tokens between lines, never a tail.
        let mut list = Vec::new();
        for i in 0..200 {
            list.extend([1, 2, 1000 + i, 3]);
        }
        assert_eq!(first_loop(&list), None);
    }
}
