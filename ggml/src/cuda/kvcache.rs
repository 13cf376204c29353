//! KV caches of other types than f16 for both keys and values (`-ctk`,
//! `-ctv`) on the GPU: kernels/kvcache.cu stores rows with the CPU's bytes
//! and attends over them; this side picks the kernel for a cache's types and
//! head size and launches it. The f16 cache keeps ops.cu's kernels.

use std::collections::HashMap;

use super::backend::{CudaBackend, CudaBuf, CudaKv, CudaScratch, RopeParams};
use super::driver::{CuResult, Function};
use crate::backend::{Attention, KvTypes};
use crate::GgmlType;

/// Head sizes with a decode kernel that reads 8 values a lane.
const VEC_HEADS: [usize; 3] = [64, 128, 256];

pub(super) struct QuantKvKernels {
    store: Function,
    rope_store: Function,
    merge: Function,
    /// Decode steps, by head size and the one type of both caches (None:
    /// any pair, the types read at run time).
    vec: HashMap<(usize, Option<GgmlType>), Function>,
    /// Decode steps of other head sizes.
    any: Function,
    prompt: Function,
}

impl QuantKvKernels {
    pub(super) fn find(find: impl Fn(&str) -> CuResult<Function>) -> CuResult<QuantKvKernels> {
        let mut vec = HashMap::new();
        for d in VEC_HEADS {
            vec.insert((d, None), find(&format!("attention_q{d}"))?);
            for t in crate::kv_types::CACHE_TYPES {
                if t != GgmlType::F16 {
                    let name = crate::kv_types::cache_type_name(t);
                    vec.insert((d, Some(t)), find(&format!("attention_q{d}_{name}"))?);
                }
            }
        }
        Ok(QuantKvKernels {
            store: find("kv_store_q")?,
            rope_store: find("rope_store_q")?,
            merge: find("attention_merge_q")?,
            vec,
            any: find("attention_q_any")?,
            prompt: find("attention_q_prompt")?,
        })
    }
}

/// The rotation sizes as the kernels take them (0: none).
fn rotations(types: KvTypes, head_dim: usize) -> (i32, i32) {
    let size = |r: Option<usize>| r.map_or(0, |n| n as i32);
    (
        size(types.k_rotation(head_dim)),
        size(types.v_rotation(head_dim)),
    )
}

fn type_ids(types: KvTypes) -> (i32, i32) {
    (types.k.id() as i32, types.v.id() as i32)
}

impl CudaBackend {
    /// K and V rows of `tokens` tokens into their cells, rotated and
    /// quantised as the CPU stores them.
    pub(super) fn kv_store_quantised(
        &self,
        sc: &CudaScratch,
        kv: &mut CudaKv,
        k: &CudaBuf,
        v: &CudaBuf,
        tokens: usize,
    ) {
        let q = &self.kernels.kvq;
        let n_head_kv = kv.kv_dim / kv.head_dim;
        let (kt, vt) = type_ids(kv.types);
        let (k_rot, v_rot) = rotations(kv.types, kv.head_dim);
        let (nkv, hd, cells) = (n_head_kv as i32, kv.head_dim as i32, kv.cells as i32);
        self.launch(
            q.store,
            (tokens as u32, n_head_kv as u32, 1),
            128,
            &[
                &kv.k.ptr,
                &kv.v.ptr,
                &k.ptr(),
                &v.ptr(),
                &nkv,
                &hd,
                &cells,
                &sc.step.ptr,
                &kt,
                &vt,
                &k_rot,
                &v_rot,
            ],
        );
    }

    /// `rope` on q and k, then k and v stored as `kv_store_quantised` stores
    /// them, in one launch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope_store_quantised(
        &self,
        sc: &CudaScratch,
        kv: &mut CudaKv,
        q: &mut CudaBuf,
        k: &mut CudaBuf,
        v: &CudaBuf,
        tokens: usize,
        n_head: usize,
        rope: &RopeParams,
        freq_factors: u64,
    ) {
        let n_head_kv = kv.kv_dim / kv.head_dim;
        let (kt, vt) = type_ids(kv.types);
        let (k_rot, v_rot) = rotations(kv.types, kv.head_dim);
        let (nh, nkv, hd, cells) = (
            n_head as i32,
            n_head_kv as i32,
            kv.head_dim as i32,
            kv.cells as i32,
        );
        self.launch(
            self.kernels.kvq.rope_store,
            (tokens as u32, (n_head + n_head_kv) as u32, 1),
            128,
            &[
                &q.ptr(),
                &k.ptr(),
                &v.ptr(),
                &nh,
                &nkv,
                &hd,
                &sc.step.ptr,
                rope,
                &freq_factors,
                &kv.k.ptr,
                &kv.v.ptr,
                &cells,
                &kt,
                &vt,
                &k_rot,
                &v_rot,
            ],
        );
    }

    /// Attention over a quantised cache: the decode kernels (split over long
    /// caches as the f16 ones are, their merge here) or the tiled one for
    /// prompt batches, each rotating the output back where V is rotated.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_quantised(
        &self,
        sc: &CudaScratch,
        kv: &CudaKv,
        q: &CudaBuf,
        tokens: usize,
        a: &Attention,
        splits: usize,
        decode: bool,
        out: &mut CudaBuf,
    ) {
        let kq = &self.kernels.kvq;
        let (nh, nkv, hd, cells) = (
            a.n_head as i32,
            a.n_head_kv as i32,
            a.head_dim as i32,
            kv.cells as i32,
        );
        let window = a.window.map_or(0, |w| w as i32);
        let (kt, vt) = type_ids(kv.types);
        let (k_rot, v_rot) = rotations(kv.types, a.head_dim);
        let same = (kv.types.k == kv.types.v).then_some(kv.types.k);
        if decode {
            let block = if splits > 1 {
                super::backend::attention_split_block()
            } else {
                32 * 16
            };
            let grid = (tokens as u32, a.n_head as u32, splits as u32);
            match kq
                .vec
                .get(&(a.head_dim, same))
                .or_else(|| kq.vec.get(&(a.head_dim, None)))
            {
                Some(&f) => self.launch(
                    f,
                    grid,
                    block,
                    &[
                        &q.ptr(),
                        &kv.k.ptr,
                        &kv.v.ptr,
                        &out.ptr(),
                        &sc.attn_part.ptr,
                        &nh,
                        &nkv,
                        &cells,
                        &sc.step.ptr,
                        &window,
                        &a.kq_scale,
                        &kt,
                        &vt,
                        &k_rot,
                        &v_rot,
                    ],
                ),
                None => self.launch(
                    kq.any,
                    grid,
                    block,
                    &[
                        &q.ptr(),
                        &kv.k.ptr,
                        &kv.v.ptr,
                        &out.ptr(),
                        &sc.attn_part.ptr,
                        &nh,
                        &nkv,
                        &hd,
                        &cells,
                        &sc.step.ptr,
                        &window,
                        &a.kq_scale,
                        &kt,
                        &vt,
                        &k_rot,
                        &v_rot,
                    ],
                ),
            }
            if splits > 1 {
                let s = splits as i32;
                self.launch(
                    kq.merge,
                    (tokens as u32, a.n_head as u32, 1),
                    128,
                    &[&sc.attn_part.ptr, &out.ptr(), &nh, &hd, &s, &v_rot],
                );
            }
        } else {
            self.launch(
                kq.prompt,
                (tokens.div_ceil(8) as u32, a.n_head as u32, 1),
                256,
                &[
                    &q.ptr(),
                    &kv.k.ptr,
                    &kv.v.ptr,
                    &out.ptr(),
                    &nh,
                    &nkv,
                    &hd,
                    &cells,
                    &sc.step.ptr,
                    &window,
                    &a.kq_scale,
                    &kt,
                    &vt,
                    &k_rot,
                    &v_rot,
                ],
            );
        }
    }
}
