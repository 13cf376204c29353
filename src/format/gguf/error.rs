//! One-line GGUF errors that name the file, what is wrong and where.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufError {
    /// The file the problem is in; absent while parsing bytes not yet tied to a file.
    pub path: Option<PathBuf>,
    pub message: String,
}

impl GgufError {
    pub fn new(message: impl Into<String>) -> GgufError {
        GgufError {
            path: None,
            message: message.into(),
        }
    }

    pub fn in_file(mut self, path: &Path) -> GgufError {
        self.path.get_or_insert_with(|| path.to_path_buf());
        self
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for GgufError {}

/// A byte count the way a person reads it: `512 bytes`, `4.7 KiB`, `93.0 MiB`, `4.36 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    // The largest unit that keeps the number at least 1: a corrupt count
    // near 2^63 reads "8.00 EiB", not ten digits of GiB.
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    let decimals = if unit >= 2 { 2 } else { 1 };
    format!("{x:.decimals$} {}", UNITS[unit])
}

/// A file offset: exact while small, in MiB once large enough that bytes stop helping.
pub fn human_offset(n: u64) -> String {
    if n < 1024 * 1024 {
        n.to_string()
    } else {
        human_bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(4812), "4.7 KiB");
        assert_eq!(human_bytes(93 * 1024 * 1024), "93.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
        assert_eq!(human_bytes(5 << 40), "5.00 TiB");
        assert_eq!(human_bytes(1 << 63), "8.00 EiB");
        assert_eq!(human_bytes(u64::MAX), "16.00 EiB");
    }

    #[test]
    fn path_prefix() {
        let e = GgufError::new("bad magic").in_file(Path::new("m.gguf"));
        assert_eq!(e.to_string(), "m.gguf: bad magic");
    }
}
