//! The kernels' argument structs as the host writes them (`setBytes`), each
//! field in the MSL struct's order. Every field is 4 bytes, so neither side
//! pads; a test holds each struct's fields to the MSL source's, by type and
//! name, so the two cannot drift apart.

macro_rules! kernel_args {
    ($($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ident),* $(,)? })*) => {
        $(
            $(#[$doc])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, Default, PartialEq)]
            pub struct $name {
                $(pub $field: $ty),*
            }

            impl $name {
                /// (Rust type, name) of each field, in order.
                #[allow(dead_code)]
                pub const FIELDS: &'static [(&'static str, &'static str)] =
                    &[$((stringify!($ty), stringify!($field))),*];

                /// The bytes `setBytes` copies.
                #[allow(dead_code)]
                pub fn bytes(&self) -> &[u8] {
                    // SAFETY: repr(C) of 4-byte fields: no padding, every
                    // byte initialised, the slice lives as long as `self`.
                    unsafe {
                        std::slice::from_raw_parts(
                            (self as *const Self).cast::<u8>(),
                            std::mem::size_of::<Self>(),
                        )
                    }
                }
            }
        )*

        /// Every struct, by name, with its fields (for the layout test).
        #[allow(dead_code)]
        pub const ALL: &[(&str, &[(&str, &str)])] = &[$((stringify!($name), $name::FIELDS)),*];
    };
}

kernel_args! {
    /// elementwise.metal
    ElementArgs { len: u32, width: u32, s: f32 }
    /// norm.metal
    NormArgs { width: u32, eps: f32 }
    /// matvec.metal
    MatvecArgs { rows: u32, cols: u32 }
    /// matmul.metal
    MatmulArgs { rows: u32, cols: u32, tokens: u32 }
    /// rope.metal
    RopeArgs {
        n_heads: u32,
        head_dim: u32,
        n_dims: u32,
        pos0: u32,
        freq_base: f32,
        freq_scale: f32,
        ext_factor: f32,
        attn_factor: f32,
        corr_low: f32,
        corr_high: f32,
        neox: u32,
        has_ff: u32,
    }
    /// attention.metal
    AttentionArgs {
        n_head: u32,
        n_head_kv: u32,
        head_dim: u32,
        cells: u32,
        pos0: u32,
        tokens: u32,
        window: u32,
        kq_scale: f32,
    }
    /// cache.metal
    KvStoreArgs { kv_dim: u32, cells: u32, pos0: u32, tokens: u32 }
    /// cache.metal
    CopyArgs { rows: u32, width: u32, src_width: u32, col0: u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of `struct NAME { ... };` in the MSL sources, as (type, name).
    fn msl_fields(name: &str) -> Vec<(String, String)> {
        let src = crate::metal::library_source();
        let start = src
            .find(&format!("struct {name} {{"))
            .unwrap_or_else(|| panic!("no struct {name} in the MSL sources"));
        let body = &src[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
        body.lines()
            .map(|l| l.split("//").next().unwrap().trim())
            .filter(|l| !l.is_empty())
            .flat_map(|l| {
                let (ty, names) = l.trim_end_matches(';').split_once(' ').unwrap();
                names
                    .split(',')
                    .map(|n| (ty.to_string(), n.trim().to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn host_argument_structs_are_the_kernels() {
        for (name, fields) in ALL {
            let msl = msl_fields(name);
            let host: Vec<(String, String)> = fields
                .iter()
                .map(|(ty, n)| {
                    let ty = match *ty {
                        "u32" => "uint",
                        "f32" => "float",
                        other => panic!("{name}: a field of type {other}"),
                    };
                    (ty.to_string(), n.to_string())
                })
                .collect();
            assert_eq!(
                host, msl,
                "{name}: the host's fields against the MSL struct's"
            );
        }
        assert_eq!(RopeArgs::default().bytes().len(), 48);
    }
}
