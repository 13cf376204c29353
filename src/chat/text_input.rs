//! Reading a text file the user names (a chat template, a system prompt, a
//! prompt, a message for `/read`), which may be a pipe or FIFO as Unix users
//! expect (`-f <(...)`). Opening a FIFO blocks until a writer comes, and our
//! Ctrl-C handler restarts interrupted system calls, so the file is opened
//! without blocking and waited on in short polls that check the interrupt
//! flag: Ctrl-C ends the wait at once, in the REPL too.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::chat::interrupt;

/// More than any honest template, prompt or message; a device that never
/// ends (/dev/zero) stops here instead of filling memory.
const MAX_BYTES: usize = 64 << 20;

/// How long one wait lasts before the interrupt flag is looked at again.
const POLL_MS: libc::c_int = 50;

/// The whole content of `path`. Ctrl-C while waiting on a pipe gives an
/// error of kind `Interrupted`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;

    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_dir() {
        return Err(io::Error::other("is a directory"));
    }
    let mut bytes = Vec::new();
    if !(kind.is_fifo() || kind.is_socket() || kind.is_char_device()) {
        (&mut file)
            .take(MAX_BYTES as u64 + 1)
            .read_to_end(&mut bytes)?;
        return within_limit(bytes);
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if interrupt::flag().load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for a descriptor we hold open.
        let ready = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if ready == 0 {
            continue;
        }
        // Linux reports a FIFO that never had a writer as neither readable
        // nor hung up, so a read here has data or a real end of file.
        match file.read(&mut buf) {
            Ok(0) => return Ok(bytes),
            Ok(n) if bytes.len() + n > MAX_BYTES => return Err(too_long()),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

fn within_limit(bytes: Vec<u8>) -> io::Result<Vec<u8>> {
    if bytes.len() > MAX_BYTES {
        return Err(too_long());
    }
    Ok(bytes)
}

fn too_long() -> io::Error {
    io::Error::other(format!("longer than {} MiB", MAX_BYTES >> 20))
}

/// Why `path` could not be read, in words for an error line.
pub fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::Interrupted => "interrupted while waiting for it".into(),
        _ => e.to_string(),
    }
}

/// `read`, as UTF-8 text.
pub fn read_to_string(path: &Path) -> anyhow::Result<String> {
    let bytes = read(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {}", path.display(), describe(&e)))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (bad byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}
