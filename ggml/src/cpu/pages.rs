//! Memory-page advice for weights the CPU backend keeps: 2 MiB pages under
//! its own copies, and a file mapping's pages let go once copied.

/// A transparent huge page.
pub const HUGE_PAGE: usize = 2 << 20;

/// Bytes of mapped weights released at a time while their copy is made.
pub const RELEASE_STEP: usize = 4 << 20;

/// Whether this system gives 2 MiB pages where asked (transparent huge
/// pages `always` or `madvise`): else copying the weights buys nothing.
/// `LLM_HUGE_PAGES=0` keeps the weights in the file mapping.
pub fn huge_pages_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("LLM_HUGE_PAGES").is_none_or(|v| v != "0")
            && std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                .is_ok_and(|m| m.contains("[always]") || m.contains("[madvise]"))
    })
}

/// Asks the kernel to back `bytes` (fresh, untouched) with 2 MiB pages
/// where the system allows (transparent huge pages in `madvise` mode): a
/// decode step streams every weight once, and 4 KiB pages cost it a TLB
/// miss each.
pub fn huge_pages(bytes: &mut [u8]) {
    const MADV_HUGEPAGE: i32 = 14;
    // SAFETY: memory this process owns; the advice changes only how it is
    // backed. A failure leaves it as is.
    unsafe { advise_whole_pages(bytes.as_ptr(), bytes.len(), HUGE_PAGE, MADV_HUGEPAGE) };
}

/// Drops the whole pages of a read-only file mapping that `bytes` covers
/// from this process's memory (the page cache keeps them; a later read maps
/// them back), so weights copied at load are not held twice. Returns how
/// many of `bytes` it has dealt with: up to the last whole page's end, so
/// that the next call starts on a page boundary.
pub fn release_pages(bytes: &[u8]) -> usize {
    const MADV_DONTNEED: i32 = 4;
    // SAFETY: callers pass only read-only file mappings that nothing
    // writes; dropping their pages only makes the next read fault them in
    // again from the file. A failure (another page size) leaves them.
    unsafe { advise_whole_pages(bytes.as_ptr(), bytes.len(), 4096, MADV_DONTNEED) }
}

/// `madvise(advice)` over the whole `page`-sized pages inside `len` bytes
/// at `ptr`; returns the bytes from `ptr` to the last such page's end (0
/// where none). Elsewhere than Linux it advises nothing.
///
/// # Safety
/// The advice must be harmless to the memory it covers.
unsafe fn advise_whole_pages(ptr: *const u8, len: usize, page: usize, advice: i32) -> usize {
    let base = ptr as usize;
    let (start, end) = (base.next_multiple_of(page), (base + len) / page * page);
    if end <= start {
        return 0;
    }
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        madvise(start as *mut _, end - start, advice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = advice;
    end - base
}
