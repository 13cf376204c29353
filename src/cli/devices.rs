//! `llm devices`: the GPUs this binary can use, with their memory (like
//! llama.cpp's --list-devices).

use crate::format::gguf::human_bytes;

pub fn run() -> anyhow::Result<()> {
    let gpus = ggml::cuda::devices();
    let metal = ggml::metal::devices();
    if !metal.is_empty() {
        // The budget `-ngl auto` fits layers to (README, "Metal").
        println!("Metal devices:");
        for d in &metal {
            println!(
                "  Metal{}: {}, {} recommended working set (the layers' budget), {} allocated{}",
                d.index,
                d.name,
                human_bytes(d.working_set),
                human_bytes(d.allocated),
                if d.unified { ", unified memory" } else { "" },
            );
        }
    }
    if gpus.is_empty() && !metal.is_empty() {
        return Ok(());
    }
    if gpus.is_empty() {
        let why = ggml::cuda::driver::driver()
            .err()
            .map_or_else(|| "the NVIDIA driver found no GPU".to_string(), |e| e.0);
        println!("No GPUs found ({why}); models run on the CPU.");
        return Ok(());
    }
    println!("Available devices:");
    for d in gpus {
        println!(
            "  CUDA{}: {} (compute {}.{}), {} total, {} free{}{}",
            d.ordinal,
            d.name,
            d.capability / 10,
            d.capability % 10,
            human_bytes(d.total as u64),
            human_bytes(d.free as u64),
            match d.memory_bandwidth {
                0 => String::new(),
                b => format!(", {:.2} TB/s peak", b as f64 / 1e12),
            },
            d.problem
                .map(|p| format!(" (not used: {p})"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

/// What `--version` adds after the version: the backends compiled in.
pub fn backends() -> String {
    let isas: Vec<&str> = ggml::cpu::Isa::available()
        .into_iter()
        .map(|i| i.name())
        .collect();
    format!(
        "backends: CPU ({}), {}, {}",
        isas.join(" "),
        ggml::cuda::compiled_for(),
        ggml::metal::compiled_for()
    )
}
