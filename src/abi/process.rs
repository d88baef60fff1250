//! fork: the kernel counts a child's inherited shm attachments before fork returns, so we
//! tell the broker before returning in the parent (see src/client/fork.rs).
//!
//! _Fork (glibc 2.34) is fork without the atfork handlers, async-signal-safe: its wrapper
//! runs our child handler itself, and makes no parent-side call (which would lock and
//! allocate): a _Fork child's attachments are counted when it says hello, before _Fork
//! returns in the child (README).

use crate::wire::Op;

type ForkFn = unsafe extern "C" fn() -> libc::pid_t;

fn real_fork() -> Option<ForkFn> {
    static REAL: once_cell::sync::Lazy<usize> =
        once_cell::sync::Lazy::new(|| unsafe { libc::dlsym(libc::RTLD_NEXT, c"fork".as_ptr()) as usize });
    (*REAL != 0).then(|| unsafe { std::mem::transmute::<usize, ForkFn>(*REAL) })
}

fn real_underscore_fork() -> Option<ForkFn> {
    static REAL: once_cell::sync::Lazy<usize> =
        once_cell::sync::Lazy::new(|| unsafe { libc::dlsym(libc::RTLD_NEXT, c"_Fork".as_ptr()) as usize });
    (*REAL != 0).then(|| unsafe { std::mem::transmute::<usize, ForkFn>(*REAL) })
}

#[no_mangle]
pub extern "C" fn _Fork() -> libc::pid_t {
    let Some(real) = real_underscore_fork() else {
        super::set_errno(libc::ENOSYS);
        return -1;
    };
    let pid = unsafe { real() };
    if pid == 0 {
        // glibc ran no atfork handler: without ours, the child would go on with its parent's
        // pid, thread ids and connection (and take its SEM_UNDO adjustments for its parent's).
        let _ = std::panic::catch_unwind(crate::client::fork::after_fork_in_child);
    }
    pid
}

#[no_mangle]
pub extern "C" fn fork() -> libc::pid_t {
    let Some(real) = real_fork() else {
        super::set_errno(libc::ENOSYS);
        return -1;
    };
    let ids = std::panic::catch_unwind(crate::shm::attach::attached_ids).unwrap_or_default();
    let pid = unsafe { real() };
    if pid > 0 && !ids.is_empty() {
        let mut notice = vec![Op::ShmInherited as i64, pid as i64, ids.len() as i64];
        notice.extend(ids.iter().map(|&id| id as i64));
        let _ = std::panic::catch_unwind(|| crate::client::client().notify(&notice));
    }
    pid
}
