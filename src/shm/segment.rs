//! The broker's side of shared memory: segments, their statistics, and shmget/shmctl.

use super::*;
use crate::broker::registry::{Change, Lookup, Registry};
use crate::ipc::limits::Limits;
use crate::ipc::perm::{Creds, Perm, CAP_IPC_LOCK, S_IRUGO};
use crate::ipc::{Family, now_secs, Errno, Result, IPC_INFO, IPC_RMID, IPC_SET, IPC_STAT};
use crate::sys::{page_size, round_up_to_page, sealed_memfd};
use crate::broker::fdstore::ObjectFd;
use crate::broker::MemfdNames;
use std::os::fd::OwnedFd;

#[derive(Debug)]
pub struct Segment {
    pub size: u64,
    pub memfd: ObjectFd,
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    pub cpid: i32,
    pub lpid: i32,
    pub nattch: u64,
    /// Made with SHM_HUGETLB: SHM_LOCK and SHM_UNLOCK do nothing to it (as the kernel's).
    pub hugetlb: bool,
    /// The uid whose locked-memory allowance SHM_LOCK charged (the kernel's mlock_ucounts).
    pub locked_by: Option<u32>,
    /// The memfd's name, unique in the broker's life: how the segment shows in
    /// /proc/PID/maps ("/memfd:NAME (deleted)").
    pub memfd_name: String,
}

impl Segment {
    fn pages(&self) -> u64 {
        round_up_to_page(self.size).unwrap_or(0) / page_size() as u64
    }
}

#[derive(Debug, Default)]
pub struct Segments {
    pub registry: Registry<Segment>,
    /// Pages held by all segments (the kernel's `shm_tot`), checked against SHMALL.
    pub total_pages: u64,
    /// Pages locked by SHM_LOCK per uid charged, checked against the locker's
    /// RLIMIT_MEMLOCK (the kernel's UCOUNT_RLIMIT_MEMLOCK).
    pub locked_pages: std::collections::HashMap<u32, u64>,
}

impl Segments {
    /// shmget.
    pub fn get(&mut self, key: i32, size: u64, flags: i32, creds: &Creds, limits: &Limits, names: &mut MemfdNames) -> Result<(i32, Change)> {
        let found = self.registry.get(key, flags, creds, |seg| {
            if seg.data.size < size {
                Err(Errno(libc::EINVAL))
            } else {
                Ok(())
            }
        })?;
        if let Lookup::Found(id) = found {
            return Ok((id, Change::None));
        }
        // newseg()
        if size < limits.shmmin || size > limits.shmmax {
            return Err(Errno(libc::EINVAL));
        }
        let bytes = round_up_to_page(size).ok_or(Errno(libc::ENOSPC))?;
        let pages = bytes / page_size() as u64;
        match self.total_pages.checked_add(pages) {
            Some(t) if t <= limits.shmall => {}
            _ => return Err(Errno(libc::ENOSPC)),
        }
        let memfd_name = names.next(Family::Shm);
        let memfd = if flags & SHM_HUGETLB != 0 {
            huge_segment(&memfd_name, size, flags, creds)?
        } else {
            sealed_memfd(&memfd_name, bytes, 0).map_err(|_| Errno(libc::ENOMEM))?
        };
        if self.registry.in_use() >= limits.shmmni as usize {
            return Err(Errno(libc::ENOSPC));
        }
        let memfd = ObjectFd::keep(memfd)?;
        let seg = Segment { size, memfd, atime: 0, dtime: 0, ctime: now_secs(), cpid: creds.pid, lpid: 0, nattch: 0, hugetlb: flags & SHM_HUGETLB != 0, locked_by: None, memfd_name };
        let (index, id) = self.registry.insert(limits.shmmni as usize, Perm::new(key, flags as u32, creds), seg)?;
        self.total_pages += pages;
        Ok((id, Change::Updated(index)))
    }

    /// Destroys the segment at `index` (its memory lives on in whoever still maps it).
    fn destroy(&mut self, index: usize) -> Change {
        if let Some(obj) = self.registry.remove(index) {
            self.total_pages -= obj.data.pages();
            if let Some(uid) = obj.data.locked_by {
                self.unlock_charge(uid, obj.data.pages());
            }
        }
        Change::Removed(index)
    }

    /// A process attached (`pid`) or detached: nattch and times as `shm_open`/`shm_close`.
    pub fn attached(&mut self, id: i32, pid: i32) -> bool {
        let Ok(seg) = self.registry.by_id_mut(id) else { return false };
        seg.data.nattch += 1;
        seg.data.atime = now_secs();
        seg.data.lpid = pid;
        true
    }

    /// Drops `count` attachments of `pid`; destroys the segment if it was removed and this
    /// was the last attachment.
    pub fn detached(&mut self, id: i32, pid: i32, count: u64) -> Change {
        let Ok(seg) = self.registry.by_id_mut(id) else { return Change::None };
        seg.data.nattch = seg.data.nattch.saturating_sub(count);
        seg.data.dtime = now_secs();
        seg.data.lpid = pid;
        if seg.data.nattch == 0 && seg.perm.mode & SHM_DEST != 0 {
            let (index, _) = crate::ipc::ids::split_id(id).unwrap();
            return self.destroy(index);
        }
        Change::None
    }

    /// shmctl. `args` are IPC_SET's uid, gid, mode. Returns the reply words after the status.
    pub fn ctl(&mut self, id: i32, cmd: i32, args: &[i64], creds: &Creds, limits: &Limits) -> Result<(i64, Vec<i64>, Change)> {
        if id < 0 && !matches!(cmd, IPC_INFO | SHM_INFO) {
            return Err(Errno(libc::EINVAL));
        }
        let max_index = self.registry.max_index().max(0) as i64;
        match cmd {
            IPC_INFO => Ok((
                max_index,
                vec![limits.shmmax as i64, limits.shmmin as i64, limits.shmmni as i64, limits.shmseg as i64, limits.shmall as i64],
                Change::None,
            )),
            SHM_INFO => Ok((
                max_index,
                vec![self.registry.in_use() as i64, self.total_pages as i64, self.total_pages as i64, 0, 0, 0],
                Change::None,
            )),
            IPC_STAT | SHM_STAT | SHM_STAT_ANY => {
                let (index, obj) = if cmd == IPC_STAT {
                    let obj = self.registry.by_id(id)?;
                    (crate::ipc::ids::split_id(id).unwrap().0, obj)
                } else {
                    // The kernel takes the index from the low bits (`ipcid_to_idx`).
                    let index = id as usize % crate::ipc::ids::MAX_INDEX;
                    (index, self.registry.by_index(index).ok_or(Errno(libc::EINVAL))?)
                };
                if cmd != SHM_STAT_ANY && !obj.perm.allows(creds, S_IRUGO) {
                    return Err(Errno(libc::EACCES));
                }
                let ret = if cmd == IPC_STAT { 0 } else { crate::ipc::ids::make_id(index, obj.seq) as i64 };
                let p = &obj.perm;
                let s = &obj.data;
                Ok((
                    ret,
                    vec![
                        p.key as i64, p.uid as i64, p.gid as i64, p.cuid as i64, p.cgid as i64, p.mode as i64,
                        obj.seq as i64, s.size as i64, s.atime, s.dtime, s.ctime, s.cpid as i64, s.lpid as i64,
                        s.nattch as i64,
                    ],
                    Change::None,
                ))
            }
            IPC_SET | IPC_RMID => {
                let obj = self.registry.by_id_mut(id)?;
                if !obj.perm.may_control(creds) {
                    return Err(Errno(libc::EPERM));
                }
                let index = crate::ipc::ids::split_id(id).unwrap().0;
                if cmd == IPC_SET {
                    let (uid, gid, mode) = (args.first(), args.get(1), args.get(2));
                    let (Some(&uid), Some(&gid), Some(&mode)) = (uid, gid, mode) else { return Err(Errno(libc::EINVAL)) };
                    // The kernel rejects ids that do not map into the user namespace: -1.
                    if uid as u32 == u32::MAX || gid as u32 == u32::MAX {
                        return Err(Errno(libc::EINVAL));
                    }
                    obj.perm.set(uid as u32, gid as u32, mode as u32);
                    obj.data.ctime = now_secs();
                    return Ok((0, vec![], Change::Updated(index)));
                }
                if obj.data.nattch > 0 {
                    obj.perm.mode |= SHM_DEST;
                    self.registry.make_private(index);
                    return Ok((0, vec![], Change::Updated(index)));
                }
                Ok((0, vec![], self.destroy(index)))
            }
            SHM_LOCK | SHM_UNLOCK => {
                let obj = self.registry.by_id_mut(id)?;
                let privileged = creds.has_cap(CAP_IPC_LOCK);
                let limit = if cmd == SHM_LOCK && !privileged { memlock_limit(creds.pid) } else { None };
                if !privileged {
                    if creds.uid != obj.perm.uid && creds.uid != obj.perm.cuid {
                        return Err(Errno(libc::EPERM));
                    }
                    if limit == Some(0) {
                        return Err(Errno(libc::EPERM));
                    }
                }
                let pages = obj.data.pages();
                let index = crate::ipc::ids::split_id(id).unwrap().0;
                if obj.data.hugetlb {
                    // The kernel leaves hugetlb segments alone: success, no SHM_LOCKED.
                    return Ok((0, vec![], Change::None));
                }
                if cmd == SHM_LOCK && obj.data.locked_by.is_none() {
                    // `user_shm_lock`: the locker's uid is charged the segment's pages, up
                    // to its RLIMIT_MEMLOCK unless it has CAP_IPC_LOCK.
                    let charged = self.locked_pages.get(&creds.uid).copied().unwrap_or(0) + pages;
                    if limit.is_some_and(|bytes| charged > bytes / page_size() as u64) {
                        return Err(Errno(libc::ENOMEM));
                    }
                    self.locked_pages.insert(creds.uid, charged);
                    obj.data.locked_by = Some(creds.uid);
                    obj.perm.mode |= SHM_LOCKED;
                } else if cmd == SHM_UNLOCK {
                    obj.perm.mode &= !SHM_LOCKED;
                    if let Some(uid) = obj.data.locked_by.take() {
                        self.unlock_charge(uid, pages);
                    }
                }
                Ok((0, vec![], Change::Updated(index)))
            }
            _ => Err(Errno(libc::EINVAL)),
        }
    }
}

/// The caller's soft RLIMIT_MEMLOCK in bytes, from /proc/PID/limits; None if unlimited
/// (or unreadable). The kernel refuses SHM_LOCK to an unprivileged owner whose limit is 0
/// (EPERM), and one whose locked segments would exceed it (ENOMEM).
fn memlock_limit(pid: i32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits.lines().find_map(|l| l.strip_prefix("Max locked memory"))?.split_whitespace().next()?.parse().ok()
}

impl Segments {
    fn unlock_charge(&mut self, uid: u32, pages: u64) {
        if let Some(charged) = self.locked_pages.get_mut(&uid) {
            *charged = charged.saturating_sub(pages);
            if *charged == 0 {
                self.locked_pages.remove(&uid);
            }
        }
    }
}

const SHM_HUGE_SHIFT: i32 = 26;
const SHM_HUGE_MASK: i32 = 0x3f;

/// A hugetlb segment as `newseg` makes one: EINVAL for a huge page size the machine does
/// not have, EPERM without CAP_IPC_LOCK or membership of vm.hugetlb_shm_group, ENOMEM when
/// the pages cannot be reserved (unless SHM_NORESERVE).
fn huge_segment(name: &str, size: u64, flags: i32, creds: &Creds) -> Result<OwnedFd> {
    let log = (flags >> SHM_HUGE_SHIFT) & SHM_HUGE_MASK;
    let page_kb = if log == 0 {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix("Hugepagesize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or(Errno(libc::EINVAL))?
    } else {
        (1u64 << log) / 1024
    };
    if !std::path::Path::new(&format!("/sys/kernel/mm/hugepages/hugepages-{page_kb}kB")).exists() {
        return Err(Errno(libc::EINVAL));
    }
    let group = std::fs::read_to_string("/proc/sys/vm/hugetlb_shm_group").ok().and_then(|g| g.trim().parse().ok());
    if !creds.has_cap(CAP_IPC_LOCK) && !group.map(|g| creds.in_group(g)).unwrap_or(false) {
        return Err(Errno(libc::EPERM));
    }
    let page = page_kb * 1024;
    let bytes = size.checked_add(page - 1).ok_or(Errno(libc::EINVAL))? / page * page;
    let fd = sealed_memfd(name, bytes, libc::MFD_HUGETLB | ((log as u32) << SHM_HUGE_SHIFT)).map_err(|_| Errno(libc::ENOMEM))?;
    if flags & SHM_NORESERVE == 0 {
        // Mapping a hugetlb file reserves its pages for the file's life, as shmget does.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes as usize, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, std::os::fd::AsRawFd::as_raw_fd(&fd), 0)
        };
        if p == libc::MAP_FAILED {
            return Err(Errno(libc::ENOMEM));
        }
        unsafe { libc::munmap(p, bytes as usize) };
    }
    Ok(fd)
}
