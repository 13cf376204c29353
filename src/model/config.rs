//! The forward pass's settings, read once from a model's metadata: shapes,
//! norms, rope per layer, attention scaling. Weights are not touched here.

use anyhow::{bail, Context, Result};
use ggml::cpu::ops::{self, Rope};

use std::path::Path;

use crate::format::gguf::{GgufFile, Metadata};
use crate::model::arch::{Arch, RopeStyle};
use crate::model::hparams::HyperParams;
use crate::model::weights::Shape;

/// Per-layer attention settings.
#[derive(Clone, Copy, Debug)]
pub struct LayerAttn {
    pub rope: Rope,
    /// Sliding window in tokens, for local layers.
    pub window: Option<usize>,
}

#[derive(Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub shape: Shape,
    pub eps: f32,
    pub layers: Vec<LayerAttn>,
    /// Multiplies Q before attention (gemma3) ...
    pub q_scale: Option<f32>,
    /// ... or the scores (everyone else).
    pub kq_scale: f32,
    pub embd_scale: Option<f32>,
    pub n_ctx_train: usize,
    /// The context the model was first trained at (before rope scaling).
    pub n_ctx_orig: usize,
    /// The KV cache's types: f16 from the file, the user's -ctk/-ctv once
    /// the loader sets them.
    pub kv_types: ggml::backend::KvTypes,
}

impl Config {
    /// From a GGUF file's metadata (and the token embedding's shape, for the
    /// vocabulary size); errors name the file and the key.
    pub fn from_gguf(file: &GgufFile) -> Result<Config> {
        let path = file.path();
        let n_vocab = file
            .tensor_info("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .context(format!(
                "{}: tensor 'token_embd.weight' is missing",
                path.display()
            ))? as usize;
        Config::from_metadata(file.metadata(), path, n_vocab)
    }

    /// From a Hugging Face model folder. Its llama and mistral checkpoints
    /// keep Q and K in rotate-half order (llama.cpp's converter permutes them
    /// for GGUF), so their rope is the NEOX one here.
    pub fn from_folder(folder: &crate::format::model_folder::ModelFolder) -> Result<Config> {
        let path = crate::format::TensorSource::path(folder);
        let n_vocab = folder.n_vocab().with_context(|| {
            format!(
                "{}: no token embedding (model.embed_tokens.weight)",
                path.display()
            )
        })?;
        let mut config = Config::from_metadata(&folder.metadata, path, n_vocab)?;
        for l in &mut config.layers {
            l.rope.neox = true;
        }
        Ok(config)
    }

    /// From GGUF-style metadata (a file's, or a model folder's config.json
    /// read as such) and the vocabulary size; errors name `path`.
    pub fn from_metadata(md: &Metadata, path: &Path, n_vocab: usize) -> Result<Config> {
        let hp = HyperParams::from_metadata(md).map_err(|e| e.in_file(path))?;
        let arch = Arch::from_name(&hp.architecture).with_context(|| path.display().to_string())?;
        let key = |k: &str| format!("{}.{k}", hp.architecture);
        let need = |v: Option<u64>, what: &str| -> Result<usize> {
            v.map(|v| v as usize)
                .with_context(|| format!("{}: metadata lacks {}", path.display(), key(what)))
        };
        let n_layer = hp.n_layer as usize;
        if n_layer == 0 {
            bail!(
                "{}: the model has no layers ({} is missing or 0)",
                path.display(),
                key("block_count")
            );
        }
        let n_embd = need(hp.n_embd, "embedding_length")?;
        let n_head = need(hp.n_head.first().copied(), "attention.head_count")?;
        let n_head_kv = need(hp.n_head_kv.first().copied(), "attention.head_count_kv")?;
        let n_ff = need(hp.n_ff.first().copied(), "feed_forward_length")?;
        let uniform = |v: &[u64]| v.iter().all(|&x| x == v[0]);
        if !uniform(&hp.n_head) || !uniform(&hp.n_head_kv) || !uniform(&hp.n_ff) {
            bail!(
                "{}: per-layer head counts or feed-forward sizes are not supported yet",
                path.display()
            );
        }
        let head_dim = need(hp.head_dim_k, "attention.key_length")?;
        if hp.head_dim_v != hp.head_dim_k {
            bail!(
                "{}: different key and value head sizes are not supported yet",
                path.display()
            );
        }
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            bail!(
                "{}: {n_head} heads cannot share {n_head_kv} KV heads",
                path.display()
            );
        }
        let shape = Shape {
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_vocab,
        };
        let eps = hp.norm_eps.unwrap_or(1e-5) as f32;

        let n_rot = md
            .u64(&key("rope.dimension_count"))
            .map_err(|e| e.in_file(path))?
            .map_or(head_dim, |v| v as usize);
        if n_rot > head_dim || n_rot % 2 != 0 {
            bail!(
                "{}: rope dimension count {n_rot} does not fit head size {head_dim}",
                path.display()
            );
        }
        let neox = arch.rope == RopeStyle::Neox;
        let base = hp.rope_freq_base.unwrap_or(10000.0) as f32;
        let mut global_rope = Rope::plain(n_rot, base, neox);
        let n_ctx_train = hp.n_ctx_train.unwrap_or(4096) as usize;
        let n_ctx_orig = hp
            .rope_scaling
            .as_ref()
            .and_then(|s| s.original_context)
            .or(md
                .u64(&key("rope.scaling.original_context_length"))
                .map_err(|e| e.in_file(path))?)
            .map_or(n_ctx_train, |v| v as usize);
        if let Some(s) = &hp.rope_scaling {
            let factor = s.factor.unwrap_or(1.0) as f32;
            if factor > 0.0 {
                global_rope.freq_scale = 1.0 / factor;
            }
            match s.kind.as_str() {
                "linear" => {}
                "yarn" => {
                    let orig = s.original_context.unwrap_or(n_ctx_train as u64) as usize;
                    global_rope.ext_factor = 1.0;
                    global_rope.corr_dims = ops::yarn_corr_dims(n_rot, orig, base, 32.0, 1.0);
                }
                other => bail!(
                    "{}: rope scaling '{other}' is not supported yet",
                    path.display()
                ),
            }
        }
        // Phi-3 LongRoPE files scale cos/sin by an attention factor.
        if let Some(f) = md
            .f64(&key("rope.scaling.attn_factor"))
            .map_err(|e| e.in_file(path))?
        {
            global_rope.attn_factor = f as f32;
        }
        let swa_base = hp.rope_freq_base_swa.unwrap_or(10000.0) as f32;
        let layers = (0..n_layer)
            .map(|il| {
                let local = hp.swa_layers.get(il).copied().unwrap_or(false);
                match (local, hp.sliding_window) {
                    (true, Some(w)) => LayerAttn {
                        rope: if arch.swa_own_rope {
                            Rope::plain(n_rot, swa_base, neox)
                        } else {
                            global_rope
                        },
                        window: Some(w as usize),
                    },
                    _ => LayerAttn {
                        rope: global_rope,
                        window: None,
                    },
                }
            })
            .collect();
        // Gemma 3 27B scales queries by its width per head (5376 / 32 = 168,
        // its query_pre_attn_scalar) rather than its head size of 128;
        // llama.cpp tells it by its 62 layers, as here.
        let scaled_by = if arch.name == "gemma3" && n_layer == 62 {
            n_embd / n_head
        } else {
            head_dim
        };
        let attn_scale = 1.0 / (scaled_by as f32).sqrt();
        let (q_scale, kq_scale) = if arch.scale_q {
            (Some(attn_scale), 1.0)
        } else {
            (None, attn_scale)
        };
        let embd_scale = arch.scale_embeddings.then(|| (n_embd as f32).sqrt());
        Ok(Config {
            arch,
            n_layer,
            shape,
            eps,
            layers,
            q_scale,
            kq_scale,
            embd_scale,
            n_ctx_train,
            n_ctx_orig,
            kv_types: ggml::backend::KvTypes::F16,
        })
    }

    pub fn q_dim(&self) -> usize {
        self.shape.n_head * self.shape.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.shape.n_head_kv * self.shape.head_dim
    }

    /// Whether Phi-3's long rope factors apply at this context: llama.cpp
    /// judges it on its context padded to 256.
    pub fn long_rope(&self, n_ctx: usize) -> bool {
        n_ctx.next_multiple_of(256) > self.n_ctx_orig
    }
}
