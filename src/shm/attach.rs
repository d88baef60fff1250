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
    });
    if let Some((fd, page, identity)) = cached {
        return Ok((fd, page, identity, None));
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
        return Ok((fd.as_raw_fd(), page, identity, Some(fd)));
    }
    let raw = fd.into_raw_fd();
    with_state(|s| {
        if let Some(old) = s.fds.insert((id, writable), CachedFd { fd: raw, identity, page }) {
            if fd_identity(old.fd) == Some(old.identity) {
                unsafe { libc::close(old.fd) };
            }
        }
    });
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
    // (the kernel closes their mappings); one it covered in part keeps the rest.
    let replaced: Vec<Attachment> = with_state(|s| {
        let gone: Vec<usize> =
            s.attachments.range(start..start + len).filter(|(&a, at)| a + at.len <= start + len).map(|(&a, _)| a).collect();
        let out = gone.iter().filter_map(|a| s.attachments.remove(a)).collect();
        s.attachments.insert(start, Attachment { id, len, identity });
        out
    });
    for old in replaced {
        let _ = client().notify(&[Op::ShmDetached as i64, old.id as i64]);
    }
    client().notify(&[Op::ShmAttached as i64, id as i64])?;
    Ok(start)
}

/// shmdt, as the kernel's: it unmaps the mappings of one segment found from `addr` in the
/// process's actual mappings, not in our records, since the program may have moved
/// (mremap) or unmapped (munmap) pieces of an attachment since, or mapped other things
/// where one was. The first mapping at or above `addr` of one of our segments whose
/// distance from `addr` equals its offset in the segment names the segment; it and the
/// further such mappings of that segment within the segment's size from `addr` are
/// unmapped. Where /proc/self/maps cannot be read, our records are trusted.
pub fn shmdt(addr: usize) -> Result<()> {
    let page = page_size();
    if addr & (page - 1) != 0 {
        return Err(Errno(libc::EINVAL));
    }
    // Our records before the mappings are read: a record made meanwhile (by another
    // thread's shmat) must not be taken for one whose mapping is gone.
    let records: Vec<(usize, Attachment)> = with_state(|s| s.attachments.iter().map(|(&a, &at)| (a, at)).collect());
    let Some(maps) = own_file_mappings() else { return shmdt_by_record(addr) };
    let size_of = |identity| records.iter().find(|(_, a)| a.identity == identity).map(|(_, a)| a.len);
    let at_its_offset = |m: &FileMapping| m.start.wrapping_sub(addr) / page == (m.offset / page as u64) as usize;
    let mut found = maps.iter().skip_while(|m| m.end <= addr);
    let first = found.by_ref().find(|m| size_of(m.identity).is_some() && at_its_offset(m));
    let mut unmap = Vec::new();
    if let Some(first) = first {
        let size = size_of(first.identity).unwrap_or(0);
        unmap.push((first.start, first.end));
        unmap.extend(
            found
                .take_while(|m| m.end - addr <= size)
                .filter(|m| m.identity == first.identity && at_its_offset(m))
                .map(|m| (m.start, m.end)),
        );
    }
    for &(start, end) in &unmap {
        unsafe { libc::munmap(start as *mut libc::c_void, end - start) };
    }
    let left: Vec<&FileMapping> = maps.iter().filter(|m| !unmap.contains(&(m.start, m.end))).collect();
    let ended: Vec<Attachment> = with_state(|s| {
        ended_records(&records, &left, page)
            .into_iter()
            .filter_map(|(start, at)| match s.attachments.get(&start) {
                Some(now) if now.identity == at.identity => s.attachments.remove(&start),
                _ => None,
            })
            .collect()
    });
    for at in ended {
        detached(at);
    }
    first.map(|_| ()).ok_or(Errno(libc::EINVAL))
}

/// The records whose attachment ended, given the mappings `left`: those with no mapping of
/// their segment left where they put one (detached now, or unmapped or moved by hand
/// before, which the kernel counted then). A segment with mappings left that no live
/// record accounts for (moved by hand) keeps one such record, so that nattch still counts
/// them and shmdt still knows them for a segment of ours.
fn ended_records(records: &[(usize, Attachment)], left: &[&FileMapping], page: usize) -> Vec<(usize, Attachment)> {
    let holds = |&(start, at): &(usize, Attachment), m: &FileMapping| {
        m.identity == at.identity
            && (start..start + at.len).contains(&m.start)
            && m.start - start == (m.offset / page as u64) as usize * page
    };
    let (live, dead): (Vec<&(usize, Attachment)>, Vec<_>) = records.iter().partition(|r| left.iter().any(|m| holds(r, m)));
    let mut kept: Vec<(u64, u64)> = Vec::new();
    let mut ended = Vec::new();
    for r in dead {
        let identity = r.1.identity;
        let unaccounted = left.iter().any(|m| m.identity == identity && !live.iter().any(|l| holds(l, m)));
        if unaccounted && !kept.contains(&identity) {
            kept.push(identity);
        } else {
            ended.push(*r);
        }
    }
    ended
}

/// shmdt from our records alone: the attachment that starts at `addr`.
fn shmdt_by_record(addr: usize) -> Result<()> {
    let at = with_state(|s| s.attachments.remove(&addr)).ok_or(Errno(libc::EINVAL))?;
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
        with_state(|s| {
            if !s.attachments.values().any(|a| a.id == at.id) {
                forget_descriptors(s, |id| id == at.id);
            }
        });
        let _ = client().notify_now(&notice);
    } else {
        let _ = client().notify(&notice);
    }
}

/// A mapping of a file, from /proc/self/maps.
struct FileMapping {
    start: usize,
    end: usize,
    offset: u64,
    identity: (u64, u64),
}

/// This process's file mappings in address order, or None if /proc/self/maps cannot be
/// read (no /proc; a full descriptor table even with our reserve's slot).
fn own_file_mappings() -> Option<Vec<FileMapping>> {
    let text = match std::fs::read("/proc/self/maps") {
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
            client().with_reserve_released(|| std::fs::read("/proc/self/maps")).ok()?
        }
        r => r.ok()?,
    };
    Some(text.split(|&b| b == b'\n').filter_map(parse_mapping).collect())
}

/// "start-end perms offset major:minor inode path"; None for anonymous mappings.
fn parse_mapping(line: &[u8]) -> Option<FileMapping> {
    // The fields we need are ASCII and come before the path, which may not be UTF-8.
    let ascii = line.iter().position(|&b| b >= 0x80).unwrap_or(line.len());
    let line = std::str::from_utf8(&line[..ascii]).ok()?;
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let _perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode: u64 = fields.next()?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    let dev = libc::makedev(u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?);
    Some(FileMapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        offset,
        identity: (dev as u64, inode),
    })
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
