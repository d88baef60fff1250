//! What the library tells the user, on stderr or in `IPCSHIM_LOG_FILE`, one line each:
//! `IPCSHIM_LOG=warn` (the default) prints problems worth their attention, such as a broker
//! that cannot be started and why; `trace` adds one line per intercepted call; `off` is silent.

use once_cell::sync::Lazy;
use std::fmt;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Off,
    Warn,
    Trace,
}

struct Config {
    level: Level,
    /// Where lines go: stderr, or the file `IPCSHIM_LOG_FILE` names (opened once, appending).
    fd: RawFd,
}

static CONFIG: Lazy<Config> = Lazy::new(|| {
    let level = match std::env::var("IPCSHIM_LOG").as_deref() {
        Ok("off") | Ok("0") | Ok("none") => Level::Off,
        Ok("trace") => Level::Trace,
        _ => Level::Warn,
    };
    let fd = match std::env::var_os("IPCSHIM_LOG_FILE") {
        Some(path) if level != Level::Off => {
            use std::os::unix::ffi::OsStrExt;
            let path = std::ffi::CString::new(path.as_bytes()).unwrap_or_default();
            let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC;
            match unsafe { libc::open(path.as_ptr(), flags, 0o644) } {
                fd if fd >= 0 => fd,
                _ => 2,
            }
        }
        _ => 2,
    };
    Config { level, fd }
});

pub fn level() -> Level {
    CONFIG.level
}

/// `tracing()`'s answer: 0 until first asked, then 1 (no) or 2 (yes).
static TRACING: AtomicU8 = AtomicU8::new(0);

/// Whether intercepted calls are traced: checked on every call, so one load and compare.
#[inline(always)]
pub fn tracing() -> bool {
    match TRACING.load(Relaxed) {
        2 => true,
        1 => false,
        _ => tracing_first(),
    }
}

#[cold]
fn tracing_first() -> bool {
    let on = CONFIG.level == Level::Trace;
    TRACING.store(if on { 2 } else { 1 }, Relaxed);
    on
}

pub fn enabled() -> bool {
    CONFIG.level >= Level::Warn
}

pub fn warn(msg: &str) {
    if enabled() {
        write_line(format_args!("{msg}"));
    }
}

/// Writes `ipcshim[PID]: …` with one write(2): lines from several processes sharing a file
/// do not interleave, nothing is buffered, and a closed stderr is no panic. errno is kept.
pub fn write_line(msg: fmt::Arguments) {
    let errno = unsafe { *libc::__errno_location() };
    let line = format!("ipcshim[{}]: {msg}\n", std::process::id());
    unsafe {
        libc::write(CONFIG.fd, line.as_ptr() as *const libc::c_void, line.len());
        *libc::__errno_location() = errno;
    }
}
