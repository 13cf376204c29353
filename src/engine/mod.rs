//! Turning a model into a stream of tokens: sampling, threads, the session
//! (KV prefix re-use and the one token loop). Nothing here knows of chat or
//! the command line.

pub mod kl_divergence;
pub mod load;
pub mod perplexity;
pub mod planner;
pub mod sampler;
pub mod session;
pub mod source;

pub use planner::GpuLayers;

/// Physical cores of this machine (llama.cpp's default thread count), or the
/// logical count where the topology cannot be read.
pub fn physical_cores() -> usize {
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let mut cores = std::collections::HashSet::new();
        let (mut phys, mut core) = (None, None);
        for line in info.lines() {
            let mut kv = line.splitn(2, ':').map(str::trim);
            match (kv.next(), kv.next()) {
                (Some("physical id"), Some(v)) => phys = Some(v.to_string()),
                (Some("core id"), Some(v)) => core = Some(v.to_string()),
                (Some(""), _) | (None, _) => {}
                _ => {}
            }
            if line.trim().is_empty() {
                if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                    cores.insert((p, c));
                }
            }
        }
        if let (Some(p), Some(c)) = (phys, core) {
            cores.insert((p, c));
        }
        if !cores.is_empty() {
            return cores.len();
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
