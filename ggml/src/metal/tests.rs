//! The MSL kernels run on this CPU (emulate/: g++, threads as fibers, the
//! real kernel sources) and held to the CPU backend: the same bits where
//! the operation is one float operation, and at least as close to an f64
//! reference where the two compute differently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::backend::{Backend, Glu};
use crate::cpu::backend::CpuBackend;
use crate::cpu::Isa;
use crate::metal::library_source;

/// The emulated kernels' program, built once per test process.
fn kernels() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("llm-metal-emu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metal/emulate");
        emulated_sources(&dir);
        let bin = dir.join("kernels");
        let out = Command::new(std::env::var("CXX").unwrap_or_else(|_| "g++".into()))
            .args([
                "-std=c++17",
                "-O1",
                "-fsigned-char", // MSL's char is signed; aarch64 Linux's is not
                "-Wall",
                "-Werror",
                "-Wno-attributes",
                "-Wno-unused-function",
                "-I",
            ])
            .arg(&src)
            .arg("-I")
            .arg(&dir)
            .arg("-o")
            .arg(&bin)
            .arg(src.join("kernels.cpp"))
            .output()
            .expect("the Metal kernels' emulation needs g++ (C++17 with _Float16)");
        assert!(
            out.status.success(),
            "building the emulated kernels failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// The kernel files as the emulation compiles them, into `dir`: the same
/// text but that an array declared `threadgroup` in a kernel becomes
/// `static`, shared by the group's fibers (emulate/metal_stdlib).
fn emulated_sources(dir: &Path) {
    let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metal/kernels");
    for entry in std::fs::read_dir(&kernels).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let out: String = text
            .lines()
            .map(|line| {
                let t = line.trim_start();
                // (A line of a macro ends in a backslash.)
                let core = t.trim_end().trim_end_matches('\\').trim_end();
                let array =
                    core.starts_with("threadgroup ") && core.contains('[') && core.ends_with("];");
                let line = if array {
                    line.replacen("threadgroup ", "static ", 1)
                } else {
                    line.to_string()
                };
                line + "\n"
            })
            .collect();
        std::fs::write(dir.join(path.file_name().unwrap()), out).unwrap();
    }
}

/// An input file of a command of emulate/kernels.cpp.
enum In<'a> {
    F32(&'a [f32]),
    Bytes(&'a [u8]),
    /// No file ("-": a rope without frequency factors).
    None,
}

/// Runs one command of emulate/kernels.cpp on its inputs (written to files
/// in order, then the output's path); its output file as floats.
fn run(args: &[&str], inputs: &[In]) -> Vec<f32> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = kernels().parent().unwrap().join(format!("run{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(kernels());
    cmd.args(args);
    for (i, input) in inputs.iter().enumerate() {
        let path = dir.join(format!("in{i}"));
        match input {
            In::F32(v) => std::fs::write(
                &path,
                v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            ),
            In::Bytes(b) => std::fs::write(&path, b),
            In::None => {
                cmd.arg("-");
                continue;
            }
        }
        .unwrap();
        cmd.arg(path);
    }
    let out_path = dir.join("out");
    let out = cmd.arg(&out_path).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let floats = std::fs::read(&out_path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    floats
}

/// The largest error relative to the largest exact output (outputs near
/// zero have no meaningful relative error of their own).
fn err_of_largest(got: &[f32], exact: &[f64]) -> f64 {
    let scale = exact.iter().fold(0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(exact)
        .map(|(&g, &e)| (f64::from(g) - e).abs() / scale)
        .fold(0.0, f64::max)
}

fn random(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// The largest error relative to the f64 reference, over elements whose
/// reference is not tiny (absolute below `floor`).
fn max_rel_err(got: &[f32], exact: &[f64], floor: f64) -> f64 {
    got.iter()
        .zip(exact)
        .map(|(&g, &e)| (f64::from(g) - e).abs() / e.abs().max(floor))
        .fold(0.0, f64::max)
}

fn cpu() -> CpuBackend {
    CpuBackend::new(1, Isa::detect())
}

#[test]
fn elementwise_kernels_give_the_cpus_bits() {
    let be = cpu();
    let (n, width) = (5000, 320); // not a multiple of the group of 256
    let x = random(n, 1, -3.0, 3.0);
    let y = random(n, 2, -3.0, 3.0);
    let bias = random(width, 3, -1.0, 1.0);
    let mut want = x.clone();
    be.add(&mut want, &y, n);
    assert_eq!(run(&["add"], &[In::F32(&x), In::F32(&y)]), want, "add");
    let mut want = x[..4800].to_vec();
    be.add_bias(&mut want, &be.upload_vector(&bias).unwrap(), 4800 / width);
    assert_eq!(
        run(&["add_bias"], &[In::F32(&x[..4800]), In::F32(&bias)]),
        want,
        "add_bias"
    );
    let mut want = x.clone();
    be.scale(&mut want, 0.125, n);
    assert_eq!(run(&["scale", "0.125"], &[In::F32(&x)]), want, "scale");
}

#[test]
fn glu_kernels_are_as_close_to_exact_as_the_cpus() {
    let be = cpu();
    let n = 3000;
    let gate = random(n, 4, -12.0, 12.0);
    let up = random(n, 5, -2.0, 2.0);
    for (act, flag) in [(Glu::SwiGlu, "0"), (Glu::GeGlu, "1")] {
        let exact: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(&g, &u)| {
                let g = f64::from(g);
                let a = match act {
                    Glu::SwiGlu => g / (1.0 + (-g).exp()),
                    Glu::GeGlu => {
                        let c = (2.0 / std::f64::consts::PI).sqrt();
                        0.5 * g * (1.0 + (c * (g + 0.044715 * g * g * g)).tanh())
                    }
                };
                a * f64::from(u)
            })
            .collect();
        let mut cpu_out = gate.clone();
        be.glu(act, &mut cpu_out, &up, n);
        let metal = run(&["glu", flag], &[In::F32(&gate), In::F32(&up)]);
        let (e_cpu, e_metal) = (
            max_rel_err(&cpu_out, &exact, 1e-3),
            max_rel_err(&metal, &exact, 1e-3),
        );
        eprintln!(
            "{act:?}: max relative error vs f64: CPU {e_cpu:.2e}, Metal (emulated) {e_metal:.2e}"
        );
        // f32 arithmetic's few roundings (2e-6) where the CPU is closer still.
        assert!(
            e_metal <= e_cpu.max(2e-6),
            "{act:?}: Metal {e_metal:e} against the CPU's {e_cpu:e}"
        );
    }
}

#[test]
fn rms_norm_kernel_is_close_to_exact() {
    let be = cpu();
    for (width, threads) in [(640, 256), (4096, 1024), (96, 32), (1000, 128)] {
        let rows = 3;
        let x = random(rows * width, width as u64, -4.0, 4.0);
        let w = random(width, 7, 0.5, 1.5);
        let eps = 1e-6f32;
        let exact: Vec<f64> = x
            .chunks(width)
            .flat_map(|row| {
                let ms = row
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    / width as f64;
                let s = 1.0 / (ms + f64::from(eps)).sqrt();
                row.iter()
                    .zip(&w)
                    .map(move |(&v, &g)| f64::from(v) * s * f64::from(g))
            })
            .collect();
        let mut cpu_out = vec![0.0; x.len()];
        be.rms_norm(&x, &be.upload_vector(&w).unwrap(), eps, rows, &mut cpu_out);
        let metal = run(
            &["rms_norm", &width.to_string(), "1e-6", &threads.to_string()],
            &[In::F32(&x), In::F32(&w)],
        );
        let (e_cpu, e_metal) = (
            max_rel_err(&cpu_out, &exact, 1e-3),
            max_rel_err(&metal, &exact, 1e-3),
        );
        eprintln!("rms_norm {width} wide, {threads} threads: CPU {e_cpu:.2e}, Metal (emulated) {e_metal:.2e}");
        // The CPU sums squares in f64 (ggml's CPU does), the kernel in f32 as
        // llama.cpp's Metal kernel does: a few roundings of the scale beyond
        // the CPU's, under 1e-6 for these widths.
        assert!(
            e_metal <= e_cpu + 1e-6,
            "rms_norm {width}: Metal {e_metal:e}, CPU {e_cpu:e}"
        );
    }
}

#[test]
fn the_emulation_reports_a_divergent_barrier() {
    // A planted mistake the GPU would hang on: a barrier that half the group
    // skips. The emulated run must fail rather than pass quietly.
    let out = Command::new(kernels()).args(["diverge"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("diverged"));
    assert!(library_source().contains("rms_norm_f32"));
}

#[test]
fn matvec_kernels_are_closer_to_exact_than_the_cpus() {
    use crate::backend_check::{random_mat, Rng};
    use crate::blocks::dequantize;
    let be = cpu();
    let mut rng = Rng::new(11);
    for ty in crate::blocks::WEIGHT_TYPES.iter().copied() {
        for (rows, cols) in [(37, 4096), (5, 512), (64, 1024)] {
            let w = random_mat(&mut rng, ty, rows, cols);
            let x = random(cols, rows as u64, -1.0, 1.0);
            // SAFETY: random_mat's pointer and length are its owner's bytes.
            let bytes = unsafe { std::slice::from_raw_parts(w.ptr, w.len) };
            let mut deq = vec![0f32; rows * cols];
            dequantize(ty, bytes, &mut deq).unwrap();
            let exact: Vec<f64> = deq
                .chunks(cols)
                .map(|r| {
                    r.iter()
                        .zip(&x)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum()
                })
                .collect();
            let mut sc = be.scratch().unwrap();
            let mat = be.upload_mat(&w).unwrap();
            let mut cpu_out = vec![0f32; rows];
            be.matmul(&mut sc, &mat, &x, 1, &mut cpu_out);
            let (name, rows_s, cols_s) =
                (ty.name().to_lowercase(), rows.to_string(), cols.to_string());
            let metal = run(
                &["matvec", &name, &rows_s, &cols_s],
                &[In::Bytes(bytes), In::F32(&x)],
            );
            let err = |got: &[f32]| err_of_largest(got, &exact);
            let (e_cpu, e_metal) = (err(&cpu_out), err(&metal));
            eprintln!(
                "{} {rows}x{cols}: CPU {e_cpu:.2e}, Metal (emulated) {e_metal:.2e}",
                ty.name()
            );
            // The CPU quantises x to 8 bits (as llama.cpp's CPU and Metal
            // kernels do); this kernel dots f32 x, so only f32 summation is
            // left: well under 1e-5 of the largest output at these widths.
            assert!(
                e_metal <= e_cpu.min(1e-5),
                "{}: Metal {e_metal:e} against the CPU's {e_cpu:e}",
                ty.name()
            );
        }
    }
}

#[test]
fn rope_kernel_is_as_close_to_exact_as_the_cpus() {
    use crate::rope::Rope;
    let be = cpu();
    let (n_heads, head_dim, tokens) = (4, 96, 3);
    let ff = random(32, 21, 1.0, 8.0);
    let yarn = Rope {
        freq_scale: 0.25,
        ext_factor: 1.0,
        attn_factor: 1.0,
        corr_dims: [4.0, 20.0],
        ..Rope::plain(64, 10000.0, false)
    };
    let cases: [(&str, Rope, bool, usize); 5] = [
        ("normal", Rope::plain(96, 10000.0, false), false, 0),
        ("neox", Rope::plain(96, 1e6, true), false, 3000),
        ("partial neox", Rope::plain(64, 10000.0, true), false, 17),
        ("yarn", yarn, false, 5000),
        ("freq factors", Rope::plain(64, 500000.0, true), true, 9000),
    ];
    for (name, rope, with_ff, pos0) in cases {
        let x = random(tokens * n_heads * head_dim, pos0 as u64 + 1, -2.0, 2.0);
        let ffs = with_ff.then(|| &ff[..rope.n_dims / 2]);
        // f64 reference: ggml's formulas with every step in f64.
        let mut exact: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        for (r, head) in exact.chunks_mut(head_dim).enumerate() {
            let pos = (pos0 + r / n_heads) as f64;
            let n = rope.n_dims;
            let theta_scale = f64::from(rope.freq_base).powf(-2.0 / n as f64);
            for pair in 0..n / 2 {
                let extrap =
                    pos * theta_scale.powi(pair as i32) / ffs.map_or(1.0, |f| f64::from(f[pair]));
                let interp = f64::from(rope.freq_scale) * extrap;
                let (mut th, mut mscale) = (interp, f64::from(rope.attn_factor));
                if rope.ext_factor != 0.0 {
                    let [lo, hi] = rope.corr_dims.map(f64::from);
                    let y = (pair as f64 - lo) / (hi - lo).max(0.001);
                    let mix = (1.0 - y.clamp(0.0, 1.0)) * f64::from(rope.ext_factor);
                    th = interp * (1.0 - mix) + extrap * mix;
                    mscale *= 1.0 + 0.1 * (1.0 / f64::from(rope.freq_scale)).ln();
                }
                let (i, j) = if rope.neox {
                    (pair, pair + n / 2)
                } else {
                    (2 * pair, 2 * pair + 1)
                };
                let (x0, x1) = (head[i], head[j]);
                head[i] = (x0 * th.cos() - x1 * th.sin()) * mscale;
                head[j] = (x0 * th.sin() + x1 * th.cos()) * mscale;
            }
        }
        let mut sc = be.scratch().unwrap();
        let mut cpu_out = x.clone();
        let ffv = ffs.map(|f| be.upload_vector(f).unwrap());
        be.rope(
            &mut sc,
            &mut cpu_out,
            tokens,
            n_heads,
            head_dim,
            &rope,
            ffv.as_ref(),
            pos0,
        );
        let s = |v: f32| v.to_string();
        let args = [
            "rope".to_string(),
            n_heads.to_string(),
            head_dim.to_string(),
            rope.n_dims.to_string(),
            pos0.to_string(),
            s(rope.freq_base),
            s(rope.freq_scale),
            s(rope.ext_factor),
            s(rope.attn_factor),
            s(rope.corr_dims[0]),
            s(rope.corr_dims[1]),
            (rope.neox as u32).to_string(),
        ];
        let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        let ff_in = ffs.map_or(In::None, In::F32);
        let metal = run(&args, &[In::F32(&x), ff_in]);
        let (e_cpu, e_metal) = (
            max_rel_err(&cpu_out, &exact, 1.0),
            max_rel_err(&metal, &exact, 1.0),
        );
        eprintln!("rope {name} at {pos0}: CPU {e_cpu:.2e}, Metal (emulated) {e_metal:.2e}");
        // Both take the angle in f32 (its rounding grows with the position);
        // the kernel's pow per pair and the CPU's running product differ in
        // how: within twice the CPU's error, plus f32's few roundings.
        assert!(
            e_metal <= 2.0 * e_cpu + 1e-6,
            "rope {name}: Metal {e_metal:e}, CPU {e_cpu:e}"
        );
    }
}

#[test]
fn attention_kernel_is_closer_to_exact_than_the_cpus() {
    use crate::backend::{Attention, KvTypes};
    use crate::float16::{f16_to_f32, f32_to_f16};
    let be = cpu();
    // (n_head, n_head_kv, head_dim, cells, positions stored before the batch,
    // batch tokens, window, simdgroups): GQA, a ring that wraps, a window.
    let cases = [
        (4, 4, 64, 64, 20, 1, 0, 4),
        (8, 2, 128, 48, 70, 1, 0, 8),
        (4, 1, 256, 64, 30, 5, 0, 2),
        (6, 2, 96, 40, 55, 3, 16, 4),
        (2, 2, 32, 16, 0, 9, 0, 1),
    ];
    for (n_head, n_head_kv, hd, cells, history, tokens, window, simds) in cases {
        let kv_dim = n_head_kv * hd;
        let total = history + tokens;
        let k = random(total * kv_dim, 31 + hd as u64, -1.0, 1.0);
        let v = random(total * kv_dim, 37 + hd as u64, -1.0, 1.0);
        let q = random(tokens * n_head * hd, 41 + hd as u64, -1.0, 1.0);
        let kq_scale = 1.0 / (hd as f32).sqrt();
        let a = Attention {
            n_head,
            n_head_kv,
            head_dim: hd,
            window: (window > 0).then_some(window),
            kq_scale,
        };
        let pos0 = history;
        // The CPU: the history, then the batch, stored; attention of the batch.
        let mut sc = be.scratch().unwrap();
        let mut kv = be.kv(cells, kv_dim, hd, KvTypes::F16).unwrap();
        if history > 0 {
            // In pieces no longer than the ring, as a chat stores them.
            let mut p = 0;
            while p < history {
                let n = (history - p).min(cells);
                be.kv_store(
                    &mut sc,
                    &mut kv,
                    &k[p * kv_dim..(p + n) * kv_dim].to_vec(),
                    &v[p * kv_dim..(p + n) * kv_dim].to_vec(),
                    p,
                    n,
                );
                p += n;
            }
        }
        be.kv_store(
            &mut sc,
            &mut kv,
            &k[pos0 * kv_dim..].to_vec(),
            &v[pos0 * kv_dim..].to_vec(),
            pos0,
            tokens,
        );
        let mut cpu_out = vec![0f32; tokens * n_head * hd];
        be.attention(&mut sc, &kv, &q, pos0, tokens, &a, &mut cpu_out);
        // Metal's cache: [cell][kv_dim] f16, position p in cell p % cells.
        let (mut kc, mut vc) = (vec![0u16; cells * kv_dim], vec![0u16; cells * kv_dim]);
        for p in 0..total {
            let c = p % cells;
            for i in 0..kv_dim {
                kc[c * kv_dim + i] = f32_to_f16(k[p * kv_dim + i]);
                vc[c * kv_dim + i] = f32_to_f16(v[p * kv_dim + i]);
            }
        }
        // f64 over the cache's f16 values: each query sees the positions
        // still in the ring, at or before its own, inside the window.
        let mut exact = vec![0f64; tokens * n_head * hd];
        for t in 0..tokens {
            let pos = pos0 + t;
            for h in 0..n_head {
                let g = h / (n_head / n_head_kv);
                let seen: Vec<usize> = (0..=pos)
                    .filter(|&p| p + cells > total - 1 && (window == 0 || pos - p < window))
                    .collect();
                let kf = |p: usize, i: usize| {
                    f64::from(f16_to_f32(kc[(p % cells) * kv_dim + g * hd + i]))
                };
                let vf = |p: usize, i: usize| {
                    f64::from(f16_to_f32(vc[(p % cells) * kv_dim + g * hd + i]))
                };
                let qh = &q[(t * n_head + h) * hd..][..hd];
                let s: Vec<f64> = seen
                    .iter()
                    .map(|&p| {
                        (0..hd).map(|i| f64::from(qh[i]) * kf(p, i)).sum::<f64>()
                            * f64::from(kq_scale)
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..hd {
                    exact[(t * n_head + h) * hd + i] = seen
                        .iter()
                        .zip(&e)
                        .map(|(&p, &w)| w * vf(p, i))
                        .sum::<f64>()
                        / z;
                }
            }
        }
        let bytes16 = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (kb, vb) = (bytes16(&kc), bytes16(&vc));
        let args: Vec<String> = [n_head, n_head_kv, hd, cells, pos0, tokens, window]
            .iter()
            .map(|n| n.to_string())
            .chain([kq_scale.to_string(), simds.to_string()])
            .collect();
        let args: Vec<&str> = std::iter::once("attention")
            .chain(args.iter().map(|a| a.as_str()))
            .collect();
        let metal = run(&args, &[In::F32(&q), In::Bytes(&kb), In::Bytes(&vb)]);
        let err = |got: &[f32]| err_of_largest(got, &exact);
        let (e_cpu, e_metal) = (err(&cpu_out), err(&metal));
        eprintln!(
            "attention {n_head}/{n_head_kv} heads of {hd}, {cells} cells, {history}+{tokens}, window {window}: CPU {e_cpu:.2e}, Metal (emulated) {e_metal:.2e}"
        );
        assert!(
            e_metal <= e_cpu.max(1e-6) && e_metal < 1e-5,
            "Metal {e_metal:e}, CPU {e_cpu:e}"
        );
    }
}

#[test]
fn matmul_kernels_are_closer_to_exact_than_the_cpus() {
    use crate::backend_check::{random_mat, Rng};
    use crate::blocks::dequantize;
    let be = cpu();
    let mut rng = Rng::new(12);
    for ty in crate::blocks::WEIGHT_TYPES.iter().copied() {
        // Rows and tokens not multiples of the 32 x 32 tile.
        let (rows, cols, tokens) = (45, 512, 37);
        let w = random_mat(&mut rng, ty, rows, cols);
        let x = random(tokens * cols, 77, -1.0, 1.0);
        // SAFETY: random_mat's pointer and length are its owner's bytes.
        let bytes = unsafe { std::slice::from_raw_parts(w.ptr, w.len) };
        let mut deq = vec![0f32; rows * cols];
        dequantize(ty, bytes, &mut deq).unwrap();
        let exact: Vec<f64> = (0..tokens * rows)
            .map(|i| {
                let (t, r) = (i / rows, i % rows);
                (0..cols)
                    .map(|k| f64::from(deq[r * cols + k]) * f64::from(x[t * cols + k]))
                    .sum()
            })
            .collect();
        let mut sc = be.scratch().unwrap();
        let mat = be.upload_mat(&w).unwrap();
        let mut cpu_out = vec![0f32; tokens * rows];
        be.matmul(&mut sc, &mat, &x, tokens, &mut cpu_out);
        let (name, dims) = (
            ty.name().to_lowercase(),
            [rows, cols, tokens].map(|n| n.to_string()),
        );
        let metal = run(
            &["matmul", &name, &dims[0], &dims[1], &dims[2]],
            &[In::Bytes(bytes), In::F32(&x)],
        );
        let err = |got: &[f32]| err_of_largest(got, &exact);
        let (e_cpu, e_metal) = (err(&cpu_out), err(&metal));
        eprintln!(
            "matmul {} {rows}x{cols} x {tokens}: CPU {e_cpu:.2e}, Metal (emulated) {e_metal:.2e}",
            ty.name()
        );
        // Where the CPU quantises x (every quantised type), the tiles are
        // closer; with float weights both are at f32's rounding of 512-term
        // sums (the tiles add eight partial sums a step): 2e-6 of the largest.
        assert!(
            e_metal <= e_cpu.max(2e-6) && e_metal < 1e-5,
            "{}: Metal {e_metal:e} against the CPU's {e_cpu:e}",
            ty.name()
        );
    }
}

/// K and V land in cell `pos % cells` as the f16 the CPU's cache rounds to,
/// over a ring that wraps; cells the batch does not reach keep their bytes.
#[test]
fn kv_store_kernel_writes_the_ring_in_f16() {
    use crate::float16::{f16_to_f32, f32_to_f16};
    let (kv_dim, cells, pos0, tokens) = (96, 7, 12, 5); // cells 5, 6, 0, 1, 2
    let k = random(tokens * kv_dim, 21, -70000.0, 70000.0); // some past f16's range
    let v = random(tokens * kv_dim, 22, -1e-5, 1e-5); // some subnormal
    let old: Vec<u16> = (0..cells * kv_dim)
        .map(|i| 0x3c00 + i as u16 % 64)
        .collect();
    let bytes: Vec<u8> = old.iter().flat_map(|h| h.to_le_bytes()).collect();
    let args = [kv_dim, cells, pos0].map(|n| n.to_string());
    let got = run(
        &["kv_store", &args[0], &args[1], &args[2]],
        &[
            In::F32(&k),
            In::F32(&v),
            In::Bytes(&bytes),
            In::Bytes(&bytes),
        ],
    );
    let (kc, vc) = got.split_at(cells * kv_dim);
    for (src, cache, what) in [(&k, kc, "K"), (&v, vc, "V")] {
        let mut want: Vec<f32> = old.iter().map(|&h| f16_to_f32(h)).collect();
        for t in 0..tokens {
            let cell = (pos0 + t) % cells;
            for d in 0..kv_dim {
                want[cell * kv_dim + d] = f16_to_f32(f32_to_f16(src[t * kv_dim + d]));
            }
        }
        let same = cache
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{what}: the cache differs from the CPU's f16 rounding"
        );
    }
}

/// Splitting a fused projection, moving rows and gathering a layer's inputs
/// into its stored order are copies: the CPU's bits.
#[test]
fn copy_kernels_give_the_cpus_bits() {
    let be = cpu();
    let (rows, src_width) = (9, 160);
    let src = random(rows * src_width, 31, -4.0, 4.0);
    for (col0, width) in [(0, 96), (96, 32), (128, 32), (0, 160)] {
        let mut want = vec![0.0; rows * width];
        be.copy_cols(&src, src_width, col0, width, rows, &mut want);
        let args = [rows, width, src_width, col0].map(|n| n.to_string());
        let got = run(
            &["copy_cols", &args[0], &args[1], &args[2], &args[3]],
            &[In::F32(&src)],
        );
        assert_eq!(got, want, "columns {col0}..{}", col0 + width);
    }
    let mut order: Vec<u32> = (0..src_width as u32).collect();
    let mut s = 7u64;
    for i in (1..order.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, s as usize % (i + 1));
    }
    let bytes: Vec<u8> = order.iter().flat_map(|o| o.to_le_bytes()).collect();
    let got = run(
        &["gather_cols", &src_width.to_string()],
        &[In::F32(&src), In::Bytes(&bytes)],
    );
    let want: Vec<f32> = (0..rows * src_width)
        .map(|i| src[i / src_width * src_width + order[i % src_width] as usize])
        .collect();
    assert_eq!(got, want, "gathered inputs");
}
