//! The broker's side of message queues: msgget (`newque`) and the msgctl commands
//! (`msgctl_info`, `msgctl_stat`, `msgctl_down`). The messages and the counters that change
//! with them (qnum, cbytes, lspid, lrpid, stime, rtime) live in the queue's shared memory,
//! made when a client first opens the queue (until then they are all zero, and the broker
//! keeps msg_qbytes). The broker maps a queue's header to read them (under the queue's lock
//! when it can have it at once: a stopped client holding it must not stall the whole
//! namespace) and to set msg_qbytes and the removed flag. It keeps at most KEPT_HEADERS of
//! these mappings and maps other headers only while it uses them: a mapping per queue would
//! take 32,000 of the broker's 65,530 (vm.max_map_count) at the kernel's default MSGMNI,
//! next to the semaphore sets' 32,000.

use super::layout::{self, Header, HEADER_SIZE};
use super::{MSG_INFO, MSG_STAT, MSG_STAT_ANY};
use crate::broker::registry::{Change, Lookup, Registry};
use crate::ipc::ids::{make_id, split_id};
use crate::ipc::limits::Limits;
use crate::ipc::perm::{Creds, Perm, CAP_SYS_RESOURCE, S_IRUGO, S_IWUGO};
use crate::ipc::sync::{futex_wake, Locked};
use crate::ipc::{Family, now_secs, Errno, Result, IPC_INFO, IPC_RMID, IPC_SET, IPC_STAT};
use crate::broker::fdstore::ObjectFd;
use crate::broker::MemfdNames;
use crate::sys::Mapping;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering::*;

/// Fixed values `msgctl(IPC_INFO)` reports (include/uapi/linux/msg.h).
const MSGSSZ: i64 = 16;
const MSGSEG: i64 = 0xffff;
const MSGMNI_DEFAULT: i64 = 32000;
const MSGMNB_DEFAULT: i64 = 16384;

#[derive(Debug)]
pub struct Queue {
    pub ctime: i64,
    /// msg_qbytes while no client has opened the queue (then the header's).
    qbytes: u64,
    /// The queue's memfd, made (from a spare) when a client first opens the queue: until
    /// then nobody can have sent, received or waited, so a queue made and removed unused
    /// costs no memfd, as a semaphore set does not.
    memfd: Option<ObjectFd>,
    /// The broker's mapping of the header, kept once made while fewer than KEPT_HEADERS
    /// queues keep theirs; beyond, the header is mapped only while it is used.
    kept: once_cell::unsync::OnceCell<Mapping>,
}

/// How many queue headers the broker keeps mapped: the common namespace pays no mmap per
/// msgctl, one at MSGMNI = 32,000 stays far below vm.max_map_count.
const KEPT_HEADERS: usize = 4096;
static KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Queue {
    fn drop(&mut self) {
        if self.kept.get().is_some() {
            KEPT.fetch_sub(1, Relaxed);
        }
    }
}

/// The broker's mapping of one queue's header page: kept, or made for the occasion.
enum HeaderMap<'a> {
    Kept(&'a Mapping),
    Made(Mapping),
}

impl std::ops::Deref for HeaderMap<'_> {
    type Target = Header;
    fn deref(&self) -> &Header {
        let map = match self {
            HeaderMap::Kept(m) => *m,
            HeaderMap::Made(m) => m,
        };
        unsafe { &*(map.as_ptr() as *const Header) }
    }
}

impl Queue {
    fn new(qbytes: u64) -> Queue {
        Queue { ctime: now_secs(), qbytes, memfd: None, kept: Default::default() }
    }

    /// The queue's memfd, if a client ever opened the queue.
    pub fn memfd(&self) -> Option<&ObjectFd> {
        self.memfd.as_ref()
    }

    /// Gives the queue its memory from `spare` at its first open, with the header's
    /// msg_qbytes set to what IPC_SET may have made of it until then.
    fn open_memory(&mut self, spare: Spare) -> Result<&ObjectFd> {
        if self.memfd.is_none() {
            let Spare { memfd, header } = spare;
            // First what may fail (no keeper can take the descriptor): nothing changes then.
            let memfd = ObjectFd::keep(memfd)?;
            let h = unsafe { &*(header.as_ptr() as *const Header) };
            h.qbytes.store(self.qbytes, Relaxed);
            // The header mapping is kept, as `header` would keep it, while there is room.
            if KEPT.fetch_add(1, Relaxed) < KEPT_HEADERS {
                let _ = self.kept.set(header);
            } else {
                KEPT.fetch_sub(1, Relaxed);
            }
            self.memfd = Some(memfd);
        }
        Ok(self.memfd.as_ref().unwrap())
    }

    /// Maps the header (ENOMEM if it cannot be mapped now; EINVAL if the queue has no
    /// memory yet, which callers look at first).
    fn header(&self) -> Result<HeaderMap<'_>> {
        if let Some(m) = self.kept.get() {
            return Ok(HeaderMap::Kept(m));
        }
        let memfd = self.memfd.as_ref().ok_or(Errno(libc::EINVAL))?;
        let map = memfd.map(HEADER_SIZE, true).map_err(|_| Errno(libc::ENOMEM))?;
        if KEPT.fetch_add(1, Relaxed) >= KEPT_HEADERS {
            KEPT.fetch_sub(1, Relaxed);
            return Ok(HeaderMap::Made(map));
        }
        Ok(HeaderMap::Kept(self.kept.get_or_init(|| map)))
    }

    /// What IPC_STAT and MSG_INFO report of the queue's state: qbytes, qnum, cbytes,
    /// lspid, lrpid, stime, rtime (an unopened queue's are all 0 but qbytes).
    fn counters(&self) -> Result<[i64; 7]> {
        if self.memfd.is_none() {
            return Ok([self.qbytes as i64, 0, 0, 0, 0, 0, 0]);
        }
        self.settled(|h| {
            [
                h.qbytes.load(Relaxed) as i64,
                h.qnum.load(Relaxed) as i64,
                h.cbytes.load(Relaxed) as i64,
                h.lspid.load(Relaxed) as i64,
                h.lrpid.load(Relaxed) as i64,
                h.stime.load(Relaxed),
                h.rtime.load(Relaxed),
            ]
        })
    }

    /// Runs `read` on the header under the queue's lock when it can be had at once (a
    /// holder that died is repaired first, from a full mapping made for the occasion);
    /// after a few tries without it (a client is stopped holding it), without the lock:
    /// the broker must never hang on a client.
    fn settled<R>(&self, read: impl Fn(&Header) -> R) -> Result<R> {
        let h = &*self.header()?;
        for attempt in 0..64 {
            // The first try also takes over a lock whose holder died.
            let tried = if attempt == 0 { h.lock.try_lock_or_recover() } else { h.lock.try_lock() };
            match tried {
                Some(Ok(locked)) => {
                    if let Locked::Recovered = locked {
                        self.repair();
                    }
                    let r = read(h);
                    h.lock.unlock();
                    return Ok(r);
                }
                Some(Err(_)) => break,
                None if attempt < 32 => std::hint::spin_loop(),
                None => std::thread::yield_now(),
            }
        }
        Ok(read(h))
    }

    /// Rebuilds the counters and free lists after a client died holding the lock.
    fn repair(&self) {
        let Some(memfd) = &self.memfd else { return };
        let full = memfd.with_fd(|fd| {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::fstat(fd, &mut st) } != 0 {
                return Err(Errno::last());
            }
            Mapping::map(fd, st.st_size as usize, true)
        });
        let Ok(Ok(full)) = full else { return };
        if let Ok(q) = unsafe { layout::Queue::new(full.as_ptr(), full.len()) } {
            let _ = q.recover(super::stash_owner_alive);
        }
    }

    /// IPC_RMID: waiters wake up and fail with EIDRM. (If the header cannot be mapped,
    /// the removal fails with ENOMEM before anything changed.)
    fn mark_removed(&self) -> Result<()> {
        if self.memfd.is_some() {
            let h = self.header()?;
            h.removed.store(1, Release);
            wake_everyone(&h);
        }
        Ok(())
    }

    /// IPC_SET's msg_qbytes.
    fn set_qbytes(&mut self, qbytes: u64) -> Result<()> {
        if self.memfd.is_none() {
            self.qbytes = qbytes;
            return Ok(());
        }
        self.header()?.qbytes.store(qbytes, Release);
        Ok(())
    }
}

/// A queue's memory made ahead, off the answers' path: a sized memfd whose header is laid
/// out and mapped.
#[derive(Debug)]
struct Spare {
    memfd: OwnedFd,
    header: Mapping,
}

impl Spare {
    fn make(limits: &Limits, names: &mut MemfdNames) -> Result<Spare> {
        let capacity = capacity(limits);
        // Sized once for `capacity`; pages are allocated only as messages use them.
        let memfd = crate::sys::sealed_memfd(&names.next(Family::Msg), layout::memfd_len(capacity) as u64, 0).map_err(|_| Errno(libc::ENOMEM))?;
        let header = Mapping::map(memfd.as_raw_fd(), HEADER_SIZE, true).map_err(|_| Errno(libc::ENOMEM))?;
        unsafe { layout::Queue::init(header.as_ptr(), capacity, limits.msgmnb)? };
        Ok(Spare { memfd, header })
    }
}

/// Spares kept ready (see `Queues::spares`).
const SPARES: usize = 4;

/// Wakes every sender and receiver that waits, asleep or spinning, to look again.
fn wake_everyone(h: &Header) {
    for seq in [&h.space_seq, &h.msg_seq] {
        seq.fetch_add(1, Release);
        futex_wake(seq, i32::MAX);
    }
    for event in [&h.sent.0, &h.received.0] {
        event.fetch_add(1, Release);
    }
}

#[derive(Debug, Default)]
pub struct Queues {
    pub registry: Registry<Queue>,
    /// Memory for the next queues that clients open, made after the answers.
    spares: Vec<Spare>,
    /// Queues removed in this batch: their mappings and memfds (and pages) are freed after
    /// the answers.
    removed: Vec<Queue>,
}

/// Slots and blocks of a new queue: room for four times MSGMNB (so that IPC_SET may raise
/// msg_qbytes that far before sends find the memfd full), at least the kernel default,
/// plus what senders' stashes may hold.
fn capacity(limits: &Limits) -> u32 {
    (limits.msgmnb.max(MSGMNB_DEFAULT as u64).saturating_mul(4)).min(1 << 22) as u32 + layout::STASHED_MAX
}

impl Queues {
    /// msgget.
    pub fn get(&mut self, key: i32, _arg: i64, flags: i32, creds: &Creds, limits: &Limits, names: &mut MemfdNames) -> Result<(i32, Change)> {
        if let Lookup::Found(id) = self.registry.get(key, flags, creds, |_| Ok(()))? {
            return Ok((id, Change::None));
        }
        // newque(): the memory comes at the first open. That there is a spare for it says
        // the memfd can be had: a broker that cannot size one fails here with ENOMEM, as
        // the kernel's newque without memory, not at the first msgsnd.
        if self.registry.in_use() >= limits.msgmni as usize {
            return Err(Errno(libc::ENOSPC));
        }
        if self.spares.is_empty() {
            self.spares.push(Spare::make(limits, names)?);
        }
        let (index, id) = self.registry.insert(limits.msgmni as usize, Perm::new(key, flags as u32, creds), Queue::new(limits.msgmnb))?;
        Ok((id, Change::Updated(index)))
    }

    /// The queue's memfd (read-write: receiving changes the queue too) for a client that may
    /// read or write it, made at the first open. Reply words after status: none.
    pub fn open(&mut self, id: i32, access: u32, creds: &Creds, limits: &Limits, names: &mut MemfdNames) -> Result<(Vec<i64>, OwnedFd)> {
        let obj = self.registry.by_id_mut(id)?;
        let access = if access & (S_IRUGO | S_IWUGO) == 0 { S_IRUGO } else { access & (S_IRUGO | S_IWUGO) };
        if !obj.perm.allows(creds, access) {
            return Err(Errno(libc::EACCES));
        }
        let memfd = match &obj.data.memfd {
            Some(memfd) => memfd,
            None => {
                let spare = match self.spares.pop() {
                    Some(spare) => spare,
                    None => Spare::make(limits, names)?,
                };
                obj.data.open_memory(spare)?
            }
        };
        Ok((vec![], memfd.open(false)?))
    }

    /// Work kept off the answers' path, done once a batch is answered: freeing the memory
    /// of removed queues, making spares.
    pub fn after_answers(&mut self, limits: &Limits, names: &mut MemfdNames) {
        self.removed.clear();
        while self.spares.len() < SPARES {
            match Spare::make(limits, names) {
                Ok(spare) => self.spares.push(spare),
                Err(_) => break,
            }
        }
    }

    /// msgctl commands. `args` are IPC_SET's uid, gid, mode, msg_qbytes. Returns (return
    /// value, fields, change). STAT fields: key, uid, gid, cuid, cgid, mode, seq, qbytes,
    /// qnum, cbytes, lspid, lrpid, stime, rtime, ctime. INFO fields: msgpool, msgmap,
    /// msgmax, msgmnb, msgmni, msgssz, msgtql, msgseg.
    pub fn ctl(&mut self, id: i32, cmd: i32, args: &[i64], creds: &Creds, limits: &Limits) -> Result<(i64, Vec<i64>, Change)> {
        if id < 0 || cmd < 0 {
            return Err(Errno(libc::EINVAL));
        }
        match cmd {
            IPC_INFO | MSG_INFO => {
                let (pool, map, tql) = if cmd == MSG_INFO {
                    let (mut msgs, mut bytes) = (0u64, 0u64);
                    for (_, obj) in self.registry.iter() {
                        let [_, qnum, cbytes, ..] = obj.data.counters()?;
                        msgs += qnum as u64;
                        bytes += cbytes as u64;
                    }
                    (self.registry.in_use() as i64, msgs.min(i32::MAX as u64) as i64, bytes.min(i32::MAX as u64) as i64)
                } else {
                    (MSGMNI_DEFAULT * MSGMNB_DEFAULT / 1024, MSGMNB_DEFAULT, MSGMNB_DEFAULT)
                };
                let max_index = self.registry.max_index().max(0) as i64;
                Ok((
                    max_index,
                    vec![pool, map, limits.msgmax as i64, limits.msgmnb as i64, limits.msgmni as i64, MSGSSZ, tql, MSGSEG],
                    Change::None,
                ))
            }
            IPC_STAT | MSG_STAT | MSG_STAT_ANY => {
                let (index, obj) = if cmd == IPC_STAT {
                    (split_id(id).ok_or(Errno(libc::EINVAL))?.0, self.registry.by_id(id)?)
                } else {
                    // The kernel takes the index from the id's low bits (ipcid_to_idx), so
                    // index + k * SEQ_MULTIPLIER names the same slot.
                    let index = split_id(id).ok_or(Errno(libc::EINVAL))?.0;
                    (index, self.registry.by_index(index).ok_or(Errno(libc::EINVAL))?)
                };
                if cmd != MSG_STAT_ANY && !obj.perm.allows(creds, S_IRUGO) {
                    return Err(Errno(libc::EACCES));
                }
                let ret = if cmd == IPC_STAT { 0 } else { make_id(index, obj.seq) as i64 };
                let p = &obj.perm;
                let mut fields = vec![p.key as i64, p.uid as i64, p.gid as i64, p.cuid as i64, p.cgid as i64, p.mode as i64, obj.seq as i64];
                fields.extend(obj.data.counters()?);
                fields.push(obj.data.ctime);
                Ok((ret, fields, Change::None))
            }
            IPC_SET | IPC_RMID => {
                let obj = self.registry.by_id_mut(id)?;
                if !obj.perm.may_control(creds) {
                    return Err(Errno(libc::EPERM));
                }
                let index = split_id(id).unwrap().0;
                if cmd == IPC_RMID {
                    obj.data.mark_removed()?;
                    if let Some(obj) = self.registry.remove(index) {
                        self.removed.push(obj.data);
                    }
                    return Ok((0, vec![], Change::Removed(index)));
                }
                let [uid, gid, mode, qbytes] = args.get(..4).and_then(|a| <[i64; 4]>::try_from(a).ok()).ok_or(Errno(libc::EINVAL))?;
                // msgctl_down takes msg_qbytes as an int: the kernel keeps its low 32 bits,
                // compares them unsigned with msgmnb and stores them sign-extended.
                let qbytes = qbytes as i32;
                if qbytes as u32 as u64 > limits.msgmnb && !creds.has_cap(CAP_SYS_RESOURCE) {
                    return Err(Errno(libc::EPERM));
                }
                // The kernel rejects ids that do not map into the user namespace: -1.
                if uid as u32 == u32::MAX || gid as u32 == u32::MAX {
                    return Err(Errno(libc::EINVAL));
                }
                // First what may fail (the header's mapping): nothing changes then.
                obj.data.set_qbytes(qbytes as i64 as u64)?;
                obj.perm.set(uid as u32, gid as u32, mode as u32);
                obj.data.ctime = now_secs();
                // The blocked callers are woken by `wake_after_set`, once the table shows
                // the new rights.
                Ok((0, vec![], Change::Updated(index)))
            }
            _ => Err(Errno(libc::EINVAL)),
        }
    }

    /// After an IPC_SET has been published in the namespace table: blocked senders may
    /// fit now, blocked receivers re-check their rights (expunge_all, ss_wakeup). Woken
    /// before the table changed, they would check the old rights and sleep on.
    pub fn wake_after_set(&self, id: i32) {
        let Ok(obj) = self.registry.by_id(id) else { return };
        if obj.data.memfd.is_none() {
            return;
        }
        let Ok(h) = obj.data.header() else { return };
        wake_everyone(&h);
    }

    /// A client process died: nothing to do (its messages stay; a lock it held is
    /// recovered by the next user).
    pub fn process_died(&mut self, _pid: i32) -> Vec<Change> {
        Vec::new()
    }

    /// (seq, perm, size) of the queue at `index`, for the namespace table (size unused: 0).
    pub fn table_entry(&self, index: usize) -> Option<(u32, crate::ipc::perm::Perm, u64)> {
        self.registry.by_index(index).map(|o| (o.seq, o.perm, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::IPC_CREAT;

    fn user(uid: u32, caps: u64) -> Creds {
        Creds { pid: 10, uid, gid: uid, groups: vec![], caps }
    }

    #[test]
    fn get_ctl_and_rmid() {
        let mut qs = Queues::default();
        let mut names = MemfdNames::new();
        let limits = Limits { msgmni: 2, ..Limits::default() };
        let owner = user(1000, 0);
        let (id, _) = qs.get(77, 0, IPC_CREAT | 0o640, &owner, &limits, &mut names).unwrap();
        assert_eq!(qs.get(77, 0, 0, &owner, &limits, &mut names).unwrap().0, id);
        qs.get(0, 0, 0o600, &owner, &limits, &mut names).unwrap();
        assert_eq!(qs.get(0, 0, 0o600, &owner, &limits, &mut names).unwrap_err(), Errno(libc::ENOSPC));

        let (ret, f, _) = qs.ctl(id, IPC_STAT, &[], &owner, &limits).unwrap();
        assert_eq!(ret, 0);
        assert_eq!((f[0], f[1], f[5], f[7], f[8], f[9]), (77, 1000, 0o640, limits.msgmnb as i64, 0, 0));
        // Others without read permission; MSG_STAT_ANY needs none.
        let other = user(2000, 0);
        assert_eq!(qs.ctl(id, IPC_STAT, &[], &other, &limits).unwrap_err(), Errno(libc::EACCES));
        let index = split_id(id).unwrap().0 as i32;
        assert_eq!(qs.ctl(index, MSG_STAT_ANY, &[], &other, &limits).unwrap().0, id as i64);
        // IPC_SET: owner only; msg_qbytes above MSGMNB needs CAP_SYS_RESOURCE.
        let big = limits.msgmnb as i64 + 1;
        assert_eq!(qs.ctl(id, IPC_SET, &[1000, 1000, 0o600, 10], &other, &limits).unwrap_err(), Errno(libc::EPERM));
        assert_eq!(qs.ctl(id, IPC_SET, &[1000, 1000, 0o600, big], &owner, &limits).unwrap_err(), Errno(libc::EPERM));
        let admin = user(1000, 1 << CAP_SYS_RESOURCE);
        qs.ctl(id, IPC_SET, &[1000, 1000, 0o600, big], &admin, &limits).unwrap();
        let (_, f, _) = qs.ctl(id, IPC_STAT, &[], &owner, &limits).unwrap();
        assert_eq!((f[5], f[7]), (0o600, big));
        // IPC_INFO's fixed values, MSG_INFO's counts.
        let (_, f, _) = qs.ctl(0, IPC_INFO, &[], &other, &limits).unwrap();
        assert_eq!(f, vec![512000, 16384, 8192, 16384, 2, 16, 16384, 0xffff]);
        let (_, f, _) = qs.ctl(0, MSG_INFO, &[], &other, &limits).unwrap();
        assert_eq!((f[0], f[1], f[6]), (2, 0, 0));
        // The first open gives the queue its memory, with msg_qbytes as IPC_SET left it; from
        // then on IPC_SET and IPC_STAT use the header.
        assert!(qs.registry.by_id(id).unwrap().data.memfd().is_none());
        assert_eq!(qs.open(id, S_IWUGO, &other, &limits, &mut names).unwrap_err(), Errno(libc::EACCES));
        let (_, keep) = qs.open(id, S_IWUGO, &owner, &limits, &mut names).unwrap();
        let map = Mapping::map(keep.as_raw_fd(), HEADER_SIZE, true).unwrap();
        let h = unsafe { &*(map.as_ptr() as *const Header) };
        assert_eq!(h.qbytes.load(Relaxed), big as u64);
        qs.ctl(id, IPC_SET, &[1000, 1000, 0o600, 100], &owner, &limits).unwrap();
        assert_eq!(h.qbytes.load(Relaxed), 100);
        h.qnum.store(3, Relaxed);
        let (_, f, _) = qs.ctl(id, IPC_STAT, &[], &owner, &limits).unwrap();
        assert_eq!((f[7], f[8]), (100, 3));
        let (_, f, _) = qs.ctl(0, MSG_INFO, &[], &other, &limits).unwrap();
        assert_eq!(f[1], 3);
        h.qnum.store(0, Relaxed);
        // IPC_RMID marks the shared header removed (waiters see EIDRM), the id is gone.
        qs.ctl(id, IPC_RMID, &[], &owner, &limits).unwrap();
        assert_eq!(h.removed.load(Relaxed), 1);
        assert_eq!(qs.ctl(id, IPC_STAT, &[], &owner, &limits).unwrap_err(), Errno(libc::EINVAL));
        assert_eq!(qs.ctl(-1, IPC_INFO, &[], &owner, &limits).unwrap_err(), Errno(libc::EINVAL));
    }
}
