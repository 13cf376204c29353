//! The Metal backend: layers on an Apple GPU through the backend seam.
//!
//! Memory is the host's (Apple silicon shares it with the GPU): activations,
//! vectors and the KV cache are shared-storage buffers the host reads and
//! writes in place, and a weight is a buffer over the model's own mapping
//! where Metal takes it (`newBufferWithBytesNoCopy` on the page-aligned range
//! around the tensor), a copy where it does not. Ops are encoded as they
//! come into a concurrent compute encoder, with a memory barrier only where
//! a dispatch depends on one before it (hazards.rs); its command buffer is
//! committed every DISPATCHES_A_COMMAND_BUFFER dispatches without waiting,
//! and `read` and `write` commit the last and wait. Kernels come from the
//! embedded MSL, compiled on first use (library.rs).
//!
//! Not run yet: this compiles for Apple targets (scripts/check-apple.sh) and
//! the kernels run in emulation on Linux (tests.rs); nothing here has run on
//! a Mac (README, "Metal").

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use objc2::rc::Retained;
use objc2::runtime::ProtocolObject;
use objc2_metal::{
    MTLBarrierScope, MTLBuffer, MTLCommandBuffer, MTLCommandBufferStatus, MTLCommandEncoder,
    MTLCommandQueue, MTLComputeCommandEncoder, MTLComputePipelineState, MTLDevice, MTLDispatchType,
    MTLResourceOptions, MTLSize,
};

use super::args::{
    AttentionArgs, CopyArgs, ElementArgs, KvStoreArgs, MatmulArgs, MatvecArgs, NormArgs, RopeArgs,
};
use super::hazards::Hazards;
use super::library::{Constant, Library};
use crate::backend::{Attention, Backend, BackendError, Glu, HostMat, KvTypes};
use crate::rope::Rope;

type Buffer = Retained<ProtocolObject<dyn MTLBuffer>>;
type CommandBuffer = Retained<ProtocolObject<dyn MTLCommandBuffer>>;
type Encoder = Retained<ProtocolObject<dyn MTLComputeCommandEncoder>>;

/// Activations: `len` floats in a shared-storage buffer.
pub struct MetalBuf {
    buf: Buffer,
    len: usize,
}

/// A weight matrix: `rows` rows of `cols` inputs in ggml's blocks of `ty`,
/// from `offset` in `buf`.
pub struct MetalMat {
    buf: Buffer,
    offset: usize,
    ty: crate::GgmlType,
    rows: usize,
    cols: usize,
    /// Where each stored input comes from (group-quantised layers), as u32s.
    order: Option<Buffer>,
    /// Keeps the mapping under a no-copy buffer alive.
    _owner: Arc<dyn std::any::Any + Send + Sync>,
}

pub struct MetalVector {
    buf: Buffer,
    len: usize,
}

/// One layer's f16 cache: `cells` rows of `kv_dim` keys, and of values.
pub struct MetalKv {
    k: Buffer,
    v: Buffer,
    cells: usize,
    kv_dim: usize,
}

pub struct MetalScratch {
    /// A group-quantised layer's inputs in its stored order.
    gathered: Option<MetalBuf>,
}

// SAFETY (all of these): Metal's buffers are thread-safe objects (Apple: only
// command encoders are bound to one thread at a time); their contents are
// touched by the host only in `write` and `read` after the GPU's work on
// them has completed, under the backend's lock.
unsafe impl Send for MetalBuf {}
unsafe impl Sync for MetalBuf {}
unsafe impl Send for MetalMat {}
unsafe impl Sync for MetalMat {}
unsafe impl Send for MetalVector {}
unsafe impl Sync for MetalVector {}
unsafe impl Send for MetalKv {}
unsafe impl Send for MetalScratch {}

/// The command buffer being encoded, its encoder, and what went wrong since
/// the last `read`.
struct Encoding {
    open: Option<(CommandBuffer, Encoder)>,
    /// Dispatches encoded into `open`.
    dispatches: usize,
    /// Command buffers committed since the last wait, oldest first.
    committed: Vec<CommandBuffer>,
    hazards: Hazards,
    error: Option<BackendError>,
}

// SAFETY: the command buffer and encoder are used only under the backend's
// mutex, so by one thread at a time, which is what Metal asks of encoders.
unsafe impl Send for Encoding {}

pub struct MetalBackend {
    index: usize,
    name: String,
    device: Retained<ProtocolObject<dyn MTLDevice>>,
    queue: Retained<ProtocolObject<dyn MTLCommandQueue>>,
    library: Library,
    /// Bound where a kernel's optional input is absent (rope's factors).
    dummy: MetalBuf,
    state: Mutex<Encoding>,
}

impl Drop for MetalBackend {
    /// An encoder released without `endEncoding` aborts the process: work
    /// encoded and not yet read is committed and waited for.
    fn drop(&mut self) {
        let mut st = self.lock();
        self.finish(&mut st);
    }
}

/// A kernel's buffer or constant argument, in binding order.
enum Arg<'a> {
    Read(&'a Buffer, usize),
    Write(&'a Buffer, usize),
    Bytes(&'a [u8]),
}

fn id(b: &Buffer) -> usize {
    Retained::as_ptr(b) as *const c_void as usize
}

fn blocks(n: usize, per: usize) -> usize {
    n.div_ceil(per).max(1)
}

/// Threads for a threadgroup that strides over `n` values: whole simdgroups,
/// at least one, at most `max`.
fn group_threads(n: usize, max: usize) -> usize {
    n.next_multiple_of(32).clamp(32, max)
}

const SHARED: MTLResourceOptions = MTLResourceOptions::StorageModeShared;

/// Decode's attention splits a (token, head)'s cells over this many
/// simdgroups; prompt batches have threadgroups enough with fewer.
const ATTENTION_SIMDS_DECODE: usize = 16;
const ATTENTION_SIMDS_PROMPT: usize = 4;
/// Simdgroups a mat-vec threadgroup (a row each).
const MATVEC_SIMDS: usize = 4;
/// Dispatches a command buffer takes before it is committed and the next
/// begun: the GPU starts on a batch while the host still encodes it, and no
/// one command buffer runs long enough to meet macOS's GPU watchdog (a long
/// prompt's layers would otherwise all be in one).
const DISPATCHES_A_COMMAND_BUFFER: usize = 128;

extern "C" {
    fn getpagesize() -> i32;
}

impl MetalBackend {
    /// Opens Metal device `index` (as `llm devices` numbers them) and
    /// compiles the kernels' library for it.
    pub fn new(index: usize) -> Result<MetalBackend, BackendError> {
        let device = super::device::all()
            .into_iter()
            .nth(index)
            .ok_or_else(|| BackendError(format!("Metal: no device {index}")))?;
        let name = format!("Metal{index} ({})", device.name());
        let queue = device
            .newCommandQueue()
            .ok_or_else(|| BackendError(format!("{name}: no command queue")))?;
        let library = Library::new(device.clone())?;
        let dummy = device
            .newBufferWithLength_options(16, SHARED)
            .ok_or_else(|| BackendError(format!("{name}: out of device memory")))?;
        Ok(MetalBackend {
            index,
            name,
            device,
            queue,
            library,
            dummy: MetalBuf { buf: dummy, len: 4 },
            state: Mutex::new(Encoding {
                open: None,
                dispatches: 0,
                committed: Vec::new(),
                hazards: Hazards::default(),
                error: None,
            }),
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    fn lock(&self) -> MutexGuard<'_, Encoding> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the first error since the last read, naming the device.
    fn fail(&self, st: &mut Encoding, e: BackendError) {
        let what = e.0.strip_prefix("Metal: ").unwrap_or(&e.0);
        st.error
            .get_or_insert_with(|| BackendError(format!("{}: {what}", self.name)));
    }

    fn alloc(&self, bytes: usize, what: &str) -> Result<Buffer, BackendError> {
        self.device
            .newBufferWithLength_options(bytes.max(16), SHARED)
            .ok_or_else(|| {
                BackendError(format!(
                    "{}: out of device memory ({bytes} bytes for {what})",
                    self.name
                ))
            })
    }

    /// A buffer holding a copy of `bytes`.
    fn copy_of(&self, bytes: &[u8], what: &str) -> Result<Buffer, BackendError> {
        let Some(ptr) = NonNull::new(bytes.as_ptr() as *mut c_void).filter(|_| !bytes.is_empty())
        else {
            return self.alloc(0, what);
        };
        // SAFETY: `bytes` is live for the call, which copies it.
        unsafe {
            self.device
                .newBufferWithBytes_length_options(ptr, bytes.len(), SHARED)
        }
        .ok_or_else(|| {
            BackendError(format!(
                "{}: out of device memory ({} bytes for {what})",
                self.name,
                bytes.len()
            ))
        })
    }

    /// A buffer over the pages that hold `w`'s bytes, and the bytes' offset
    /// in it; None where Metal will not wrap that memory.
    fn wrap(&self, w: &HostMat) -> Option<(Buffer, usize)> {
        // A buffer offset must be aligned to what the kernel reads there
        // (floats, or blocks of halves); tensors of a packed safetensors
        // file need not be, and are copied instead.
        let align = if w.format.ggml() == crate::GgmlType::F32 {
            4
        } else {
            2
        };
        if !(w.ptr as usize).is_multiple_of(align) {
            return None;
        }
        // SAFETY: getpagesize has no preconditions.
        let page = unsafe { getpagesize() } as usize;
        let start = w.ptr as usize & !(page - 1);
        let end = (w.ptr as usize + w.len).next_multiple_of(page);
        let ptr = NonNull::new(start as *mut c_void)?;
        // SAFETY: whole pages around memory `w.owner` keeps mapped (a page
        // with one mapped byte is mapped whole), kept alive by the matrix
        // as long as the buffer; the GPU only reads it.
        let buf = unsafe {
            self.device
                .newBufferWithBytesNoCopy_length_options_deallocator(ptr, end - start, SHARED, None)
        }?;
        Some((buf, w.ptr as usize - start))
    }

    /// Commits what was encoded and waits for it; a command buffer that
    /// failed is reported by the next `read`.
    fn finish(&self, st: &mut Encoding) {
        self.commit(st);
        if st.committed.is_empty() {
            return;
        }
        // Objects Metal returns autoreleased (the error) go with this pool,
        // not with the thread, which has none of its own.
        objc2::rc::autoreleasepool(|_| {
            for cmd in std::mem::take(&mut st.committed) {
                cmd.waitUntilCompleted();
                if cmd.status() == MTLCommandBufferStatus::Error {
                    let why = cmd.error().map_or_else(
                        || "unknown".to_string(),
                        |e| e.localizedDescription().to_string(),
                    );
                    self.fail(st, BackendError(format!("a command buffer failed: {why}")));
                }
            }
        });
    }

    /// Ends the open encoder and commits its command buffer, without
    /// waiting: the queue runs command buffers in order, and Metal tracks
    /// the buffers one writes and a later one reads.
    fn commit(&self, st: &mut Encoding) {
        st.hazards.reset();
        st.dispatches = 0;
        if let Some((cmd, enc)) = st.open.take() {
            enc.endEncoding();
            cmd.commit();
            st.committed.push(cmd);
        }
    }

    /// The most threads a threadgroup of `kernel` may have here (0 where its
    /// pipeline cannot be made: the dispatch then reports why).
    fn max_threads(&self, kernel: &str) -> usize {
        self.library
            .pipeline(kernel, &[])
            .map_or(0, |p| p.maxTotalThreadsPerThreadgroup())
    }

    /// Encodes `kernel` (function constants `constants`) over `groups`
    /// threadgroups of `threads` threads, with a barrier first where one of
    /// its buffers was touched by an unbarriered dispatch.
    fn dispatch(
        &self,
        kernel: &str,
        constants: &[Constant],
        args: &[Arg<'_>],
        groups: (usize, usize),
        threads: usize,
    ) {
        // Command buffers and encoders come back autoreleased: this pool
        // frees them (the thread has none of its own).
        objc2::rc::autoreleasepool(|_| self.encode(kernel, constants, args, groups, threads));
    }

    fn encode(
        &self,
        kernel: &str,
        constants: &[Constant],
        args: &[Arg<'_>],
        groups: (usize, usize),
        threads: usize,
    ) {
        let mut st = self.lock();
        if st.error.is_some() {
            return; // reported by the next read; what follows would be wrong anyway
        }
        let pipeline = match self.library.pipeline(kernel, constants) {
            Ok(p) => p,
            Err(e) => return self.fail(&mut st, e),
        };
        if pipeline.threadExecutionWidth() != 32 {
            let e = BackendError(format!(
                "{kernel} runs in simdgroups of {} threads here, and the kernels take 32",
                pipeline.threadExecutionWidth()
            ));
            return self.fail(&mut st, e);
        }
        if threads > pipeline.maxTotalThreadsPerThreadgroup() {
            let e = BackendError(format!(
                "{kernel} needs {threads} threads a threadgroup and the device gives it {}",
                pipeline.maxTotalThreadsPerThreadgroup()
            ));
            return self.fail(&mut st, e);
        }
        if st.open.is_none() {
            let opened = self.queue.commandBuffer().and_then(|cmd| {
                let enc = cmd.computeCommandEncoderWithDispatchType(MTLDispatchType::Concurrent)?;
                Some((cmd, enc))
            });
            match opened {
                Some(o) => st.open = Some(o),
                None => {
                    let e = BackendError("no command buffer or encoder".into());
                    return self.fail(&mut st, e);
                }
            }
        }
        let reads: Vec<usize> = args
            .iter()
            .filter_map(|a| match a {
                Arg::Read(b, _) => Some(id(b)),
                _ => None,
            })
            .collect();
        let writes: Vec<usize> = args
            .iter()
            .filter_map(|a| match a {
                Arg::Write(b, _) => Some(id(b)),
                _ => None,
            })
            .collect();
        let barrier = st.hazards.dispatch(&reads, &writes);
        let (_, enc) = st.open.as_ref().expect("opened above");
        if barrier {
            enc.memoryBarrierWithScope(MTLBarrierScope::Buffers);
        }
        enc.setComputePipelineState(&pipeline);
        for (i, a) in args.iter().enumerate() {
            match a {
                // SAFETY: the buffers outlive the command buffer, which
                // retains them; offsets are within them by the ops' shapes.
                Arg::Read(b, off) | Arg::Write(b, off) => unsafe {
                    let b: &ProtocolObject<dyn MTLBuffer> = b;
                    enc.setBuffer_offset_atIndex(Some(b), *off, i)
                },
                // SAFETY: Metal copies the bytes before returning.
                Arg::Bytes(bytes) => unsafe {
                    let ptr = NonNull::new(bytes.as_ptr() as *mut c_void).expect("argument bytes");
                    enc.setBytes_length_atIndex(ptr, bytes.len(), i)
                },
            }
        }
        let size = |width, height| MTLSize {
            width,
            height,
            depth: 1,
        };
        enc.dispatchThreadgroups_threadsPerThreadgroup(size(groups.0, groups.1), size(threads, 1));
        st.dispatches += 1;
        if st.dispatches >= DISPATCHES_A_COMMAND_BUFFER {
            self.commit(&mut st);
        }
    }

    /// One thread an element over `len` elements.
    fn elementwise(&self, kernel: &str, constants: &[Constant], args: &[Arg<'_>], len: usize) {
        if len > 0 {
            self.dispatch(kernel, constants, args, (blocks(len, 256), 1), 256);
        }
    }

    fn kernel_name(op: &str, ty: crate::GgmlType) -> String {
        format!("{op}_{}", ty.name().to_lowercase())
    }

    /// `tokens` rows of `x` (f32 from `x_off` bytes) times `w`.
    fn product(&self, w: &MetalMat, x: &Buffer, tokens: usize, out: &MetalBuf) {
        let wbuf = Arg::Read(&w.buf, w.offset);
        if tokens > 1 && w.cols.is_multiple_of(32) {
            let a = MatmulArgs {
                rows: w.rows as u32,
                cols: w.cols as u32,
                tokens: tokens as u32,
            };
            self.dispatch(
                &Self::kernel_name("matmul", w.ty),
                &[],
                &[
                    wbuf,
                    Arg::Read(x, 0),
                    Arg::Write(&out.buf, 0),
                    Arg::Bytes(a.bytes()),
                ],
                (blocks(w.rows, 32), blocks(tokens, 32)),
                128,
            );
            return;
        }
        let a = MatvecArgs {
            rows: w.rows as u32,
            cols: w.cols as u32,
        };
        for t in 0..tokens {
            self.dispatch(
                &Self::kernel_name("matvec", w.ty),
                &[],
                &[
                    Arg::Read(&w.buf, w.offset),
                    Arg::Read(x, t * w.cols * 4),
                    Arg::Write(&out.buf, t * w.rows * 4),
                    Arg::Bytes(a.bytes()),
                ],
                (blocks(w.rows, MATVEC_SIMDS), 1),
                32 * MATVEC_SIMDS,
            );
        }
    }

    /// rms_norm of `rows` rows of `src` times `w` into `dst` (may be `src`).
    fn norm_rows(&self, src: &Buffer, w: &MetalVector, eps: f32, rows: usize, dst: &Buffer) {
        let a = NormArgs {
            width: w.len as u32,
            eps,
        };
        if rows > 0 {
            self.dispatch(
                "rms_norm_f32",
                &[],
                &[
                    Arg::Read(src, 0),
                    Arg::Read(&w.buf, 0),
                    Arg::Write(dst, 0),
                    Arg::Bytes(a.bytes()),
                ],
                (rows, 1),
                group_threads(w.len, 256),
            );
        }
    }

    fn check_room(&self, what: &str, need: usize, have: usize) -> bool {
        if need <= have {
            return true;
        }
        let e = BackendError(format!("{what}: {need} floats for a buffer of {have}"));
        self.fail(&mut self.lock(), e);
        false
    }
}

impl Backend for MetalBackend {
    type Buf = MetalBuf;
    type Mat = MetalMat;
    type Vector = MetalVector;
    type Kv = MetalKv;
    type Scratch = MetalScratch;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn buf(&self, len: usize) -> Result<MetalBuf, BackendError> {
        Ok(MetalBuf {
            buf: self.alloc(len * 4, "activations")?,
            len,
        })
    }

    fn scratch(&self) -> Result<MetalScratch, BackendError> {
        Ok(MetalScratch { gathered: None })
    }

    fn upload_mat(&self, w: &HostMat) -> Result<MetalMat, BackendError> {
        let ty = w.format.ggml();
        if !crate::blocks::WEIGHT_TYPES.contains(&ty) {
            return Err(BackendError(format!(
                "{}: no Metal kernels for tensor '{}' of {}",
                self.name,
                w.name,
                ty.name()
            )));
        }
        let what = format!("tensor '{}'", w.name);
        let (buf, offset) = match self.wrap(w) {
            Some(wrapped) => wrapped,
            None => (self.copy_of(w.bytes(), &what)?, 0),
        };
        let order = match &w.input_order {
            Some(o) => {
                let bytes: Vec<u8> = o.iter().flat_map(|i| i.to_le_bytes()).collect();
                Some(self.copy_of(&bytes, &what)?)
            }
            None => None,
        };
        Ok(MetalMat {
            buf,
            offset,
            ty,
            rows: w.rows,
            cols: w.cols,
            order,
            _owner: w.owner.clone(),
        })
    }

    fn upload_vector(&self, v: &[f32]) -> Result<MetalVector, BackendError> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Ok(MetalVector {
            buf: self.copy_of(&bytes, "a vector")?,
            len: v.len(),
        })
    }

    fn kv(
        &self,
        cells: usize,
        kv_dim: usize,
        head_dim: usize,
        types: KvTypes,
    ) -> Result<MetalKv, BackendError> {
        if let Some(why) = super::cannot_run(head_dim, types) {
            let why = why.strip_prefix("Metal: ").unwrap_or(&why);
            return Err(BackendError(format!("{}: {why}: use -ngl 0", self.name)));
        }
        let bytes = cells * kv_dim * 2;
        let k = self.alloc(bytes, "the KV cache")?;
        let v = self.alloc(bytes, "the KV cache")?;
        for b in [&k, &v] {
            // SAFETY: a fresh shared buffer of at least `bytes` bytes that
            // no command has used.
            unsafe { std::ptr::write_bytes(b.contents().as_ptr().cast::<u8>(), 0, bytes) };
        }
        Ok(MetalKv {
            k,
            v,
            cells,
            kv_dim,
        })
    }

    fn kv_bytes(cells: usize, kv_dim: usize, types: KvTypes) -> usize {
        let bytes = |t| (cells * crate::kv_types::row_bytes(t, kv_dim)).max(16);
        bytes(types.k) + bytes(types.v)
    }

    fn kv_allocated(&self, kv: &MetalKv) -> usize {
        kv.k.length() + kv.v.length()
    }

    fn write(&self, src: &[f32], dst: &mut MetalBuf) {
        assert!(src.len() <= dst.len, "write past the buffer");
        let mut st = self.lock();
        // Work encoded so far may still read the old values.
        self.finish(&mut st);
        // SAFETY: the buffer holds `dst.len` floats and no command is running.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                dst.buf.contents().as_ptr().cast::<f32>(),
                src.len(),
            )
        };
    }

    fn read(&self, src: &MetalBuf, dst: &mut [f32]) -> Result<(), BackendError> {
        assert!(dst.len() <= src.len, "read past the buffer");
        let mut st = self.lock();
        self.finish(&mut st);
        // SAFETY: the buffer holds `src.len` floats and its writers are done.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.buf.contents().as_ptr().cast::<f32>(),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        match st.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn matmul(
        &self,
        sc: &mut MetalScratch,
        w: &MetalMat,
        x: &MetalBuf,
        rows: usize,
        out: &mut MetalBuf,
    ) {
        if !self.check_room("matmul", rows * w.rows, out.len) {
            return;
        }
        let Some(order) = &w.order else {
            return self.product(w, &x.buf, rows, out);
        };
        let need = rows * w.cols;
        if sc.gathered.as_ref().is_none_or(|g| g.len < need) {
            match self.buf(need) {
                Ok(b) => sc.gathered = Some(b),
                Err(e) => return self.fail(&mut self.lock(), e),
            }
        }
        let gathered = sc.gathered.as_ref().expect("made above");
        let a = CopyArgs {
            rows: rows as u32,
            width: w.cols as u32,
            src_width: w.cols as u32,
            col0: 0,
        };
        self.elementwise(
            "gather_cols_f32",
            &[],
            &[
                Arg::Read(&x.buf, 0),
                Arg::Read(order, 0),
                Arg::Write(&gathered.buf, 0),
                Arg::Bytes(a.bytes()),
            ],
            need,
        );
        self.product(w, &gathered.buf, rows, out);
    }

    fn rms_norm(&self, src: &MetalBuf, w: &MetalVector, eps: f32, rows: usize, dst: &mut MetalBuf) {
        self.norm_rows(&src.buf, w, eps, rows, &dst.buf);
    }

    fn rms_norm_in_place(&self, x: &mut MetalBuf, w: &MetalVector, eps: f32, rows: usize) {
        // Each thread scales only values it read, after every thread's sum:
        // the kernel may write where it reads.
        self.norm_rows(&x.buf, w, eps, rows, &x.buf);
    }

    fn add_bias(&self, x: &mut MetalBuf, bias: &MetalVector, rows: usize) {
        let a = ElementArgs {
            len: (rows * bias.len) as u32,
            width: bias.len as u32,
            s: 0.0,
        };
        self.elementwise(
            "add_bias_f32",
            &[],
            &[
                Arg::Write(&x.buf, 0),
                Arg::Read(&bias.buf, 0),
                Arg::Bytes(a.bytes()),
            ],
            rows * bias.len,
        );
    }

    fn add(&self, x: &mut MetalBuf, y: &MetalBuf, len: usize) {
        let a = ElementArgs {
            len: len as u32,
            width: 0,
            s: 0.0,
        };
        self.elementwise(
            "add_f32",
            &[],
            &[
                Arg::Write(&x.buf, 0),
                Arg::Read(&y.buf, 0),
                Arg::Bytes(a.bytes()),
            ],
            len,
        );
    }

    fn scale(&self, x: &mut MetalBuf, s: f32, len: usize) {
        let a = ElementArgs {
            len: len as u32,
            width: 0,
            s,
        };
        self.elementwise(
            "scale_f32",
            &[],
            &[Arg::Write(&x.buf, 0), Arg::Bytes(a.bytes())],
            len,
        );
    }

    fn copy_cols(
        &self,
        src: &MetalBuf,
        src_width: usize,
        col0: usize,
        width: usize,
        rows: usize,
        dst: &mut MetalBuf,
    ) {
        let a = CopyArgs {
            rows: rows as u32,
            width: width as u32,
            src_width: src_width as u32,
            col0: col0 as u32,
        };
        self.elementwise(
            "copy_cols_f32",
            &[],
            &[
                Arg::Read(&src.buf, 0),
                Arg::Write(&dst.buf, 0),
                Arg::Bytes(a.bytes()),
            ],
            rows * width,
        );
    }

    fn copy_rows(
        &self,
        src: &MetalBuf,
        row0: usize,
        rows: usize,
        width: usize,
        dst: &mut MetalBuf,
    ) {
        let a = CopyArgs {
            rows: rows as u32,
            width: width as u32,
            src_width: width as u32,
            col0: 0,
        };
        self.elementwise(
            "copy_cols_f32",
            &[],
            &[
                Arg::Read(&src.buf, row0 * width * 4),
                Arg::Write(&dst.buf, 0),
                Arg::Bytes(a.bytes()),
            ],
            rows * width,
        );
    }

    fn rope(
        &self,
        _sc: &mut MetalScratch,
        x: &mut MetalBuf,
        tokens: usize,
        n_heads: usize,
        head_dim: usize,
        rope: &Rope,
        freq_factors: Option<&MetalVector>,
        pos0: usize,
    ) {
        let a = RopeArgs {
            n_heads: n_heads as u32,
            head_dim: head_dim as u32,
            n_dims: rope.n_dims as u32,
            pos0: pos0 as u32,
            freq_base: rope.freq_base,
            freq_scale: rope.freq_scale,
            ext_factor: rope.ext_factor,
            attn_factor: rope.attn_factor,
            corr_low: rope.corr_dims[0],
            corr_high: rope.corr_dims[1],
            neox: rope.neox as u32,
            has_ff: freq_factors.is_some() as u32,
        };
        let ff = freq_factors.map_or(&self.dummy.buf, |f| &f.buf);
        if tokens * n_heads > 0 {
            self.dispatch(
                "rope_f32",
                &[],
                &[
                    Arg::Write(&x.buf, 0),
                    Arg::Read(ff, 0),
                    Arg::Bytes(a.bytes()),
                ],
                (tokens * n_heads, 1),
                group_threads(rope.n_dims / 2, 256),
            );
        }
    }

    fn kv_store(
        &self,
        _sc: &mut MetalScratch,
        kv: &mut MetalKv,
        k: &MetalBuf,
        v: &MetalBuf,
        pos0: usize,
        tokens: usize,
    ) {
        let a = KvStoreArgs {
            kv_dim: kv.kv_dim as u32,
            cells: kv.cells as u32,
            pos0: pos0 as u32,
            tokens: tokens as u32,
        };
        self.elementwise(
            "kv_store_f16",
            &[],
            &[
                Arg::Read(&k.buf, 0),
                Arg::Read(&v.buf, 0),
                Arg::Write(&kv.k, 0),
                Arg::Write(&kv.v, 0),
                Arg::Bytes(a.bytes()),
            ],
            tokens * kv.kv_dim,
        );
    }

    fn attention(
        &self,
        _sc: &mut MetalScratch,
        kv: &MetalKv,
        q: &MetalBuf,
        pos0: usize,
        tokens: usize,
        a: &Attention,
        out: &mut MetalBuf,
    ) {
        let args = AttentionArgs {
            n_head: a.n_head as u32,
            n_head_kv: a.n_head_kv as u32,
            head_dim: a.head_dim as u32,
            cells: kv.cells as u32,
            pos0: pos0 as u32,
            tokens: tokens as u32,
            window: a.window.unwrap_or(0) as u32,
            kq_scale: a.kq_scale,
        };
        let want = if tokens == 1 {
            ATTENTION_SIMDS_DECODE
        } else {
            ATTENTION_SIMDS_PROMPT
        };
        // The kernel takes any number of simdgroups up to 16: as many as
        // the pipeline allows here.
        let simds = want.min(self.max_threads("attention_f16") / 32).max(1);
        if tokens > 0 {
            self.dispatch(
                "attention_f16",
                &[],
                &[
                    Arg::Read(&q.buf, 0),
                    Arg::Read(&kv.k, 0),
                    Arg::Read(&kv.v, 0),
                    Arg::Write(&out.buf, 0),
                    Arg::Bytes(args.bytes()),
                ],
                (tokens * a.n_head, 1),
                32 * simds,
            );
        }
    }

    fn glu(&self, act: Glu, gate: &mut MetalBuf, up: &MetalBuf, len: usize) {
        let a = ElementArgs {
            len: len as u32,
            width: 0,
            s: 0.0,
        };
        let gelu = Constant::Bool(act == Glu::GeGlu);
        self.elementwise(
            "glu_f32",
            &[gelu],
            &[
                Arg::Write(&gate.buf, 0),
                Arg::Read(&up.buf, 0),
                Arg::Bytes(a.bytes()),
            ],
            len,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend_check::{check_with, failures, Caches};

    /// Every op on the Mac's GPU against the scalar CPU backend (the same
    /// backend-ops test the CUDA backend passes), f16 caches only. Skips
    /// where Metal has no device. The kernels keep activations in f32 (the
    /// CPU quantises them to 8 bits), so products are held to the exact one.
    #[test]
    fn every_op_matches_the_cpu() {
        if super::super::devices().is_empty() {
            eprintln!("skipped: no Metal device");
            return;
        }
        let b = MetalBackend::new(0).expect("the Metal device opens");
        let outcomes = check_with(&b, 11, Caches::F16);
        for o in &outcomes {
            eprintln!("{:<18} {:<60} {:.3e}", o.op, o.case, o.rel_err);
        }
        let bad = failures(&outcomes, |o| match o.op {
            "matmul" | "fused" => f64::INFINITY,
            "matmul_vs_f64" | "fused_vs_f64" | "grouped_vs_f64" => 1e-4,
            "attention" | "rope_store" | "rope_store_attention" => 2e-3,
            "geglu" => 2e-3,
            "swiglu" => 1e-5,
            "rope" => 1e-3,
            "rms_norm" | "rms_norm_in_place" => 1e-5,
            _ => 0.0,
        });
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}
