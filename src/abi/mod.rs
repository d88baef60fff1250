//! The C entry points: thin shims that convert arguments, call the safe core, and turn
//! `Err(Errno)` into `-1` and `errno`. No panic crosses this boundary: a bug becomes EIO.

pub mod creds;
pub mod ftok;
pub mod msg;
pub mod open;
pub mod process;
pub mod sem;
pub mod shm;
pub mod trace;

use crate::ipc::{Errno, Result};

pub(crate) fn set_errno(e: i32) {
    unsafe { *libc::__errno_location() = e };
}

/// Fills an `ipc_perm` from the broker's words: key, uid, gid, cuid, cgid, mode, seq.
pub(crate) fn fill_perm(p: &mut libc::ipc_perm, w: &[i64]) {
    p.__key = w[0] as i32;
    p.uid = w[1] as u32;
    p.gid = w[2] as u32;
    p.cuid = w[3] as u32;
    p.cgid = w[4] as u32;
    p.mode = w[5] as u16;
    p.__seq = w[6] as u16;
}

/// Runs `f`, mapping failure (and panics) to `fail` with errno set. On success errno is
/// what the caller had: a system call leaves it alone, while `f`'s own work may not (a
/// socket read that would block, for one).
#[inline(always)]
pub(crate) fn call<T>(fail: T, f: impl FnOnce() -> Result<T>) -> T {
    // The thread's errno is at one address for its whole life: asked once per call.
    let errno = unsafe { libc::__errno_location() };
    let saved = unsafe { *errno };
    // A signal handler's call that interrupted a malloc of ours must not allocate.
    let entered = crate::ipc::thread::may_enter();
    let (v, e) = match entered.map(|()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))) {
        Ok(Ok(Ok(v))) => (v, saved),
        Ok(Ok(Err(Errno(e)))) | Err(Errno(e)) => (fail, e),
        Ok(Err(_)) => (fail, libc::EIO),
    };
    unsafe { *errno = e };
    v
}

#[cfg(test)]
mod tests {
    /// include/ipcshim.h is checked in; it must be what cbindgen makes of the source now.
    /// `make header` (IPCSHIM_UPDATE_HEADER=1) rewrites it.
    #[test]
    fn header_is_current() {
        let generated = include_str!(env!("IPCSHIM_GENERATED_HEADER"));
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/ipcshim.h");
        if std::env::var_os("IPCSHIM_UPDATE_HEADER").is_some() {
            std::fs::write(path, generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(checked_in == generated, "include/ipcshim.h is stale: run `make header`");
    }
}
