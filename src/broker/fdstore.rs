//! Where the broker keeps its objects' memfds.
//!
//! The broker holds a descriptor for every object (so objects outlive their creators), and a
//! namespace at the kernel's default limits holds 68,096 of them — more than a descriptor
//! table may hold where the hard RLIMIT_NOFILE is lower and the broker may not raise it
//! (no CAP_SYS_RESOURCE). So objects use the broker's own table while at most half of it is
//! taken by objects (the rest stays for connections, pidfds and transient descriptors), and
//! past that they are moved to *keepers*: threads of the broker that have a descriptor table
//! of their own (`unshare(CLONE_FILES)`) and do nothing but hold descriptors. The broker
//! reaches a kept memfd by opening `/proc/self/task/TID/fd/N`, which gives a new descriptor
//! of the same file, as a client's read-only attach already does; storing and closing go
//! through the keeper's thread, since only a thread may change its own table.

use crate::ipc::{Errno, Result};
use crate::sys::Mapping;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::mpsc;
use std::sync::Arc;

/// One object's memfd, wherever it is kept.
#[derive(Debug)]
pub struct ObjectFd(Place);

#[derive(Debug)]
enum Place {
    Own(OwnedFd),
    Kept { keeper: Arc<Keeper>, fd: RawFd },
}

/// Objects' descriptors in the broker's own table.
static OWN: AtomicUsize = AtomicUsize::new(0);
static KEEPERS: Lazy<Mutex<Vec<Arc<Keeper>>>> = Lazy::new(|| Mutex::new(Vec::new()));

/// The broker's descriptor limit (its soft RLIMIT_NOFILE).
pub fn descriptor_limit() -> usize {
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    r.rlim_cur.min(1 << 30) as usize
}

/// How many objects' descriptors the broker's own table may hold: half of it. Read once, at
/// the first object (after the broker raised its limit), not at every create.
fn own_budget() -> usize {
    static BUDGET: once_cell::sync::OnceCell<usize> = once_cell::sync::OnceCell::new();
    *BUDGET.get_or_init(|| descriptor_limit() / 2)
}

impl ObjectFd {
    /// Takes a new object's memfd: kept in the broker's table while objects use less than
    /// half of it, else moved to a keeper (ENOMEM when no keeper can take it).
    pub fn keep(fd: OwnedFd) -> Result<ObjectFd> {
        if OWN.load(Relaxed) < own_budget() {
            OWN.fetch_add(1, Relaxed);
            return Ok(ObjectFd(Place::Own(fd)));
        }
        let mut keepers = KEEPERS.lock();
        let keeper = match keepers.iter().find(|k| k.held.load(Relaxed) < k.capacity) {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(Keeper::start()?);
                keepers.push(k.clone());
                k
            }
        };
        drop(keepers);
        let kept = keeper.take(&fd)?;
        Ok(ObjectFd(Place::Kept { keeper, fd: kept }))
    }

    /// A descriptor of the object in the broker's table, read-write or read-only (a
    /// read-only one is a new open of the file, so it can never be made writable).
    pub fn open(&self, read_only: bool) -> Result<OwnedFd> {
        match &self.0 {
            Place::Own(fd) if !read_only => fd.try_clone().map_err(|_| Errno(libc::EMFILE)),
            Place::Own(fd) => crate::sys::reopen_read_only(fd.as_raw_fd()),
            Place::Kept { keeper, fd } => open_path(&format!("/proc/self/task/{}/fd/{fd}", keeper.tid), read_only),
        }
    }

    /// Runs `f` with a descriptor of the object (its own, or one opened for the call).
    pub fn with_fd<R>(&self, f: impl FnOnce(RawFd) -> R) -> Result<R> {
        match &self.0 {
            Place::Own(fd) => Ok(f(fd.as_raw_fd())),
            Place::Kept { .. } => Ok(f(self.open(false)?.as_raw_fd())),
        }
    }

    /// Maps the first `len` bytes of the object, shared.
    pub fn map(&self, len: usize, writable: bool) -> Result<Mapping> {
        self.with_fd(|fd| Mapping::map(fd, len, writable))?
    }

    /// Whether the descriptor lives in a keeper (for tests and status).
    pub fn is_kept(&self) -> bool {
        matches!(self.0, Place::Kept { .. })
    }
}

impl Drop for ObjectFd {
    fn drop(&mut self) {
        match &self.0 {
            Place::Own(_) => {
                OWN.fetch_sub(1, Relaxed);
            }
            Place::Kept { keeper, fd } => keeper.close(*fd),
        }
    }
}

fn open_path(path: &str, read_only: bool) -> Result<OwnedFd> {
    let path = std::ffi::CString::new(path).map_err(|_| Errno(libc::EINVAL))?;
    let mode = if read_only { libc::O_RDONLY } else { libc::O_RDWR };
    let fd = unsafe { libc::open(path.as_ptr(), mode | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn gettid() -> i32 {
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

enum Command {
    /// Open the descriptor at this /proc path into the keeper's table; reply with its number.
    Take(String, mpsc::SyncSender<Result<RawFd>>),
    Close(RawFd),
}

/// A thread with a descriptor table of its own that holds objects' memfds.
#[derive(Debug)]
struct Keeper {
    tid: i32,
    commands: Mutex<mpsc::Sender<Command>>,
    held: AtomicUsize,
    capacity: usize,
}

impl Keeper {
    fn start() -> Result<Keeper> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (started_tx, started_rx) = mpsc::sync_channel::<Result<i32>>(1);
        std::thread::Builder::new()
            .name("ipcshim-keeper".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // A table of our own, then let go of the copies of the broker's descriptors
                // it starts with: this table holds only memfds.
                if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
                    let _ = started_tx.send(Err(Errno::last()));
                    return;
                }
                unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
                let _ = started_tx.send(Ok(gettid()));
                for command in rx {
                    match command {
                        Command::Take(path, reply) => {
                            let _ = reply.send(open_path(&path, false).map(|fd| {
                                let raw = fd.as_raw_fd();
                                std::mem::forget(fd);
                                raw
                            }));
                        }
                        Command::Close(fd) => unsafe {
                            libc::close(fd);
                        },
                    }
                }
            })
            .map_err(|_| Errno(libc::ENOMEM))?;
        let tid = started_rx.recv().map_err(|_| Errno(libc::ENOMEM))??;
        Ok(Keeper { tid, commands: Mutex::new(tx), held: AtomicUsize::new(0), capacity: descriptor_limit().saturating_sub(16).max(1) })
    }

    /// Moves `fd` (of the calling thread's table) into the keeper's table.
    fn take(&self, fd: &OwnedFd) -> Result<RawFd> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let path = format!("/proc/self/task/{}/fd/{}", gettid(), fd.as_raw_fd());
        self.commands.lock().send(Command::Take(path, reply_tx)).map_err(|_| Errno(libc::ENOMEM))?;
        let kept = reply_rx.recv().map_err(|_| Errno(libc::ENOMEM))?.map_err(|_| Errno(libc::ENOMEM))?;
        self.held.fetch_add(1, Relaxed);
        Ok(kept)
    }

    fn close(&self, fd: RawFd) {
        self.held.fetch_sub(1, Relaxed);
        let _ = self.commands.lock().send(Command::Close(fd));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_descriptor_reaches_the_same_file() {
        let keeper = Arc::new(Keeper::start().unwrap());
        let memfd = crate::sys::sealed_memfd("fdstore-test", 4096, 0).unwrap();
        let own = Mapping::map(memfd.as_raw_fd(), 4096, true).unwrap();
        let kept = ObjectFd(Place::Kept { fd: keeper.take(&memfd).unwrap(), keeper: keeper.clone() });
        drop(memfd);
        unsafe { *own.as_ptr() = 42 };
        let map = kept.map(4096, true).unwrap();
        assert_eq!(unsafe { *map.as_ptr() }, 42);
        // A read-only descriptor cannot be mapped writable.
        let ro = kept.open(true).unwrap();
        assert!(Mapping::map(ro.as_raw_fd(), 4096, true).is_err());
        assert_eq!(keeper.held.load(Relaxed), 1);
        drop(kept);
        assert_eq!(keeper.held.load(Relaxed), 0);
    }
}
