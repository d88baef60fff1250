//! Small safe wrappers over the system calls the rest of the crate uses in several places.

use crate::ipc::{Errno, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A shared mapping of (part of) a file; unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// The mapping is plain memory; users synchronise access through atomics and locks in it.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, shared, read-only or read-write.
    pub fn map(fd: RawFd, len: usize, writable: bool) -> Result<Mapping> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Mapping { ptr: ptr as *mut u8, len })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

pub fn page_size() -> usize {
    static PAGE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    crate::ipc::thread::computed_once(&PAGE, || unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize })
}

pub fn round_up_to_page(n: u64) -> Option<u64> {
    let p = page_size() as u64;
    n.checked_add(p - 1).map(|v| v & !(p - 1))
}

/// A sealed memfd of `len` bytes: it can never shrink (so nobody's mapping can fault with
/// SIGBUS) nor grow. `extra_flags` may ask for huge pages (MFD_HUGETLB and a size).
pub fn sealed_memfd(name: &str, len: u64, extra_flags: u32) -> Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | extra_flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = i64::try_from(len).map_err(|_| Errno(libc::ENOMEM))?;
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
        // EFBIG: past RLIMIT_FSIZE (see broker::lift_file_size_limit); ENOSPC: no room
        // in tmpfs. Either way, as the kernel's *get says it: no memory for the object.
        return Err(match Errno::last() {
            Errno(libc::EFBIG | libc::ENOSPC) => Errno(libc::ENOMEM),
            e => e,
        });
    }
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(Errno::last());
    }
    Ok(fd)
}

/// A second, read-only open file description of `fd` (through /proc/self/fd): a mapping made
/// from it can never be made writable, not even with mprotect.
pub fn reopen_read_only(fd: RawFd) -> Result<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
    let r = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// (device, inode) of an open descriptor: what we compare to know a cached descriptor is
/// still the one we opened, after a program may have closed or dup2'ed over it.
pub fn fd_identity(fd: RawFd) -> Option<(u64, u64)> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // On x86_64 the fstat system call itself: glibc's fstat is fstatat(fd, "", AT_EMPTY_PATH),
    // whose empty path lookup costs about 80 ns more, on every check of a cached descriptor.
    #[cfg(target_arch = "x86_64")]
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) };
    #[cfg(not(target_arch = "x86_64"))]
    let r = unsafe { libc::fstat(fd, &mut st) } as libc::c_long;
    if r != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}
