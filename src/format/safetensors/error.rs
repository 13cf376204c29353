//! One-line safetensors errors that name the file, what is wrong and where.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsError {
    /// The file (or folder) the problem is in; absent while parsing bytes.
    pub path: Option<PathBuf>,
    pub message: String,
}

impl SafetensorsError {
    pub fn new(message: impl Into<String>) -> SafetensorsError {
        SafetensorsError {
            path: None,
            message: message.into(),
        }
    }

    pub fn in_file(mut self, path: &Path) -> SafetensorsError {
        self.path.get_or_insert_with(|| path.to_path_buf());
        self
    }
}

impl fmt::Display for SafetensorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SafetensorsError {}
