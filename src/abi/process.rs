//! fork: the kernel counts a child's inherited shm attachments before fork returns, so we
//! tell the broker before returning in the parent (see src/client/fork.rs).

use crate::wire::Op;

type ForkFn = unsafe extern "C" fn() -> libc::pid_t;

fn real_fork() -> Option<ForkFn> {
    static REAL: once_cell::sync::Lazy<usize> =
        once_cell::sync::Lazy::new(|| unsafe { libc::dlsym(libc::RTLD_NEXT, c"fork".as_ptr()) as usize });
    (*REAL != 0).then(|| unsafe { std::mem::transmute::<usize, ForkFn>(*REAL) })
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
