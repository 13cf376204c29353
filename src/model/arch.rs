//! What sets one architecture apart, as data for the one forward pass.

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Rotate adjacent pairs (x0, x1), (x2, x3), ... (llama).
    Norm,
    /// Rotate (x_i, x_{i+d/2}) (GPT-NeoX; qwen, gemma, phi3).
    Neox,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// silu(gate) * up
    SwiGlu,
    /// gelu(gate) * up, with ggml's tanh approximation
    GeGlu,
}

#[derive(Clone, Copy, Debug)]
pub struct Arch {
    pub name: &'static str,
    pub rope: RopeStyle,
    pub activation: Activation,
    /// Per-head RMS norm of Q and K before rope (qwen3, gemma3).
    pub qk_norm: bool,
    /// RMS norms after attention and after the FFN, before the residual add (gemma3).
    pub post_norms: bool,
    /// Token embeddings scaled by sqrt(n_embd) (gemma).
    pub scale_embeddings: bool,
    /// Q, K and V in one `attn_qkv` tensor; gate and up in one `ffn_up` (phi3).
    pub fused_qkv_and_gate_up: bool,
    /// Sliding-window layers rotate with `rope.freq_base_swa` and no scaling
    /// (gemma3); otherwise every layer uses the global rope.
    pub swa_own_rope: bool,
    /// Q is multiplied by 1/sqrt(head_dim) before attention, instead of the
    /// scores after it (gemma3: the same math, ggml's rounding).
    pub scale_q: bool,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Arch> {
        let base = Arch {
            name: "llama",
            rope: RopeStyle::Norm,
            activation: Activation::SwiGlu,
            qk_norm: false,
            post_norms: false,
            scale_embeddings: false,
            fused_qkv_and_gate_up: false,
            swa_own_rope: false,
            scale_q: false,
        };
        Ok(match name {
            "llama" => base,
            "qwen2" => Arch {
                name: "qwen2",
                rope: RopeStyle::Neox,
                ..base
            },
            "qwen3" => Arch {
                name: "qwen3",
                rope: RopeStyle::Neox,
                qk_norm: true,
                ..base
            },
            "gemma3" => Arch {
                name: "gemma3",
                rope: RopeStyle::Neox,
                activation: Activation::GeGlu,
                qk_norm: true,
                post_norms: true,
                scale_embeddings: true,
                swa_own_rope: true,
                scale_q: true,
                ..base
            },
            "phi3" => Arch {
                name: "phi3",
                rope: RopeStyle::Neox,
                fused_qkv_and_gate_up: true,
                ..base
            },
            other => bail!(
                "architecture '{other}' is not supported (supported: llama, qwen2, qwen3, gemma3, phi3)"
            ),
        })
    }
}
