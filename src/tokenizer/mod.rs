//! Text to token ids and back.
//!
//! A [`Tokenizer`] wraps a `tokenizers::Tokenizer` (Hugging Face's) built from
//! a GGUF vocabulary (`tokenizer.ggml.*`: SentencePiece-style "llama" with byte
//! fallback, or byte-level BPE "gpt2" with the pre-tokenizer that
//! `tokenizer.ggml.pre` names), or loaded from a `tokenizer.json`.
//!
//! For GGUF vocabularies the ids must be the ones llama.cpp gives, so encoding
//! follows `llama_tokenize` step by step:
//! 1. *partition*: special tokens are cut out of the text, longest first.
//!    User-defined tokens (`<think>`, Gemma's runs of spaces) are cut
//!    everywhere; control tokens (`<|im_start|>`) only when the caller parses
//!    special tokens, which templates do and user text never does;
//! 2. every remaining run of plain text goes through the HF pipeline
//!    (normalizer, pre-tokenizer, BPE merges);
//! 3. BOS and EOS are added when asked for and the vocabulary wants them.
//!
//! A `tokenizer.json` is used as Hugging Face's own library uses it.

mod gguf;
mod json;
mod pretok;
mod stream;
#[cfg(test)]
mod tests;

use std::path::Path;

use aho_corasick::AhoCorasick;
use anyhow::{anyhow, Context, Result};

pub use stream::{StreamDecoder, Utf8Stream};

use crate::format::gguf::Metadata;

pub type TokenId = u32;

/// llama.cpp's token attributes (`llama_token_attr`), set from
/// `tokenizer.ggml.token_type` and a few rules of its loader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attr(u16);

impl Attr {
    pub const UNDEFINED: Attr = Attr(0);
    pub const UNKNOWN: Attr = Attr(1 << 0);
    pub const UNUSED: Attr = Attr(1 << 1);
    pub const NORMAL: Attr = Attr(1 << 2);
    pub const CONTROL: Attr = Attr(1 << 3);
    pub const USER_DEFINED: Attr = Attr(1 << 4);
    pub const BYTE: Attr = Attr(1 << 5);
    pub const LSTRIP: Attr = Attr(1 << 7);
    pub const RSTRIP: Attr = Attr(1 << 8);

    /// The attribute of a `tokenizer.ggml.token_type` value.
    pub fn from_token_type(t: i64) -> Attr {
        match t {
            1 => Attr::NORMAL,
            2 => Attr::UNKNOWN,
            3 => Attr::CONTROL,
            4 => Attr::USER_DEFINED,
            5 => Attr::UNUSED,
            6 => Attr::BYTE,
            _ => Attr::UNDEFINED,
        }
    }

    /// Whether any of `other`'s bits are set.
    pub fn has(self, other: Attr) -> bool {
        self.0 & other.0 != 0
    }

    pub fn with(self, other: Attr) -> Attr {
        Attr(self.0 | other.0)
    }

    pub fn without(self, other: Attr) -> Attr {
        Attr(self.0 & !other.0)
    }

    pub fn is_special(self) -> bool {
        self.has(Attr::CONTROL.with(Attr::UNKNOWN))
    }
}

/// Which kind of vocabulary a tokenizer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabType {
    /// GGUF `llama`: SentencePiece pieces merged by score, byte fallback.
    Spm,
    /// GGUF `gpt2`: byte-level BPE with ranked merges.
    Bpe,
    /// A Hugging Face `tokenizer.json`.
    HfJson,
}

impl VocabType {
    pub fn name(self) -> &'static str {
        match self {
            VocabType::Spm => "SPM (llama)",
            VocabType::Bpe => "BPE (gpt2)",
            VocabType::HfJson => "tokenizer.json",
        }
    }
}

/// A piece of text during partitioning: plain text (a byte range of the
/// input) or a special token cut out of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fragment {
    Text(usize, usize),
    Token(TokenId),
}

/// How `encode` runs for each kind of source.
enum Encoder {
    /// llama.cpp's way: our partition, then the HF pipeline on each text run.
    Gguf {
        /// Special tokens in the order llama.cpp tries them (longest text
        /// first), with a matcher over their texts that finds which of them
        /// occur at all.
        specials: Vec<TokenId>,
        finder: Option<AhoCorasick>,
    },
    /// Hugging Face's way. `plain` is the same tokenizer told to read
    /// special tokens' texts as ordinary text.
    Json { plain: Box<tokenizers::Tokenizer> },
}

/// A tokenizer for one model.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    encoder: Encoder,
    vocab_type: VocabType,
    pre: Option<String>,
    texts: Vec<String>,
    attrs: Vec<Attr>,
    /// The bytes each token prints as, control tokens included.
    pieces: Vec<Box<[u8]>>,
    bos: Option<TokenId>,
    eos: Option<TokenId>,
    eot: Option<TokenId>,
    eog: Vec<TokenId>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_type", &self.vocab_type)
            .field("pre", &self.pre)
            .field("n_vocab", &self.texts.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// The tokenizer a GGUF file's `tokenizer.ggml.*` metadata describes.
    pub fn from_gguf_metadata(md: &Metadata) -> Result<Tokenizer> {
        gguf::build(md)
    }

    /// Reads only the metadata of a GGUF file (so a vocabulary-only file, or
    /// one whose tensor data is cut short, is fine) and builds its tokenizer.
    pub fn from_gguf_file(path: &Path) -> Result<Tokenizer> {
        let md = crate::format::gguf::read_metadata(path)?;
        gguf::build(&md).with_context(|| format!("{}", path.display()))
    }

    /// Loads a Hugging Face `tokenizer.json` (a file, or a model directory
    /// holding one; `tokenizer_config.json` beside it is read when present).
    pub fn from_tokenizer_json(path: &Path) -> Result<Tokenizer> {
        json::load(path)
    }

    /// Opens whatever `path` is: a GGUF file, a `tokenizer.json`, or a
    /// directory with a `tokenizer.json` in it.
    pub fn open(path: &Path) -> Result<Tokenizer> {
        let is_json = path.is_dir()
            || path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            Tokenizer::from_tokenizer_json(path)
        } else {
            Tokenizer::from_gguf_file(path)
        }
    }

    /// The Hugging Face tokenizer underneath.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn vocab_type(&self) -> VocabType {
        self.vocab_type
    }

    /// `tokenizer.ggml.pre`, for GGUF BPE vocabularies.
    pub fn pre(&self) -> Option<&str> {
        self.pre.as_deref()
    }

    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }

    pub fn bos(&self) -> Option<TokenId> {
        self.bos
    }

    pub fn eos(&self) -> Option<TokenId> {
        self.eos
    }

    /// End of turn (`<|im_end|>`, `<end_of_turn>`), where the vocabulary has one.
    pub fn eot(&self) -> Option<TokenId> {
        self.eot
    }

    /// Whether generation should stop at `id` (EOS, EOT and their kin).
    pub fn is_eog(&self, id: TokenId) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Things worth telling the user about the vocabulary (one line each).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A token's text as stored in the vocabulary (`▁the`, `Ġthe`, `<0x0A>`).
    pub fn token_text(&self, id: TokenId) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    pub fn token_attr(&self, id: TokenId) -> Attr {
        self.attrs
            .get(id as usize)
            .copied()
            .unwrap_or(Attr::UNDEFINED)
    }

    /// The id of a token by its stored text.
    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.inner.token_to_id(text)
    }

    /// The bytes a token prints as (llama.cpp's `token_to_piece`): control and
    /// unknown tokens print as nothing unless `special`. The bytes may be part
    /// of a UTF-8 character; see [`StreamDecoder`].
    pub fn token_bytes(&self, id: TokenId, special: bool) -> &[u8] {
        if !special && self.token_attr(id).is_special() {
            return &[];
        }
        self.pieces.get(id as usize).map_or(&[], |p| p)
    }

    /// The most bytes of text one token stands for, so that a text of B
    /// bytes needs at least B divided by this many tokens.
    pub fn longest_token_bytes(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| p.len())
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Token ids for `text`. `add_special` adds BOS/EOS where the vocabulary
    /// wants them; `parse_special` lets control tokens written in the text
    /// (`<|im_start|>`) become those tokens, as templates need. User text must
    /// be encoded with `parse_special = false`.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenId>> {
        match &self.encoder {
            Encoder::Gguf { specials, finder } => self.encode_gguf(
                text,
                add_special,
                parse_special,
                &[],
                specials,
                finder.as_ref(),
            ),
            Encoder::Json { plain } => {
                let tk = if parse_special { &self.inner } else { plain };
                let enc = tk
                    .encode_fast(text, add_special)
                    .map_err(|e| anyhow!("tokenizing: {e}"))?;
                Ok(enc.get_ids().to_vec())
            }
        }
    }

    /// Ids for a rendered chat prompt: control tokens in the template's text
    /// become tokens (as `parse_special`), but inside the `literal` byte
    /// ranges (the messages) their text stays text, so a user cannot forge
    /// the template's turn markers. Outside those ranges, and wherever no
    /// message holds such text, this is exactly `encode(text, add_special,
    /// true)`.
    pub fn encode_chat(
        &self,
        text: &str,
        add_special: bool,
        literal: &[std::ops::Range<usize>],
    ) -> Result<Vec<TokenId>> {
        match &self.encoder {
            Encoder::Gguf { specials, finder } => {
                self.encode_gguf(text, add_special, true, literal, specials, finder.as_ref())
            }
            Encoder::Json { plain } => {
                // Template text with special parsing, messages without.
                let mut ids = Vec::new();
                let mut cur = 0;
                let mut pieces: Vec<(&str, bool)> = Vec::new();
                for r in literal {
                    pieces.push((&text[cur..r.start], true));
                    pieces.push((&text[r.start..r.end], false));
                    cur = r.end;
                }
                pieces.push((&text[cur..], true));
                for (i, (piece, special)) in pieces.into_iter().enumerate() {
                    let tk = if special { &self.inner } else { plain };
                    let enc = tk
                        .encode_fast(piece, add_special && i == 0)
                        .map_err(|e| anyhow!("tokenizing: {e}"))?;
                    ids.extend_from_slice(enc.get_ids());
                }
                Ok(ids)
            }
        }
    }

    fn encode_gguf(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        literal: &[std::ops::Range<usize>],
        specials: &[TokenId],
        finder: Option<&AhoCorasick>,
    ) -> Result<Vec<TokenId>> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        for frag in self.partition(text, parse_special, literal, specials, finder) {
            match frag {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(start, end) => {
                    let enc = self
                        .inner
                        .encode_fast(&text[start..end], false)
                        .map_err(|e| anyhow!("tokenizing: {e}"))?;
                    out.extend_from_slice(enc.get_ids());
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// Cuts special tokens out of `text` exactly as llama.cpp's
    /// `tokenizer_st_partition` does: each special token in turn, longest
    /// first, splits every text fragment at each of its occurrences, left to
    /// right; LSTRIP/RSTRIP tokens swallow the ASCII whitespace beside them.
    fn partition(
        &self,
        text: &str,
        parse_special: bool,
        literal: &[std::ops::Range<usize>],
        specials: &[TokenId],
        finder: Option<&AhoCorasick>,
    ) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(0, text.len())];
        let Some(finder) = finder else {
            return frags;
        };
        // Which special tokens occur anywhere: only those can split anything.
        let mut present = vec![false; specials.len()];
        let mut any = false;
        for m in finder.find_overlapping_iter(text) {
            present[m.pattern().as_usize()] = true;
            any = true;
        }
        if !any {
            return frags;
        }
        let bytes = text.as_bytes();
        for (i, &id) in specials.iter().enumerate() {
            if !present[i] {
                continue;
            }
            let attr = self.attrs[id as usize];
            if !parse_special && attr.is_special() {
                continue;
            }
            let pat = self.texts[id as usize].as_str();
            let mut next = Vec::with_capacity(frags.len() + 2);
            for frag in frags {
                let Fragment::Text(start, end) = frag else {
                    next.push(frag);
                    continue;
                };
                let mut cur = start;
                let mut from = start;
                while let Some(at) = text[from..end].find(pat) {
                    let at = from + at;
                    let inside =
                        |r: &std::ops::Range<usize>| r.start <= at && at + pat.len() <= r.end;
                    if attr.is_special() && literal.iter().any(inside) {
                        // A message's text: left as text.
                        from = at + pat.len();
                        continue;
                    }
                    let mut left_end = at;
                    if attr.has(Attr::LSTRIP) {
                        while left_end > cur && is_c_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > cur {
                        next.push(Fragment::Text(cur, left_end));
                    }
                    next.push(Fragment::Token(id));
                    cur = at + pat.len();
                    if attr.has(Attr::RSTRIP) {
                        while cur < end && is_c_space(bytes[cur]) {
                            cur += 1;
                        }
                    }
                    from = cur;
                }
                if cur < end {
                    next.push(Fragment::Text(cur, end));
                }
            }
            frags = next;
        }
        frags
    }

    /// Text for `ids`: the tokens' pieces joined. Control tokens are rendered
    /// only when `special`; bytes that do not form UTF-8 are shown as U+FFFD.
    /// Where the vocabulary adds a space prefix, the text's first space is
    /// that prefix and is dropped (as SentencePiece and HF decoders do).
    pub fn decode(&self, ids: &[TokenId], special: bool) -> String {
        let mut bytes = Vec::new();
        let mut strip = self.add_space_prefix;
        for &id in ids {
            let piece = self.token_bytes(id, special);
            if strip && !piece.is_empty() {
                strip = false;
                if piece[0] == b' ' {
                    bytes.extend_from_slice(&piece[1..]);
                    continue;
                }
            }
            bytes.extend_from_slice(piece);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A detokenizer for generated tokens, one at a time.
    pub fn stream_decoder(&self, special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, special)
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp's LSTRIP/RSTRIP use.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// GPT-2's byte-to-character table: printable bytes stand for themselves, the
/// others are moved to U+0100 and up, so that every byte is a visible char.
fn byte_level_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
            next += 1;
            c
        };
    }
    table
}

/// The bytes a byte-level BPE token text stands for; a character outside the
/// table (not written by a byte-level converter) stands for itself.
fn byte_level_decode(text: &str, reverse: &std::collections::HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match reverse.get(&c) {
            Some(&b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// The byte of a `<0xAB>` token text.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
