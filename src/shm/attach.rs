//! The client's side of shared memory: shmget's fast lookup, shmat and shmdt.
//!
//! A process keeps one descriptor per segment it has attached (checked before each reuse:
//! a program may have closed it), so that attaching a known segment again needs no round
//! trip: the permission check is made against the namespace table, the mapping from the
//! cached descriptor, and the broker is told with a one-way notice. (A process whose
//! descriptor table is full keeps none: the mapping holds the memfd.)

use super::mappings::{FileMapping, Mappings};
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

#[derive(Clone, Copy, PartialEq)]
struct Attachment {
    id: i32,
    len: usize,
    /// The segment's memfd (st_dev, st_ino): how its mappings show in /proc/self/maps.
    identity: (u64, u64),
}

#[derive(Default)]
struct State {
    /// Attachments by start address.
    attachments: BTreeMap<usize, Attachment>,
    /// shm id → descriptor, per access kind.
    fds: HashMap<(i32, bool), CachedFd>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Held through each shmdt, which looks at the mappings and then unmaps: two threads
/// detaching at once must not act on what the other has unmapped already (the kernel
/// holds the mmap lock throughout).
static DETACHING: Mutex<()> = Mutex::new(());

/// Runs `f` on the process's attachment records, under their lock (held across system
/// calls: EDEADLK for a signal handler's call while the call it interrupted holds it).
fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> Result<R> {
    let mut guard = crate::ipc::thread::lock_held(crate::ipc::thread::Held::ShmState, || STATE.lock())?;
    Ok(f(guard.get_or_insert_with(State::default)))
}

/// The ids of this process's attachments (one entry per attachment), for the fork handler.
pub(crate) fn attached_ids_after_fork() -> Vec<i32> {
    // Another thread of the parent may have held these.
    if STATE.is_locked() {
        unsafe { STATE.force_unlock() };
    }
    if DETACHING.is_locked() {
        unsafe { DETACHING.force_unlock() };
    }
    super::mappings::after_fork();
    attached_ids()
}

pub(crate) fn attached_ids() -> Vec<i32> {
    with_state(|s| s.attachments.values().map(|a| a.id).collect()).unwrap_or_default()
}

/// A descriptor for the segment with at least the access asked for, and its page size: the
/// cached one if it is still ours, else a fresh one from the broker (which checks the
/// caller's rights). A process out of descriptors does not cache it: it is also returned
/// as owned, to be closed once mapped.
fn descriptor(id: i32, access: u32) -> Result<(RawFd, usize, (u64, u64), Option<OwnedFd>)> {
    let writable = access & S_IWUGO != 0;
    // A read-only attach must map a read-only descriptor (so mprotect cannot make it
    // writable): descriptors are cached per access kind.
    let cached = with_state(|s| {
        let c = s.fds.get(&(id, writable))?;
        if fd_identity(c.fd) == Some(c.identity) {
            return Some((c.fd, c.page, c.identity));
        }
        // Closed or replaced by the program: forget it, never close it.
        s.fds.remove(&(id, writable));
        None
    })?;
    if let Some((fd, page, identity)) = cached {
        return Ok((fd, page, identity, None));
    }
    // A miss: also let go of descriptors of segments that no longer exist (removed while
    // we were not attached), so their memory can be freed.
    if let Ok(table) = client().table() {
        with_state(|s| {
            let attached: Vec<i32> = s.attachments.values().map(|a| a.id).collect();
            forget_descriptors(s, |id| !attached.contains(&id) && matches!(table.by_id(Family::Shm, id), Ok(None)));
        })?;
    }
    let reply = client().request(&[Op::Open as i64, Family::Shm as i64, id as i64, access as i64])?;
    let fd = reply.fd.ok_or(Errno(libc::EPROTO))?;
    let identity = fd_identity(fd.as_raw_fd()).ok_or(Errno(libc::EBADF))?;
    let page = block_size(fd.as_raw_fd()).max(page_size());
    if !client().can_spare_descriptor() {
        return Ok((fd.as_raw_fd(), page, identity, Some(fd)));
    }
    let raw = fd.into_raw_fd();
    with_state(|s| {
        if let Some(old) = s.fds.insert((id, writable), CachedFd { fd: raw, identity, page }) {
            if fd_identity(old.fd) == Some(old.identity) {
                unsafe { libc::close(old.fd) };
            }
        }
    })?;
    Ok((raw, page, identity, None))
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
    let (fd, page, identity, transient) = descriptor(id, access)?;
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
    // SHM_REMAP replaced whatever was there: our own attachments it covered whole are gone
    // (the kernel closes their mappings); one it covered in part keeps the rest. A record
    // where the new one starts is gone too (replaced, or unmapped by hand before).
    let replaced: Result<Vec<Attachment>> = with_state(|s| {
        let gone: Vec<usize> = s
            .attachments
            .range(start..start + len)
            .filter(|(&a, at)| a == start || a + at.len <= start + len)
            .map(|(&a, _)| a)
            .collect();
        let out = gone.iter().filter_map(|a| s.attachments.remove(a)).collect();
        s.attachments.insert(start, Attachment { id, len, identity });
        out
    });
    // (It cannot fail here: a nested call fails at the first look at the records.)
    let Ok(replaced) = replaced else {
        unsafe { libc::munmap(p, len) };
        return Err(Errno(libc::EDEADLK));
    };
    for old in replaced {
        let _ = client().notify(&[Op::ShmDetached as i64, old.id as i64]);
    }
    client().notify(&[Op::ShmAttached as i64, id as i64])?;
    Ok(start)
}

/// shmdt, as the kernel's: it unmaps the mappings of one segment found from `addr` in the
/// process's actual mappings, not in our records, since the program may have moved
/// (mremap), unmapped (munmap) or split (mprotect) pieces of an attachment since, or mapped
/// other things where one was. The first mapping at or above `addr` of one of our
/// segments whose distance from `addr` equals its offset in the segment names the segment;
/// it and the further such mappings of that segment within the segment's size from `addr`
/// are unmapped. Where /proc/self/maps cannot be read, our record at `addr` is trusted.
pub fn shmdt(addr: usize) -> Result<()> {
    let page = page_size();
    if addr & (page - 1) != 0 {
        return Err(Errno(libc::EINVAL));
    }
    let _detaching = crate::ipc::thread::lock_held(crate::ipc::thread::Held::ShmDetaching, || DETACHING.lock())?;
    // Our records before the mappings are read: a record made meanwhile (by another
    // thread's shmat) must not be taken for one whose mapping is gone.
    let records: Vec<(usize, Attachment)> = with_state(|s| s.attachments.iter().map(|(&a, &at)| (a, at)).collect())?;
    let Some(mut maps) = Mappings::open() else { return shmdt_by_record(addr) };
    let size_of = |identity| records.iter().find(|(_, a)| a.identity == identity).map(|(_, a)| a.len);
    let at_offset = |m: &FileMapping, from: usize| at_its_offset(m, from, page);
    let mut first = None;
    let mut cursor = addr;
    while let Some(m) = maps.next_from(cursor) {
        if size_of(m.identity).is_some() && at_offset(&m, addr) {
            first = Some(m);
            break;
        }
        cursor = m.end;
    }
    if let Some(first) = first {
        let size = size_of(first.identity).unwrap_or(0);
        let mut unmap = vec![first];
        // Pieces further on, unless the first already reaches the segment's end (asked
        // first: each look is a system call).
        cursor = first.end;
        while first.end - addr < size {
            let Some(m) = maps.next_from(cursor).filter(|m| m.end - addr <= size) else { break };
            if m.identity == first.identity && at_offset(&m, addr) {
                unmap.push(m);
            }
            cursor = m.end;
        }
        for m in &unmap {
            unsafe { libc::munmap(m.start as *mut libc::c_void, m.end - m.start) };
            maps.unmapped(m);
        }
    }
    let ended = ended_records(&records, addr, first.map(|f| f.identity), &maps);
    let ended: Vec<Attachment> = with_state(|s| {
        ended
            .into_iter()
            .filter_map(|(start, at)| match s.attachments.get(&start) {
                Some(now) if now.identity == at.identity => s.attachments.remove(&start),
                _ => None,
            })
            .collect()
    })
    .unwrap_or_default(); // (not after the look at the records above succeeded)
    for at in ended {
        detached(at);
    }
    first.map(|_| ()).ok_or(Errno(libc::EINVAL))
}

/// Whether mapping `m` lies where an attachment made at `from` puts that part of the file
/// (the kernel's `(vm_start - addr) / PAGE_SIZE == vm_pgoff`).
fn at_its_offset(m: &FileMapping, from: usize, page: usize) -> bool {
    m.start.wrapping_sub(from) / page == (m.offset / page as u64) as usize
}

/// Whether the attachment recorded at `start` still has a mapping of its segment there.
fn still_mapped(&(start, at): &(usize, Attachment), maps: &Mappings, page: usize) -> bool {
    let mut cursor = start;
    while let Some(m) = maps.next_from(cursor).filter(|m| m.start < start + at.len) {
        if m.identity == at.identity && m.start >= start && at_its_offset(&m, start, page) {
            return true;
        }
        cursor = m.end;
    }
    false
}

/// After shmdt(`addr`) detached the segment `detached` (None: nothing), the records that
/// ended: the one at `addr` if it is of that segment; the one at `addr` and the other
/// records of that segment if nothing is left where they put it (unmapped by hand before,
/// which the kernel counted then), except that while mappings of their segment remain that
/// no live record accounts for (moved by hand), one of them stays, so that nattch still
/// counts those and shmdt still knows them for a segment of ours.
fn ended_records(records: &[(usize, Attachment)], addr: usize, detached: Option<(u64, u64)>, maps: &Mappings) -> Vec<(usize, Attachment)> {
    let page = page_size();
    let mut ended = Vec::new();
    let mut dead = Vec::new();
    for r in records {
        if r.0 == addr && Some(r.1.identity) == detached {
            ended.push(*r);
        } else if (r.0 == addr || Some(r.1.identity) == detached) && !still_mapped(r, maps, page) {
            dead.push(*r);
        }
    }
    while let Some(&(_, some)) = dead.first() {
        let (of_it, rest): (Vec<_>, Vec<_>) = dead.into_iter().partition(|r| r.1.identity == some.identity);
        dead = rest;
        let live: Vec<&(usize, Attachment)> =
            records.iter().filter(|r| r.1.identity == some.identity && !of_it.contains(r) && !ended.contains(r)).collect();
        let accounted = |m: &FileMapping| live.iter().any(|&&(start, at)| (start..start + at.len).contains(&m.start) && at_its_offset(m, start, page));
        let mut unaccounted = false;
        let mut cursor = 0;
        while let Some(m) = maps.next_from(cursor) {
            if m.identity == some.identity && !accounted(&m) {
                unaccounted = true;
                break;
            }
            cursor = m.end;
        }
        ended.extend(of_it.into_iter().skip(unaccounted as usize));
    }
    ended
}

/// shmdt from our records alone: the attachment that starts at `addr`.
fn shmdt_by_record(addr: usize) -> Result<()> {
    let at = with_state(|s| s.attachments.remove(&addr))?.ok_or(Errno(libc::EINVAL))?;
    unsafe { libc::munmap(addr as *mut libc::c_void, at.len) };
    detached(at);
    Ok(())
}

/// Tells the broker that `at` ended.
fn detached(at: Attachment) {
    let notice = [Op::ShmDetached as i64, at.id as i64];
    // The last detach of a removed segment frees it: tell the broker at once.
    let removed = client().table().ok().and_then(|t| t.by_id(Family::Shm, at.id).ok().flatten()).map(|e| e.perm.mode & SHM_DEST != 0);
    if removed != Some(false) {
        // Our cached descriptors would keep a removed segment's memory alive.
        let _ = with_state(|s| {
            if !s.attachments.values().any(|a| a.id == at.id) {
                forget_descriptors(s, |id| id == at.id);
            }
        });
        let _ = client().notify_now(&notice);
    } else {
        let _ = client().notify(&notice);
    }
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
