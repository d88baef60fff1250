//! The C entry points: thin shims that convert arguments, call the safe core, and turn
//! `Err(Errno)` into `-1` and `errno`. No panic crosses this boundary: a bug becomes EIO.

pub mod creds;
pub mod ftok;
pub mod msg;
pub mod process;
pub mod sem;
pub mod shm;

use crate::ipc::{Errno, Result};

pub(crate) fn set_errno(e: i32) {
    unsafe { *libc::__errno_location() = e };
}

/// Runs `f`, mapping failure (and panics) to `fail` with errno set.
pub(crate) fn call<T>(fail: T, f: impl FnOnce() -> Result<T>) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(Errno(e))) => {
            set_errno(e);
            fail
        }
        Err(_) => {
            set_errno(libc::EIO);
            fail
        }
    }
}
