//! A model as the user names it: a GGUF file, or a Hugging Face folder
//! (config.json, safetensors, tokenizer.json). Both give GGUF-style metadata
//! (the chat template under `tokenizer.chat_template`), tensors under our
//! names, a configuration and a tokenizer, so everything after loading is
//! the same for both.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::format::gguf::{GgufFile, Metadata};
use crate::format::model_folder::ModelFolder;
use crate::format::TensorSource;
use crate::model::{Config, HyperParams};
use crate::tokenizer::Tokenizer;

#[derive(Clone)]
pub enum ModelSource {
    Gguf(Arc<GgufFile>),
    Folder(Arc<ModelFolder>),
}

impl ModelSource {
    /// A folder is a Hugging Face checkpoint; anything else a GGUF file.
    pub fn open(path: &Path) -> Result<ModelSource> {
        if path.is_dir() {
            let folder = ModelFolder::open(path).map_err(anyhow::Error::msg)?;
            Ok(ModelSource::Folder(Arc::new(folder)))
        } else {
            Ok(ModelSource::Gguf(Arc::new(GgufFile::open(path)?)))
        }
    }

    pub fn path(&self) -> &Path {
        self.tensors().path()
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            ModelSource::Gguf(f) => f.metadata(),
            ModelSource::Folder(f) => &f.metadata,
        }
    }

    pub fn tensors(&self) -> &dyn TensorSource {
        match self {
            ModelSource::Gguf(f) => f.as_ref(),
            ModelSource::Folder(f) => f.as_ref(),
        }
    }

    pub fn hyper_params(&self) -> Result<HyperParams> {
        Ok(HyperParams::from_metadata(self.metadata()).map_err(|e| e.in_file(self.path()))?)
    }

    pub fn config(&self) -> Result<Config> {
        match self {
            ModelSource::Gguf(f) => Config::from_gguf(f),
            ModelSource::Folder(f) => Config::from_folder(f),
        }
    }

    /// The GGUF file's own vocabulary, or the folder's tokenizer.json.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match self {
            ModelSource::Gguf(f) => Tokenizer::from_gguf_metadata(f.metadata()),
            ModelSource::Folder(f) => Tokenizer::from_tokenizer_json(f.path()),
        }
        .with_context(|| self.path().display().to_string())
    }
}
