//! Stop strings in streamed text: text that might be the start of a stop
//! string is held back until it is known not to be one, so a stop string is
//! never half printed.

pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// The text that is safe to show now, and whether a stop string was
    /// found (the text then ends where it began).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep = self
            .stops
            .iter()
            .map(|s| partial_suffix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// What was held back, once the text has ended without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of
/// `stop` (and ends on a character boundary).
fn partial_suffix(text: &str, stop: &str) -> usize {
    let max = (stop.len() - 1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            let start = text.len() - n;
            text.is_char_boundary(start) && stop.starts_with(&text[start..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (text, hit) = m.push(p);
            out += &text;
            if hit {
                return (out, true);
            }
        }
        out += &m.finish();
        (out, false)
    }

    #[test]
    fn stops_across_pieces_and_holds_back_prefixes() {
        assert_eq!(
            run(&["\nUser:"], &["Hi", " there\n", "Us", "er: x"]),
            ("Hi there".into(), true)
        );
        assert_eq!(
            run(&["\nUser:"], &["a\n", "Use", "ful"]),
            ("a\nUseful".into(), false)
        );
        let stops = vec!["<|im_end|>".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("ok <|im"), ("ok ".into(), false));
        assert_eq!(m.push("_e"), ("".into(), false));
        assert_eq!(m.push("nd|>more"), ("".into(), true));
    }

    #[test]
    fn no_stops_pass_everything_and_unicode_is_safe() {
        assert_eq!(run(&[], &["é", "😀"]), ("é😀".into(), false));
        assert_eq!(run(&["😀!"], &["a😀", "b"]), ("a😀b".into(), false));
    }
}
