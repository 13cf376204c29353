//! Building a tokenizer from a GGUF vocabulary, with the defaults and rules
//! of llama.cpp's vocabulary loader (`llama_vocab::impl::load`).

use std::collections::HashMap;

use aho_corasick::{AhoCorasickBuilder, MatchKind};
use anyhow::{anyhow, bail, Result};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{
    NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::{
    byte_level_chars, byte_level_decode, parse_byte_token, pretok, Attr, Encoder, TokenId,
    Tokenizer, VocabType,
};
use crate::format::gguf::{Array, Metadata, Value};

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

/// Special token ids: the loader's defaults, overridden by the file's keys.
#[derive(Clone, Copy, Debug, Default)]
struct Specials {
    bos: Option<TokenId>,
    eos: Option<TokenId>,
    eot: Option<TokenId>,
    eom: Option<TokenId>,
    fim_pre: Option<TokenId>,
    fim_suf: Option<TokenId>,
    fim_mid: Option<TokenId>,
    fim_pad: Option<TokenId>,
    fim_rep: Option<TokenId>,
    fim_sep: Option<TokenId>,
}

/// Tokens llama.cpp treats as control and as end of generation whatever the
/// file says their type is.
const EOG_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

const EOT_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

const FIM_PRE_NAMES: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_NAMES: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_NAMES: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_NAMES: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_NAMES: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_NAMES: &[&str] = &["<|file_sep|>"];

pub(super) fn build(md: &Metadata) -> Result<Tokenizer> {
    let model = md.str(KEY_MODEL)?.ok_or_else(|| {
        anyhow!("the file has no vocabulary ({KEY_MODEL} is missing), so it cannot be tokenized")
    })?;
    let vocab_type = match model {
        "llama" => VocabType::Spm,
        "gpt2" => VocabType::Bpe,
        "no_vocab" | "none" => bail!("the model has no vocabulary ({KEY_MODEL} is '{model}')"),
        other => bail!(
            "tokenizer model '{other}' ({KEY_MODEL}) is not supported (llm reads 'llama' and 'gpt2' vocabularies)"
        ),
    };
    let pre_name = md.str(KEY_PRE)?;
    let pre = match vocab_type {
        VocabType::Bpe => Some(pretok::lookup(pre_name).map_err(|e| anyhow!(e))?),
        _ => None,
    };
    let mut warnings = Vec::new();
    if vocab_type == VocabType::Bpe && pre_name.is_none() {
        warnings.push(format!(
            "{KEY_PRE} is missing: using the 'default' pre-tokenizer as llama.cpp does (convert the model again for exact tokens)"
        ));
    }

    let tokens = string_array(md, KEY_TOKENS)?
        .ok_or_else(|| anyhow!("the file has no vocabulary ({KEY_TOKENS} is missing)"))?;
    let n = tokens.len();
    if n == 0 {
        bail!("the vocabulary ({KEY_TOKENS}) is empty");
    }
    if n > i32::MAX as usize {
        bail!("the vocabulary has {n} tokens, more than llama.cpp's ids can count");
    }
    let scores = scores(md, n)?;
    let mut attrs = token_types(md, n)?;

    // llama.cpp renames empty tokens so that every text maps to one id.
    let texts: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            }
        })
        .collect();
    // Text to id (ahash: hundreds of thousands of look-ups follow).
    let mut ids = Vocab::default();
    ids.reserve(n);
    for (i, t) in texts.iter().enumerate() {
        if let Some(first) = ids.insert(t.clone(), i as TokenId) {
            bail!("tokens {first} and {i} have the same text {t:?}; the vocabulary is corrupt");
        }
    }

    // Defaults by vocabulary type, then the pre-tokenizer's, then the file's.
    let (mut bos, mut eos): (Option<u64>, Option<u64>) = match vocab_type {
        VocabType::Spm => (Some(1), Some(2)),
        _ => (Some(11), Some(11)),
    };
    let (mut add_bos, mut add_eos, mut add_space_prefix) = match vocab_type {
        VocabType::Spm => (true, false, true),
        _ => (false, false, false),
    };
    if let Some(p) = &pre {
        if p.add_bos {
            add_bos = true;
        }
        if p.no_default_bos {
            bos = None;
        }
    }
    if let Some(v) = md.bool("tokenizer.ggml.add_space_prefix")? {
        add_space_prefix = v;
    }
    let in_vocab = |id: Option<u64>| id.filter(|&i| i < n as u64);
    bos = in_vocab(bos);
    eos = in_vocab(eos);
    let mut special_id = |key: &str, default: Option<u64>| -> Result<Option<TokenId>> {
        let full = format!("tokenizer.ggml.{key}");
        let id = match md.u64(&full)? {
            Some(id) if id < n as u64 => Some(id),
            Some(id) => {
                warnings.push(format!(
                    "{full} is {id}, outside the vocabulary of {n} tokens; ignored"
                ));
                default
            }
            None => default,
        };
        Ok(id.map(|i| i as TokenId))
    };
    let mut sp = Specials {
        bos: special_id("bos_token_id", bos)?,
        eos: special_id("eos_token_id", eos)?,
        eot: special_id("eot_token_id", None)?,
        eom: special_id("eom_token_id", None)?,
        fim_pre: special_id("fim_pre_token_id", None)?,
        fim_suf: special_id("fim_suf_token_id", None)?,
        fim_mid: special_id("fim_mid_token_id", None)?,
        fim_pad: special_id("fim_pad_token_id", None)?,
        fim_rep: special_id("fim_rep_token_id", None)?,
        fim_sep: special_id("fim_sep_token_id", None)?,
    };
    // Older files name the first three FIM tokens this way.
    sp.fim_pre = special_id("prefix_token_id", sp.fim_pre.map(u64::from))?;
    sp.fim_suf = special_id("suffix_token_id", sp.fim_suf.map(u64::from))?;
    sp.fim_mid = special_id("middle_token_id", sp.fim_mid.map(u64::from))?;
    if let Some(v) = md.bool("tokenizer.ggml.add_bos_token")? {
        add_bos = v;
    }
    if let Some(v) = md.bool("tokenizer.ggml.add_eos_token")? {
        add_eos = v;
    }
    if add_bos && sp.bos.is_none() {
        bail!("the vocabulary asks for a BOS token (add_bos_token) but has none");
    }
    if add_eos && sp.eos.is_none() {
        bail!("the vocabulary asks for an EOS token (add_eos_token) but has none");
    }

    let eog = apply_name_rules(&texts, &ids, &mut attrs, &mut sp);

    // Special tokens in the order llama.cpp tries them: longest text first
    // (ties by id; llama.cpp's unstable sort leaves them unspecified).
    let mut specials: Vec<TokenId> = (0..n as TokenId)
        .filter(|&id| {
            attrs[id as usize].has(Attr::CONTROL.with(Attr::USER_DEFINED).with(Attr::UNKNOWN))
        })
        .collect();
    specials.sort_by_key(|&id| std::cmp::Reverse(texts[id as usize].len()));

    let name = md
        .str("general.name")
        .ok()
        .flatten()
        .unwrap_or("")
        .to_lowercase();
    let arch = md.str("general.architecture").ok().flatten().unwrap_or("");
    strip_rules(
        pre_name.unwrap_or(""),
        arch,
        &name,
        &ids,
        &specials,
        &mut attrs,
    );

    let finder = if specials.is_empty() {
        None
    } else {
        Some(
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .build(specials.iter().map(|&id| texts[id as usize].as_bytes()))
                .map_err(|e| anyhow!("indexing the special tokens: {e}"))?,
        )
    };

    // Only BPE vocabularies have a pre-tokenizer.
    let mut inner = match &pre {
        None => spm_model(&texts, &ids, &scores, add_space_prefix)?,
        Some(pre) => {
            let (t, skipped) = bpe_model(md, &ids, pre)?;
            if skipped > 0 {
                warnings.push(format!(
                    "{skipped} merges name tokens missing from the vocabulary; they are ignored"
                ));
            }
            t
        }
    };
    add_special_tokens(&mut inner, &texts, &attrs);

    let pieces = pieces(vocab_type, &texts, &attrs);
    Ok(Tokenizer {
        inner,
        encoder: Encoder::Gguf { specials, finder },
        vocab_type,
        pre: pre_name.map(str::to_string),
        texts,
        attrs,
        pieces,
        bos: sp.bos,
        eos: sp.eos,
        eot: sp.eot,
        eog,
        add_bos,
        add_eos,
        add_space_prefix,
        warnings,
    })
}

fn string_array<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a [String]>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => match v.as_array().and_then(Array::as_strings) {
            Some(s) => Ok(Some(s)),
            None => bail!(
                "metadata key '{key}' has type {}, expected an array of strings",
                v.type_description()
            ),
        },
    }
}

fn scores(md: &Metadata, n: usize) -> Result<Vec<f32>> {
    let Some(v) = md.get(KEY_SCORES) else {
        return Ok(vec![0.0; n]);
    };
    let scores: Vec<f32> = match v {
        Value::Array(Array::F32(s)) => s.clone(),
        Value::Array(Array::I32(s)) => s.iter().map(|&x| x as f32).collect(),
        v => bail!(
            "metadata key '{KEY_SCORES}' has type {}, expected an array of f32",
            v.type_description()
        ),
    };
    if scores.len() < n {
        bail!("{KEY_SCORES} has {} entries for {n} tokens", scores.len());
    }
    Ok(scores)
}

fn token_types(md: &Metadata, n: usize) -> Result<Vec<Attr>> {
    let Some(v) = md.get(KEY_TYPES) else {
        return Ok(vec![Attr::NORMAL; n]);
    };
    let Value::Array(Array::I32(types)) = v else {
        bail!(
            "metadata key '{KEY_TYPES}' has type {}, expected an array of i32",
            v.type_description()
        );
    };
    if types.len() < n {
        bail!("{KEY_TYPES} has {} entries for {n} tokens", types.len());
    }
    Ok(types[..n]
        .iter()
        .map(|&t| Attr::from_token_type(t.into()))
        .collect())
}

/// llama.cpp's loader finds some special tokens by their text and makes them
/// control tokens whatever the file says (so `<|im_end|>` typed by a user is
/// never that token). Returns the end-of-generation ids, sorted.
fn apply_name_rules(
    texts: &[String],
    ids: &Vocab,
    attrs: &mut [Attr],
    sp: &mut Specials,
) -> Vec<TokenId> {
    let find_first = |names: &[&str]| names.iter().find_map(|n| ids.get(*n).copied());
    let control = |id: TokenId, attrs: &mut [Attr]| {
        attrs[id as usize] = attrs[id as usize].with(Attr::CONTROL);
    };
    // A role that the file leaves unset is found by name (llama.cpp takes
    // whichever match its hash map yields first; vocabularies have one).
    for (slot, names) in [
        (&mut sp.eot, EOT_NAMES),
        (&mut sp.eom, &["<|eom_id|>"][..]),
        (&mut sp.fim_pre, FIM_PRE_NAMES),
        (&mut sp.fim_suf, FIM_SUF_NAMES),
        (&mut sp.fim_mid, FIM_MID_NAMES),
        (&mut sp.fim_pad, FIM_PAD_NAMES),
        (&mut sp.fim_rep, FIM_REP_NAMES),
        (&mut sp.fim_sep, FIM_SEP_NAMES),
    ] {
        if slot.is_none() {
            if let Some(id) = find_first(names) {
                *slot = Some(id);
                control(id, attrs);
            }
        }
    }
    // Control tokens named "unused" are unused.
    for (attr, text) in attrs.iter_mut().zip(texts) {
        if attr.has(Attr::CONTROL) && text.contains("unused") {
            *attr = attr.with(Attr::UNUSED);
        }
    }
    let mut eog: Vec<TokenId> = [sp.fim_pad, sp.fim_rep, sp.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for name in EOG_NAMES {
        if let Some(&id) = ids.get(*name) {
            eog.push(id);
            control(id, attrs);
        }
    }
    // gpt-oss: these are always rendered, so they are user-defined.
    for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = ids.get(name) {
            attrs[id as usize] = Attr::USER_DEFINED;
        }
    }
    eog.extend([sp.eos, sp.eot, sp.eom].into_iter().flatten());
    eog.sort_unstable();
    eog.dedup();
    let eog_has = |eog: &[TokenId], name: &str| {
        ids.get(name)
            .copied()
            .filter(|id| eog.binary_search(id).is_ok())
    };
    // o200k_harmony and solar-open: "<|end|>" ends a message, not generation.
    let end = eog_has(&eog, "<|end|>");
    let has_return = eog_has(&eog, "<|return|>").is_some();
    let has_call = eog_has(&eog, "<|call|>").is_some() || eog_has(&eog, "<|calls|>").is_some();
    let has_flush = eog_has(&eog, "<|flush|>").is_some();
    if let Some(end) = end {
        if has_call && (has_return || has_flush) {
            eog.retain(|&id| id != end);
            attrs[end as usize] = Attr::USER_DEFINED;
        }
    }
    // Gemma 4 and PLaMo have an ordinary "</s>".
    let s = eog_has(&eog, "</s>");
    let marker =
        eog_has(&eog, "<|tool_response>").is_some() || eog_has(&eog, "<|plamo:eos|>").is_some();
    if let (Some(s), true) = (s, marker) {
        eog.retain(|&id| id != s);
        attrs[s as usize] = Attr::NORMAL;
    }
    eog
}

/// Per-model LSTRIP/RSTRIP attributes, which GGUF files do not carry.
fn strip_rules(
    pre: &str,
    arch: &str,
    name: &str,
    ids: &Vocab,
    specials: &[TokenId],
    attrs: &mut [Attr],
) {
    let set = |text: &str, attr: Attr, on: bool, attrs: &mut [Attr]| {
        if let Some(&id) = ids.get(text) {
            let a = &mut attrs[id as usize];
            *a = if on { a.with(attr) } else { a.without(attr) };
        }
    };
    let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
    if any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code", "mmbert"])
        || any(arch, &["nomic-bert-moe", "jina-bert-v3"])
    {
        set("<mask>", Attr::LSTRIP, true, attrs);
    } else if any(name, &["phi-3", "phi3"]) {
        for &id in specials {
            attrs[id as usize] = attrs[id as usize].with(Attr::RSTRIP);
        }
        set("</s>", Attr::RSTRIP, true, attrs);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(t, Attr::RSTRIP, false, attrs);
        }
    } else if name.contains("modern-bert") {
        set("[MASK]", Attr::LSTRIP, true, attrs);
    }
}

/// SentencePiece "llama" vocabularies. llama.cpp merges the adjacent pair
/// whose joined text is the best-scoring token (leftmost on ties), which is
/// BPE with one merge per way of writing each token as two tokens, ranked by
/// the token's score.
fn spm_model(
    texts: &[String],
    ids: &Vocab,
    scores: &[f32],
    add_space_prefix: bool,
) -> Result<tokenizers::Tokenizer> {
    // (token, split point) for every token that is two tokens joined.
    let mut splits: Vec<(TokenId, usize)> = Vec::new();
    for (id, text) in texts.iter().enumerate() {
        for (at, _) in text.char_indices().skip(1) {
            if ids.contains_key(&text[..at]) && ids.contains_key(&text[at..]) {
                splits.push((id as TokenId, at));
            }
        }
    }
    // Best score first; a stable sort keeps ties in id, then split, order.
    splits.sort_by(|a, b| scores[b.0 as usize].total_cmp(&scores[a.0 as usize]));
    let merges: Vec<(String, String)> = splits
        .into_iter()
        .map(|(id, at)| {
            let t = &texts[id as usize];
            (t[..at].to_string(), t[at..].to_string())
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(ids.clone(), merges)
        .byte_fallback(true)
        .build()
        .map_err(|e| anyhow!("building the SentencePiece model: {e}"))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        norm.push(Prepend::new(SPM_SPACE.into()).into());
    }
    norm.push(
        Replace::new(" ", SPM_SPACE)
            .map_err(|e| anyhow!("{e}"))?
            .into(),
    );
    tk.with_normalizer(Some(NormalizerSequence::new(norm)));
    let mut dec: Vec<DecoderWrapper> = vec![
        tokenizers::normalizers::Replace::new(SPM_SPACE, " ")
            .map_err(|e| anyhow!("{e}"))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    tk.with_decoder(Some(DecoderSequence::new(dec)));
    Ok(tk)
}

/// Byte-level BPE "gpt2" vocabularies: the file's ranked merges, and the
/// pre-tokenizer's expressions before GPT-2's byte-to-character mapping.
/// Returns the tokenizer and how many merges had to be skipped.
fn bpe_model(
    md: &Metadata,
    ids: &Vocab,
    pre: &pretok::PreTokenizer,
) -> Result<(tokenizers::Tokenizer, usize)> {
    let raw = string_array(md, KEY_MERGES)?
        .ok_or_else(|| anyhow!("the BPE vocabulary has no merges ({KEY_MERGES} is missing)"))?;
    let mut merges = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::with_capacity(raw.len());
    let mut skipped = 0;
    for m in raw {
        // llama.cpp splits at the first space after the first byte.
        let space = m.bytes().skip(1).position(|b| b == b' ');
        let Some(at) = space.map(|p| p + 1) else {
            skipped += 1;
            continue;
        };
        let (a, b) = (&m[..at], &m[at + 1..]);
        let joined = format!("{a}{b}");
        // HF's BPE needs every merge to make a known token of known tokens.
        if !(ids.contains_key(a) && ids.contains_key(b) && ids.contains_key(joined.as_str())) {
            skipped += 1;
            continue;
        }
        // A pair listed twice keeps its first rank, as in llama.cpp.
        if seen.insert((a, b)) {
            merges.push((a.to_string(), b.to_string()));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(ids.clone(), merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| anyhow!("building the BPE model: {e}"))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for re in pre.regexes {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("pre-tokenizer expression {re:?}: {e}"))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    tk.with_pre_tokenizer(Some(PreSequence::new(steps)));
    tk.with_decoder(Some(ByteLevel::new(false, false, false)));
    Ok((tk, skipped))
}

/// Registers control and user-defined tokens with the HF tokenizer, and tells
/// it to read control tokens' texts as plain text (as user text must be).
fn add_special_tokens(tk: &mut tokenizers::Tokenizer, texts: &[String], attrs: &[Attr]) {
    let mut control = Vec::new();
    let mut user = Vec::new();
    for (text, attr) in texts.iter().zip(attrs) {
        if attr.is_special() {
            control.push(AddedToken::from(text.clone(), true).normalized(false));
        } else if attr.has(Attr::USER_DEFINED) {
            user.push(AddedToken::from(text.clone(), false).normalized(false));
        }
    }
    tk.add_special_tokens(&control);
    tk.add_tokens(&user);
    tk.set_encode_special_tokens(true);
}

/// What each token prints as (llama.cpp's `token_to_piece` with special).
fn pieces(vocab_type: VocabType, texts: &[String], attrs: &[Attr]) -> Vec<Box<[u8]>> {
    let reverse: HashMap<char, u8> = byte_level_chars()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    texts
        .iter()
        .zip(attrs)
        .map(|(text, &attr)| {
            let bytes: Vec<u8> =
                if attr.has(Attr::CONTROL.with(Attr::UNKNOWN).with(Attr::USER_DEFINED)) {
                    text.as_bytes().to_vec()
                } else if attr.has(Attr::NORMAL) {
                    match vocab_type {
                        VocabType::Spm => text.replace(SPM_SPACE, " ").into_bytes(),
                        _ => byte_level_decode(text, &reverse),
                    }
                } else if attr.has(Attr::BYTE) {
                    parse_byte_token(text).map(|b| vec![b]).unwrap_or_default()
                } else {
                    Vec::new()
                };
            bytes.into_boxed_slice()
        })
        .collect()
}
