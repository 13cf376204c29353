//! Word wrap for replies streamed to a terminal: the terminal itself breaks
//! long lines wherever the last column falls, often mid-word. Each word is
//! held until it ends, then put on the line if it fits, or on the next.

use unicode_width::UnicodeWidthChar;

pub struct Wrapper {
    width: usize,
    /// Columns used on the current line.
    col: usize,
    /// Blanks between the last word shown and the one being held: dropped
    /// when that word goes to a new line.
    blanks: String,
    word: String,
    word_width: usize,
}

impl Wrapper {
    pub fn new(width: usize) -> Wrapper {
        Wrapper {
            width: width.max(1),
            col: 0,
            blanks: String::new(),
            word: String::new(),
            word_width: 0,
        }
    }

    /// The text to write for `piece`: what is settled of it so far.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::new();
        for c in piece.chars() {
            if c == '\n' {
                self.place_word(&mut out);
                self.blanks.clear();
                out.push('\n');
                self.col = 0;
            } else if c.is_whitespace() {
                self.place_word(&mut out);
                self.blanks.push(c);
            } else {
                self.word.push(c);
                self.word_width += c.width().unwrap_or(0);
                // A word as long as a line is broken where the line ends.
                if self.word_width >= self.width {
                    self.place_word(&mut out);
                }
            }
        }
        out
    }

    /// Writes the word being held (at the end of a reply, or before
    /// something else is written to the terminal).
    pub fn flush(&mut self) -> String {
        let mut out = String::new();
        self.place_word(&mut out);
        out
    }

    /// Something else left the cursor at the start of a line.
    pub fn at_line_start(&mut self) {
        self.col = 0;
        self.blanks.clear();
    }

    fn place_word(&mut self, out: &mut String) {
        if self.word.is_empty() {
            return;
        }
        let blanks = self.blanks_width();
        if self.col > 0 && self.col + blanks + self.word_width > self.width {
            out.push('\n');
            self.col = 0;
        } else {
            out.push_str(&self.blanks);
            self.col += blanks;
        }
        out.push_str(&self.word);
        self.col += self.word_width;
        self.blanks.clear();
        self.word.clear();
        self.word_width = 0;
    }

    fn blanks_width(&self) -> usize {
        self.blanks.chars().fold(0, |w, c| match c {
            '\t' => (self.col + w) / 8 * 8 + 8 - self.col,
            _ => w + c.width().unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(width: usize, pieces: &[&str]) -> String {
        let mut w = Wrapper::new(width);
        let mut out: String = pieces.iter().map(|p| w.push(p)).collect();
        out += &w.flush();
        out
    }

    #[test]
    fn lines_break_between_words_wherever_the_pieces_end() {
        let text = "The capital of France is Paris, a city on the Seine.";
        let want = "The capital of\nFrance is Paris,\na city on the\nSeine.";
        assert_eq!(wrap(16, &[text]), want);
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(wrap(16, &pieces), want);
        assert_eq!(
            wrap(
                16,
                &[
                    "The capi",
                    "tal of Fr",
                    "ance is Paris, a",
                    " city on the Seine."
                ]
            ),
            want
        );
        // Every line fits; no word is cut.
        for line in wrap(16, &[text]).lines() {
            assert!(line.len() <= 16, "{line:?}");
        }
    }

    #[test]
    fn newlines_indents_and_wide_characters() {
        assert_eq!(
            wrap(10, &["one\n\n  two three four"]),
            "one\n\n  two\nthree four"
        );
        // A word that fits exactly ends the line.
        assert_eq!(wrap(5, &["abcde fg"]), "abcde\nfg");
        // Wide characters take two columns.
        assert_eq!(wrap(6, &["日本 語です"]), "日本\n語です");
    }

    #[test]
    fn a_word_longer_than_a_line_is_cut_at_the_line_end() {
        assert_eq!(wrap(4, &["ab abcdefghij c"]), "ab\nabcd\nefgh\nij c");
    }

    #[test]
    fn text_already_on_the_line_counts() {
        let mut w = Wrapper::new(10);
        assert_eq!(w.push("12345 "), "12345");
        assert_eq!(w.flush(), "");
        assert_eq!(w.push("678 abc"), " 678");
        assert_eq!(w.flush(), "\nabc");
        w.at_line_start();
        assert_eq!(w.push("1234567 x"), "1234567");
        assert_eq!(w.flush(), " x");
    }
}
