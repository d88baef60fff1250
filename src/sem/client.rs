//! The calls made in the process: semget's lookup of existing keys, semop/semtimedop and the
//! semctl commands on values (GETVAL, SETVAL, GETALL, SETALL, GETPID, GETNCNT, GETZCNT).
//!
//! Each set a process uses is mapped once (a `Handle`, found by the id's index in a
//! lock-free array). A single operation without SEM_UNDO on a semaphore nobody waits on is
//! one compare-and-swap on its word: no lock, no system call, no broker. With SEM_UNDO it is
//! a compare-and-swap that marks the word, then two stores (`undo_op`). Everything else
//! takes the set's robust lock (array.rs). Permission decisions are cached per handle,
//! keyed by the namespace table's version and the credentials' generation, so that the
//! check is two loads while nothing changes.

use super::array;
use super::layout::*;
use super::ops::*;
use crate::client::{client, creds, current_rights_key, rights_key};
use crate::ipc::handles::{pin, Counted, InUse, Pinned, Retired};
use crate::ipc::ids::{split_id, MAX_INDEX};
use crate::ipc::perm::{Perm, S_IRUGO, S_IWUGO};
use super::wait;
use crate::ipc::usercopy::{copy_from_user, copy_to_user};
use crate::ipc::{Errno, Family, Result, IPC_CREAT, IPC_EXCL, IPC_INFO, IPC_PRIVATE};
use crate::sys::Mapping;
use crate::wire::Op;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

const READ: u32 = 1;
const WRITE: u32 = 2;

/// One mapped set.
struct Handle {
    id: i32,
    mem: SetMem,
    _map: Mapping,
    /// Cached permission decision: rights (bits 0-1) | valid (bit 2) | creds generation
    /// (bits 3-24) | table version (bits 25-63).
    rights: AtomicU64,
    /// This process's undo slot: pid << 32 | slot (a slot below MARK_SLOTS).
    undo: AtomicU64,
    /// Threads of this process inside a call on the set beyond the lock-free fast path,
    /// sleeping or waiting for the set's lock (the mapping must outlive them).
    users: AtomicU32,
}

/// Index → handle. In .bss: pages are only made when touched.
static HANDLES: [AtomicPtr<Handle>; MAX_INDEX] = [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_INDEX];

/// Handles taken out of `HANDLES`, freed once no thread can still be using them.
static RETIRED: Retired<Handle> = Retired::new();

impl Counted for Handle {
    fn users(&self) -> &AtomicU32 {
        &self.users
    }
}

/// The mapped set with this id, if this process has it, pinned for the call.
#[inline(always)]
fn cached(id: i32) -> Option<Pinned<Handle>> {
    let (index, _) = split_id(id)?;
    let p = pin(HANDLES.get(index)?)?;
    (p.get().id == id).then_some(p)
}

/// Maps the set (the broker checks that we may read or alter it), pinned for the call.
fn open_handle(id: i32, nsems: u64) -> Result<Pinned<Handle>> {
    loop {
        install_handle(id, nsems)?;
        // Pinned unless replaced or retired meanwhile: then again (a removed set fails
        // the broker's check).
        if let Some(h) = cached(id) {
            return Ok(h);
        }
    }
}

fn install_handle(id: i32, nsems: u64) -> Result<()> {
    let (index, _) = split_id(id).ok_or(Errno(libc::EINVAL))?;
    let reply = client().request(&[Op::Open as i64, Family::Sem as i64, id as i64, (S_IRUGO | S_IWUGO) as i64])?;
    let size = usize::try_from(reply.word(1)?).map_err(|_| Errno(libc::EPROTO))?;
    let fd = reply.fd.ok_or(Errno(libc::EPROTO))?;
    let map = Mapping::map(fd.as_raw_fd(), size, true);
    // The mapping keeps the memfd; close it with the raw system call (glibc's close is a
    // cancellation point, semop/semctl are not).
    unsafe { libc::syscall(libc::SYS_close, fd.into_raw_fd()) };
    let map = map?;
    let mem = unsafe { SetMem::open(map.as_ptr(), size)? };
    if mem.geo.nsems as u64 != nsems {
        return Err(Errno(libc::EIDRM));
    }
    let h = Box::new(Handle {
        id,
        mem,
        _map: map,
        rights: AtomicU64::new(0),
        undo: AtomicU64::new(0),
        users: AtomicU32::new(0),
    });
    RETIRED.install(&HANDLES[index], h);
    Ok(())
}

fn rights_of(perm: &Perm) -> u32 {
    let c = creds::own();
    (if perm.allows(&c, S_IRUGO) { READ } else { 0 }) | (if perm.allows(&c, S_IWUGO) { WRITE } else { 0 })
}

/// The set as the namespace table describes it: (nsems, rights), EINVAL if it is gone.
fn lookup(id: i32) -> Result<(u64, u32)> {
    let table = client().table()?;
    let e = table.by_id(Family::Sem, id).map_err(|_| Errno(libc::EAGAIN))?.ok_or(Errno(libc::EINVAL))?;
    Ok((e.size, rights_of(&e.perm)))
}

/// The caller's rights on a mapped set, from the cache while the table and the
/// credentials are unchanged. EINVAL (and the handle retired) if the set is gone.
fn rights(h: &'static Handle) -> Result<u32> {
    let table = client().table()?;
    let version = table.version(Family::Sem);
    let key = rights_key(version);
    let c = h.rights.load(Relaxed);
    if c & !3 == key {
        return Ok((c & 3) as u32);
    }
    let entry = table.by_id(Family::Sem, h.id).map_err(|_| Errno(libc::EAGAIN))?;
    let Some(e) = entry else {
        if let Some((index, _)) = split_id(h.id) {
            RETIRED.take(&HANDLES[index], h);
        }
        return Err(Errno(libc::EINVAL));
    };
    let r = rights_of(&e.perm);
    if version & 1 == 0 && table.version(Family::Sem) == version {
        h.rights.store(key | r as u64, Relaxed);
    }
    Ok(r)
}

/// The set, its size and the caller's rights, checked in the kernel's order by the caller.
/// The handle is only made (a round trip) when the caller has some right.
struct Target {
    handle: Option<Pinned<Handle>>,
    nsems: u64,
    rights: u32,
}

fn target(id: i32) -> Result<Target> {
    if id < 0 {
        return Err(Errno(libc::EINVAL));
    }
    if let Some(p) = cached(id) {
        let h = p.get();
        return Ok(Target { nsems: h.mem.geo.nsems as u64, rights: rights(h)?, handle: Some(p) });
    }
    let (nsems, rights) = lookup(id)?;
    Ok(Target { handle: None, nsems, rights })
}

impl Target {
    /// The set, mapped on first use; pinned as long as the `Target` lives.
    fn handle(&mut self, id: i32) -> Result<&'static Handle> {
        if self.handle.is_none() {
            self.handle = Some(open_handle(id, self.nsems)?);
        }
        Ok(self.handle.as_ref().map(|p| p.get()).unwrap())
    }

    fn require(&self, need: u32) -> Result<()> {
        if self.rights & need != need {
            return Err(Errno(libc::EACCES));
        }
        Ok(())
    }
}

/// SEMOPM as the broker has it (for E2BIG), asked once.
pub fn semopm() -> Result<usize> {
    static SEMOPM: AtomicU64 = AtomicU64::new(0);
    let v = SEMOPM.load(Relaxed);
    if v != 0 {
        return Ok(v as usize);
    }
    let reply = client().request(&[Op::Ctl as i64, Family::Sem as i64, 0, IPC_INFO as i64])?;
    let v = reply.word(6)?.max(1) as u64;
    SEMOPM.store(v, Relaxed);
    Ok(v as usize)
}

/// semget: existing keys are found in the namespace table; everything that may create, or
/// fail in a way only the broker can tell (nsems above SEMMSL), asks the broker.
pub fn semget(key: i32, nsems: i32, flags: i32) -> Result<i32> {
    if nsems < 0 {
        return Err(Errno(libc::EINVAL));
    }
    if key != IPC_PRIVATE {
        if let Ok(Some(e)) = client().table()?.lookup_key(Family::Sem, key) {
            if nsems as u64 <= e.size {
                if flags & IPC_CREAT != 0 && flags & IPC_EXCL != 0 {
                    return Err(Errno(libc::EEXIST));
                }
                if !e.perm.allows(&creds::own(), (flags & 0o777) as u32) {
                    return Err(Errno(libc::EACCES));
                }
                return Ok(e.id());
            }
        }
    }
    let reply = client().request(&[Op::Get as i64, Family::Sem as i64, key as i64, flags as i64, nsems as i64])?;
    Ok(reply.word(0)? as i32)
}

/// semop/semtimedop after the argument checks of the C shim (E2BIG, EINVAL, EFAULT, the
/// timeout's validity).
pub fn semop(id: i32, ops: &[SemOp], timeout: Option<Duration>) -> Result<()> {
    let mut t = target(id)?;
    let max = ops.iter().map(|o| o.num).max().unwrap_or(0);
    if max as u64 >= t.nsems {
        return Err(Errno(libc::EFBIG));
    }
    t.require(if alters(ops) { WRITE } else { READ })?;
    let h = t.handle(id)?;
    if ops.len() == 1 {
        let fast = if !ops[0].undo() {
            single_op(h, ops[0])
        } else if undo_op(h, ops[0]) {
            Some(Ok(()))
        } else {
            None
        };
        match fast {
            Some(Err(Errno(libc::EAGAIN))) => {}
            Some(r) => return r,
            None => {}
        }
    }
    semop_locked(h, ops, timeout)
}

/// The checks of a single-operation semop answered from the caches (mapped set, permission
/// decision): the handle, or None to take the general path, which produces every error of
/// the checks in the kernel's order.
#[inline(always)]
fn cached_one(id: i32, op: SemOp) -> Option<Pinned<Handle>> {
    if id < 0 {
        return None;
    }
    let p = cached(id)?;
    let h = p.get();
    if op.num as u32 >= h.mem.geo.nsems {
        return None;
    }
    let key = current_rights_key(Family::Sem)?;
    let c = h.rights.load(Relaxed);
    let need = if op.op != 0 { WRITE } else { READ };
    if c & !3 != key || (c & 3) as u32 & need == 0 {
        return None;
    }
    Some(p)
}

/// semop of one operation on a word nobody waits on, without the lock: `single_op`, or
/// `undo_op` with SEM_UNDO. True if done; otherwise (an error too, which the general path
/// confirms in the kernel's order) nothing happened.
#[inline]
pub fn semop_fast(id: i32, op: SemOp) -> bool {
    let Some(pinned) = cached_one(id, op) else { return false };
    let h = pinned.get();
    if op.undo() {
        undo_op(h, op)
    } else {
        matches!(single_op(h, op), Some(Ok(())))
    }
}

/// semop of one operation, its checks answered from the caches, through the set's lock.
pub fn semop_cached(id: i32, op: SemOp) -> Option<Result<()>> {
    let pinned = cached_one(id, op)?;
    let h = pinned.get();
    if !op.undo() {
        match single_op(h, op) {
            Some(Err(Errno(libc::EAGAIN))) | None => {}
            r => return r,
        }
    }
    Some(semop_locked(h, std::slice::from_ref(&op), None))
}

/// The fast path: one operation on a semaphore no one waits on and the lock holder does not
/// hold, as one compare-and-swap. None: take the lock (it must wait, or someone waits).
#[inline(always)]
fn single_op(h: &Handle, op: SemOp) -> Option<Result<()>> {
    let word = h.mem.word(op.num as usize);
    let mut w = word.load(Acquire);
    loop {
        if w & FLAGS != 0 {
            return None;
        }
        let v = (w & VALUE_MASK) as i32;
        let result = v + op.op as i32;
        if op.op == 0 && v != 0 || result < 0 {
            return if op.nowait() { Some(Err(Errno(libc::EAGAIN))) } else { None };
        }
        if result > SEMVMX {
            return Some(Err(Errno(libc::ERANGE)));
        }
        if op.op == 0 {
            break;
        }
        match word.compare_exchange_weak(w, w & RESIDENT | result as u64, AcqRel, Acquire) {
            Ok(_) => break,
            Err(now) => w = now,
        }
    }
    record_op(h, op.num, creds::own_pid());
    Some(Ok(()))
}

/// The SEM_UNDO fast path: one operation that changes a semaphore no one waits on and the
/// lock holder does not hold, by a process whose undo slot in the set is known. The word
/// and the adjustment must change together even if we are killed half way.
///
/// When the word names our slot as resident (layout.rs), that is one compare-and-swap: the
/// value and our share of the adjustment are both in the word, and threads may share this
/// path. Otherwise (becoming resident, or another process's share is in the word), in a
/// process with one thread:
///
/// 1. compare-and-swap the word from its value to the same value plus a mark: our undo
///    slot and a tag, the opposite of the tag our adjustment cell carries now. While it is
///    marked nobody else writes the word (the lock holder waits for marks to go);
/// 2. store the cell: the new adjustment, the operation, and the mark's tag;
/// 3. store the word: the new value, unmarked.
///
/// Killed after 1, the word is marked and the cell still carries the old tag: nothing
/// happened. Killed after 2, the tags match: the broker adds the cell's operation to the
/// value (array.rs `resolve_marks`). Single-threaded only, because a thread killed between
/// 1 and 3 by another thread's execve would leave a mark in a process that lives on.
/// False: nothing done; take the general path (must wait, someone waits, an error, or an
/// adjustment out of range).
#[inline(always)]
fn undo_op(h: &Handle, op: SemOp) -> bool {
    if op.op == 0 {
        return false;
    }
    let pid = creds::own_pid();
    let cached = h.undo.load(Relaxed);
    if (cached >> 32) as i32 != pid {
        return false;
    }
    // `undo_slot` caches only slots below MARK_SLOTS and undo_slots; callers checked
    // op.num against nsems.
    let done = unsafe { undo_word(&h.mem, cached as u32 as usize, op, crate::ipc::thread::single_threaded) };
    if done {
        record_op(h, op.num, pid);
    }
    done
}

/// `undo_op`'s change of the word (and cell) for undo slot `slot`, true if done;
/// `single_threaded` says whether the marking protocol may run.
///
/// # Safety
/// `slot` below MARK_SLOTS and the set's undo_slots, `op.num` below its nsems.
#[inline(always)]
unsafe fn undo_word(mem: &SetMem, slot: usize, op: SemOp, single_threaded: impl Fn() -> bool) -> bool {
    let delta = op.op as i32;
    let word = unsafe { mem.word_unchecked(op.num as usize) };
    let mine = resident(slot, 0);
    let mut w = word.load(Acquire);
    loop {
        if w & FLAGS != 0 {
            return false;
        }
        let result = (w & VALUE_MASK) as i32 + delta;
        if !(0..=SEMVMX).contains(&result) {
            return false;
        }
        let changed = if w & RESIDENT_SLOT == mine {
            // While we are resident our cell cannot change (layout.rs), and it was checked
            // when we became resident: a share within RESIDENT_ADJ_MAX keeps the sum in
            // range without reading the cell.
            let share = resident_adj(w) - delta;
            if !(-RESIDENT_ADJ_MAX..=RESIDENT_ADJ_MAX).contains(&share) {
                return false;
            }
            word.compare_exchange_weak(w, mine | resident_share(share) | result as u64, AcqRel, Acquire).map(|_| ()).map_err(Some)
        } else {
            undo_not_resident(mem, word, slot, op.num as usize, w, delta, result, &single_threaded)
        };
        match changed {
            Ok(()) => return true,
            Err(Some(now)) => w = now,
            Err(None) => return false,
        }
    }
}

/// `undo_op` on a word that does not name us resident, once (steps 1-3): Err(Some(word))
/// if the word changed meanwhile (look again), Err(None) to take the lock. Out of line: the
/// resident's path is the common one and keeps its registers.
///
/// A word that names nobody with a share becomes ours: step 2 writes nothing, and step 3
/// stores the new value with us resident, if our cell is within RESIDENT_ADJ_MAX. Checked
/// under the mark, as the cell cannot change then (a lock holder waits for the mark to go):
/// a plain compare-and-swap would let one of our own locked calls (another thread, a signal
/// handler) change the cell and leave the word as it was between the check and the swap.
/// Killed before step 3, the cell's tag is not the mark's: nothing happened.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn undo_not_resident(
    mem: &SetMem,
    word: &AtomicU64,
    slot: usize,
    num: usize,
    w: u64,
    delta: i32,
    result: i32,
    single_threaded: impl Fn() -> bool,
) -> std::result::Result<(), Option<u64>> {
    // `undo_word`'s caller checked both indexes.
    let cell = unsafe { mem.cell_unchecked(slot, num) };
    if !single_threaded() {
        return Err(None);
    }
    let old = cell.load(Acquire);
    let adj = cell_adj(old) - delta;
    let becoming_resident = resident_adj(w) == 0;
    let fits = if becoming_resident {
        delta.abs() <= RESIDENT_ADJ_MAX && cell_adj(old).abs() <= RESIDENT_ADJ_MAX
    } else {
        delta.abs() <= CELL_OP_MAX && (-SEMAEM - 1..=SEMAEM).contains(&adj)
    };
    if !fits {
        return Err(None);
    }
    let tag = cell_tag(old) ^ 1;
    word.compare_exchange(w, w | mark(slot, tag), AcqRel, Acquire).map_err(Some)?;
    if cell.load(Acquire) != old {
        // A SETVAL cleared it between our read and the mark (leaving the same value):
        // unmark and start again.
        word.store(w, Release);
        return Err(Some(word.load(Acquire)));
    }
    if becoming_resident {
        word.store(resident(slot, -delta) | result as u64, Release);
    } else {
        cell.store(pending_cell(adj, delta, tag), Release);
        word.store(w & RESIDENT | result as u64, Release);
    }
    Ok(())
}

/// sempid and sem_otime after a lock-free operation (written only when they change, so
/// that the cache lines stay shared between processes taking turns).
#[inline(always)]
fn record_op(h: &Handle, num: u16, pid: i32) {
    // Callers checked num against nsems.
    let sempid = unsafe { h.mem.sempid_unchecked(num as usize) };
    if sempid.load(Relaxed) != pid {
        sempid.store(pid, Relaxed);
    }
    let otime = &h.mem.header().otime;
    let now = crate::ipc::now_secs();
    if otime.load(Relaxed) != now {
        otime.store(now, Relaxed);
    }
}

/// The kernel applies a process's SEM_UNDO adjustments (and drops its queued calls) before
/// anyone can see it dead; the broker does it when the process's pidfd says it died. So a
/// reader (GETVAL…, or a call about to fail with EAGAIN) that finds an owner of an undo slot
/// or of a queued call dead makes a round trip to the broker first, which handles every
/// death it has been told of before it answers: a parent that reaped (or sees the zombie
/// of) a child sees the child's undo applied. True if it asked the broker.
fn settle(h: &Handle) -> bool {
    let hd = h.mem.header();
    let (users, waiters) = (hd.undo_users.load(Acquire), hd.nwaiters.load(Acquire));
    if users == 0 && waiters == 0 {
        return false;
    }
    let me = creds::own_pid();
    let mut checked: Vec<i32> = Vec::new();
    let mut dead = |pid: i32| {
        if pid <= 0 || pid == me || checked.contains(&pid) {
            return false;
        }
        checked.push(pid);
        gone(pid)
    };
    let mut found = false;
    if users > 0 {
        found = (0..h.mem.geo.undo_slots as usize).any(|s| dead(h.mem.undo_pid(s).load(Acquire)));
    }
    if !found && waiters > 0 {
        found = (0..h.mem.geo.waiter_slots as usize).any(|s| {
            let w = h.mem.waiter(s);
            w.state.load(Acquire) == W_WAITING && dead(w.pid.load(Acquire))
        });
    }
    if found {
        let _ = client().request(&[Op::Status as i64]);
    }
    found
}

/// Whether a process has exited: gone, or a zombie child of ours.
fn gone(pid: i32) -> bool {
    if unsafe { libc::kill(pid, 0) } != 0 && Errno::last().0 == libc::ESRCH {
        return true;
    }
    // The raw system call: glibc's waitid is a cancellation point, semop is not.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    let r = unsafe { libc::syscall(libc::SYS_waitid, libc::P_PID, pid, &mut si as *mut libc::siginfo_t, flags, std::ptr::null_mut::<u8>()) };
    r == 0 && unsafe { si.si_pid() } == pid
}

/// This process's undo slot in the set (claimed under the lock on first use; per pid, so a
/// forked child gets its own).
fn undo_slot(h: &Handle, g: &array::Guard<'_>, pid: i32) -> Result<usize> {
    let c = h.undo.load(Acquire);
    if (c >> 32) as i32 == pid && c != 0 {
        let slot = (c & 0xffff_ffff) as usize;
        if slot < h.mem.geo.undo_slots as usize && h.mem.undo_pid(slot).load(Acquire) == pid {
            return Ok(slot);
        }
    }
    let slot = g.undo_slot(pid)?;
    // Only slots a word can name: the lock-free path takes the cached one as it is.
    if slot < MARK_SLOTS {
        h.undo.store((pid as u32 as u64) << 32 | slot as u64, Release);
    }
    Ok(slot)
}

fn semop_locked(h: &'static Handle, ops: &[SemOp], timeout: Option<Duration>) -> Result<()> {
    let _in_use = InUse::new(h);
    // A timeout too long to represent is no deadline at all (the kernel clamps it to
    // MAX_SCHEDULE_TIMEOUT, forever in practice).
    let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
    let pid = creds::own_pid();
    let wants_undo = ops.iter().any(|o| o.undo());
    // The broker must watch this process before it records an adjustment or queues a
    // call (so that its death undoes them), and before we hold the lock (the broker takes
    // it when a process dies).
    if wants_undo {
        client().ensure_registered()?;
    }
    let one;
    let many;
    let nums: &[u16] = if ops.len() == 1 {
        one = [ops[0].num];
        &one
    } else {
        many = distinct(ops);
        &many
    };
    let mut settled = false;
    // Set up (registration, wake-up socket) outside the lock, once we know we must sleep.
    let mut sleeper: Option<wait::Address> = None;
    let mut busy = 0;
    loop {
        let mut g = array::lock(&h.mem)?;
        if g.removed() {
            return Err(Errno(libc::EIDRM));
        }
        let undo = if wants_undo { Some(undo_slot(h, &g, pid)?) } else { None };
        let outcome = match g.semop(ops, nums, pid, undo) {
            Ok(outcome) => outcome,
            Err(b) => {
                drop(g);
                b.retry()?;
                array::back_off(busy);
                busy += 1;
                continue;
            }
        };
        match outcome {
            Outcome::Proceed => return Ok(()),
            Outcome::Fail(Errno(libc::EAGAIN)) if !settled => {
                drop(g);
                settled = true;
                if settle(h) {
                    continue;
                }
                return Err(Errno(libc::EAGAIN));
            }
            Outcome::Fail(e) => return Err(e),
            Outcome::Block { at } => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    g.abandon(nums);
                    return Err(Errno(libc::EAGAIN));
                }
                let Some(address) = sleeper else {
                    g.abandon(nums);
                    drop(g);
                    client().ensure_registered()?;
                    sleeper = Some(wait::prepare()?);
                    continue;
                };
                // Signals are held from here, lock in hand, until the sleep lets them in:
                // waiting for the lock itself (a stopped holder) stays interruptible.
                let held = wait::SignalsHeld::hold();
                let slot = g.enqueue(ops, nums, address, undo, at)?;
                drop(g);
                return sleep(h, slot, deadline, &held);
            }
        }
    }
}

/// Sleeps until a waker performed the call (or it failed, or the set was removed), the
/// deadline passed (EAGAIN) or a signal interrupted (EINTR).
fn sleep(h: &Handle, slot: usize, deadline: Option<Instant>, held: &wait::SignalsHeld) -> Result<()> {
    let w = h.mem.waiter(slot);
    let epoch = client().broker_epoch();
    loop {
        match w.state.load(Acquire) {
            W_WAITING => {}
            W_DONE => {
                w.state.store(W_FREE, Release);
                return Ok(());
            }
            W_ERROR => {
                let e = w.err.load(Acquire) as i32;
                w.state.store(W_FREE, Release);
                return Err(Errno(if e > 0 { e } else { libc::EIDRM }));
            }
            W_IDRM => {
                w.state.store(W_FREE, Release);
                return Err(Errno(libc::EIDRM));
            }
            _ => return Err(Errno(libc::EIDRM)),
        }
        // IPC_RMID marks the set removed and then wakes the waiters it counted: one that
        // queued meanwhile sees the flag here.
        if h.mem.header().removed.load(SeqCst) != 0 {
            let mut g = array::lock(&h.mem)?;
            if g.dequeue(slot) {
                return Err(Errno(libc::EIDRM));
            }
            continue;
        }
        match wait::sleep(deadline, held) {
            // A while without a wake-up: was the namespace rebooted under us? The set is
            // gone with it then.
            Ok(wait::Slept::TimedOut) if client().broker_lost(epoch) => {
                let _ = array::lock(&h.mem)?.dequeue(slot);
                return Err(Errno(libc::EIDRM));
            }
            Ok(_) => {}
            Err(Errno(libc::EBADF)) => {
                // The program closed our socket: make another, tell the wakers.
                match wait::prepare() {
                    Ok(a) => array::lock(&h.mem)?.readdress(slot, a),
                    Err(e) => {
                        if array::lock(&h.mem)?.dequeue(slot) {
                            return Err(e);
                        }
                    }
                }
            }
            Err(e) => {
                // Interrupted or timed out: leave the queue, unless a waker got there first.
                let mut g = array::lock(&h.mem)?;
                if g.dequeue(slot) {
                    return Err(e);
                }
            }
        }
    }
}

/// GETVAL, GETPID, GETNCNT, GETZCNT.
pub fn get_one(id: i32, semnum: i32, cmd: i32) -> Result<i32> {
    let mut t = target(id)?;
    t.require(READ)?;
    if semnum < 0 || semnum as u64 >= t.nsems {
        return Err(Errno(libc::EINVAL));
    }
    let h = t.handle(id)?;
    let _in_use = InUse::new(h);
    let _ = settle(h);
    let n = semnum as usize;
    Ok(match cmd {
        super::GETVAL => h.mem.value(n),
        super::GETPID => h.mem.sempid(n).load(Acquire),
        super::GETNCNT => array::counts(&h.mem, n).0,
        _ => array::counts(&h.mem, n).1,
    })
}

/// SETVAL (the value was checked by the caller).
pub fn setval(id: i32, semnum: i32, value: u16) -> Result<()> {
    let mut t = target(id)?;
    if semnum < 0 || semnum as u64 >= t.nsems {
        return Err(Errno(libc::EINVAL));
    }
    t.require(WRITE)?;
    let h = t.handle(id)?;
    let _in_use = InUse::new(h);
    set_values(h, &[(semnum as u16, value)])
}

/// SETVAL/SETALL under the lock, again after a `Busy::Marked`.
fn set_values(h: &Handle, values: &[(u16, u16)]) -> Result<()> {
    for attempt in 0.. {
        let mut g = array::lock(&h.mem)?;
        if g.removed() {
            return Err(Errno(libc::EIDRM));
        }
        match g.set_values(values, creds::own_pid()) {
            Ok(()) => break,
            Err(b) => {
                drop(g);
                b.retry()?;
            }
        }
        array::back_off(attempt);
    }
    Ok(())
}

/// GETALL into `out` (nsems entries).
///
/// # Safety
/// `out` is the caller's pointer: NULL or unwritable memory is EFAULT.
pub unsafe fn getall(id: i32, out: *mut u16) -> Result<()> {
    let mut t = target(id)?;
    t.require(READ)?;
    if out.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    let h = t.handle(id)?;
    let _in_use = InUse::new(h);
    let _ = settle(h);
    // Under the lock: a snapshot no multi-operation call is half way through.
    let g = array::lock(&h.mem)?;
    if g.removed() {
        return Err(Errno(libc::EIDRM));
    }
    let values: Vec<u16> = (0..h.mem.geo.nsems as usize).map(|n| h.mem.value(n) as u16).collect();
    drop(g);
    copy_to_user(out as *mut u8, values.as_ptr() as *const u8, values.len() * 2)
}

/// SETALL from `vals` (nsems entries).
///
/// # Safety
/// `vals` is the caller's pointer: NULL or unreadable memory is EFAULT.
pub unsafe fn setall(id: i32, vals: *const u16) -> Result<()> {
    let mut t = target(id)?;
    t.require(WRITE)?;
    let h = t.handle(id)?;
    let _in_use = InUse::new(h);
    let n = h.mem.geo.nsems as usize;
    let mut raw = vec![0u16; n];
    copy_from_user(raw.as_mut_ptr() as *mut u8, vals as *const u8, n * 2)?;
    if raw.iter().any(|&v| v as i32 > SEMVMX) {
        return Err(Errno(libc::ERANGE));
    }
    let values: Vec<(u16, u16)> = raw.into_iter().enumerate().map(|(i, v)| (i as u16, v)).collect();
    set_values(h, &values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sem::layout::test_set::new_set;
    use proptest::prelude::*;

    const NSEMS: usize = 2;

    #[derive(Clone, Debug)]
    enum Step {
        /// A single SEM_UNDO operation by process `p`: the lock-free path (`undo_word`,
        /// marking allowed or not), and the lock where it declines, as semop does.
        Undo { p: usize, num: u16, delta: i16, marking: bool },
        /// A two-operation call by `p` (the locked path), each operation with SEM_UNDO or not.
        Pair { p: usize, d0: i16, d1: i16, undo0: bool, undo1: bool },
        SetVal { num: u16, value: u16 },
        /// Process `p` dies; a new process takes its place.
        Die { p: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        let delta = prop_oneof![-3i16..0, 1i16..4];
        prop_oneof![
            6 => (0usize..3, 0u16..NSEMS as u16, delta.clone(), any::<bool>()).prop_map(|(p, num, delta, marking)| Step::Undo { p, num, delta, marking }),
            2 => (0usize..3, -2i16..3, -2i16..3, any::<bool>(), any::<bool>()).prop_map(|(p, d0, d1, undo0, undo1)| Step::Pair { p, d0, d1, undo0, undo1 }),
            1 => (0u16..NSEMS as u16, 0u16..6).prop_map(|(num, value)| Step::SetVal { num, value }),
            1 => (0usize..3).prop_map(|p| Step::Die { p }),
        ]
    }

    /// All or nothing, as the kernel: the call's values and adjustments afterwards, or None
    /// if it fails or would wait.
    fn model_call(values: &[i32], adj: &[i32], ops: &[SemOp]) -> Option<(Vec<i32>, Vec<i32>)> {
        let (mut v, mut a) = (values.to_vec(), adj.to_vec());
        for o in ops {
            let n = o.num as usize;
            let result = v[n] + o.op as i32;
            if o.op == 0 && v[n] != 0 || !(0..=SEMVMX).contains(&result) || o.undo() && !(-SEMAEM - 1..=SEMAEM).contains(&(a[n] - o.op as i32)) {
                return None;
            }
            v[n] = result;
            if o.undo() {
                a[n] -= o.op as i32;
            }
        }
        Some((v, a))
    }

    proptest! {
        /// Processes taking and giving back units with SEM_UNDO through every path (the
        /// resident's compare-and-swap, taking residency, marking, the lock), SETVAL and
        /// deaths, against a model of values and per-process adjustments: after every step
        /// the set's values and each live process's adjustment (cell + resident share) are
        /// the model's, and no word is left frozen or marked.
        #[test]
        fn undo_paths_match_the_model(start in proptest::collection::vec(0i32..5, NSEMS), steps in proptest::collection::vec(step(), 1..60)) {
            let s = new_set(NSEMS as u32);
            let m = &s.mem;
            let mut values = start.clone();
            let init: Vec<(u16, u16)> = start.iter().enumerate().map(|(n, &v)| (n as u16, v as u16)).collect();
            array::lock(m).unwrap().set_values(&init, 1).unwrap();
            let mut pids = [40, 41, 42];
            let mut next_pid = 43;
            let mut adj = [[0i32; NSEMS]; 3];
            for st in steps {
                let slot = |p: usize| array::lock(m).unwrap().undo_slot(pids[p]).unwrap();
                match st {
                    Step::Undo { p, num, delta, marking } => {
                        let slot = slot(p);
                        let op = SemOp { num, op: delta, flg: crate::sem::ops::SEM_UNDO | crate::sem::ops::IPC_NOWAIT };
                        let want = model_call(&values, &adj[p], &[op]);
                        let done = unsafe { undo_word(m, slot, op, || marking) }
                            || matches!(array::lock(m).unwrap().semop(&[op], &[num], pids[p], Some(slot)), Ok(Outcome::Proceed));
                        prop_assert_eq!(done, want.is_some(), "{:?}", st);
                        if let Some((v, a)) = want {
                            values = v;
                            adj[p] = a.try_into().unwrap();
                        }
                    }
                    Step::Pair { p, d0, d1, undo0, undo1 } => {
                        let slot = slot(p);
                        let flg = |u: bool| crate::sem::ops::IPC_NOWAIT | if u { crate::sem::ops::SEM_UNDO } else { 0 };
                        let ops = [SemOp { num: 0, op: d0, flg: flg(undo0) }, SemOp { num: 1, op: d1, flg: flg(undo1) }];
                        let want = model_call(&values, &adj[p], &ops);
                        let got = array::lock(m).unwrap().semop(&ops, &[0, 1], pids[p], Some(slot)).unwrap();
                        prop_assert_eq!(got == Outcome::Proceed, want.is_some(), "{:?}", st);
                        if let Some((v, a)) = want {
                            values = v;
                            adj[p] = a.try_into().unwrap();
                        }
                    }
                    Step::SetVal { num, value } => {
                        array::lock(m).unwrap().set_values(&[(num, value)], 1).unwrap();
                        values[num as usize] = value as i32;
                        for a in adj.iter_mut() {
                            a[num as usize] = 0;
                        }
                    }
                    Step::Die { p } => {
                        prop_assert!(array::lock(m).unwrap().process_died(pids[p]));
                        for n in 0..NSEMS {
                            values[n] = (values[n] + adj[p][n]).clamp(0, SEMVMX);
                        }
                        adj[p] = [0; NSEMS];
                        pids[p] = next_pid;
                        next_pid += 1;
                    }
                }
                for n in 0..NSEMS {
                    prop_assert_eq!(m.value(n), values[n], "value {} after {:?}", n, st);
                    prop_assert_eq!(m.word(n).load(Relaxed) & (FROZEN | MARK), 0);
                }
                // Without claiming slots: a dead process's slot stays free until a process
                // that operates claims it.
                for p in 0..3 {
                    let Some(slot) = (0..m.geo.undo_slots as usize).find(|&s| m.undo_pid(s).load(Relaxed) == pids[p]) else {
                        prop_assert_eq!(adj[p], [0; NSEMS]);
                        continue;
                    };
                    for n in 0..NSEMS {
                        prop_assert_eq!(m.adj(slot, n), adj[p][n], "adjustment of process {} on {} after {:?}", p, n, st);
                    }
                }
            }
        }
    }
}
