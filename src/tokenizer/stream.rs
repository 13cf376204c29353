//! Printing tokens as they come without ever printing half a character.
//!
//! A token is a run of bytes, not of characters: byte-fallback tokens
//! (`<0xE4>`) and byte-level BPE pieces can end in the middle of a UTF-8
//! sequence, which the next token completes. Printing each token's bytes
//! lossily would show U+FFFD for every such split. [`Utf8Stream`] holds back
//! the bytes of an incomplete character until the rest arrives; only bytes that
//! can never become valid UTF-8 are shown as U+FFFD.

use super::{TokenId, Tokenizer};

/// Turns a stream of byte chunks into text, holding back incomplete characters.
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Utf8Stream {
        Utf8Stream::default()
    }

    /// Adds bytes; returns the text that is complete now (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // SAFETY-free: `valid` is valid UTF-8 by from_utf8's report.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // Bytes that no continuation can make valid.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        // A character cut short: keep it for the next push.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        out
    }

    /// Bytes held back, waiting for the rest of their character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: an incomplete character left over is shown as U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Detokenizes generated tokens one at a time, UTF-8 safe.
#[derive(Clone, Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    special: bool,
    utf8: Utf8Stream,
}

impl<'t> StreamDecoder<'t> {
    pub(super) fn new(tokenizer: &'t Tokenizer, special: bool) -> StreamDecoder<'t> {
        StreamDecoder {
            tokenizer,
            special,
            utf8: Utf8Stream::new(),
        }
    }

    /// The text that token `id` completes (empty while a character is cut).
    pub fn push(&mut self, id: TokenId) -> String {
        let bytes = self.tokenizer.token_bytes(id, self.special);
        self.utf8.push(bytes)
    }

    /// Whatever is still held back, at the end of generation.
    pub fn finish(&mut self) -> String {
        self.utf8.finish()
    }
}
