//! Layers kept in host memory that run on the GPU for one prompt batch, as
//! llama.cpp runs the prompt batches of the layers it leaves on the CPU: a
//! layer's weights cross into a room that holds one layer, and the KV cells
//! the batch reads and writes cross with them. The crossings go through the
//! offload room's pinned halves, the host side copied by the caller's threads.

use std::cell::Cell;

use super::backend::{CudaBackend, CudaKv, CudaMat, CudaVector, Storage};
use super::driver::DeviceMem;
use crate::backend::{BackendError, HostCopy, HostMat, WEIGHT_ALIGN};

/// Device memory for the weights of one host layer at a time.
pub struct LayerRoom {
    mem: DeviceMem,
    used: Cell<usize>,
}

impl LayerRoom {
    /// Empties the room for the next layer. The weights put in it before
    /// must not be used again; kernels already queued that read them run
    /// before any later copy into the room (one stream orders them).
    pub fn clear(&mut self) {
        self.used.set(0);
    }

    fn take(&self, bytes: usize) -> Result<u64, BackendError> {
        let need = bytes.next_multiple_of(WEIGHT_ALIGN);
        let used = self.used.get();
        if used + need > self.mem.bytes {
            return Err(BackendError(format!(
                "a streamed layer needs more than the {} MiB of its room",
                self.mem.bytes >> 20
            )));
        }
        self.used.set(used + need);
        Ok(self.mem.at(used))
    }
}

fn u16_bytes(x: &[u16]) -> &[u8] {
    // SAFETY: the byte view has x's extent; u8 has no alignment needs.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u8, x.len() * 2) }
}

fn u16_bytes_mut(x: &mut [u16]) -> &mut [u8] {
    // SAFETY: as above; any bytes are a valid u16.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut u8, x.len() * 2) }
}

impl CudaBackend {
    /// A room for `bytes` of one layer's weights (each rounded up to
    /// WEIGHT_ALIGN, as `Layer::bytes_aligned` counts them).
    pub fn layer_room(&self, bytes: usize) -> Result<LayerRoom, BackendError> {
        Ok(LayerRoom {
            mem: self.alloc(bytes, "a layer streamed from the host")?,
            used: Cell::new(0),
        })
    }

    /// A host weight put in the room, for the kernels of this batch only.
    pub fn stream_mat(
        &self,
        room: &LayerRoom,
        w: &HostMat,
        copy: &HostCopy<'_>,
    ) -> Result<CudaMat, BackendError> {
        self.check_kernels(w)?;
        let p = room.take(w.len)?;
        self.send_bytes(p, w.bytes(), copy)?;
        let order = match &w.input_order {
            Some(order) => {
                let mem = self.alloc(order.len() * 4, "an input order")?;
                self.send_bytes(mem.ptr, super::backend::u32_bytes(order), copy)?;
                Some(std::sync::Arc::new(Storage::Own(mem)))
            }
            None => None,
        };
        Ok(CudaMat::of(w, Storage::Reserved(p), order))
    }

    /// A host vector put in the room, like `stream_mat`.
    pub fn stream_vector(
        &self,
        room: &LayerRoom,
        v: &[f32],
        copy: &HostCopy<'_>,
    ) -> Result<CudaVector, BackendError> {
        let p = room.take(v.len() * 4)?;
        // SAFETY: the byte view has v's extent.
        let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) };
        self.send_bytes(p, bytes, copy)?;
        Ok(CudaVector {
            mem: Storage::Reserved(p),
            len: v.len(),
        })
    }

    /// Keys and values of cells `cell0..` (host rows, `[cell][kv_dim]` in
    /// the cache's types: the device cache's layout, as u16 words) into the
    /// device cache, after the work queued so far.
    pub fn kv_put(
        &self,
        kv: &mut CudaKv,
        cell0: usize,
        k: &[u16],
        v: &[u16],
        copy: &HostCopy<'_>,
    ) -> Result<(), BackendError> {
        let (k_at, v_at) = self.kv_span(kv, cell0, k.len(), v.len())?;
        self.send_bytes(kv.k.ptr + k_at, u16_bytes(k), copy)?;
        self.send_bytes(kv.v.ptr + v_at, u16_bytes(v), copy)
    }

    /// Keys and values of cells `cell0..` of the device cache into host
    /// rows, once the work queued so far is done.
    pub fn kv_get(
        &self,
        kv: &CudaKv,
        cell0: usize,
        k: &mut [u16],
        v: &mut [u16],
        copy: &HostCopy<'_>,
    ) -> Result<(), BackendError> {
        let (k_at, v_at) = self.kv_span(kv, cell0, k.len(), v.len())?;
        let room = self.offload_room(0, 0, 0)?;
        let r = room.as_ref().expect("made by offload_room");
        self.receive(r, kv.k.ptr + k_at, u16_bytes_mut(k), copy)?;
        self.receive(r, kv.v.ptr + v_at, u16_bytes_mut(v), copy)
    }

    /// The byte offsets of cell `cell0` in the K and V caches, once checked
    /// that `k` and `v` words from there are whole cells, as many of each,
    /// inside the cache.
    fn kv_span(
        &self,
        kv: &CudaKv,
        cell0: usize,
        k: usize,
        v: usize,
    ) -> Result<(u64, u64), BackendError> {
        let (k_row, v_row) = kv.row_bytes();
        let (kw, vw) = (k_row / 2, v_row / 2);
        let n = k / kw;
        if !k.is_multiple_of(kw) || v != n * vw || cell0 + n > kv.cells {
            return Err(BackendError(format!(
                "KV cells {cell0}.. of {k} and {v} words do not fit a cache of {} cells",
                kv.cells
            )));
        }
        Ok(((cell0 * k_row) as u64, (cell0 * v_row) as u64))
    }

    fn send_bytes(&self, dst: u64, src: &[u8], copy: &HostCopy<'_>) -> Result<(), BackendError> {
        let room = self.offload_room(0, 0, 0)?;
        let r = room.as_ref().expect("made by offload_room");
        self.send(r, dst, src, copy)
            .map_err(|e| self.name_device(e))
    }
}
