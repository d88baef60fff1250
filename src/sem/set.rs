//! The broker's side of semaphore sets (ipc/sem.c `newary`, `semctl_stat`, `semctl_down`,
//! `semctl_info`, `exit_sem`): semget, the semctl commands the broker serves, and SEM_UNDO
//! at a process's death. Values, waiters and adjustments live in each set's memfd, which
//! the broker maps too (to read sem_otime, apply the undo of the dead, mark removals) from
//! the first time a client opens it: until then no process can have used it.

use super::array;
use super::layout::{Geometry, SetMem, UNDO_SLOTS, WAITER_SLOTS};
use super::*;
use crate::broker::registry::{Change, Lookup, Registry};
use crate::ipc::ids::{make_id, split_id};
use crate::ipc::limits::Limits;
use crate::ipc::perm::{Creds, Perm, S_IRUGO, S_IWUGO};
use crate::ipc::{now_secs, Family, Errno, Result, IPC_INFO, IPC_RMID, IPC_SET, IPC_STAT};
use crate::broker::fdstore::ObjectFd;
use crate::broker::MemfdNames;
use crate::sys::{sealed_memfd, Mapping};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::*;

pub struct SemSet {
    pub nsems: u64,
    geo: Geometry,
    /// sem_ctime while the set is not mapped.
    ctime: i64,
    /// The set's memfd and the broker's mapping of it, made (and the header initialised)
    /// when a client first opens the set. Before that nobody can wait, hold adjustments or
    /// a lock in it, and otime is 0: a set made and removed unused costs no memfd at all.
    mapped: Option<Mapped>,
}

struct Mapped {
    mem: SetMem,
    /// Keeps `mem` mapped; declared after it so that it outlives it.
    _map: Mapping,
    memfd: ObjectFd,
}

impl SemSet {
    fn mem(&self) -> Option<&SetMem> {
        self.mapped.as_ref().map(|m| &m.mem)
    }

    /// The set's memfd, if a client ever opened the set.
    pub fn memfd(&self) -> Option<&ObjectFd> {
        self.mapped.as_ref().map(|m| &m.memfd)
    }

    /// The set's memory and memfd, made on first use: from `spare` if it is given.
    fn map(&mut self, spare: Option<OwnedFd>, names: &mut MemfdNames) -> Result<&Mapped> {
        if self.mapped.is_none() {
            let memfd = match spare {
                Some(fd) => fd,
                None => sealed_memfd(&names.next(Family::Sem), self.geo.size as u64, 0).map_err(|_| Errno(libc::ENOMEM))?,
            };
            let memfd = ObjectFd::keep(memfd)?;
            let map = memfd.map(self.geo.size, true).map_err(|_| Errno(libc::ENOMEM))?;
            let mem = unsafe { SetMem::init(map.as_ptr(), self.geo, self.ctime)? };
            self.mapped = Some(Mapped { mem, _map: map, memfd });
        }
        Ok(self.mapped.as_ref().unwrap())
    }
}

impl std::fmt::Debug for SemSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemSet").field("nsems", &self.nsems).finish()
    }
}

#[derive(Debug, Default)]
pub struct SemSets {
    pub registry: Registry<SemSet>,
    /// Semaphores in all sets (the kernel's `used_sems`), checked against SEMMNS.
    pub used_sems: u64,
    /// (set id, dead pid) whose exit could not be applied yet: the set's lock was held by a
    /// process that is stopped (SIGSTOP, a debugger), or a semaphore it must change was held
    /// by another's lock-free SEM_UNDO operation (array.rs `Busy`). The broker never blocks on a client;
    /// it retries these every RING_POLL.
    pending_deaths: Vec<(i32, i32)>,
    /// Memfds made ahead, sized for the most common sets (every set of up to 16 semaphores
    /// has the same geometry): a set's first open then waits for no memfd_create, ftruncate
    /// or seals.
    spares: Vec<OwnedFd>,
    /// Sets removed in this batch: their memfds (and pages) are freed after the answers.
    removed: Vec<SemSet>,
}

/// Spare memfds kept ready (see `SemSets::spares`).
const SPARES: usize = 4;

/// The geometry of a set of `nsems` semaphores under these limits.
fn geometry(nsems: u32, limits: &Limits) -> Option<Geometry> {
    Geometry::new(nsems, limits.semopm.clamp(1, 65536) as u32, WAITER_SLOTS, UNDO_SLOTS)
}

/// Tries the set's lock for a moment (a holder that is running leaves it within
/// microseconds).
fn lock_briefly(mem: &SetMem) -> Option<Result<array::Guard<'_>>> {
    for i in 0..200 {
        // The first and last tries also take over a lock whose holder died.
        if let Some(r) = array::try_lock(mem, i == 0 || i == 199) {
            return Some(r);
        }
        if i > 20 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    None
}

impl SemSets {
    /// semget. `nsems` is the caller's argument.
    pub fn get(&mut self, key: i32, nsems: i64, flags: i32, creds: &Creds, limits: &Limits) -> Result<(i32, Change)> {
        if nsems < 0 || nsems as u64 > limits.semmsl {
            return Err(Errno(libc::EINVAL));
        }
        let found = self.registry.get(key, flags, creds, |o| if nsems as u64 > o.data.nsems { Err(Errno(libc::EINVAL)) } else { Ok(()) })?;
        if let Lookup::Found(id) = found {
            return Ok((id, Change::None));
        }
        // newary()
        if nsems == 0 {
            return Err(Errno(libc::EINVAL));
        }
        if self.used_sems + nsems as u64 > limits.semmns {
            return Err(Errno(libc::ENOSPC));
        }
        if self.registry.in_use() >= limits.semmni as usize {
            return Err(Errno(libc::ENOSPC));
        }
        let geo = geometry(nsems as u32, limits).ok_or(Errno(libc::EINVAL))?;
        let set = SemSet { nsems: nsems as u64, geo, ctime: now_secs(), mapped: None };
        let (index, id) = self.registry.insert(limits.semmni as usize, Perm::new(key, flags as u32, creds), set)?;
        self.used_sems += nsems as u64;
        Ok((id, Change::Updated(index)))
    }

    /// The set's memfd (read-write: even a wait-for-zero takes the set's lock) for a client
    /// that may read or alter it. Reply words after status: [size].
    pub fn open(&mut self, id: i32, _access: u32, creds: &Creds, limits: &Limits, names: &mut MemfdNames) -> Result<(Vec<i64>, OwnedFd)> {
        let small = geometry(1, limits).map(|g| g.size);
        let obj = self.registry.by_id_mut(id)?;
        if !obj.perm.allows(creds, S_IRUGO) && !obj.perm.allows(creds, S_IWUGO) {
            return Err(Errno(libc::EACCES));
        }
        let spare = if obj.data.mapped.is_none() && small == Some(obj.data.geo.size) { self.spares.pop() } else { None };
        let fd = obj.data.map(spare, names)?.memfd.open(false)?;
        Ok((vec![obj.data.geo.size as i64], fd))
    }

    /// semctl commands served by the broker. Returns (return value, fields, change).
    /// IPC_STAT/SEM_STAT/SEM_STAT_ANY fields: key, uid, gid, cuid, cgid, mode, seq, nsems,
    /// otime, ctime. IPC_INFO/SEM_INFO: the `struct seminfo` fields in order.
    /// IPC_SET args: uid, gid, mode.
    pub fn ctl(&mut self, id: i32, cmd: i32, args: &[i64], creds: &Creds, limits: &Limits) -> Result<(i64, Vec<i64>, Change)> {
        if id < 0 {
            return Err(Errno(libc::EINVAL));
        }
        match cmd {
            IPC_INFO | SEM_INFO => {
                let (usz, aem) = if cmd == SEM_INFO {
                    (self.registry.in_use() as i64, self.used_sems as i64)
                } else {
                    (SEMUSZ, ops::SEMAEM as i64)
                };
                let fields = vec![
                    SEMMAP,
                    limits.semmni as i64,
                    limits.semmns as i64,
                    SEMMNU,
                    limits.semmsl as i64,
                    limits.semopm as i64,
                    SEMUME,
                    usz,
                    ops::SEMVMX as i64,
                    aem,
                ];
                Ok((self.registry.max_index().max(0) as i64, fields, Change::None))
            }
            IPC_STAT | SEM_STAT | SEM_STAT_ANY => {
                let (index, obj) = if cmd == IPC_STAT {
                    (split_id(id).ok_or(Errno(libc::EINVAL))?.0, self.registry.by_id(id)?)
                } else {
                    // SEM_STAT takes an index; the kernel uses the id's index bits.
                    let index = id as usize % crate::ipc::ids::MAX_INDEX;
                    (index, self.registry.by_index(index).ok_or(Errno(libc::EINVAL))?)
                };
                if cmd != SEM_STAT_ANY && !obj.perm.allows(creds, S_IRUGO) {
                    return Err(Errno(libc::EACCES));
                }
                let ret = if cmd == IPC_STAT { 0 } else { make_id(index, obj.seq) as i64 };
                let p = &obj.perm;
                let (otime, ctime) = match obj.data.mem() {
                    Some(m) => (m.header().otime.load(Relaxed), m.header().ctime.load(Relaxed)),
                    None => (0, obj.data.ctime),
                };
                Ok((
                    ret,
                    vec![
                        p.key as i64, p.uid as i64, p.gid as i64, p.cuid as i64, p.cgid as i64, p.mode as i64,
                        obj.seq as i64, obj.data.nsems as i64, otime, ctime,
                    ],
                    Change::None,
                ))
            }
            IPC_SET | IPC_RMID => {
                let index = split_id(id).ok_or(Errno(libc::EINVAL))?.0;
                let obj = self.registry.by_id_mut(id)?;
                if !obj.perm.may_control(creds) {
                    return Err(Errno(libc::EPERM));
                }
                if cmd == IPC_SET {
                    let (Some(&uid), Some(&gid), Some(&mode)) = (args.first(), args.get(1), args.get(2)) else {
                        return Err(Errno(libc::EINVAL));
                    };
                    // The kernel rejects ids that do not map into the user namespace: -1.
                    if uid as u32 == u32::MAX || gid as u32 == u32::MAX {
                        return Err(Errno(libc::EINVAL));
                    }
                    obj.perm.set(uid as u32, gid as u32, mode as u32);
                    match obj.data.mem() {
                        Some(m) => m.header().ctime.store(now_secs(), Relaxed),
                        None => obj.data.ctime = now_secs(),
                    }
                    return Ok((0, vec![], Change::Updated(index)));
                }
                // freeary(): every waiter wakes with EIDRM; clients still mapping the set
                // see it removed.
                if let Some(m) = obj.data.mem() {
                    array::mark_removed(m);
                }
                if let Some(obj) = self.registry.remove(index) {
                    self.used_sems -= obj.data.nsems;
                    self.removed.push(obj.data);
                }
                Ok((0, vec![], Change::Removed(index)))
            }
            _ => Err(Errno(libc::EINVAL)),
        }
    }

    /// A client process died: drop its queued calls, apply its SEM_UNDO adjustments and
    /// wake whoever can now proceed, in every set.
    pub fn process_died(&mut self, pid: i32) -> Vec<Change> {
        for (index, obj) in self.registry.iter() {
            let Some(mem) = obj.data.mem() else { continue };
            let h = mem.header();
            // A set where nobody waits or holds adjustments has nothing of the dead.
            if h.nwaiters.load(Acquire) == 0 && h.undo_users.load(Acquire) == 0 && h.journal_state.load(Acquire) == 0 {
                continue;
            }
            let done = match lock_briefly(mem) {
                Some(Ok(mut g)) => g.process_died(pid),
                Some(Err(_)) => true,
                None => false,
            };
            if !done {
                self.pending_deaths.push((make_id(index, obj.seq), pid));
            }
        }
        Vec::new()
    }

    /// Work kept off the answers' path, done once a batch is answered: closing the memfds of
    /// removed sets, making spare ones.
    pub fn after_answers(&mut self, limits: &Limits, names: &mut MemfdNames) {
        self.removed.clear();
        let Some(geo) = geometry(1, limits) else { return };
        while self.spares.len() < SPARES {
            match sealed_memfd(&names.next(Family::Sem), geo.size as u64, 0) {
                Ok(fd) => self.spares.push(fd),
                Err(_) => break,
            }
        }
    }

    /// Whether some death waits for a set's lock.
    pub fn has_pending(&self) -> bool {
        !self.pending_deaths.is_empty()
    }

    /// Applies the deaths that waited for a set's lock, where the lock is free now.
    pub fn retry_pending(&mut self) {
        if self.pending_deaths.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_deaths);
        for (id, pid) in pending {
            let Some(mem) = self.registry.by_id(id).ok().and_then(|o| o.data.mem()) else { continue };
            let done = match array::try_lock(mem, true) {
                Some(Ok(mut g)) => g.process_died(pid),
                Some(Err(_)) => true,
                None => false,
            };
            if !done {
                self.pending_deaths.push((id, pid));
            }
        }
    }

    /// (seq, perm, size) of the set at `index`, for the namespace table (size = nsems).
    pub fn table_entry(&self, index: usize) -> Option<(u32, crate::ipc::perm::Perm, u64)> {
        self.registry.by_index(index).map(|o| (o.seq, o.perm, o.data.nsems))
    }
}
