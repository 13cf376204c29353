//! `llm info FOLDER`: what a Hugging Face model folder holds, read as the
//! loader reads it (config.json as metadata, tensors under our names, the
//! tokenizer from tokenizer.json).

use std::io::{self, Write};

use anyhow::Context;
use serde::Serialize;

use super::info::{list_or_none, render_hparams, InfoArgs, Report};
use crate::format::gguf::human_bytes;
use crate::format::model_folder::ModelFolder;
use crate::format::TensorSource;
use crate::model::footprint::footprint;
use crate::model::HyperParams;
use crate::tokenizer::Tokenizer;

#[derive(Serialize)]
struct FolderInfo {
    folder: String,
    /// gptq, exl2, or none.
    quantization: String,
    hparams: HyperParams,
    tokenizer: FolderTokenizer,
    chat_template_chars: Option<usize>,
    tensors: usize,
    parameters: u64,
    /// As loaded: quantised layers count as the f16 they are dequantised to.
    weights_bytes: u64,
    ctx_size: u64,
    kv_cache_bytes: u64,
    kv_cache_type: String,
}

#[derive(Serialize)]
struct FolderTokenizer {
    kind: &'static str,
    tokens: usize,
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
}

pub(super) fn show(args: &InfoArgs, folder: &ModelFolder) -> anyhow::Result<()> {
    let path = folder.path();
    let hparams = HyperParams::from_metadata(&folder.metadata).map_err(|e| e.in_file(path))?;
    let tok = Tokenizer::from_tokenizer_json(path)?;
    let named = |id: Option<u32>| id.map(|i| (i, tok.token_text(i).unwrap_or("").to_string()));
    let ctx = match args.ctx_size {
        Some(n) if n > 0 => n,
        _ => hparams.n_ctx_train.unwrap_or(0),
    };
    let info = FolderInfo {
        folder: path.display().to_string(),
        quantization: folder.quant_method.clone().unwrap_or_else(|| "none".into()),
        tokenizer: FolderTokenizer {
            kind: tok.vocab_type().name(),
            tokens: tok.n_vocab(),
            bos: named(tok.bos()),
            eos: named(tok.eos()),
        },
        chat_template_chars: folder
            .metadata
            .str("tokenizer.chat_template")
            .ok()
            .flatten()
            .map(|t| t.chars().count()),
        tensors: folder.tensor_names().len(),
        parameters: folder.parameters(),
        weights_bytes: folder.stored_bytes(),
        ctx_size: ctx,
        kv_cache_bytes: footprint(folder, &hparams, ctx as usize, args.kv_types()).kv_bytes(),
        kv_cache_type: args.kv_types().to_string(),
        hparams,
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &info).context("writing JSON")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render(&info))?;
    }
    out.flush()?;
    Ok(())
}

fn render(i: &FolderInfo) -> String {
    let mut r = Report::default();
    r.line("folder", i.folder.clone());
    r.line(
        "format",
        format!("Hugging Face safetensors, quantisation: {}", i.quantization),
    );
    render_hparams(&mut r, &i.hparams);
    let t = &i.tokenizer;
    r.line("tokenizer", format!("{}, {} tokens", t.kind, t.tokens));
    let special: Vec<String> = [("bos", &t.bos), ("eos", &t.eos)]
        .iter()
        .filter_map(|(role, s)| s.as_ref().map(|(id, text)| format!("{role} {id} {text:?}")))
        .collect();
    r.line("special tokens", list_or_none(&special));
    r.line(
        "chat template",
        i.chat_template_chars
            .map_or("none".into(), |n| format!("yes, {n} chars")),
    );
    let bpw = if i.parameters > 0 {
        format!(
            ", {:.2} bits per weight",
            i.weights_bytes as f64 * 8.0 / i.parameters as f64
        )
    } else {
        String::new()
    };
    r.line(
        "tensors",
        format!("{}, {} parameters{bpw}", i.tensors, i.parameters),
    );
    r.line(
        "memory",
        format!(
            "weights {} as loaded, KV cache {} at {} tokens ({})",
            human_bytes(i.weights_bytes),
            human_bytes(i.kv_cache_bytes),
            i.ctx_size,
            i.kv_cache_type
        ),
    );
    r.text
}
