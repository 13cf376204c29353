//! Loading a Hugging Face `tokenizer.json` (safetensors, GPTQ and EXL2
//! checkpoints carry one), with `tokenizer_config.json` beside it when present.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::{
    byte_level_chars, byte_level_decode, parse_byte_token, Attr, Encoder, TokenId, Tokenizer,
    VocabType,
};

pub(super) fn load(path: &Path) -> Result<Tokenizer> {
    let (file, dir): (PathBuf, PathBuf) = if path.is_dir() {
        (path.join("tokenizer.json"), path.to_path_buf())
    } else {
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        (path.to_path_buf(), dir)
    };
    if !file.is_file() {
        bail!("{}: no such file", file.display());
    }
    let inner = tokenizers::Tokenizer::from_file(&file)
        .map_err(|e| anyhow!("{}: not a usable tokenizer.json: {e}", file.display()))?;
    let config = read_config(&dir.join("tokenizer_config.json"))?;

    let vocab = inner.get_vocab(true);
    let n = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
    if n == 0 {
        bail!("{}: the vocabulary is empty", file.display());
    }
    let mut texts = vec![String::new(); n];
    for (text, &id) in &vocab {
        texts[id as usize] = text.clone();
    }
    let mut attrs = vec![Attr::NORMAL; n];
    let byte_fallback = match inner.get_model() {
        tokenizers::models::ModelWrapper::BPE(bpe) => bpe.byte_fallback,
        _ => false,
    };
    if byte_fallback {
        for (attr, text) in attrs.iter_mut().zip(&texts) {
            if parse_byte_token(text).is_some() {
                *attr = Attr::BYTE;
            }
        }
    }
    for (id, tok) in inner.get_added_tokens_decoder() {
        if let Some(a) = attrs.get_mut(id as usize) {
            *a = if tok.special {
                Attr::CONTROL
            } else {
                Attr::USER_DEFINED
            };
        }
    }

    let byte_level = json_of(&inner.get_pre_tokenizer()).contains("\"ByteLevel\"")
        || json_of(&inner.get_decoder()).contains("\"ByteLevel\"");
    let reverse: HashMap<char, u8> = byte_level_chars()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    let pieces = texts
        .iter()
        .zip(&attrs)
        .map(|(text, &attr)| {
            let bytes = if attr.has(Attr::BYTE) {
                parse_byte_token(text).map(|b| vec![b]).unwrap_or_default()
            } else if attr.has(Attr::NORMAL) && byte_level {
                byte_level_decode(text, &reverse)
            } else if attr.has(Attr::NORMAL) {
                text.replace('\u{2581}', " ").into_bytes()
            } else {
                text.as_bytes().to_vec()
            };
            bytes.into_boxed_slice()
        })
        .collect();

    // What the post-processor adds around a text.
    let probe = |add: bool| -> Result<Vec<TokenId>> {
        Ok(inner
            .encode_fast("a", add)
            .map_err(|e| anyhow!("{}: {e}", file.display()))?
            .get_ids()
            .to_vec())
    };
    let (with, without) = (probe(true)?, probe(false)?);
    let (prefix, suffix) = match (0..=with.len().saturating_sub(without.len()))
        .find(|&i| with[i..].starts_with(&without))
    {
        Some(i) => (with[..i].to_vec(), with[i + without.len()..].to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    let named = |key: &str| -> Option<TokenId> {
        let v = config.get(key)?;
        let text = v.as_str().or_else(|| v.get("content")?.as_str())?;
        inner.token_to_id(text)
    };
    let bos = named("bos_token").or_else(|| prefix.first().copied());
    let eos = named("eos_token").or_else(|| suffix.last().copied());
    let mut eog: Vec<TokenId> = eos.into_iter().collect();
    for name in [
        "<|im_end|>",
        "<|eot_id|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
    ] {
        eog.extend(inner.token_to_id(name));
    }
    eog.sort_unstable();
    eog.dedup();
    let eot = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"]
        .iter()
        .find_map(|n| inner.token_to_id(n));

    let normalizer = json_of(&inner.get_normalizer());
    let pre_tok = json_of(&inner.get_pre_tokenizer());
    let add_space_prefix = normalizer.contains("\"Prepend\"")
        || (pre_tok.contains("\"Metaspace\"") && !pre_tok.contains("\"never\""));

    let mut plain = inner.clone();
    plain.set_encode_special_tokens(true);
    Ok(Tokenizer {
        inner,
        encoder: Encoder::Json {
            plain: Box::new(plain),
        },
        vocab_type: VocabType::HfJson,
        pre: None,
        texts,
        attrs,
        pieces,
        bos,
        eos,
        eot,
        eog,
        add_bos: !prefix.is_empty(),
        add_eos: !suffix.is_empty(),
        add_space_prefix,
        warnings: Vec::new(),
    })
}

fn json_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn read_config(path: &Path) -> Result<serde_json::Value> {
    if !path.is_file() {
        return Ok(serde_json::Value::Null);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}
