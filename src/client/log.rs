//! Problems worth a user's attention, one line on stderr, when `IPCSHIM_LOG` is set.

pub fn enabled() -> bool {
    static ON: once_cell::sync::Lazy<bool> = once_cell::sync::Lazy::new(|| {
        std::env::var("IPCSHIM_LOG").map(|v| !v.is_empty() && v != "off").unwrap_or(false)
    });
    *ON
}

pub fn warn(msg: &str) {
    if enabled() {
        let line = format!("ipcshim[{}]: {msg}\n", std::process::id());
        // write(2) directly: no buffering, no panics if stderr is closed.
        unsafe { libc::write(2, line.as_ptr() as *const libc::c_void, line.len()) };
    }
}
