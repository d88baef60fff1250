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

/// Made at the first line or the first call's question (`tracing`), with the thread marked
/// (`not_reentrant`): a signal handler's call meanwhile must not wait for it (`config`).
static CONFIG: Lazy<Config> = Lazy::new(|| crate::ipc::thread::not_reentrant(make_config));

fn make_config() -> Config {
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
}

/// The configuration; None in a signal handler's call that interrupted its making (which
/// then says nothing).
fn config() -> Option<&'static Config> {
    match Lazy::get(&CONFIG) {
        Some(c) => Some(c),
        None if crate::ipc::thread::may_enter().is_err() => None,
        None => Some(&CONFIG),
    }
}

pub fn level() -> Level {
    config().map_or(Level::Off, |c| c.level)
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
    let Some(config) = config() else { return false };
    let on = config.level == Level::Trace;
    TRACING.store(if on { 2 } else { 1 }, Relaxed);
    on
}

pub fn enabled() -> bool {
    level() >= Level::Warn
}

pub fn warn(msg: &str) {
    if enabled() {
        write_line(format_args!("{msg}"));
    }
}

/// Writes `ipcshim[PID]: …` with one write(2): lines from several processes sharing a file
/// do not interleave, nothing is buffered, and a closed stderr is no panic. errno is kept.
/// The line is made on the stack (cut at LINE_MAX bytes, "…" at its end): it may be
/// written from a signal handler's call, which must not allocate.
pub fn write_line(msg: fmt::Arguments) {
    let Some(config) = config() else { return };
    let errno = unsafe { *libc::__errno_location() };
    let mut line = StackLine { buf: [0; LINE_MAX], len: 0 };
    let end = match fmt::write(&mut line, format_args!("ipcshim[{}]: {msg}\n", std::process::id())) {
        Ok(()) => "",
        Err(_) => "…\n",
    };
    line.buf[line.len..line.len + end.len()].copy_from_slice(end.as_bytes());
    unsafe {
        libc::write(config.fd, line.buf.as_ptr() as *const libc::c_void, line.len + end.len());
        *libc::__errno_location() = errno;
    }
}

/// The longest line `write_line` writes.
const LINE_MAX: usize = 1024;

/// A line being formatted on the stack: `len` bytes of `buf` written, and room kept at its
/// end for the mark of a cut line.
struct StackLine {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl fmt::Write for StackLine {
    /// As much of `s` as fits (whole characters), Err if not all of it.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = LINE_MAX - "…\n".len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            return Err(fmt::Error);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::StackLine;
    use std::fmt::Write;

    #[test]
    fn a_line_too_long_is_cut_at_a_character() {
        let mut line = StackLine { buf: [0; super::LINE_MAX], len: 0 };
        let long = "é".repeat(super::LINE_MAX);
        assert!(write!(line, "{long}").is_err());
        assert!(line.len <= super::LINE_MAX - "…\n".len());
        assert!(std::str::from_utf8(&line.buf[..line.len]).unwrap().chars().all(|c| c == 'é'));
        let mut short = StackLine { buf: [0; super::LINE_MAX], len: 0 };
        assert!(write!(short, "a {} b", 7).is_ok());
        assert_eq!(&short.buf[..short.len], b"a 7 b");
    }
}
