//! A scripted conversation on stdin: one user turn per line, `"""` opens
//! and closes a multi-line turn. Turns are read as they arrive, so a slow
//! writer gets each reply before its next line. (A trailing `\` is text
//! here, a Windows path say; it continues a line only in the REPL.)

use std::io::BufRead;

use anyhow::Result;

const FENCE: &str = "\"\"\"";

pub struct Turns<R> {
    input: R,
    done: bool,
    /// Lines read so far, to say where bad input is.
    line_no: usize,
}

impl<R: BufRead> Turns<R> {
    pub fn new(input: R) -> Turns<R> {
        Turns {
            input,
            done: false,
            line_no: 0,
        }
    }

    fn line(&mut self) -> Result<Option<String>> {
        let mut buf = Vec::new();
        if self.input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        let line_no = self.line_no;
        let mut line = String::from_utf8(buf).map_err(|e| {
            let col = e.utf8_error().valid_up_to() + 1;
            anyhow::anyhow!("standard input, line {line_no}, byte {col}: not UTF-8 text")
        })?;
        if line.ends_with('\n') {
            line.pop();
            if line.ends_with('\r') {
                line.pop();
            }
        }
        Ok(Some(line))
    }

    /// The next turn; None at the end of the input. A block left open at the
    /// end is still a turn: nothing typed is lost.
    pub fn next_turn(&mut self) -> Result<Option<String>> {
        if self.done {
            return Ok(None);
        }
        loop {
            let Some(line) = self.line()? else {
                self.done = true;
                return Ok(None);
            };
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix(FENCE) {
                if let Some(inner) = rest.strip_suffix(FENCE) {
                    if !inner.trim().is_empty() {
                        return Ok(Some(inner.to_string()));
                    }
                    continue;
                }
                return self.block(rest).map(Some);
            }
            return Ok(Some(trimmed.to_string()));
        }
    }

    fn block(&mut self, first: &str) -> Result<String> {
        let mut lines: Vec<String> = Vec::new();
        if !first.trim().is_empty() {
            lines.push(first.to_string());
        }
        while let Some(line) = self.line()? {
            if let Some(last) = line.trim_end().strip_suffix(FENCE) {
                if !last.trim().is_empty() {
                    lines.push(last.to_string());
                }
                return Ok(lines.join("\n"));
            }
            lines.push(line);
        }
        self.done = true;
        Ok(lines.join("\n"))
    }
}

/// Where `bytes` stop being UTF-8, as "line L, byte B" (B counted from 1
/// within the line), for the error that refuses them.
pub fn where_not_utf8(bytes: &[u8]) -> Option<String> {
    let bad = std::str::from_utf8(bytes).err()?.valid_up_to();
    let before = &bytes[..bad];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    Some(format!("line {line}, byte {}", bad - start + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(input: &str) -> Vec<String> {
        let mut t = Turns::new(input.as_bytes());
        let mut out = Vec::new();
        while let Some(turn) = t.next_turn().unwrap() {
            out.push(turn);
        }
        out
    }

    #[test]
    fn lines_blocks_and_continuations() {
        assert_eq!(
            turns("Hi\n\n  What did I say?  \n"),
            ["Hi", "What did I say?"]
        );
        assert_eq!(
            turns("\"\"\"\nline one\n\n  line two\n\"\"\"\nnext"),
            ["line one\n\n  line two", "next"]
        );
        assert_eq!(turns("\"\"\"first\nlast\"\"\"\n"), ["first\nlast"]);
        assert_eq!(turns("\"\"\"one line\"\"\"\n"), ["one line"]);
        assert_eq!(turns("C:\\temp\\\nd"), ["C:\\temp\\", "d"]);
        assert_eq!(turns("crlf\r\nx\r\n"), ["crlf", "x"]);
    }

    #[test]
    fn bad_bytes_are_placed() {
        assert_eq!(
            where_not_utf8(b"ok\nab\xffc"),
            Some("line 2, byte 3".into())
        );
        assert_eq!(where_not_utf8(b"fine"), None);
        let mut t = Turns::new(&b"hi\n\nab\xff\n"[..]);
        assert_eq!(t.next_turn().unwrap().as_deref(), Some("hi"));
        let e = t.next_turn().unwrap_err().to_string();
        assert_eq!(e, "standard input, line 3, byte 3: not UTF-8 text");
    }

    #[test]
    fn an_open_block_at_the_end_is_kept() {
        assert_eq!(turns("\"\"\"\nunfinished\ntext"), ["unfinished\ntext"]);
        assert!(turns("").is_empty());
        assert!(turns("\n\n").is_empty());
    }
}
