//! The safetensors header parser on arbitrary bytes: any input may be
//! rejected, none may panic, hang or allocate without bound, and every tensor
//! it accepts lies inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm::format::safetensors::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = parse(data) {
        let mut at = header.data_start;
        for t in &header.tensors {
            assert_eq!(t.start, at);
            assert!(t.end >= t.start && t.end <= data.len() as u64);
            assert_eq!(t.end - t.start, t.elements() * t.dtype.size());
            at = t.end;
        }
        assert_eq!(at, data.len() as u64);
    }
});
