//! llama.cpp's tokenizer (feature `oracle`), loaded from a model's
//! vocabulary alone, to check ours against. Never used by the engine.

use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

/// llama.cpp's backend, initialised once per process, its logs silenced.
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend =
                LlamaBackend::init().map_err(|e| format!("llama.cpp backend: {e}"))?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A model's vocabulary as llama.cpp reads it.
pub struct OracleVocab {
    model: LlamaModel,
}

impl OracleVocab {
    /// Loads only the vocabulary (`vocab_only`): no tensor is read.
    pub fn load(path: &Path) -> Result<OracleVocab, String> {
        let params = LlamaModelParams::default().with_vocab_only(true);
        LlamaModel::load_from_file(backend()?, path, &params)
            .map(|model| OracleVocab { model })
            .map_err(|e| format!("llama.cpp cannot load {}: {e}", path.display()))
    }

    /// `llama_tokenize` with explicit `add_special` and `parse_special`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, parse_special)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect()
    }

    /// `llama_token_to_piece`: the bytes a token prints as.
    pub fn piece(&self, id: u32, special: bool) -> Vec<u8> {
        self.model
            .vocab()
            .token_to_piece(LlamaToken(id as i32), special, None)
    }

    pub fn n_vocab(&self) -> usize {
        self.model.vocab().n_tokens().max(0) as usize
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.model.vocab().is_eog(LlamaToken(id as i32))
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.model.vocab().is_control(LlamaToken(id as i32))
    }

    /// BOS, or `None` where the vocabulary has none.
    pub fn bos(&self) -> Option<u32> {
        let id = self.model.vocab().bos().0;
        (id >= 0).then_some(id as u32)
    }

    pub fn eos(&self) -> Option<u32> {
        let id = self.model.vocab().eos().0;
        (id >= 0).then_some(id as u32)
    }

    pub fn add_bos(&self) -> bool {
        self.model.vocab().should_add_bos()
    }

    pub fn add_eos(&self) -> bool {
        self.model.vocab().should_add_eos()
    }
}
