//! A thin, safe layer over the NVIDIA driver API (through cudarc's dynamic
//! loading, so nothing but libcuda is needed, and only where a GPU is):
//! device memory, pinned host memory, one stream, modules, launches, graphs.
//! Every failure becomes a one-line `BackendError`.

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use cudarc::driver::result;
use cudarc::driver::sys;

use crate::backend::BackendError;

pub type CuResult<T> = Result<T, BackendError>;

/// Turns a driver error into our one-line error, naming what was being done.
pub fn check<T>(what: &str, r: Result<T, result::DriverError>) -> CuResult<T> {
    r.map_err(|e| {
        let name = e
            .error_string()
            .ok()
            .and_then(|s| s.to_str().ok().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", e.0));
        BackendError(format!("CUDA: {what}: {name}"))
    })
}

/// Whether the driver library loads and initialises (once per process).
pub fn driver() -> CuResult<()> {
    static INIT: OnceLock<CuResult<()>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: only probes for the library; nothing is called through it.
        if std::env::var_os("LLM_NO_GPU").is_some() || !unsafe { sys::is_culib_present() } {
            return Err(BackendError("no NVIDIA driver (libcuda) was found".into()));
        }
        check("initialising the driver", result::init())
    })
    .clone()
}

/// What `llm devices` and the planner know of a GPU.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub total: usize,
    pub free: usize,
    /// Compute capability as major * 10 + minor (90 for Hopper).
    pub capability: u32,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Peak memory bandwidth in bytes a second by the memory's clock and
    /// bus width (0 where the driver reports neither).
    pub memory_bandwidth: u64,
    /// Why our kernels cannot run there (too old a GPU or driver), if so.
    pub problem: Option<String>,
}

/// Every GPU the driver sees; empty without a driver.
pub fn devices() -> Vec<DeviceInfo> {
    contexts()
        .iter()
        .map(|(c, problem)| DeviceInfo {
            problem: problem.clone(),
            ..c.info()
        })
        .collect()
}

/// Peak bandwidth in bytes a second of memory clocked at `clock_khz` on a
/// bus `bus_bits` wide: two transfers a clock, as the driver's clock
/// counts them for HBM and GDDR alike (an H100 SXM: 2619 MHz x 5120 bits,
/// 3.35 TB/s; an H200, as its driver reports it: 3201 MHz x 6016 bits,
/// 4.81 TB/s).
fn peak_bandwidth(clock_khz: u32, bus_bits: u32) -> u64 {
    clock_khz as u64 * 1000 * 2 * bus_bits as u64 / 8
}

/// Why our kernels would not run on a device: loading them is the test (a
/// driver older than the toolkit that built them refuses them).
fn probe(c: &Context) -> Option<String> {
    let info = c.info();
    if info.capability < 75 {
        return Some(format!(
            "compute {}.{} is older than Turing (7.5), the oldest GPU llm supports",
            info.capability / 10,
            info.capability % 10
        ));
    }
    super::MODULES
        .iter()
        .find_map(|(_, image)| Module::load(image).err())
        .map(|e| {
            format!(
                "{}: the driver may be older than 580, which llm's kernels need",
                e.0
            )
        })
}

/// One retained primary context per GPU, for the life of the process:
/// reading free memory needs a context, and letting the last reference go
/// would tear the context down (seconds on a large GPU) only for the
/// backend to build it again.
fn contexts() -> &'static [(Context, Option<String>)] {
    static CONTEXTS: OnceLock<Vec<(Context, Option<String>)>> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        if driver().is_err() {
            return Vec::new();
        }
        let n = result::device::get_count().unwrap_or(0).max(0) as usize;
        (0..n)
            .filter_map(|i| Context::new(i).ok())
            .map(|c| {
                let problem = probe(&c);
                (c, problem)
            })
            .collect()
    })
}

/// A device's primary context, made current on the calling thread by `bind`.
pub struct Context {
    pub ordinal: usize,
    device: sys::CUdevice,
    ctx: sys::CUcontext,
}

// SAFETY: a primary context may be used from any thread once made current there,
// which every entry point does through `bind`.
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

impl Context {
    pub fn new(ordinal: usize) -> CuResult<Context> {
        driver()?;
        let device = check("opening the device", result::device::get(ordinal as i32))?;
        // SAFETY: `device` is a valid handle; the context is released in Drop.
        let ctx = check("creating the context", unsafe {
            result::primary_ctx::retain(device)
        })?;
        let c = Context {
            ordinal,
            device,
            ctx,
        };
        c.bind()?;
        Ok(c)
    }

    /// Makes this context current on the calling thread.
    pub fn bind(&self) -> CuResult<()> {
        // SAFETY: the context lives as long as `self`.
        check("binding the context", unsafe {
            result::ctx::set_current(self.ctx)
        })
    }

    pub fn info(&self) -> DeviceInfo {
        let _ = self.bind();
        let (free, total) = result::mem_get_info().unwrap_or((0, 0));
        let attr = |a| unsafe { result::device::get_attribute(self.device, a) }.unwrap_or(0) as u32;
        let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
        let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        DeviceInfo {
            ordinal: self.ordinal,
            name: result::device::get_name(self.device).unwrap_or_else(|_| "unknown GPU".into()),
            total,
            free,
            capability: major * 10 + minor,
            sms: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
            memory_bandwidth: peak_bandwidth(
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE),
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH),
            ),
            problem: None,
        }
    }

    /// (free, total) bytes of device memory now.
    pub fn mem_info(&self) -> CuResult<(usize, usize)> {
        self.bind()?;
        check("reading free memory", result::mem_get_info())
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: retained in `new`, released once.
        unsafe {
            let _ = result::primary_ctx::release(self.device);
        }
    }
}

/// Device memory of `bytes` bytes, freed on drop.
pub struct DeviceMem {
    pub ptr: sys::CUdeviceptr,
    pub bytes: usize,
}

// SAFETY: a device address; ordering is the stream's business.
unsafe impl Send for DeviceMem {}
unsafe impl Sync for DeviceMem {}

impl DeviceMem {
    pub fn alloc(bytes: usize, what: &str) -> CuResult<DeviceMem> {
        // A zero-byte request still gets a valid (tiny) allocation.
        let n = bytes.max(16);
        // SAFETY: plain allocation, freed in Drop.
        let ptr = unsafe { result::malloc_sync(n) }.map_err(|e| {
            if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                BackendError(format!(
                    "CUDA: out of device memory allocating {} MiB for {what}",
                    n.div_ceil(1 << 20)
                ))
            } else {
                check::<()>(&format!("allocating {what}"), Err(e)).unwrap_err()
            }
        })?;
        Ok(DeviceMem { ptr, bytes })
    }

    pub fn zeroed(bytes: usize, what: &str) -> CuResult<DeviceMem> {
        let m = DeviceMem::alloc(bytes, what)?;
        // SAFETY: the range lies inside the allocation.
        check("clearing memory", unsafe {
            result::memset_d8_sync(m.ptr, 0, bytes.max(16))
        })?;
        Ok(m)
    }

    /// The address `byte` bytes in.
    pub fn at(&self, byte: usize) -> sys::CUdeviceptr {
        debug_assert!(byte <= self.bytes);
        self.ptr + byte as u64
    }
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_sync, freed once; the context is current
        // or the free fails harmlessly at exit.
        unsafe {
            let _ = result::free_sync(self.ptr);
        }
    }
}

/// Page-locked host memory, for copies the GPU can do asynchronously and that
/// a captured graph can read at replay time.
pub struct PinnedMem {
    ptr: *mut u8,
    pub bytes: usize,
}

// SAFETY: plain host memory owned by this value.
unsafe impl Send for PinnedMem {}
unsafe impl Sync for PinnedMem {}

impl PinnedMem {
    pub fn alloc(bytes: usize) -> CuResult<PinnedMem> {
        // SAFETY: freed in Drop.
        let ptr = check("allocating pinned host memory", unsafe {
            result::malloc_host(bytes.max(16), 0)
        })? as *mut u8;
        Ok(PinnedMem { ptr, bytes })
    }

    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn f32s(&mut self, n: usize) -> &mut [f32] {
        assert!(n * 4 <= self.bytes);
        // SAFETY: within the allocation, which is 16-byte aligned or more.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut f32, n) }
    }
}

impl Drop for PinnedMem {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_host, freed once.
        unsafe {
            let _ = result::free_host(self.ptr as *mut c_void);
        }
    }
}

/// A point in a stream's work that the host can wait for.
pub struct Event(sys::CUevent);

// SAFETY: a handle; the driver serialises its use.
unsafe impl Send for Event {}
unsafe impl Sync for Event {}

impl Event {
    pub fn new() -> CuResult<Event> {
        check(
            "creating an event",
            result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING),
        )
        .map(Event)
    }

    /// Marks the work queued on `stream` so far.
    pub fn record(&self, stream: &Stream) -> CuResult<()> {
        // SAFETY: a live event and stream.
        check("recording an event", unsafe {
            result::event::record(self.0, stream.0)
        })
    }

    /// Waits until the work marked by the last `record` is done.
    pub fn sync(&self) -> CuResult<()> {
        // SAFETY: a live event.
        check("waiting for a copy", unsafe {
            sys::cuEventSynchronize(self.0).result()
        })
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by cuEventCreate, destroyed once.
        unsafe {
            let _ = sys::cuEventDestroy_v2(self.0).result();
        }
    }
}

/// A non-blocking stream, and which of its kernels launch early
/// (programmatic dependent launch, kernels/pdl.cuh): such a kernel may start
/// while the one before it finishes, and waits for it inside (`pdl_begin`).
/// The count is of the operations put on the stream (launches, copies,
/// graphs): equal counts at two points mean nothing ran between them.
/// The flag: whether the last operation was a kernel launch (an early
/// launch waits only for the kernel before it, not for a copy between).
pub struct Stream(pub sys::CUstream, EarlyLaunches, AtomicU64, AtomicBool);

/// Which kernels a stream launches early.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EarlyLaunches {
    /// None (GPUs before sm_90, or LLM_CUDA_PDL=0).
    Off,
    /// Those launched through `Function::launch_overlapping` (the launches
    /// measured to gain).
    Chosen,
    /// Every kernel (the default; LLM_CUDA_PDL=chosen: Chosen).
    All,
}

// SAFETY: a handle; the driver serialises use of one stream.
unsafe impl Send for Stream {}
unsafe impl Sync for Stream {}

impl Stream {
    /// `early_launches` other than Off: only where every kernel calls
    /// pdl_begin (all of ours do) and the GPU has the feature (sm_90 on).
    pub fn new(early_launches: EarlyLaunches) -> CuResult<Stream> {
        check(
            "creating a stream",
            result::stream::create(result::stream::StreamKind::NonBlocking),
        )
        .map(|s| Stream(s, early_launches, AtomicU64::new(0), AtomicBool::new(false)))
    }

    /// Operations put on the stream so far.
    pub fn ops(&self) -> u64 {
        self.2.load(Ordering::Relaxed)
    }

    /// Counts an operation, a kernel launch or not; returns whether the
    /// operation before it was a kernel launch.
    fn count(&self, kernel: bool) -> bool {
        self.2.fetch_add(1, Ordering::Relaxed);
        self.3.swap(kernel, Ordering::Relaxed)
    }

    pub fn sync(&self) -> CuResult<()> {
        // SAFETY: a live stream.
        check("running kernels", unsafe {
            result::stream::synchronize(self.0)
        })
    }

    pub fn htod(&self, dst: sys::CUdeviceptr, src: *const u8, bytes: usize) -> CuResult<()> {
        self.count(false);
        // SAFETY: callers pass live ranges of `bytes` bytes.
        check("copying to the device", unsafe {
            sys::cuMemcpyHtoDAsync_v2(dst, src as *const c_void, bytes, self.0).result()
        })
    }

    pub fn dtoh(&self, dst: *mut u8, src: sys::CUdeviceptr, bytes: usize) -> CuResult<()> {
        self.count(false);
        // SAFETY: callers pass live ranges of `bytes` bytes.
        check("copying from the device", unsafe {
            sys::cuMemcpyDtoHAsync_v2(dst as *mut c_void, src, bytes, self.0).result()
        })
    }

    pub fn dtod(&self, dst: sys::CUdeviceptr, src: sys::CUdeviceptr, bytes: usize) -> CuResult<()> {
        self.count(false);
        // SAFETY: callers pass live ranges of `bytes` bytes.
        check("copying on the device", unsafe {
            result::memcpy_dtod_async(dst, src, bytes, self.0)
        })
    }

    pub fn begin_capture(&self) -> CuResult<()> {
        // A captured graph's first kernel has no kernel before it in the graph.
        self.3.store(false, Ordering::Relaxed);
        // SAFETY: a live stream, not capturing.
        check("starting a graph capture", unsafe {
            result::stream::begin_capture(
                self.0,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        })
    }

    pub fn end_capture(&self) -> CuResult<Graph> {
        // SAFETY: the stream is capturing.
        let graph = check("ending a graph capture", unsafe {
            result::stream::end_capture(self.0)
        })?;
        // SAFETY: a graph just captured; destroyed below once instantiated.
        let exec = unsafe {
            let exec = result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0));
            let _ = result::graph::destroy(graph);
            check("instantiating a graph", exec)?
        };
        Ok(Graph(exec))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe {
            let _ = result::stream::synchronize(self.0);
            let _ = result::stream::destroy(self.0);
        }
    }
}

/// An instantiated graph, replayed on a stream.
pub struct Graph(sys::CUgraphExec);

// SAFETY: a handle used under the owner's stream.
unsafe impl Send for Graph {}

impl Graph {
    pub fn launch(&self, stream: &Stream) -> CuResult<()> {
        stream.count(false);
        // SAFETY: both live.
        check("replaying a graph", unsafe {
            result::graph::launch(self.0, stream.0)
        })
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: instantiated once, destroyed once.
        unsafe {
            let _ = result::graph::exec_destroy(self.0);
        }
    }
}

/// A loaded module (our embedded kernels).
pub struct Module(sys::CUmodule);

// SAFETY: a handle; functions from it are used under the owner's context.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Module {
    /// Loads a fatbin/cubin/PTX image; the driver picks the code for this GPU.
    pub fn load(image: &[u8]) -> CuResult<Module> {
        // cuModuleLoadData reads the image through a pointer without a length.
        let mut owned = image.to_vec();
        owned.push(0);
        // SAFETY: a complete image, NUL-terminated in case it is PTX text.
        check(
            "loading the kernels (is this GPU older than Turing?)",
            unsafe { result::module::load_data(owned.as_ptr() as *const c_void) },
        )
        .map(Module)
    }

    pub fn function(&self, name: &str) -> CuResult<Function> {
        let c = CString::new(name).expect("kernel names have no NUL");
        // SAFETY: the module lives as long as the backend that holds both.
        check(&format!("finding kernel {name}"), unsafe {
            result::module::get_function(self.0, c)
        })
        .map(Function)
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // SAFETY: loaded once, unloaded once.
        unsafe {
            let _ = result::module::unload(self.0);
        }
    }
}

#[derive(Clone, Copy)]
pub struct Function(pub sys::CUfunction);

// SAFETY: a handle into a module that outlives its users.
unsafe impl Send for Function {}
unsafe impl Sync for Function {}

/// One kernel argument: a pointer to its value, as cuLaunchKernel wants.
pub trait KernelArg {
    fn arg_ptr(&self) -> *mut c_void;
}

macro_rules! kernel_arg {
    ($($t:ty),*) => {$(
        impl KernelArg for $t {
            fn arg_ptr(&self) -> *mut c_void {
                self as *const $t as *mut c_void
            }
        }
    )*};
}
kernel_arg!(u64, i32, u32, i64, f32);

impl Function {
    /// Shared memory the kernel declares statically, in bytes.
    pub fn static_shared(&self) -> CuResult<usize> {
        // SAFETY: a live function handle.
        check("reading a kernel's attributes", unsafe {
            result::function::get_function_attribute(
                self.0,
                sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
            )
        })
        .map(|b| b.max(0) as usize)
    }

    /// Blocks of `threads` threads and `shared` bytes of dynamic shared
    /// memory that one multiprocessor holds at once (registers, shared
    /// memory and the launch bounds all count).
    pub fn resident_blocks(&self, threads: usize, shared: usize) -> CuResult<usize> {
        // SAFETY: a live function handle.
        check("reading a kernel's occupancy", unsafe {
            result::occupancy::max_active_block_per_multiprocessor(self.0, threads as i32, shared)
        })
        .map(|n| n.max(0) as usize)
    }

    /// Lets launches ask for up to `bytes` of dynamic shared memory (past
    /// 48 KiB the driver wants this said first).
    pub fn allow_dynamic_shared(&self, bytes: usize) -> CuResult<()> {
        // SAFETY: a live function handle.
        check("setting a kernel's shared memory", unsafe {
            result::function::set_function_attribute(
                self.0,
                sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
        })
    }

    /// Enqueues the kernel on `stream`.
    pub fn launch(
        &self,
        stream: &Stream,
        grid: (u32, u32, u32),
        block: u32,
        shared: u32,
        args: &[&dyn KernelArg],
    ) -> CuResult<()> {
        let early = stream.1 == EarlyLaunches::All;
        self.launch_with(stream, grid, block, shared, args, early)
    }

    /// `launch`, but early where the stream launches chosen kernels early.
    pub fn launch_overlapping(
        &self,
        stream: &Stream,
        grid: (u32, u32, u32),
        block: u32,
        shared: u32,
        args: &[&dyn KernelArg],
    ) -> CuResult<()> {
        let early = stream.1 != EarlyLaunches::Off;
        self.launch_with(stream, grid, block, shared, args, early)
    }

    fn launch_with(
        &self,
        stream: &Stream,
        grid: (u32, u32, u32),
        block: u32,
        shared: u32,
        args: &[&dyn KernelArg],
        early: bool,
    ) -> CuResult<()> {
        let mut ptrs: Vec<*mut c_void> = args.iter().map(|a| a.arg_ptr()).collect();
        // A kernel right after a copy waits for it: early, it would wait only
        // for the kernel before the copy (and read the copy's bytes too soon).
        let after_kernel = stream.count(true);
        if early && after_kernel {
            return self.launch_early(stream, grid, block, shared, &mut ptrs);
        }
        // SAFETY: the argument list matches the kernel's signature (each
        // launcher sits next to its kernel's contract); the values are read
        // during the call.
        check("launching a kernel", unsafe {
            result::launch_kernel(self.0, grid, (block, 1, 1), shared, stream.0, &mut ptrs)
        })
    }

    /// A launch that may start before the kernel ahead of it in the stream
    /// has finished (programmatic stream serialisation); the kernel waits
    /// for that one itself before it touches what it wrote.
    fn launch_early(
        &self,
        stream: &Stream,
        grid: (u32, u32, u32),
        block: u32,
        shared: u32,
        ptrs: &mut [*mut c_void],
    ) -> CuResult<()> {
        // SAFETY: plain data; the union's field is the one the id names.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: grid.0,
            gridDimY: grid.1,
            gridDimZ: grid.2,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: shared,
            hStream: stream.0,
            attrs: &mut attr,
            numAttrs: 1,
        };
        // SAFETY: as in `launch`; `config` and `attr` outlive the call.
        check("launching a kernel", unsafe {
            sys::cuLaunchKernelEx(&config, self.0, ptrs.as_mut_ptr(), std::ptr::null_mut()).result()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::peak_bandwidth;

    #[test]
    fn peak_bandwidth_counts_two_transfers_a_clock() {
        // An H100 SXM's datasheet figure, 3.35 TB/s; what an H200's driver
        // reports (session 44), 4.81 TB/s.
        assert_eq!(peak_bandwidth(2_619_000, 5120), 3_352_320_000_000);
        assert_eq!(peak_bandwidth(3_201_000, 6016), 4_814_304_000_000);
        assert_eq!(peak_bandwidth(0, 6144), 0);
    }
}
