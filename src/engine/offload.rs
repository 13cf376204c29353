//! `--n-gpu-layers`, with llama.cpp's meaning. Until a GPU backend lands every
//! layer runs on the CPU; the flag is accepted as users type it.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuLayers {
    /// Fit as many layers as free GPU memory allows (llama.cpp's default).
    Auto,
    /// Every layer (`all`, or any count at least the model's layers).
    All,
    Count(u32),
}

impl FromStr for GpuLayers {
    type Err = String;

    fn from_str(s: &str) -> Result<GpuLayers, String> {
        match s {
            "auto" | "-1" => Ok(GpuLayers::Auto),
            "all" => Ok(GpuLayers::All),
            _ => s
                .parse::<u32>()
                .map(GpuLayers::Count)
                .map_err(|_| format!("'{s}' is not a layer count: give a number, 'auto' or 'all'")),
        }
    }
}

impl fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuLayers::Auto => f.write_str("auto"),
            GpuLayers::All => f.write_str("all"),
            GpuLayers::Count(n) => write!(f, "{n}"),
        }
    }
}

/// The one line said when the user asked for GPU layers this build cannot
/// place: the run goes on, on the CPU. None when nothing was asked.
pub fn cpu_only_notice(requested: Option<GpuLayers>) -> Option<String> {
    match requested {
        None | Some(GpuLayers::Count(0)) => None,
        Some(n) => Some(format!(
            "llm: --n-gpu-layers {n}: no GPU backend is available in this build; running every layer on the CPU"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_llama_cpp_does() {
        assert_eq!("auto".parse(), Ok(GpuLayers::Auto));
        assert_eq!("-1".parse(), Ok(GpuLayers::Auto));
        assert_eq!("all".parse(), Ok(GpuLayers::All));
        assert_eq!("100".parse(), Ok(GpuLayers::Count(100)));
        assert!("lots".parse::<GpuLayers>().is_err());
        assert!(cpu_only_notice(Some(GpuLayers::Count(0))).is_none());
        assert!(cpu_only_notice(Some(GpuLayers::Count(100)))
            .unwrap()
            .contains("no GPU backend"));
    }
}
