//! The GGUF header parser and the hyper-parameter reader on arbitrary bytes:
//! any input may be rejected, none may panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm::format::gguf::parse;
use llm::model::HyperParams;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = parse(data) {
        if let Ok(hp) = HyperParams::from_metadata(&header.metadata) {
            let _ = hp.kv_cache_bytes(1 << 20);
        }
        for t in &header.tensors {
            assert!(t.offset + t.size <= data.len() as u64);
        }
    }
});
