//! Where weights come from, whatever the file format: a tensor by name, with
//! its storage format, shape and bytes in host memory. GGUF files are one
//! source; Hugging Face folders (format/model_folder.rs) another.

use std::path::Path;

use ggml::backend::WeightFormat;

/// One stored tensor, borrowed from its source.
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub format: WeightFormat,
    /// Dimensions, contiguous one first (ggml's order).
    pub dims: &'a [u64],
    pub bytes: &'a [u8],
    /// Stored input k is input `input_order[k]` (see HostMat).
    pub input_order: Option<&'a [u32]>,
}

pub trait TensorSource: Send + Sync + 'static {
    /// For messages: the file or folder the tensors come from.
    fn path(&self) -> &Path;
    fn tensor(&self, name: &str) -> Option<TensorRef<'_>>;
    /// Every tensor's name, in the source's order.
    fn tensor_names(&self) -> Vec<&str>;
    /// Whether every tensor's bytes are a read-only mapping of a file (a
    /// GGUF file), rather than memory the source filled (a folder's
    /// re-encoded layers).
    fn mapped(&self) -> bool {
        false
    }
    /// Every tensor's bytes, for reading the mapping in ahead of use.
    fn tensor_bytes(&self) -> Vec<&[u8]> {
        self.tensor_names()
            .into_iter()
            .filter_map(|n| self.tensor(n).map(|t| t.bytes))
            .collect()
    }
    /// Every tensor's elements.
    fn parameters(&self) -> u64 {
        self.tensor_names()
            .into_iter()
            .filter_map(|n| self.tensor(n))
            .map(|t| t.dims.iter().product::<u64>())
            .fold(0, u64::saturating_add)
    }
    /// Bytes of the tensors as held (a folder's quantised layers as the
    /// blocks they are re-encoded to).
    fn stored_bytes(&self) -> u64 {
        self.tensor_bytes().iter().map(|b| b.len() as u64).sum()
    }
}

impl TensorSource for super::gguf::GgufFile {
    fn path(&self) -> &Path {
        super::gguf::GgufFile::path(self)
    }

    fn tensor(&self, name: &str) -> Option<TensorRef<'_>> {
        let info = self.tensor_info(name)?;
        Some(TensorRef {
            name: &info.name,
            format: WeightFormat::Ggml(info.ty),
            dims: &info.dims,
            bytes: self.tensor_data(info),
            input_order: None,
        })
    }

    fn tensor_names(&self) -> Vec<&str> {
        self.tensors().iter().map(|t| t.name.as_str()).collect()
    }

    fn mapped(&self) -> bool {
        true
    }
}
