//! The shared-memory layout of one semaphore set (its memfd), mapped by the broker and by
//! every client that uses the set:
//!
//! ```text
//! Header      magic, version, geometry, removed flag, otime/ctime, waiter count, journal
//!             state, ticket counter, the set's RobustMutex
//! values      one u64 word per semaphore: value (low 16 bits) | MARK | WATCHED | FROZEN,
//!             and in the upper half a resident undo slot with its adjustment
//! pids        sempid of each semaphore
//! journal     redo log of the critical section: (offset, word) pairs
//! waiters     fixed slots for blocked semop calls (the kernel's sem_queue): state (the
//!             futex word the sleeper waits on), pid, ticket (FIFO order), undo slot, the
//!             operation it blocks on, its operations
//! undo        fixed slots, one per process that used SEM_UNDO (the kernel's sem_undo):
//!             pid and one adjustment cell per semaphore (adjustment | pending op | tag)
//! ```
//!
//! A process's adjustment for a semaphore is its cell plus, if the word names its slot as
//! resident, the word's resident adjustment (`share`). The resident's lock-free SEM_UNDO
//! operation is then one compare-and-swap of the word, value and adjustment together: a
//! mutex taken and released with SEM_UNDO by one process at a time never touches a cell.
//! The lock holder folds the resident share into the resident's cell (in its journal)
//! whenever it writes a word, so that locked code deals with cells only.
//!
//! ```text
//! ```
//!
//! The memfd is sparse: only touched pages cost memory. The geometry is read once, when a
//! mapping is validated, and every index is then checked against that local copy: the
//! mapping is untrusted and a corrupt header gives EIDRM, never a wild access.

use crate::ipc::sync::RobustMutex;
use crate::ipc::{Errno, Result};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering::*};

pub const MAGIC: u64 = 0x3130_6d65_7363_7069; // "ipcsem01"
/// 2: the lock is ipc::sync's own robust lock, no longer a pthread mutex.
/// 3: marks in the words, adjustment cells (adjustment | op | tag).
/// 4: 64-bit words with a resident undo slot and adjustment.
pub const VERSION: u32 = 4;
/// Blocked calls a set can hold at once (more wait with ENOSPC... see README).
pub const WAITER_SLOTS: u32 = 256;
/// Processes with SEM_UNDO adjustments a set can hold at once.
pub const UNDO_SLOTS: u32 = 512;

/// Semaphore word bits. A word may be changed without the lock (one compare-and-swap, the
/// fast path) only while both flags are clear.
pub const VALUE_MASK: u64 = 0xffff;
/// Some blocked call names this semaphore: changes must go through the lock and wake it.
pub const WATCHED: u64 = 1 << 30;
/// The lock holder is reading or changing this word.
pub const FROZEN: u64 = 1 << 31;
/// A lock-free SEM_UNDO operation is changing this word and its owner's adjustment (see
/// client.rs `undo_op`): undo slot + 1 in bits 16-28, and the tag its adjustment cell will
/// carry once written (bit 29). While a word is marked only its owner writes it; the lock
/// holder waits for the mark to go (or, for a dead owner, resolves it) before freezing.
pub const MARK_SLOT: u64 = 0x1fff << 16;
pub const MARK_TAG: u64 = 1 << 29;
pub const MARK: u64 = MARK_SLOT | MARK_TAG;
/// Bits that send the lock-free paths to the lock.
pub const FLAGS: u64 = WATCHED | FROZEN | MARK;
/// Undo slots below this can be named by a mark or be resident.
pub const MARK_SLOTS: usize = 0x1fff;
/// The resident undo slot + 1 (bits 32-44) and its adjustment (bits 48-63, signed).
pub const RESIDENT_SLOT: u64 = 0x1fff << 32;
pub const RESIDENT: u64 = RESIDENT_SLOT | 0xffff << 48;

/// The mark of undo slot `slot` whose cell will carry `tag`.
pub fn mark(slot: usize, tag: u32) -> u64 {
    ((slot as u64 + 1) << 16) & MARK_SLOT | if tag != 0 { MARK_TAG } else { 0 }
}

/// The undo slot a marked word names (None: unmarked).
pub fn mark_slot(w: u64) -> Option<usize> {
    match (w & MARK_SLOT) >> 16 {
        0 => None,
        s => Some(s as usize - 1),
    }
}

/// Largest |share| a resident keeps in its word, and largest |cell| of a process that
/// becomes resident: the sum stays within the kernel's adjustment range (SEMAEM). While a
/// word names a slot resident, that slot's cell for it cannot change: only the lock
/// holder writes it then, and a lock holder that writes a word clears its resident.
pub const RESIDENT_ADJ_MAX: i32 = 0x3fff;

/// The resident undo slot a word names, if any.
pub fn resident_slot(w: u64) -> Option<usize> {
    match (w & RESIDENT_SLOT) >> 32 {
        0 => None,
        s => Some(s as usize - 1),
    }
}

/// The resident slot's share of its adjustment, kept in the word.
pub fn resident_adj(w: u64) -> i32 {
    (w >> 48) as u16 as i16 as i32
}

/// The upper half of a word naming `slot` (below MARK_SLOTS) as resident with `adj`.
pub fn resident(slot: usize, adj: i32) -> u64 {
    ((slot as u64 + 1) << 32) & RESIDENT_SLOT | resident_share(adj)
}

/// The share bits of `resident`.
#[inline(always)]
pub fn resident_share(adj: i32) -> u64 {
    (adj as i16 as u16 as u64) << 48
}

/// An adjustment cell: the adjustment (bits 0-15, signed: SEMAEM fits), and, written by the
/// lock-free SEM_UNDO path only, the operation that produced it (bits 16-30, signed) and a
/// tag (bit 31) that tells whether the cell was written by the operation whose mark is on
/// the word. The locked path writes plain adjustments (op and tag 0).
pub fn cell_adj(cell: u32) -> i32 {
    cell as u16 as i16 as i32
}

pub fn adj_cell(adj: i32) -> u32 {
    adj as i16 as u16 as u32
}

/// Largest |op| the lock-free SEM_UNDO path records in a cell.
pub const CELL_OP_MAX: i32 = 0x3fff;

pub fn pending_cell(adj: i32, op: i32, tag: u32) -> u32 {
    adj_cell(adj) | ((op as u32) & 0x7fff) << 16 | if tag != 0 { 1 << 31 } else { 0 }
}

pub fn cell_op(cell: u32) -> i32 {
    // Sign-extend the 15-bit field.
    (((cell >> 16) as i32) << 17) >> 17
}

pub fn cell_tag(cell: u32) -> u32 {
    cell >> 31
}

/// Waiter slot states (the futex word of the sleeper).
pub const W_FREE: u32 = 0;
pub const W_WAITING: u32 = 1;
/// Its operations were performed by a waker.
pub const W_DONE: u32 = 2;
/// The set was removed (IPC_RMID).
pub const W_IDRM: u32 = 3;
/// Its operations failed when a waker retried them (errno in `err`).
pub const W_ERROR: u32 = 4;

/// `Waiter.blocking`: the operation blocks on this semaphore; ZERO: it waits for zero.
pub const BLOCK_ZERO: u32 = 1 << 31;

/// Journal states and kinds.
pub const J_EMPTY: u32 = 0;
pub const J_COMMITTED: u32 = 1;
/// Entries are (byte offset, word) writes.
pub const J_WRITES: u32 = 1;
/// Entries are (semnum, value): SETVAL/SETALL, which also clear every adjustment of those
/// semaphores.
pub const J_SET: u32 = 2;

#[repr(C, align(64))]
pub struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub nsems: AtomicU32,
    pub max_ops: AtomicU32,
    pub waiter_slots: AtomicU32,
    pub undo_slots: AtomicU32,
    pub removed: AtomicU32,
    pub otime: AtomicI64,
    pub ctime: AtomicI64,
    pub nwaiters: AtomicU32,
    /// Undo slots in use (so a reader knows whether some process's death may be pending).
    pub undo_users: AtomicU32,
    pub journal_state: AtomicU32,
    pub journal_kind: AtomicU32,
    pub journal_count: AtomicU32,
    pub next_ticket: AtomicU64,
    pub mutex: RobustMutex,
    /// Where the rest of the pthread mutex the lock replaced was: the offsets stay.
    _mutex_reserved: [u32; 9],
}

// The lock where the pthread mutex was, the header's size unchanged (layout version).
const _: () = assert!(std::mem::offset_of!(Header, mutex) == 80 && std::mem::size_of::<Header>() == 128);

#[repr(C)]
pub struct Waiter {
    pub state: AtomicU32,
    pub err: AtomicU32,
    pub pid: AtomicI32,
    pub nsops: AtomicU32,
    /// Undo slot index, or u32::MAX.
    pub undo: AtomicU32,
    pub blocking: AtomicU32,
    pub ticket: AtomicU64,
    /// Where the sleeper is woken (see wait.rs): its tid and socket nonce.
    pub tid: AtomicI32,
    pub nonce: AtomicU32,
}

const WAITER_HEADER: usize = std::mem::size_of::<Waiter>();

fn align(n: usize, a: usize) -> Option<usize> {
    n.checked_add(a - 1).map(|v| v & !(a - 1))
}

/// Where everything is, computed from the set's parameters. The small per-slot words a
/// scan reads (waiter states, undo owners) are packed together, away from the bulk (waiter
/// operations, adjustments), so that a scan touches few pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub nsems: u32,
    pub max_ops: u32,
    pub waiter_slots: u32,
    pub undo_slots: u32,
    pub values: usize,
    pub pids: usize,
    pub journal: usize,
    pub journal_cap: usize,
    pub waiters: usize,
    pub waiter_ops: usize,
    pub undo_pids: usize,
    pub undo: usize,
    pub undo_size: usize,
    pub size: usize,
}

impl Geometry {
    pub fn new(nsems: u32, max_ops: u32, waiter_slots: u32, undo_slots: u32) -> Option<Geometry> {
        if nsems == 0 || nsems > 65536 || max_ops == 0 || max_ops > 65536 || waiter_slots == 0 || undo_slots == 0 {
            return None;
        }
        if waiter_slots > 65536 || undo_slots > 65536 {
            return None;
        }
        let n = nsems as usize;
        let values = align(std::mem::size_of::<Header>(), 64)?;
        let pids = align(values + 8 * n, 64)?;
        let journal = align(pids + 4 * n, 64)?;
        // A call's values, adjustments, residents' adjustments and waiter state; or an
        // exit's values, adjustments, residents' adjustments and slot; or a SETALL.
        let journal_cap = 3 * n.max(max_ops as usize) + 8;
        let waiters = align(journal + 8 * journal_cap, 64)?;
        let waiter_ops = align(waiters + WAITER_HEADER * waiter_slots as usize, 64)?;
        let undo_pids = align(waiter_ops + 8 * max_ops as usize * waiter_slots as usize, 64)?;
        let undo = align(undo_pids + 4 * undo_slots as usize, 64)?;
        let undo_size = align(4 * n, 64)?;
        let size = align(undo + undo_size * undo_slots as usize, 4096)?;
        Some(Geometry { nsems, max_ops, waiter_slots, undo_slots, values, pids, journal, journal_cap, waiters, waiter_ops, undo_pids, undo, undo_size, size })
    }

    pub fn word_offset(&self, num: usize) -> usize {
        self.values + 8 * num
    }

    pub fn pid_offset(&self, num: usize) -> usize {
        self.pids + 4 * num
    }

    /// The waiter's header; its first word is the state.
    pub fn waiter_offset(&self, slot: usize) -> usize {
        self.waiters + WAITER_HEADER * slot
    }

    pub fn waiter_op_offset(&self, slot: usize, i: usize) -> usize {
        self.waiter_ops + 8 * (slot * self.max_ops as usize + i)
    }

    pub fn undo_pid_offset(&self, slot: usize) -> usize {
        self.undo_pids + 4 * slot
    }

    pub fn adj_offset(&self, slot: usize, num: usize) -> usize {
        self.undo + self.undo_size * slot + 4 * num
    }
}

/// A validated view of a mapped set. The memory must stay mapped while the view is used.
pub struct SetMem {
    base: *mut u8,
    pub geo: Geometry,
}

unsafe impl Send for SetMem {}
unsafe impl Sync for SetMem {}

impl SetMem {
    /// Initialises a fresh (zero-filled) mapping: the broker does this once.
    ///
    /// # Safety
    /// `base` must point to `geo.size` writable bytes nobody else uses yet.
    pub unsafe fn init(base: *mut u8, geo: Geometry, ctime: i64) -> Result<SetMem> {
        let h = &*(base as *const Header);
        RobustMutex::init(&h.mutex as *const RobustMutex as *mut RobustMutex)?;
        h.nsems.store(geo.nsems, Relaxed);
        h.max_ops.store(geo.max_ops, Relaxed);
        h.waiter_slots.store(geo.waiter_slots, Relaxed);
        h.undo_slots.store(geo.undo_slots, Relaxed);
        h.ctime.store(ctime, Relaxed);
        h.version.store(VERSION, Relaxed);
        h.magic.store(MAGIC, Release);
        Ok(SetMem { base, geo })
    }

    /// Validates a mapping of `len` bytes: EIDRM if it is not a set of this version or
    /// claims more memory than is mapped.
    ///
    /// # Safety
    /// `base` must point to `len` mapped, page-aligned bytes.
    pub unsafe fn open(base: *mut u8, len: usize) -> Result<SetMem> {
        if len < std::mem::size_of::<Header>() {
            return Err(Errno(libc::EIDRM));
        }
        let h = &*(base as *const Header);
        if h.magic.load(Acquire) != MAGIC || h.version.load(Relaxed) != VERSION {
            return Err(Errno(libc::EIDRM));
        }
        let geo = Geometry::new(h.nsems.load(Relaxed), h.max_ops.load(Relaxed), h.waiter_slots.load(Relaxed), h.undo_slots.load(Relaxed))
            .ok_or(Errno(libc::EIDRM))?;
        if geo.size > len {
            return Err(Errno(libc::EIDRM));
        }
        Ok(SetMem { base, geo })
    }

    pub fn header(&self) -> &Header {
        unsafe { &*(self.base as *const Header) }
    }

    /// The u32 at a byte offset, or None outside the data area (the header, with the mutex,
    /// is never written through offsets). Not for semaphore words (`word`).
    pub fn u32_at(&self, offset: usize) -> Option<&AtomicU32> {
        if offset % 4 != 0 || offset < self.geo.pids || offset.checked_add(4)? > self.geo.size {
            return None;
        }
        Some(unsafe { &*(self.base.add(offset) as *const AtomicU32) })
    }

    fn u32_unchecked(&self, offset: usize) -> &AtomicU32 {
        unsafe { &*(self.base.add(offset) as *const AtomicU32) }
    }

    /// Semaphore `num`'s word; `num` must be below nsems (callers check, EFBIG/EINVAL).
    pub fn word(&self, num: usize) -> &AtomicU64 {
        assert!(num < self.geo.nsems as usize);
        unsafe { self.word_unchecked(num) }
    }

    pub fn sempid(&self, num: usize) -> &AtomicI32 {
        assert!(num < self.geo.nsems as usize);
        unsafe { self.sempid_unchecked(num) }
    }

    /// `sempid` for a hot path whose caller checked `num < nsems`.
    ///
    /// # Safety
    /// As said.
    #[inline(always)]
    pub unsafe fn sempid_unchecked(&self, num: usize) -> &AtomicI32 {
        debug_assert!(num < self.geo.nsems as usize);
        unsafe { &*(self.base.add(self.geo.pid_offset(num)) as *const AtomicI32) }
    }

    pub fn journal_entry(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.geo.journal_cap);
        unsafe { &*(self.base.add(self.geo.journal + 8 * i) as *const AtomicU64) }
    }

    pub fn waiter(&self, slot: usize) -> &Waiter {
        assert!(slot < self.geo.waiter_slots as usize);
        unsafe { &*(self.base.add(self.geo.waiter_offset(slot)) as *const Waiter) }
    }

    pub fn waiter_op(&self, slot: usize, i: usize) -> &AtomicU64 {
        assert!(slot < self.geo.waiter_slots as usize && i < self.geo.max_ops as usize);
        unsafe { &*(self.base.add(self.geo.waiter_op_offset(slot, i)) as *const AtomicU64) }
    }

    pub fn undo_pid(&self, slot: usize) -> &AtomicI32 {
        assert!(slot < self.geo.undo_slots as usize);
        unsafe { &*(self.base.add(self.geo.undo_pid_offset(slot)) as *const AtomicI32) }
    }

    /// Undo slot `slot`'s adjustment cell for semaphore `num` (see `cell_adj`).
    pub fn cell(&self, slot: usize, num: usize) -> &AtomicU32 {
        assert!(slot < self.geo.undo_slots as usize && num < self.geo.nsems as usize);
        self.u32_unchecked(self.geo.adj_offset(slot, num))
    }

    /// `cell` for a hot path whose caller checked `slot < undo_slots` and `num < nsems`.
    ///
    /// # Safety
    /// As said: both indexes in bounds.
    #[inline(always)]
    pub unsafe fn cell_unchecked(&self, slot: usize, num: usize) -> &AtomicU32 {
        debug_assert!(slot < self.geo.undo_slots as usize && num < self.geo.nsems as usize);
        self.u32_unchecked(self.geo.adj_offset(slot, num))
    }

    /// `word` for a hot path whose caller checked `num < nsems`.
    ///
    /// # Safety
    /// As said.
    #[inline(always)]
    pub unsafe fn word_unchecked(&self, num: usize) -> &AtomicU64 {
        debug_assert!(num < self.geo.nsems as usize);
        unsafe { &*(self.base.add(self.geo.word_offset(num)) as *const AtomicU64) }
    }

    /// The adjustment of undo slot `slot` for semaphore `num`: its cell, plus its share in
    /// the word if it is resident there.
    pub fn adj(&self, slot: usize, num: usize) -> i32 {
        let w = self.word(num).load(Acquire);
        let share = if resident_slot(w) == Some(slot) { resident_adj(w) } else { 0 };
        cell_adj(self.cell(slot, num).load(Acquire)) + share
    }

    /// A semaphore's value from its word (a corrupt word reads as SEMVMX at most).
    pub fn value(&self, num: usize) -> i32 {
        ((self.word(num).load(Acquire) & VALUE_MASK) as i32).min(super::ops::SEMVMX)
    }
}

/// A set in anonymous shared memory, for tests.
#[cfg(test)]
pub mod test_set {
    use super::*;

    pub struct TestSet {
        pub ptr: *mut u8,
        pub len: usize,
        pub mem: SetMem,
    }

    impl Drop for TestSet {
        fn drop(&mut self) {
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }

    /// A set of `nsems` with 4 waiter and 4 undo slots.
    pub fn new_set(nsems: u32) -> TestSet {
        let geo = Geometry::new(nsems, 8, 4, 4).unwrap();
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), geo.size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        let mem = unsafe { SetMem::init(ptr as *mut u8, geo, 1) }.unwrap();
        TestSet { ptr: ptr as *mut u8, len: geo.size, mem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_cells_round_trip() {
        for slot in [0, 1, 511, MARK_SLOTS - 1] {
            for tag in [0, 1] {
                let m = mark(slot, tag);
                assert_eq!(m & !MARK, 0);
                assert_eq!(mark_slot(m | 123), Some(slot));
                assert_eq!((m & MARK_TAG != 0) as u32, tag);
            }
        }
        assert_eq!(mark_slot(77 | WATCHED), None);
        for slot in [0, 1, MARK_SLOTS - 1] {
            for adj in [-32768, -1, 0, 1, 32767] {
                let r = resident(slot, adj);
                assert_eq!(r & !RESIDENT, 0);
                assert_eq!((resident_slot(r | FLAGS | VALUE_MASK), resident_adj(r | FLAGS | VALUE_MASK)), (Some(slot), adj));
            }
        }
        assert_eq!(resident_slot(FLAGS | VALUE_MASK), None);
        for adj in [-32768, -1, 0, 1, 32767] {
            for op in [-CELL_OP_MAX, -1, 1, CELL_OP_MAX] {
                let c = pending_cell(adj, op, 1);
                assert_eq!((cell_adj(c), cell_op(c), cell_tag(c)), (adj, op, 1));
            }
            assert_eq!(cell_adj(adj_cell(adj)), adj);
        }
    }

    #[test]
    fn geometry_is_ordered_and_bounded() {
        let g = Geometry::new(3, 500, WAITER_SLOTS, UNDO_SLOTS).unwrap();
        assert!(g.values >= std::mem::size_of::<Header>());
        assert!(g.pids >= g.values + 24 && g.journal >= g.pids + 12);
        assert!(g.waiters >= g.journal + 8 * g.journal_cap);
        assert!(g.waiter_ops >= g.waiters + 40 * WAITER_SLOTS as usize);
        assert!(g.undo_pids >= g.waiter_ops + 8 * 500 * WAITER_SLOTS as usize);
        assert!(g.undo >= g.undo_pids + 4 * UNDO_SLOTS as usize);
        assert!(g.size >= g.undo + g.undo_size * UNDO_SLOTS as usize);
        assert!(Geometry::new(0, 500, 1, 1).is_none());
        let big = Geometry::new(32000, 500, WAITER_SLOTS, UNDO_SLOTS).unwrap();
        assert!(big.size < 1 << 32);
    }
}
