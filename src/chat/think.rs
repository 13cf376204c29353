//! Reasoning models (DeepSeek-R1, Qwen3, ...) think before they answer, in a
//! `<think>...</think>` block at the start of the reply. The block is told
//! apart from the answer as the reply streams in, so that it can be shown
//! dimmed or hidden, and left out of the history: the models' own templates
//! drop it from earlier turns.

/// `--reasoning`: what to do with the thinking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Reasoning {
    Show,
    Hide,
}

pub const OPEN: &str = "<think>";
pub const CLOSE: &str = "</think>";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The thinking, its tags and the blank lines after it.
    Thinking,
    Answer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Only whitespace so far: the reply may still open a block.
    Start,
    Thinking,
    /// The block has closed; whitespace before the answer goes with it.
    AfterThinking,
    Answer,
}

/// Splits streamed reply text into thinking and answer. Text that may be
/// the start of a tag is held back until the next piece settles it.
pub struct ThinkSplitter {
    state: State,
    held: String,
}

impl ThinkSplitter {
    /// `thinking`: the prompt itself opened the block (templates that end
    /// the assistant's cue with `<think>`), so the reply starts inside it.
    pub fn new(thinking: bool) -> ThinkSplitter {
        ThinkSplitter {
            state: if thinking {
                State::Thinking
            } else {
                State::Start
            },
            held: String::new(),
        }
    }

    /// The parts of the text that are settled now, in order.
    pub fn push(&mut self, piece: &str) -> Vec<(Part, String)> {
        self.held.push_str(piece);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Answer => {
                    emit(&mut out, Part::Answer, std::mem::take(&mut self.held));
                    return out;
                }
                State::Start => {
                    let body = self.held.trim_start();
                    if body.starts_with(OPEN) {
                        // The whitespace before the tag goes with it.
                        let end = self.held.len() - body.len() + OPEN.len();
                        emit(&mut out, Part::Thinking, self.held.drain(..end).collect());
                        self.state = State::Thinking;
                    } else if body.is_empty() || OPEN.starts_with(body) {
                        return out;
                    } else {
                        self.state = State::Answer;
                    }
                }
                State::Thinking => {
                    if let Some(at) = self.held.find(CLOSE) {
                        let end = at + CLOSE.len();
                        emit(&mut out, Part::Thinking, self.held.drain(..end).collect());
                        self.state = State::AfterThinking;
                    } else {
                        let keep = partial_tag(&self.held, CLOSE);
                        let cut = self.held.len() - keep;
                        emit(&mut out, Part::Thinking, self.held.drain(..cut).collect());
                        return out;
                    }
                }
                State::AfterThinking => {
                    let body = self.held.trim_start();
                    let cut = self.held.len() - body.len();
                    emit(&mut out, Part::Thinking, self.held.drain(..cut).collect());
                    if self.held.is_empty() {
                        return out;
                    }
                    self.state = State::Answer;
                }
            }
        }
    }

    /// What was held back, once the reply has ended.
    pub fn finish(&mut self) -> Vec<(Part, String)> {
        let part = match self.state {
            State::Thinking | State::AfterThinking => Part::Thinking,
            State::Start | State::Answer => Part::Answer,
        };
        let mut out = Vec::new();
        emit(&mut out, part, std::mem::take(&mut self.held));
        out
    }
}

fn emit(out: &mut Vec<(Part, String)>, part: Part, text: String) {
    if !text.is_empty() {
        out.push((part, text));
    }
}

/// The length of the longest end of `text` that begins `tag`.
fn partial_tag(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// The answer alone, for the history: a whole reply without its thinking.
pub fn answer_of(reply: &str, thinking: bool) -> String {
    let mut split = ThinkSplitter::new(thinking);
    let mut parts = split.push(reply);
    parts.extend(split.finish());
    parts
        .into_iter()
        .filter(|(p, _)| *p == Part::Answer)
        .map(|(_, t)| t)
        .collect()
}

/// Whether a rendered prompt leaves the model inside a thinking block.
pub fn prompt_opens_thinking(prompt: &str) -> bool {
    prompt.trim_end().ends_with(OPEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams `pieces` through a splitter; the parts, neighbours of one
    /// kind joined.
    fn split(thinking: bool, pieces: &[&str]) -> Vec<(Part, String)> {
        let mut s = ThinkSplitter::new(thinking);
        let mut parts: Vec<(Part, String)> = Vec::new();
        let all = pieces
            .iter()
            .flat_map(|p| s.push(p))
            .collect::<Vec<_>>()
            .into_iter()
            .chain(s.finish());
        for (part, text) in all {
            match parts.last_mut() {
                Some((p, t)) if *p == part => t.push_str(&text),
                _ => parts.push((part, text)),
            }
        }
        parts
    }

    fn th(t: &str) -> (Part, String) {
        (Part::Thinking, t.to_string())
    }

    fn an(t: &str) -> (Part, String) {
        (Part::Answer, t.to_string())
    }

    #[test]
    fn a_block_at_the_start_is_thinking_whatever_the_pieces() {
        let whole = "<think>\nHmm, France.\n</think>\n\nParis.";
        let want = vec![th("<think>\nHmm, France.\n</think>\n\n"), an("Paris.")];
        assert_eq!(split(false, &[whole]), want);
        // Every way of cutting it in two, and one character at a time.
        for i in 1..whole.len() {
            assert_eq!(
                split(false, &[&whole[..i], &whole[i..]]),
                want,
                "cut at {i}"
            );
        }
        let chars: Vec<String> = whole.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split(false, &pieces), want);
        assert_eq!(
            split(false, &["<th", "ink>a</th", "ink>", "b"]),
            vec![th("<think>a</think>"), an("b")]
        );
    }

    #[test]
    fn tags_later_in_the_reply_and_lookalikes_are_answer() {
        assert_eq!(
            split(false, &["Use <think> tags", " like </think>"]),
            vec![an("Use <think> tags like </think>")]
        );
        assert_eq!(split(false, &["<", "b>bold</b>"]), vec![an("<b>bold</b>")]);
        assert_eq!(split(false, &["<thi"]), vec![an("<thi")]);
        assert_eq!(split(false, &["  ", "Hi"]), vec![an("  Hi")]);
    }

    #[test]
    fn a_prompt_that_opened_the_block_starts_inside_it() {
        assert_eq!(
            split(true, &["Let me see.</", "think>", "\n\n", "Paris"]),
            vec![th("Let me see.</think>\n\n"), an("Paris")]
        );
        // Cut off while thinking: all of it is thinking, even a half tag.
        assert_eq!(
            split(true, &["still going </thi"]),
            vec![th("still going </thi")]
        );
        assert!(prompt_opens_thinking("<|Assistant|><think>\n"));
        assert!(!prompt_opens_thinking("<|im_start|>assistant\n"));
    }

    #[test]
    fn the_history_keeps_the_answer_only() {
        assert_eq!(answer_of("<think>\nx\n</think>\n\nParis.", false), "Paris.");
        assert_eq!(answer_of("x</think>Paris.", true), "Paris.");
        assert_eq!(answer_of("<think>cut off", false), "");
        assert_eq!(answer_of("Plain reply.", false), "Plain reply.");
        assert_eq!(answer_of("é <think>", false), "é <think>");
    }
}
