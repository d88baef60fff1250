//! A set's operations under its lock, on the shared memory, shared by clients (semop,
//! SETVAL, SETALL) and the broker (a process's death): the kernel's
//! `perform_atomic_semop` + `do_smart_update`/`update_queue` + `exit_sem` (ipc/sem.c).
//!
//! Crash safety: every change the critical section makes to values, adjustments and
//! waiter states is first written to the set's journal (absolute words), marked committed,
//! then applied, then the journal is cleared. A process killed anywhere leaves either an
//! uncommitted journal (nothing happened) or a committed one that the next locker, told
//! `Recovered` by the robust mutex, replays; it then recounts the waiters, recomputes the
//! WATCHED/FROZEN bits and retries the waiters (a waker may have died half way).
//!
//! Lock-free single operations (see client.rs) may change a word whose flags are clear at
//! any time; so the lock holder freezes every word it reads to change it. A word marked by
//! a lock-free SEM_UNDO operation belongs to that operation for a few instructions: the lock
//! holder waits for the mark to go before freezing it, and if it does not go (its owner is
//! preempted, stopped or dead), gives up the lock (`Busy`) and tries again, so that the
//! broker, which resolves the marks of the dead, can take it. A mark of the holder's own
//! thread (a signal handler's call on the semaphore whose operation it interrupted) never
//! goes while it waits: that call fails with EDEADLK.
//!
//! A word's resident adjustment (layout.rs) is part of its resident's adjustment: every
//! journal that writes a word (which clears the resident) moves that share into the
//! resident's cell in the same journal (`fold_resident`).

use super::layout::*;
use super::ops::{alters, distinct, evaluate, Outcome, SemOp, Touched, SEMVMX};
use super::wait::{self, Address};
use crate::ipc::sync::Locked;
use crate::ipc::{Errno, Result};
use std::sync::atomic::Ordering::*;

/// A word the caller needs is marked by a lock-free SEM_UNDO operation that will not finish
/// while the caller waits. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// By another process's, which did not finish within a few microseconds (preempted,
    /// stopped or dead): release the lock and try again.
    Marked,
    /// By this thread's own operation, which a signal handler interrupted to make this
    /// call: it cannot go on before the handler returns, so the call fails with EDEADLK.
    Nested,
}

impl Busy {
    /// For a caller that retries: Err(EDEADLK) when retrying cannot help.
    pub fn retry(self) -> Result<()> {
        match self {
            Busy::Marked => Ok(()),
            Busy::Nested => Err(Errno(libc::EDEADLK)),
        }
    }
}

/// How long a lock holder waits for a mark to go before it reports `Busy`.
const MARK_SPINS: u32 = 100;
const MARK_YIELDS: u32 = 20;

/// The pause after `Busy` before taking the lock again (`attempt` counts from 0).
pub fn back_off(attempt: u32) {
    if attempt < 10 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

pub struct Guard<'a> {
    mem: &'a SetMem,
    /// Sleepers to wake once the lock is released.
    wake: Vec<Address>,
}

/// Takes the set's lock, repairing the set first if the last holder died in it.
pub fn lock(mem: &SetMem) -> Result<Guard<'_>> {
    let recovered = matches!(mem.header().mutex.lock()?, Locked::Recovered);
    let mut g = Guard { mem, wake: Vec::new() };
    if recovered {
        g.recover();
    }
    Ok(g)
}

/// `lock` without waiting: None while another holds the lock. With `recover_dead`, a lock
/// whose holder died is taken over (costs a look at the holder when the lock is held).
pub fn try_lock(mem: &SetMem, recover_dead: bool) -> Option<Result<Guard<'_>>> {
    let m = &mem.header().mutex;
    let r = if recover_dead { m.try_lock_or_recover() } else { m.try_lock() }?;
    Some(r.map(|l| {
        let mut g = Guard { mem, wake: Vec::new() };
        if matches!(l, Locked::Recovered) {
            g.recover();
        }
        g
    }))
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.mem.header().mutex.unlock();
        for &a in &self.wake {
            wait::wake(a);
        }
    }
}

/// The wake-up address of the sleeper in a waiter slot.
pub fn address(mem: &SetMem, slot: usize) -> Address {
    let w = mem.waiter(slot);
    Address { pid: w.pid.load(Acquire), tid: w.tid.load(Acquire), nonce: w.nonce.load(Acquire) }
}

fn entry(offset: usize, word: u32) -> u64 {
    (offset as u64) << 32 | word as u64
}

/// Marks the set removed and wakes every waiter with EIDRM (no lock needed: each waiter's
/// state moves from WAITING to IDRM with one compare-and-swap).
pub fn mark_removed(mem: &SetMem) {
    mem.header().removed.store(1, SeqCst);
    if mem.header().nwaiters.load(SeqCst) == 0 {
        // Nobody queued (a waiter counts itself, under the lock, before it sleeps; one
        // that queues after this sees the flag under the lock).
        return;
    }
    for slot in 0..mem.geo.waiter_slots as usize {
        let w = mem.waiter(slot);
        if w.state.compare_exchange(W_WAITING, W_IDRM, AcqRel, Acquire).is_ok() {
            wait::wake(address(mem, slot));
        }
    }
}

/// (GETNCNT, GETZCNT) of one semaphore: the waiters whose blocking operation is on it.
pub fn counts(mem: &SetMem, num: usize) -> (i32, i32) {
    let (mut n, mut z) = (0, 0);
    if mem.header().nwaiters.load(Acquire) == 0 {
        return (0, 0);
    }
    for slot in 0..mem.geo.waiter_slots as usize {
        let w = mem.waiter(slot);
        if w.state.load(Acquire) != W_WAITING {
            continue;
        }
        let b = w.blocking.load(Acquire);
        if (b & !BLOCK_ZERO) as usize == num {
            if b & BLOCK_ZERO != 0 {
                z += 1;
            } else {
                n += 1;
            }
        }
    }
    (n, z)
}

impl Guard<'_> {
    pub fn removed(&self) -> bool {
        self.mem.header().removed.load(Acquire) != 0
    }

    /// Freezes a word and returns its value; Busy if a lock-free SEM_UNDO operation holds
    /// it too long.
    fn freeze(&self, num: usize) -> std::result::Result<i32, Busy> {
        let word = self.mem.word(num);
        let mut waited = 0;
        let mut w = word.load(Acquire);
        loop {
            if w & MARK != 0 {
                if !self.strip_impossible_mark(num, w) {
                    // At once: a handler that spent the spins here would take longer than
                    // a fast timer's tick, and the next one would come before the
                    // interrupted call could go on.
                    if waited == 0 && self.marked_by_this_thread(w) {
                        return Err(Busy::Nested);
                    }
                    waited += 1;
                    if waited > MARK_SPINS + MARK_YIELDS {
                        if self.owner_gone(w) {
                            waited = 0;
                            continue;
                        }
                        return Err(Busy::Marked);
                    }
                    if waited > MARK_SPINS {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
                w = word.load(Acquire);
                continue;
            }
            match word.compare_exchange_weak(w, w | FROZEN, AcqRel, Acquire) {
                Ok(_) => return Ok(((w & VALUE_MASK) as i32).min(SEMVMX)),
                Err(now) => w = now,
            }
        }
    }

    /// Freezes the semaphores of `nums` in order, or none of them.
    fn freeze_all(&self, nums: &[u16]) -> std::result::Result<Vec<i32>, Busy> {
        let mut values = Vec::with_capacity(nums.len());
        for (i, &n) in nums.iter().enumerate() {
            match self.freeze(n as usize) {
                Ok(v) => values.push(v),
                Err(b) => {
                    self.unfreeze(&nums[..i]);
                    return Err(b);
                }
            }
        }
        Ok(values)
    }

    /// Clears a mark that no live operation can have made (garbage in shared memory): one
    /// naming a free or impossible undo slot, or on a word a lock-free path could not have
    /// marked (watched or frozen). The value is kept. True if the word changed or was
    /// cleared (look again).
    fn strip_impossible_mark(&self, num: usize, w: u64) -> bool {
        let genuine = match mark_slot(w) {
            Some(s) => {
                w & (WATCHED | FROZEN) == 0
                    && s < (self.mem.geo.undo_slots as usize).min(MARK_SLOTS)
                    && self.mem.undo_pid(s).load(Acquire) > 0
            }
            None => false,
        };
        if genuine {
            return false;
        }
        let _ = self.mem.word(num).compare_exchange(w, w & !MARK, AcqRel, Acquire);
        true
    }

    /// Whether the owner of a mark that stays is gone (dead, a zombie, or a pid no process
    /// has: garbage): then its marks are resolved now, without waiting for the broker. Our
    /// own marks are never gone: a signal handler may have interrupted us in the window.
    /// Whether a mark was made by the thread that finds it: our pid's, in a process that
    /// has one thread (a lock-free operation marks only then, and a process once
    /// multi-threaded stays so). Its operation is then interrupted below us, by the signal
    /// handler that made this call.
    fn marked_by_this_thread(&self, w: u64) -> bool {
        let Some(slot) = mark_slot(w) else { return false };
        crate::ipc::thread::single_threaded() && self.mem.undo_pid(slot).load(Acquire) == unsafe { libc::getpid() }
    }

    fn owner_gone(&self, w: u64) -> bool {
        let Some(slot) = mark_slot(w) else { return true };
        let pid = self.mem.undo_pid(slot).load(Acquire);
        if pid <= 0 || pid == unsafe { libc::getpid() } || !crate::ipc::sync::holder_gone(pid as u32, 0) {
            return false;
        }
        self.resolve_marks(slot);
        true
    }

    /// Finishes or drops the lock-free SEM_UNDO operations undo slot `slot` left half done
    /// (its owner is dead, or every thread that could hold the mark is): where the owner's
    /// cell carries the mark's tag the adjustment was written and the value is updated to
    /// match; otherwise neither changed. Either way the mark goes.
    fn resolve_marks(&self, slot: usize) {
        for num in 0..self.mem.geo.nsems as usize {
            let word = self.mem.word(num);
            let w = word.load(Acquire);
            if mark_slot(w) != Some(slot) {
                continue;
            }
            let v = (w & VALUE_MASK) as i32;
            let cell = self.mem.cell(slot, num).load(Acquire);
            let tag = (w & MARK_TAG != 0) as u32;
            let value = if cell_tag(cell) == tag { (v + cell_op(cell)).clamp(0, SEMVMX) } else { v };
            let _ = word.compare_exchange(w, (w & !(MARK | VALUE_MASK)) | value as u64, AcqRel, Acquire);
        }
    }

    fn unfreeze(&self, nums: &[u16]) {
        for &n in nums {
            self.mem.word(n as usize).fetch_and(!FROZEN, Release);
        }
    }

    fn watched(&self, num: usize) -> u32 {
        (self.mem.word(num).load(Acquire) & WATCHED) as u32
    }

    /// The journal entry that moves the resident's share of frozen word `num` into its
    /// cell, for a journal that writes the word on behalf of undo slot `writer` (whose own
    /// share the caller counted in its adjustment). None: nothing to move, or a resident no
    /// live process has (garbage, dropped with the write).
    fn fold_resident(&self, num: usize, writer: Option<usize>) -> Option<u64> {
        let w = self.mem.word(num).load(Acquire);
        let r = resident_slot(w)?;
        let share = resident_adj(w);
        if share == 0 || Some(r) == writer || r >= self.mem.geo.undo_slots as usize || self.mem.undo_pid(r).load(Acquire) == 0 {
            return None;
        }
        let adj = cell_adj(self.mem.cell(r, num).load(Acquire)) + share;
        Some(entry(self.mem.geo.adj_offset(r, num), adj_cell(adj)))
    }

    /// Writes the journal, commits it, applies it, clears it. The words it writes stay
    /// frozen until the journal is clear: a holder killed before that leaves them frozen, so
    /// that no lock-free operation changes a word the next locker's replay will store again.
    fn commit(&self, kind: u32, entries: &[u64]) {
        let h = self.mem.header();
        let n = entries.len().min(self.mem.geo.journal_cap);
        for (i, &e) in entries[..n].iter().enumerate() {
            self.mem.journal_entry(i).store(e, Relaxed);
        }
        h.journal_kind.store(kind, Relaxed);
        h.journal_count.store(n as u32, Relaxed);
        h.journal_state.store(J_COMMITTED, Release);
        if kind == J_WRITES && n == entries.len() {
            // What replay would read back from the journal: apply from our copy.
            for &e in entries {
                self.apply_write((e >> 32) as usize, e as u32, FROZEN);
            }
        } else {
            self.replay(FROZEN);
        }
        h.journal_state.store(J_EMPTY, Release);
        for &e in entries {
            let num = match kind {
                J_SET => Some((e >> 32) as usize).filter(|&n| n < self.mem.geo.nsems as usize),
                _ => self.word_num((e >> 32) as usize),
            };
            if let Some(num) = num {
                self.mem.word(num).fetch_and(!FROZEN, Release);
            }
        }
    }

    /// The semaphore whose word is at byte offset `off`, if it is one.
    fn word_num(&self, off: usize) -> Option<usize> {
        let rel = off.checked_sub(self.mem.geo.values)?;
        (rel % 8 == 0 && rel / 8 < self.mem.geo.nsems as usize).then_some(rel / 8)
    }

    /// One (offset, word) write of a J_WRITES journal. A semaphore's word gets `hold` too,
    /// and loses its resident (the journal moved its share: `fold_resident`).
    fn apply_write(&self, off: usize, val: u32, hold: u64) {
        if let Some(num) = self.word_num(off) {
            self.mem.word(num).store(val as u64 | hold, Release);
        } else if let Some(w) = self.mem.u32_at(off) {
            w.store(val, Release);
        }
    }

    /// Applies the journal (idempotent: absolute values), semaphore words with `hold`.
    /// Entries pointing outside the data area are ignored.
    fn replay(&self, hold: u64) {
        let h = self.mem.header();
        let count = (h.journal_count.load(Acquire) as usize).min(self.mem.geo.journal_cap);
        let kind = h.journal_kind.load(Acquire);
        for i in 0..count {
            let e = self.mem.journal_entry(i).load(Acquire);
            let (off, val) = ((e >> 32) as usize, e as u32);
            match kind {
                J_WRITES => self.apply_write(off, val, hold),
                J_SET if off < self.mem.geo.nsems as usize => {
                    for slot in 0..self.mem.geo.undo_slots as usize {
                        if self.mem.undo_pid(slot).load(Acquire) != 0 {
                            self.mem.cell(slot, off).store(0, Release);
                        }
                    }
                    let word = self.mem.word(off);
                    let watched = word.load(Acquire) & WATCHED;
                    word.store((val as u64 & VALUE_MASK).min(SEMVMX as u64) | watched | hold, Release);
                }
                _ => {}
            }
        }
    }

    /// After the last holder died: finish or drop its journal, recount the waiters,
    /// recompute every word's flags, wake sleepers whose wake-up may have been lost, and
    /// retry the waiters.
    fn recover(&mut self) {
        let h = self.mem.header();
        if h.journal_state.load(Acquire) == J_COMMITTED {
            // Its words are still frozen (see commit); the flags are recomputed below.
            self.replay(0);
        }
        h.journal_state.store(J_EMPTY, Release);
        let nsems = self.mem.geo.nsems as usize;
        let mut watched = vec![false; nsems];
        let mut count = 0;
        for slot in 0..self.mem.geo.waiter_slots as usize {
            let w = self.mem.waiter(slot);
            match w.state.load(Acquire) {
                W_FREE => {}
                W_WAITING => match self.read_ops(slot) {
                    Some(ops) => {
                        count += 1;
                        for o in ops {
                            watched[o.num as usize] = true;
                        }
                    }
                    None => w.state.store(W_FREE, Release),
                },
                _ => self.wake.push(address(self.mem, slot)),
            }
        }
        for (num, &watch) in watched.iter().enumerate() {
            let _ = self.mem.word(num).fetch_update(AcqRel, Acquire, |w| {
                if w & MARK != 0 && w & (WATCHED | FROZEN) == 0 && !watch {
                    // A lock-free SEM_UNDO operation in progress: its owner's word.
                    return None;
                }
                let v = (w & VALUE_MASK).min(SEMVMX as u64) | w & RESIDENT;
                Some(if watch { v | WATCHED } else { v })
            });
        }
        h.nwaiters.store(count, Release);
        let users = (0..self.mem.geo.undo_slots as usize).filter(|&s| self.mem.undo_pid(s).load(Acquire) != 0).count();
        h.undo_users.store(users as u32, Release);
        self.update_queue();
    }

    /// A waiter slot's operations, validated against the geometry.
    fn read_ops(&self, slot: usize) -> Option<Vec<SemOp>> {
        let w = self.mem.waiter(slot);
        let n = w.nsops.load(Acquire) as usize;
        if n == 0 || n > self.mem.geo.max_ops as usize {
            return None;
        }
        let ops: Vec<SemOp> = (0..n).map(|i| SemOp::unpack(self.mem.waiter_op(slot, i).load(Acquire))).collect();
        if ops.iter().any(|o| o.num as u32 >= self.mem.geo.nsems) {
            return None;
        }
        Some(ops)
    }

    /// A waiter's undo slot: Ok(None) without one, Err for a corrupt index.
    fn waiter_undo(&self, slot: usize) -> std::result::Result<Option<usize>, ()> {
        match self.mem.waiter(slot).undo.load(Acquire) {
            u32::MAX => Ok(None),
            u if u < self.mem.geo.undo_slots => Ok(Some(u as usize)),
            _ => Err(()),
        }
    }

    /// Reads (and freezes) the semaphores of a call, with the adjustments of `undo`.
    fn touched(&self, nums: &[u16], undo: Option<usize>) -> std::result::Result<Vec<Touched>, Busy> {
        let values = self.freeze_all(nums)?;
        Ok(nums
            .iter()
            .zip(values)
            .map(|(&n, value)| Touched { num: n, value, adj: undo.map(|s| self.mem.adj(s, n as usize)).unwrap_or(0) })
            .collect())
    }

    /// The journal entries that store the results of a call.
    fn result_entries(&self, touched: &[Touched], undo: Option<usize>) -> Vec<u64> {
        let mut out = Vec::with_capacity(touched.len() * 3 + 1);
        for t in touched {
            self.push_result(&mut out, t, undo);
        }
        out
    }

    /// The entries that store one touched semaphore's value (and the caller's adjustment).
    fn push_result(&self, out: &mut impl Extend<u64>, t: &Touched, undo: Option<usize>) {
        let geo = &self.mem.geo;
        let n = t.num as usize;
        out.extend(self.fold_resident(n, undo));
        out.extend([entry(geo.word_offset(n), t.value as u32 | self.watched(n))]);
        if let Some(s) = undo {
            out.extend([entry(geo.adj_offset(s, n), adj_cell(t.adj))]);
        }
    }

    fn record_op(&self, touched: &[Touched], pid: i32) {
        for t in touched {
            self.mem.sempid(t.num as usize).store(pid, Relaxed);
        }
        self.mem.header().otime.store(crate::ipc::now_secs(), Relaxed);
    }

    /// A semop call by `pid` (ops already checked against nsems). On Proceed it is done;
    /// on Block the words stay frozen for `enqueue` (or `abandon`); Busy changed nothing.
    pub fn semop(&mut self, ops: &[SemOp], nums: &[u16], pid: i32, undo: Option<usize>) -> std::result::Result<Outcome, Busy> {
        if let [op] = ops {
            return self.semop_one(*op, pid, undo);
        }
        let mut touched = self.touched(nums, undo)?;
        let outcome = evaluate(ops, &mut touched);
        match outcome {
            Outcome::Proceed => {
                let entries = self.result_entries(&touched, undo);
                self.commit(J_WRITES, &entries);
                self.record_op(&touched, pid);
                if alters(ops) && self.mem.header().nwaiters.load(Acquire) > 0 {
                    self.update_queue();
                }
            }
            Outcome::Fail(_) => self.unfreeze(nums),
            Outcome::Block { .. } => {}
        }
        Ok(outcome)
    }

    /// `semop` of a single operation, without allocating.
    fn semop_one(&mut self, op: SemOp, pid: i32, undo: Option<usize>) -> std::result::Result<Outcome, Busy> {
        let n = op.num as usize;
        let value = self.freeze(n)?;
        let mut touched = [Touched { num: op.num, value, adj: undo.map(|s| self.mem.adj(s, n)).unwrap_or(0) }];
        let outcome = evaluate(std::slice::from_ref(&op), &mut touched);
        match outcome {
            Outcome::Proceed => {
                let mut entries = Entries { e: [0; 3], len: 0 };
                self.push_result(&mut entries, &touched[0], undo);
                self.commit(J_WRITES, &entries.e[..entries.len]);
                self.record_op(&touched, pid);
                if op.op != 0 && self.mem.header().nwaiters.load(Acquire) > 0 {
                    self.update_queue();
                }
            }
            Outcome::Fail(_) => self.unfreeze(&[op.num]),
            Outcome::Block { .. } => {}
        }
        Ok(outcome)
    }

    /// Gives up a blocked call without queueing it.
    pub fn abandon(&self, nums: &[u16]) {
        self.unfreeze(nums);
    }

    /// Queues a blocked call (its words are frozen by `semop`). Returns the waiter slot.
    pub fn enqueue(&mut self, ops: &[SemOp], nums: &[u16], sleeper: Address, undo: Option<usize>, at: usize) -> Result<usize> {
        let geo = self.mem.geo;
        if ops.len() > geo.max_ops as usize {
            self.unfreeze(nums);
            return Err(Errno(libc::E2BIG));
        }
        let Some(slot) = (0..geo.waiter_slots as usize).find(|&s| self.mem.waiter(s).state.load(Acquire) == W_FREE) else {
            self.unfreeze(nums);
            return Err(Errno(libc::ENOMEM));
        };
        let h = self.mem.header();
        let w = self.mem.waiter(slot);
        for (i, o) in ops.iter().enumerate() {
            self.mem.waiter_op(slot, i).store(o.pack(), Relaxed);
        }
        w.nsops.store(ops.len() as u32, Relaxed);
        w.pid.store(sleeper.pid, Relaxed);
        w.tid.store(sleeper.tid, Relaxed);
        w.nonce.store(sleeper.nonce, Relaxed);
        w.undo.store(undo.map(|u| u as u32).unwrap_or(u32::MAX), Relaxed);
        w.ticket.store(h.next_ticket.fetch_add(1, Relaxed), Relaxed);
        w.blocking.store(blocking_of(&ops[at]), Relaxed);
        w.err.store(0, Relaxed);
        for &n in nums {
            self.mem.word(n as usize).fetch_or(WATCHED, AcqRel);
        }
        h.nwaiters.fetch_add(1, SeqCst);
        w.state.store(W_WAITING, Release);
        self.unfreeze(nums);
        Ok(slot)
    }

    /// A sleeper's new wake-up address (its socket had to be made again).
    pub fn readdress(&self, slot: usize, a: Address) {
        let w = self.mem.waiter(slot);
        w.tid.store(a.tid, Release);
        w.nonce.store(a.nonce, Release);
    }

    /// Takes a still-waiting call out of the queue (timeout, signal). False if a waker or
    /// IPC_RMID got to it first.
    pub fn dequeue(&mut self, slot: usize) -> bool {
        let w = self.mem.waiter(slot);
        if w.state.load(Acquire) != W_WAITING {
            return false;
        }
        let nums = self.read_ops(slot).map(|o| distinct(&o)).unwrap_or_default();
        w.state.store(W_FREE, Release);
        self.mem.header().nwaiters.fetch_sub(1, AcqRel);
        self.rewatch(&nums);
        true
    }

    /// Clears WATCHED on those of `nums` no waiting call names any more.
    fn rewatch(&self, nums: &[u16]) {
        if nums.is_empty() {
            return;
        }
        let mut still = vec![false; nums.len()];
        if self.mem.header().nwaiters.load(Acquire) > 0 {
            for slot in 0..self.mem.geo.waiter_slots as usize {
                if self.mem.waiter(slot).state.load(Acquire) != W_WAITING {
                    continue;
                }
                for o in self.read_ops(slot).unwrap_or_default() {
                    if let Some(p) = nums.iter().position(|&n| n == o.num) {
                        still[p] = true;
                    }
                }
            }
        }
        for (i, &n) in nums.iter().enumerate() {
            if !still[i] {
                self.mem.word(n as usize).fetch_and(!WATCHED, AcqRel);
            }
        }
    }

    fn finish_waiter(&mut self, slot: usize, nums: &[u16]) {
        self.mem.header().nwaiters.fetch_sub(1, AcqRel);
        self.rewatch(nums);
        self.wake.push(address(self.mem, slot));
    }

    /// `update_queue`: retries the queued calls, oldest first, the wait-for-zero calls
    /// before the altering ones (as the kernel wakes `pending_const` first), performing each
    /// that can now proceed on its owner's behalf; after a call that altered values, starts
    /// again from the oldest. No call is passed over for a younger one that asks for less
    /// unless it cannot proceed itself: no starvation of small requests, FIFO among equals.
    pub fn update_queue(&mut self) {
        'again: loop {
            if self.mem.header().nwaiters.load(Acquire) == 0 {
                return;
            }
            let mut order: Vec<(u64, usize)> = (0..self.mem.geo.waiter_slots as usize)
                .filter(|&s| self.mem.waiter(s).state.load(Acquire) == W_WAITING)
                .map(|s| (self.mem.waiter(s).ticket.load(Acquire), s))
                .collect();
            order.sort_unstable();
            for pass_alter in [false, true] {
                for &(_, slot) in &order {
                    let w = self.mem.waiter(slot);
                    if w.state.load(Acquire) != W_WAITING {
                        continue;
                    }
                    let Some(ops) = self.read_ops(slot) else {
                        w.state.store(W_FREE, Release);
                        self.mem.header().nwaiters.fetch_sub(1, AcqRel);
                        continue;
                    };
                    if alters(&ops) != pass_alter {
                        continue;
                    }
                    let nums = distinct(&ops);
                    let Ok(undo) = self.waiter_undo(slot) else {
                        w.err.store(libc::EIDRM as u32, Release);
                        w.state.store(W_ERROR, Release);
                        self.finish_waiter(slot, &nums);
                        continue;
                    };
                    let pid = w.pid.load(Acquire);
                    // A waiting call's words are watched, so no lock-free operation marks
                    // them: Busy cannot happen here (only on garbage, which is stripped).
                    let Ok(mut touched) = self.touched(&nums, undo) else { continue };
                    match evaluate(&ops, &mut touched) {
                        Outcome::Proceed => {
                            let mut entries = self.result_entries(&touched, undo);
                            entries.push(entry(self.mem.geo.waiter_offset(slot), W_DONE));
                            self.commit(J_WRITES, &entries);
                            self.record_op(&touched, pid);
                            self.finish_waiter(slot, &nums);
                            if pass_alter {
                                continue 'again;
                            }
                        }
                        Outcome::Block { at } => {
                            w.blocking.store(blocking_of(&ops[at]), Release);
                            self.unfreeze(&nums);
                        }
                        Outcome::Fail(Errno(e)) => {
                            self.unfreeze(&nums);
                            w.err.store(e as u32, Release);
                            w.state.store(W_ERROR, Release);
                            self.finish_waiter(slot, &nums);
                        }
                    }
                }
            }
            return;
        }
    }

    /// SETVAL / SETALL: new values for `(num, value)`, every adjustment of those
    /// semaphores cleared, waiters retried. Busy changed nothing.
    pub fn set_values(&mut self, values: &[(u16, u16)], pid: i32) -> std::result::Result<(), Busy> {
        let nums: Vec<u16> = values.iter().map(|&(n, _)| n).collect();
        self.freeze_all(&nums)?;
        let entries: Vec<u64> = values.iter().map(|&(n, v)| entry(n as usize, v as u32)).collect();
        self.commit(J_SET, &entries);
        for &(n, _) in values {
            self.mem.sempid(n as usize).store(pid, Relaxed);
        }
        self.mem.header().ctime.store(crate::ipc::now_secs(), Relaxed);
        self.update_queue();
        Ok(())
    }

    /// This process's undo slot, claimed if it has none yet.
    pub fn undo_slot(&self, pid: i32) -> Result<usize> {
        let n = self.mem.geo.undo_slots as usize;
        if let Some(s) = (0..n).find(|&s| self.mem.undo_pid(s).load(Acquire) == pid) {
            return Ok(s);
        }
        for s in 0..n {
            if self.mem.undo_pid(s).compare_exchange(0, pid, AcqRel, Acquire).is_ok() {
                self.mem.header().undo_users.fetch_add(1, AcqRel);
                return Ok(s);
            }
        }
        Err(Errno(libc::ENOMEM))
    }

    /// `exit_sem` for a dead process: finishes its half-done lock-free operations, drops
    /// its queued calls, applies its adjustments (clamped to [0, SEMVMX]), sets sem_otime,
    /// frees its undo slot, retries the waiters. False if a semaphore it holds adjustments on is marked by
    /// another process's operation that did not finish: try again later.
    pub fn process_died(&mut self, pid: i32) -> bool {
        let geo = self.mem.geo;
        for slot in 0..geo.waiter_slots as usize {
            let w = self.mem.waiter(slot);
            if w.pid.load(Acquire) != pid {
                continue;
            }
            match w.state.load(Acquire) {
                W_FREE => {}
                W_WAITING => {
                    self.dequeue(slot);
                }
                _ => w.state.store(W_FREE, Release),
            }
        }
        for slot in 0..geo.undo_slots as usize {
            if self.mem.undo_pid(slot).load(Acquire) != pid {
                continue;
            }
            self.resolve_marks(slot);
            // Every semaphore the slot holds anything on, even a total of zero (a cell and a
            // resident share that cancel out): the slot is freed for another process.
            let held: Vec<u16> = (0..geo.nsems as usize)
                .filter(|&n| cell_adj(self.mem.cell(slot, n).load(Acquire)) != 0 || resident_slot(self.mem.word(n).load(Acquire)) == Some(slot))
                .map(|n| n as u16)
                .collect();
            let Ok(values) = self.freeze_all(&held) else {
                return false;
            };
            let mut entries = Vec::new();
            let mut changed = Vec::new();
            for (&n, value) in held.iter().zip(values) {
                let adj = self.mem.adj(slot, n as usize);
                if adj != 0 {
                    changed.push(n);
                }
                let t = Touched { num: n, value: (value + adj).clamp(0, SEMVMX), adj: 0 };
                self.push_result(&mut entries, &t, Some(slot));
            }
            entries.push(entry(geo.undo_pid_offset(slot), 0));
            self.commit(J_WRITES, &entries);
            let _ = self.mem.header().undo_users.fetch_update(AcqRel, Acquire, |u| Some(u.saturating_sub(1)));
            for n in changed {
                self.mem.sempid(n as usize).store(pid, Relaxed);
            }
            // exit_sem counts as an operation on every set the process kept an undo record
            // for, whether or not an adjustment was left (do_smart_update with otime set).
            self.mem.header().otime.store(crate::ipc::now_secs(), Relaxed);
        }
        self.update_queue();
        true
    }
}

/// A single operation's journal entries, without allocating.
struct Entries {
    e: [u64; 3],
    len: usize,
}

impl Extend<u64> for Entries {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, iter: I) {
        for x in iter {
            self.e[self.len] = x;
            self.len += 1;
        }
    }
}

fn blocking_of(op: &SemOp) -> u32 {
    op.num as u32 | if op.op == 0 { BLOCK_ZERO } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sem::layout::test_set::new_set;
    use crate::sem::ops::{IPC_NOWAIT, SEM_UNDO};

    fn op(num: u16, op: i16, flg: i16) -> SemOp {
        SemOp { num, op, flg }
    }

    fn run(g: &mut Guard<'_>, ops: &[SemOp], pid: i32, undo: Option<usize>) -> Outcome {
        let nums = distinct(ops);
        let r = g.semop(ops, &nums, pid, undo).unwrap();
        if let Outcome::Block { .. } = r {
            g.abandon(&nums);
        }
        r
    }

    fn values(m: &SetMem) -> Vec<i32> {
        (0..m.geo.nsems as usize).map(|n| m.value(n)).collect()
    }

    fn sleeper(pid: i32) -> Address {
        Address { pid, tid: pid, nonce: 0 }
    }

    #[test]
    fn calls_apply_all_or_nothing_and_undo_at_exit() {
        let s = new_set(3);
        let mut g = lock(&s.mem).unwrap();
        let slot = g.undo_slot(10).unwrap();
        assert_eq!(g.undo_slot(10).unwrap(), slot, "one slot per process");
        assert_eq!(s.mem.header().undo_users.load(Relaxed), 1);
        assert_eq!(run(&mut g, &[op(0, 2, 0), op(1, 1, SEM_UNDO)], 10, Some(slot)), Outcome::Proceed);
        assert_eq!(values(&s.mem), vec![2, 1, 0]);
        assert_eq!(s.mem.adj(slot, 1), -1);
        assert_eq!(run(&mut g, &[op(0, -1, 0), op(2, -1, IPC_NOWAIT)], 10, None), Outcome::Fail(Errno(libc::EAGAIN)));
        assert_eq!(values(&s.mem), vec![2, 1, 0]);
        assert!((0..3).all(|n| s.mem.word(n).load(Relaxed) & FROZEN == 0), "a failed call leaves nothing frozen");
        assert_eq!(s.mem.sempid(0).load(Relaxed), 10);
        assert!(g.process_died(10));
        assert_eq!(values(&s.mem), vec![2, 0, 0]);
        assert_eq!(s.mem.undo_pid(slot).load(Relaxed), 0);
        assert_eq!(s.mem.header().undo_users.load(Relaxed), 0);
    }

    #[test]
    fn waiters_are_served_in_order_and_counted() {
        let s = new_set(1);
        let mut g = lock(&s.mem).unwrap();
        // A waiter for 2 units, then one for 1 unit.
        for (pid, want) in [(20, -2i16), (21, -1)] {
            let ops = [op(0, want, 0)];
            let Ok(Outcome::Block { at }) = g.semop(&ops, &[0], pid, None) else { panic!() };
            g.enqueue(&ops, &[0], sleeper(pid), None, at).unwrap();
        }
        assert_eq!(counts(&s.mem, 0), (2, 0));
        assert_ne!(s.mem.word(0).load(Relaxed) & WATCHED, 0);
        // One unit: the small request goes first, the large one keeps waiting.
        assert_eq!(run(&mut g, &[op(0, 1, 0)], 30, None), Outcome::Proceed);
        let state = |slot: usize| s.mem.waiter(slot).state.load(Relaxed);
        assert_eq!((state(0), state(1)), (W_WAITING, W_DONE));
        assert_eq!(s.mem.sempid(0).load(Relaxed), 21);
        assert_eq!(counts(&s.mem, 0), (1, 0));
        assert_eq!(run(&mut g, &[op(0, 2, 0)], 30, None), Outcome::Proceed);
        assert_eq!(state(0), W_DONE);
        assert_eq!(values(&s.mem), vec![0]);
        assert_eq!(s.mem.word(0).load(Relaxed) & WATCHED, 0, "nobody waits: the fast path may use the word");
    }

    /// A holder that died with a committed journal: the next locker finishes its work.
    #[test]
    fn a_dead_holder_journal_is_replayed() {
        let s = new_set(2);
        let mem: &'static SetMem = unsafe { &*(&s.mem as *const SetMem) };
        std::thread::spawn(move || {
            std::mem::forget(lock(mem).unwrap());
            // Half way through a transfer 0 → 1: both words frozen, journal committed.
            let g = Guard { mem, wake: Vec::new() };
            g.freeze(0).unwrap();
            g.freeze(1).unwrap();
            mem.journal_entry(0).store(entry(mem.geo.word_offset(0), 3), Relaxed);
            mem.journal_entry(1).store(entry(mem.geo.word_offset(1), 7), Relaxed);
            mem.header().journal_count.store(2, Relaxed);
            mem.header().journal_kind.store(J_WRITES, Relaxed);
            mem.header().journal_state.store(J_COMMITTED, Release);
            std::mem::forget(g);
        })
        .join()
        .unwrap();
        let g = lock(&s.mem).unwrap();
        assert_eq!(values(&s.mem), vec![3, 7]);
        assert!((0..2).all(|n| s.mem.word(n).load(Relaxed) & (FROZEN | WATCHED) == 0));
        assert_eq!(s.mem.header().journal_state.load(Relaxed), J_EMPTY);
        drop(g);
    }

    /// A process killed inside a lock-free SEM_UNDO operation: after the mark (nothing
    /// happened) or after its adjustment was written (the value follows). Its exit then
    /// gives back exactly what it held; a mark naming a free slot is garbage and dropped.
    #[test]
    fn a_dead_owners_marks_are_resolved() {
        let s = new_set(3);
        let m = &s.mem;
        let slot = lock(m).unwrap().undo_slot(40).unwrap();
        // Semaphore 0 at 5, adjustment -2 (tag 0): killed after marking a take of 1.
        m.cell(slot, 0).store(adj_cell(-2), Relaxed);
        m.word(0).store(5 | mark(slot, 1), Relaxed);
        // Semaphore 1 at 7, adjustment 0 (tag 1 from an earlier operation): killed after
        // writing the cell of a take of 3 (adjustment 3, tag 0), before the value.
        m.word(1).store(7 | mark(slot, 0), Relaxed);
        m.cell(slot, 1).store(pending_cell(3, -3, 0), Relaxed);
        // Semaphore 2 at 4, marked by a slot nobody holds.
        m.word(2).store(4 | mark(slot + 1, 0), Relaxed);
        let mut g = lock(m).unwrap();
        assert_eq!(g.semop(&[op(2, 1, 0)], &[2], 41, None), Ok(Outcome::Proceed), "garbage mark stripped");
        assert!(g.process_died(40));
        assert_eq!(values(m), vec![5 - 2, 7 - 3 + 3, 5]);
        assert!((0..3).all(|n| m.word(n).load(Relaxed) & FLAGS == 0));
        assert_eq!(m.undo_pid(slot).load(Relaxed), 0);
    }

    /// A word's resident share (what the lock-free SEM_UNDO path of its resident keeps
    /// there) is part of the resident's adjustment: a locked call of another process that
    /// writes the word moves it into the resident's cell, the resident's own locked call
    /// counts it, SETVAL drops it, and the resident's death applies it, even where it
    /// cancels out its cell (the slot is freed clean for the next process).
    #[test]
    fn resident_shares_are_folded_counted_and_applied() {
        let s = new_set(3);
        let m = &s.mem;
        let (a, b) = {
            let g = lock(m).unwrap();
            (g.undo_slot(40).unwrap(), g.undo_slot(41).unwrap())
        };
        // 40 holds 2 units of semaphore 0 through the word, 1 through its cell.
        m.word(0).store(7 | resident(a, 2), Relaxed);
        m.cell(a, 0).store(adj_cell(1), Relaxed);
        assert_eq!(m.adj(a, 0), 3);
        assert_eq!(m.adj(b, 0), 0);
        let mut g = lock(m).unwrap();
        assert_eq!(run(&mut g, &[op(0, -1, SEM_UNDO)], 41, Some(b)), Outcome::Proceed);
        assert_eq!(m.word(0).load(Relaxed) & RESIDENT, 0, "the word no longer names a resident");
        assert_eq!((cell_adj(m.cell(a, 0).load(Relaxed)), m.adj(a, 0), m.adj(b, 0)), (3, 3, 1));
        // 40's own locked call counts its share: 2 in the word, -1 in the cell, 1 in all.
        m.word(1).store(5 | resident(a, 2), Relaxed);
        m.cell(a, 1).store(adj_cell(-1), Relaxed);
        assert_eq!(run(&mut g, &[op(1, -1, SEM_UNDO), op(2, 1, 0)], 40, Some(a)), Outcome::Proceed);
        assert_eq!((m.adj(a, 1), m.word(1).load(Relaxed) & RESIDENT), (2, 0));
        // SETVAL drops every adjustment of the semaphore, the share too.
        m.word(2).store(3 | resident(b, -4), Relaxed);
        assert_eq!(g.set_values(&[(2, 9)], 42), Ok(()));
        assert_eq!((m.adj(b, 2), m.value(2)), (0, 9));
        // 40's share on semaphore 2 cancels its cell: still cleared at its death.
        m.word(2).store(9 | resident(a, -2), Relaxed);
        m.cell(a, 2).store(adj_cell(2), Relaxed);
        assert!(g.process_died(40));
        assert_eq!(values(m), vec![6 + 3, 5 - 1 + 2, 9]);
        assert!((0..3).all(|n| m.word(n).load(Relaxed) & (RESIDENT | FLAGS) == 0 && m.cell(a, n).load(Relaxed) == 0));
        assert_eq!(m.undo_pid(a).load(Relaxed), 0);
        assert_eq!(m.adj(b, 0), 1, "the survivor keeps its own");
    }

    /// A lock holder meets a mark whose owner (alive: here, us) does not finish: it gives
    /// up the lock (Busy) with nothing changed; once the mark goes it proceeds. The mark of
    /// an owner that is gone it resolves itself.
    #[test]
    fn a_live_mark_makes_the_lock_holder_back_off() {
        let s = new_set(2);
        let m = &s.mem;
        let slot = lock(m).unwrap().undo_slot(unsafe { libc::getpid() }).unwrap();
        m.word(1).store(3 | mark(slot, 1), Relaxed);
        let mut g = lock(m).unwrap();
        assert_eq!(g.semop(&[op(0, 1, 0), op(1, -1, 0)], &[0, 1], 51, None), Err(Busy::Marked));
        assert_eq!(m.word(0).load(Relaxed), 0, "nothing frozen or changed");
        assert_eq!(g.set_values(&[(1, 9)], 51), Err(Busy::Marked));
        m.word(1).store(2, Relaxed);
        assert_eq!(g.semop(&[op(0, 1, 0), op(1, -1, 0)], &[0, 1], 51, None), Ok(Outcome::Proceed));
        assert_eq!(values(m), vec![1, 1]);
        // A reaped child's slot, marked after writing its cell (a take of 1).
        let child = unsafe { libc::fork() };
        if child == 0 {
            unsafe { libc::_exit(0) };
        }
        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
        let dead = g.undo_slot(child).unwrap();
        m.word(0).store(1 | mark(dead, 1), Relaxed);
        m.cell(dead, 0).store(pending_cell(1, -1, 1), Relaxed);
        assert_eq!(g.semop(&[op(0, 1, 0)], &[0], 51, None), Ok(Outcome::Proceed));
        assert_eq!(values(m), vec![1, 1], "the dead's take, then ours");
        assert_eq!(m.adj(dead, 0), 1, "left for the broker to apply at its exit");
    }

    /// An uncommitted journal is dropped; corrupt waiter slots and journals do no harm.
    #[test]
    fn corrupt_state_is_contained() {
        let s = new_set(2);
        let mem: &'static SetMem = unsafe { &*(&s.mem as *const SetMem) };
        std::thread::spawn(move || {
            std::mem::forget(lock(mem).unwrap());
            mem.journal_entry(0).store(entry(mem.geo.word_offset(0), 9), Relaxed);
            mem.header().journal_count.store(1, Relaxed);
            let w = mem.waiter(1);
            w.nsops.store(u32::MAX, Relaxed);
            w.state.store(W_WAITING, Relaxed);
        })
        .join()
        .unwrap();
        let g = lock(&s.mem).unwrap();
        assert_eq!(values(&s.mem), vec![0, 0], "an uncommitted journal changes nothing");
        assert_eq!(s.mem.waiter(1).state.load(Relaxed), W_FREE, "a corrupt waiter is dropped");
        assert_eq!(s.mem.header().nwaiters.load(Relaxed), 0);
        // A committed journal pointing outside the data area, with a huge count.
        s.mem.journal_entry(0).store(entry(0, 0xdead), Relaxed);
        s.mem.journal_entry(1).store(entry(usize::MAX >> 33, 1), Relaxed);
        s.mem.header().journal_count.store(u32::MAX, Relaxed);
        s.mem.header().journal_kind.store(J_WRITES, Relaxed);
        g.replay(0);
        assert_eq!(s.mem.header().magic.load(Relaxed), MAGIC, "the header is never written through the journal");
        drop(g);
        // A header that lies about its geometry is refused.
        s.mem.header().nsems.store(u32::MAX, Relaxed);
        assert_eq!(unsafe { SetMem::open(s.ptr, s.len) }.err(), Some(Errno(libc::EIDRM)));
        s.mem.header().nsems.store(2, Relaxed);
        assert!(unsafe { SetMem::open(s.ptr, s.len) }.is_ok());
        assert_eq!(unsafe { SetMem::open(s.ptr, 100) }.err(), Some(Errno(libc::EIDRM)));
    }
}
