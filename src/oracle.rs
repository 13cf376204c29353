//! Safe wrappers over the llama.cpp / ggml oracle (feature `oracle`): tests and
//! benchmarks compare our results with it. Never used by the engine.

use std::ffi::c_void;
use std::sync::Once;

use ggml::backend::KvTypes;
use ggml::GgmlType;
use llama_cpp_sys_2 as sys;

/// ggml's CPU backend keeps tables that its first user must build.
fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| unsafe {
        sys::llama_backend_init();
    });
}

fn ggml_type(ty: GgmlType) -> sys::ggml_type {
    ty.id() as sys::ggml_type
}

/// ggml's `to_float` for `ty`, if it has one, applied to whole blocks.
pub fn to_float(ty: GgmlType, src: &[u8]) -> Option<Vec<f32>> {
    init();
    let blocks = src.len() / ty.type_size() as usize;
    assert_eq!(
        blocks * ty.type_size() as usize,
        src.len(),
        "whole blocks only"
    );
    let n = blocks * ty.block_size() as usize;
    let mut out = vec![0f32; n];
    // SAFETY: ggml_get_type_traits returns a static table entry for valid ids;
    // to_float reads `n` elements' worth of blocks from `src` (its exact length)
    // and writes `n` floats to `out`.
    unsafe {
        let traits = sys::ggml_get_type_traits(ggml_type(ty));
        let f = (*traits).to_float?;
        f(src.as_ptr() as *const c_void, out.as_mut_ptr(), n as i64);
    }
    Some(out)
}

/// ggml's CPU `from_float` for `ty` (the activation quantiser), if it has one.
pub fn from_float(ty: GgmlType, x: &[f32]) -> Option<Vec<u8>> {
    init();
    let bytes = ty.row_size(x.len() as u64)? as usize;
    let mut out = vec![0u8; bytes];
    // SAFETY: the traits table is static; from_float reads x.len() floats and
    // writes the blocks for them, exactly `bytes` long.
    unsafe {
        sys::ggml_cpu_init();
        let traits = sys::ggml_get_type_traits_cpu(ggml_type(ty));
        let f = (*traits).from_float?;
        f(x.as_ptr(), out.as_mut_ptr() as *mut c_void, x.len() as i64);
    }
    Some(out)
}

/// The activation type ggml's CPU backend pairs with weight type `ty`.
pub fn vec_dot_type(ty: GgmlType) -> Option<GgmlType> {
    init();
    // SAFETY: static table lookup for a valid type id.
    let id = unsafe {
        sys::ggml_cpu_init();
        (*sys::ggml_get_type_traits_cpu(ggml_type(ty))).vec_dot_type
    };
    GgmlType::from_id(id as u32).ok()
}

/// ggml's CPU dot product of `n` elements: a weight row of `ty` and an
/// activation row of its `vec_dot_type`.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> Option<f32> {
    init();
    let act = vec_dot_type(ty)?;
    assert_eq!(w.len() as u64, ty.row_size(n as u64)?);
    assert_eq!(a.len() as u64, act.row_size(n as u64)?);
    let mut s = 0f32;
    // SAFETY: both rows hold exactly `n` elements of their types; one result.
    unsafe {
        let traits = sys::ggml_get_type_traits_cpu(ggml_type(ty));
        let f = (*traits).vec_dot?;
        f(
            n as i32,
            &mut s,
            0,
            w.as_ptr() as *const c_void,
            0,
            a.as_ptr() as *const c_void,
            0,
            1,
        );
    }
    Some(s)
}

unsafe extern "C" fn quiet_log(
    _level: sys::ggml_log_level,
    _text: *const std::os::raw::c_char,
    _user: *mut c_void,
) {
}

/// The settings that change llama.cpp's numbers, pinned for every comparison:
/// flash attention off (ggml's CPU flash attention accumulates V in f16), no
/// weight repacking (repacked Q4_0/IQ4_NL/Q4_K dots round differently), a
/// window-sized sliding-window cache (`swa_full` off), all layers on the CPU,
/// f16 KV cache (the default; `load_with_cache` takes others, with flash
/// attention), and the thread count given.
pub struct OracleModel {
    model: *mut sys::llama_model,
    ctx: *mut sys::llama_context,
    pub n_vocab: usize,
}

impl OracleModel {
    pub fn load(path: &std::path::Path, n_ctx: u32, threads: i32) -> Option<OracleModel> {
        Self::load_with(path, n_ctx, threads, false, KvTypes::F16, None)
    }

    /// The pinned settings with a KV cache of `kv` types; a cache other than
    /// f16 runs with flash attention on, as llama.cpp needs for a quantised
    /// V (and takes by default): its one-row CPU path for such caches.
    pub fn load_with_cache(
        path: &std::path::Path,
        n_ctx: u32,
        threads: i32,
        kv: KvTypes,
    ) -> Option<OracleModel> {
        Self::load_with(path, n_ctx, threads, false, kv, None)
    }

    /// llama.cpp as its users run it, for speed races: weight repacking on
    /// (its fastest CPU path) and flash attention left to its default.
    pub fn load_for_speed(
        path: &std::path::Path,
        n_ctx: u32,
        threads: i32,
        kv: KvTypes,
    ) -> Option<OracleModel> {
        Self::load_with(path, n_ctx, threads, true, kv, None)
    }

    fn load_with(
        path: &std::path::Path,
        n_ctx: u32,
        threads: i32,
        fast: bool,
        kv: KvTypes,
        capture: Option<&'static Captured>,
    ) -> Option<OracleModel> {
        init();
        let cpath = std::ffi::CString::new(path.to_str()?).ok()?;
        // SAFETY: plain C API use; pointers are checked before use and freed in Drop.
        unsafe {
            // LLM_ORACLE_LOG=1 keeps llama.cpp's own log (why it refused a file).
            if std::env::var_os("LLM_ORACLE_LOG").is_none() {
                sys::llama_log_set(Some(quiet_log), std::ptr::null_mut());
            }
            let mut mp = sys::llama_model_default_params();
            mp.n_gpu_layers = 0;
            mp.use_extra_bufts = fast;
            let model = sys::llama_model_load_from_file(cpath.as_ptr(), mp);
            if model.is_null() {
                return None;
            }
            let mut cp = sys::llama_context_default_params();
            cp.n_ctx = n_ctx;
            cp.n_batch = n_ctx;
            cp.n_ubatch = 512.min(n_ctx);
            cp.n_threads = threads;
            cp.n_threads_batch = threads;
            cp.type_k = kv.k.id() as sys::ggml_type;
            cp.type_v = kv.v.id() as sys::ggml_type;
            if !fast && !kv.is_f16() {
                cp.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_ENABLED;
                cp.swa_full = false;
            } else if !fast {
                cp.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
                // A sliding-window cache of window + batch cells used as a
                // ring, as ours: with the full-size default, cells (and so the
                // summation lanes of attention) sit elsewhere past the ring.
                cp.swa_full = false;
            }
            if let Some(store) = capture {
                cp.cb_eval = Some(capture_cb);
                cp.cb_eval_user_data = store as *const Captured as *mut c_void;
            }
            let ctx = sys::llama_init_from_model(model, cp);
            if ctx.is_null() {
                sys::llama_model_free(model);
                return None;
            }
            let vocab = sys::llama_model_get_vocab(model);
            let n_vocab = sys::llama_vocab_n_tokens(vocab) as usize;
            Some(OracleModel {
                model,
                ctx,
                n_vocab,
            })
        }
    }

    /// Forgets every token evaluated so far.
    pub fn clear(&mut self) {
        // SAFETY: ctx is valid for self's life.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx), true) }
    }

    /// Evaluates `tokens` one decode call at a time, the way llama.cpp
    /// generates: every matmul then takes ggml's vec_dot path (batches of two
    /// or more go through llamafile's sgemm, whose different summation order,
    /// amplified by re-quantised activations, moves logits by ~0.5).
    pub fn eval_one_by_one(&mut self, tokens: &[u32]) -> Option<Vec<f32>> {
        let mut last = None;
        for &t in tokens {
            last = Some(self.eval(&[t])?);
        }
        last
    }

    /// Evaluates `tokens` after those already evaluated; the logits of the last.
    pub fn eval(&mut self, tokens: &[u32]) -> Option<Vec<f32>> {
        let mut toks: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        // SAFETY: the batch borrows `toks` for the decode call only.
        unsafe {
            let batch = sys::llama_batch_get_one(toks.as_mut_ptr(), toks.len() as i32);
            if sys::llama_decode(self.ctx, batch) != 0 {
                return None;
            }
            let logits = sys::llama_get_logits_ith(self.ctx, -1);
            if logits.is_null() {
                return None;
            }
            Some(std::slice::from_raw_parts(logits, self.n_vocab).to_vec())
        }
    }
}

impl OracleModel {
    /// Evaluates `tokens` as one batch, a fresh sequence at positions 0..,
    /// and returns every token's logits: the graph of a prompt batch (as
    /// llama-perplexity scores text), whose output projection then runs for
    /// every row rather than only the last. At most `n_ctx` tokens.
    pub fn eval_all(&mut self, tokens: &[u32]) -> Option<Vec<Vec<f32>>> {
        self.clear();
        let n = i32::try_from(tokens.len()).ok()?;
        // SAFETY: the batch is allocated for `n` tokens of one sequence and
        // every one of its arrays is filled for those `n` before the decode;
        // logits rows are read for the `n` outputs asked for, then it is freed.
        unsafe {
            let mut batch = sys::llama_batch_init(n, 0, 1);
            for (i, &t) in tokens.iter().enumerate() {
                *batch.token.add(i) = t as i32;
                *batch.pos.add(i) = i as i32;
                *batch.n_seq_id.add(i) = 1;
                **batch.seq_id.add(i) = 0;
                *batch.logits.add(i) = 1;
            }
            batch.n_tokens = n;
            let ok = sys::llama_decode(self.ctx, batch) == 0;
            let out = ok.then(|| {
                (0..n)
                    .map(|i| {
                        let l = sys::llama_get_logits_ith(self.ctx, i);
                        (!l.is_null()).then(|| std::slice::from_raw_parts(l, self.n_vocab).to_vec())
                    })
                    .collect::<Option<Vec<_>>>()
            });
            sys::llama_batch_free(batch);
            out.flatten()
        }
    }
}

impl Drop for OracleModel {
    fn drop(&mut self) {
        // SAFETY: both were created in load() and are freed once.
        unsafe {
            sys::llama_free(self.ctx);
            sys::llama_model_free(self.model);
        }
    }
}

/// Tensors llama.cpp computed, captured by name through its eval callback:
/// (name, shape, values). For finding where our numbers part from its.
pub type Captured = std::sync::Mutex<Vec<(String, Vec<i64>, Vec<f32>)>>;

unsafe extern "C" fn capture_cb(t: *mut sys::ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    if ask {
        return true;
    }
    // SAFETY: llama.cpp passes a computed CPU tensor and our Captured pointer.
    unsafe {
        let t = &*t;
        let name = std::ffi::CStr::from_ptr(t.name.as_ptr())
            .to_string_lossy()
            .into_owned();
        let n: i64 = t.ne.iter().product();
        let contiguous = t.nb[0] == 4 && t.nb[1] == 4 * t.ne[0] as usize;
        if t.type_ == sys::GGML_TYPE_F32 && contiguous && !t.data.is_null() {
            let values = std::slice::from_raw_parts(t.data as *const f32, n as usize).to_vec();
            let store = &*(user as *const Captured);
            store.lock().unwrap().push((name, t.ne.to_vec(), values));
        }
    }
    true
}

impl OracleModel {
    /// Like `load`, recording every F32 tensor the graph computes into `store`.
    pub fn load_capturing(
        path: &std::path::Path,
        n_ctx: u32,
        threads: i32,
        store: &'static Captured,
    ) -> Option<OracleModel> {
        Self::load_with(path, n_ctx, threads, false, KvTypes::F16, Some(store))
    }
}
