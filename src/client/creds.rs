//! The process's own credentials, for the checks the fast paths make without the broker.
//! Read once and cached; the set*id and setgroups wrappers (src/abi/creds.rs) and fork
//! invalidate the cache, and a generation number lets callers cache decisions made with it.

use crate::ipc::perm::Creds;
use crate::ipc::thread::Exclusive;
use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(1);
/// This process's pid, kept current by the fork handler (glibc no longer caches it, and
/// getpid is a system call).
static PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

pub fn own_pid() -> i32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    let pid = unsafe { libc::getpid() };
    PID.store(pid, Ordering::Relaxed);
    pid
}
static CACHE: Exclusive<Option<(u64, Creds)>> = Exclusive::new(None);

/// Changes whenever the credentials may have changed.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

pub fn invalidate() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The calling process's effective credentials.
pub fn own() -> Creds {
    let gen = generation();
    // Busy: another thread fills it, or a signal handler's call interrupted ours, which
    // waiting would never let finish. Read them afresh.
    let Some(mut cache) = CACHE.try_lock() else { return read() };
    if let Some((g, c)) = cache.as_ref() {
        if *g == gen {
            return c.clone();
        }
    }
    let creds = read();
    *cache = Some((gen, creds.clone()));
    creds
}

fn read() -> Creds {
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) }.max(0) as usize;
    let mut groups = vec![0 as libc::gid_t; n];
    let got = unsafe { libc::getgroups(n as i32, groups.as_mut_ptr()) };
    groups.truncate(got.max(0) as usize);
    Creds {
        pid: unsafe { libc::getpid() },
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
        groups,
        caps: effective_caps(),
    }
}

fn effective_caps() -> u64 {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header { version: 0x2008_0522, pid: 0 };
    let mut d = [Data::default(); 2];
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    d[0].effective as u64 | (d[1].effective as u64) << 32
}

/// In a forked child: the pid changed; the lock may be held by a thread that does not
/// exist here.
pub(crate) fn after_fork() {
    PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    CACHE.unlock_after_fork();
    invalidate();
}
