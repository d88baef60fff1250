//! The client's side of shared memory: shmget's fast lookup, shmat and shmdt.
//!
//! A process keeps one descriptor per segment it has attached (checked before each reuse:
//! a program may have closed it), so that attaching a known segment again needs no round
//! trip: the permission check is made against the namespace table, the mapping from the
//! cached descriptor, and the broker is told with a one-way notice. (A process whose
//! descriptor table is full keeps none: the mapping holds the memfd.)

use super::*;
use crate::client::{client, creds};
use crate::ipc::perm::{S_IRUGO, S_IWUGO, S_IXUGO};
use crate::ipc::{Errno, Family, Result};
use crate::sys::{fd_identity, page_size};
use crate::wire::Op;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

struct CachedFd {
    fd: RawFd,
    identity: (u64, u64),
    /// The segment's page size (st_blksize: larger for hugetlb segments).
    page: usize,
}

#[derive(Clone, Copy)]
struct Attachment {
    id: i32,
    len: usize,
}

#[derive(Default)]
struct State {
    /// Attachments by start address.
    attachments: BTreeMap<usize, Attachment>,
    /// shm id → descriptor, per access kind.
    fds: HashMap<(i32, bool), CachedFd>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard = STATE.lock();
    f(guard.get_or_insert_with(State::default))
}

/// The ids of this process's attachments (one entry per attachment), for the fork handler.
pub(crate) fn attached_ids_after_fork() -> Vec<i32> {
    if STATE.is_locked() {
        unsafe { STATE.force_unlock() };
    }
    attached_ids()
}

pub(crate) fn attached_ids() -> Vec<i32> {
    with_state(|s| s.attachments.values().map(|a| a.id).collect())
}

/// A descriptor for the segment with at least the access asked for, and its page size: the
/// cached one if it is still ours, else a fresh one from the broker (which checks the
/// caller's rights). A process out of descriptors does not cache it: it is also returned
/// as owned, to be closed once mapped.
fn descriptor(id: i32, access: u32) -> Result<(RawFd, usize, Option<OwnedFd>)> {
    let writable = access & S_IWUGO != 0;
    // A read-only attach must map a read-only descriptor (so mprotect cannot make it
    // writable): descriptors are cached per access kind.
    let cached = with_state(|s| {
        let c = s.fds.get(&(id, writable))?;
        if fd_identity(c.fd) == Some(c.identity) {
            return Some((c.fd, c.page));
        }
        // Closed or replaced by the program: forget it, never close it.
        s.fds.remove(&(id, writable));
        None
    });
    if let Some((fd, page)) = cached {
        return Ok((fd, page, None));
    }
    // A miss: also let go of descriptors of segments that no longer exist (removed while
    // we were not attached), so their memory can be freed.
    if let Ok(table) = client().table() {
        with_state(|s| {
            let attached: Vec<i32> = s.attachments.values().map(|a| a.id).collect();
            forget_descriptors(s, |id| !attached.contains(&id) && matches!(table.by_id(Family::Shm, id), Ok(None)));
        });
    }
    let reply = client().request(&[Op::Open as i64, Family::Shm as i64, id as i64, access as i64])?;
    let fd = reply.fd.ok_or(Errno(libc::EPROTO))?;
    let identity = fd_identity(fd.as_raw_fd()).ok_or(Errno(libc::EBADF))?;
    let page = block_size(fd.as_raw_fd()).max(page_size());
    if !client().can_spare_descriptor() {
        return Ok((fd.as_raw_fd(), page, Some(fd)));
    }
    let raw = fd.into_raw_fd();
    with_state(|s| {
        if let Some(old) = s.fds.insert((id, writable), CachedFd { fd: raw, identity, page }) {
            if fd_identity(old.fd) == Some(old.identity) {
                unsafe { libc::close(old.fd) };
            }
        }
    });
    Ok((raw, page, None))
}

fn block_size(fd: RawFd) -> usize {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return 0;
    }
    st.st_blksize as usize
}

/// shmat.
pub fn shmat(id: i32, addr: usize, flags: i32) -> Result<usize> {
    if id < 0 {
        return Err(Errno(libc::EINVAL));
    }
    let shmlba = page_size();
    let mut addr = addr;
    let mut map_flags = libc::MAP_SHARED;
    if addr != 0 {
        if addr & (shmlba - 1) != 0 {
            if flags & SHM_RND == 0 {
                return Err(Errno(libc::EINVAL));
            }
            addr &= !(shmlba - 1);
            if addr == 0 && flags & SHM_REMAP != 0 {
                return Err(Errno(libc::EINVAL));
            }
        }
        map_flags |= if flags & SHM_REMAP != 0 { libc::MAP_FIXED } else { libc::MAP_FIXED_NOREPLACE };
    } else if flags & SHM_REMAP != 0 {
        return Err(Errno(libc::EINVAL));
    }
    let (mut prot, mut access) = if flags & SHM_RDONLY != 0 {
        (libc::PROT_READ, S_IRUGO)
    } else {
        (libc::PROT_READ | libc::PROT_WRITE, S_IRUGO | S_IWUGO)
    };
    if flags & SHM_EXEC != 0 {
        prot |= libc::PROT_EXEC;
        access |= S_IXUGO;
    }
    let entry = client().table()?.by_id(Family::Shm, id).map_err(|_| Errno(libc::EAGAIN))?.ok_or(Errno(libc::EINVAL))?;
    if !entry.perm.allows(&creds::own(), access) {
        return Err(Errno(libc::EACCES));
    }
    let (fd, page, transient) = descriptor(id, access)?;
    let len = (entry.size.checked_add(page as u64 - 1).ok_or(Errno(libc::EINVAL))? / page as u64 * page as u64) as usize;
    // Without SHM_REMAP the kernel refuses a range that wraps (EINVAL); with it, mmap does
    // (ENOMEM), as it does any range beyond user space.
    if addr != 0 && flags & SHM_REMAP == 0 && (addr as u64).checked_add(entry.size).is_none() {
        return Err(Errno(libc::EINVAL));
    }
    // MAP_NORESERVE: a hugetlb segment's pages were reserved (or not, SHM_NORESERVE) when
    // it was made; the flag means nothing for ordinary memory.
    let p = unsafe { libc::mmap(addr as *mut libc::c_void, len, prot, map_flags | libc::MAP_NORESERVE, fd, 0) };
    if let Some(fd) = transient {
        // Out of descriptors: the mapping keeps the memfd; give the slot back to the reserve.
        drop(fd);
        client().can_spare_descriptor();
    }
    if p == libc::MAP_FAILED {
        return Err(match Errno::last() {
            Errno(libc::EEXIST) => Errno(libc::EINVAL),
            e => e,
        });
    }
    let start = p as usize;
    if addr != 0 && start != addr {
        // A kernel without MAP_FIXED_NOREPLACE treated the address as a hint.
        unsafe { libc::munmap(p, len) };
        return Err(Errno(libc::EINVAL));
    }
    // SHM_REMAP replaced whatever was there, our own attachments included: those are gone.
    let replaced: Vec<Attachment> = with_state(|s| {
        let gone: Vec<usize> =
            s.attachments.range(..start + len).filter(|(&a, at)| a + at.len > start).map(|(&a, _)| a).collect();
        let out = gone.iter().filter_map(|a| s.attachments.remove(a)).collect();
        s.attachments.insert(start, Attachment { id, len });
        out
    });
    for old in replaced {
        let _ = client().notify(&[Op::ShmDetached as i64, old.id as i64]);
    }
    client().notify(&[Op::ShmAttached as i64, id as i64])?;
    Ok(start)
}

/// shmdt.
pub fn shmdt(addr: usize) -> Result<()> {
    if addr & (page_size() - 1) != 0 {
        return Err(Errno(libc::EINVAL));
    }
    let at = with_state(|s| s.attachments.remove(&addr)).ok_or(Errno(libc::EINVAL))?;
    unsafe { libc::munmap(addr as *mut libc::c_void, at.len) };
    let notice = [Op::ShmDetached as i64, at.id as i64];
    // The last detach of a removed segment frees it: tell the broker at once.
    let removed = client().table()?.by_id(Family::Shm, at.id).ok().flatten().map(|e| e.perm.mode & SHM_DEST != 0);
    if removed != Some(false) {
        // Our cached descriptors would keep a removed segment's memory alive.
        with_state(|s| {
            if !s.attachments.values().any(|a| a.id == at.id) {
                forget_descriptors(s, |id| id == at.id);
            }
        });
        let _ = client().notify_now(&notice);
    } else {
        let _ = client().notify(&notice);
    }
    Ok(())
}

/// Closes (if still ours) and forgets the cached descriptors of the ids `gone` selects.
fn forget_descriptors(s: &mut State, gone: impl Fn(i32) -> bool) {
    s.fds.retain(|&(id, _), c| {
        if !gone(id) {
            return true;
        }
        if fd_identity(c.fd) == Some(c.identity) {
            unsafe { libc::close(c.fd) };
        }
        false
    });
}

/// shmget: existing keys are found in the namespace table; creating asks the broker.
pub fn shmget(key: i32, size: usize, flags: i32) -> Result<i32> {
    crate::client::get::get(Family::Shm, key, flags, size as u64, |e| {
        if e.size < size as u64 {
            Err(Errno(libc::EINVAL))
        } else {
            Ok(())
        }
    })
}
