//! The shared-memory layout of one message queue (the kernel's `struct msg_queue` and its
//! `msg_msg` list), and the operations on it. Every process using the queue maps the
//! queue's memfd; the broker only maps the header.
//!
//! ```text
//! [ header (one page, with the stashes) | slots: capacity × Slot | block_next: capacity × u32 | blocks: capacity × BLOCK bytes ]
//! ```
//! A message is a slot (type, size, link to the next message) and a chain of data blocks.
//! `msg_qbytes` caps both the bytes and the number of queued messages, so `capacity` slots
//! and `capacity` blocks hold any queue whose msg_qbytes is at most `capacity` less what
//! the stashes may hold (STASHED_MAX; a message of n ≥ 1 bytes uses at most n blocks; an
//! empty message uses none).
//!
//! Crash safety: a process may die anywhere, even holding the lock. Only the message list
//! (head and the slots' `next` links), each queued message's block chain and the stashes
//! of live processes matter; each insert and each removal becomes visible with one store
//! (linking the fully written slot behind the last message; unlinking it from its
//! predecessor). The free lists, `tail` and the counters are derived data: `recover`
//! rebuilds them from the list and the stashes, emptying those of dead processes.
//!
//! Copies outside the lock, as the kernel's (which copies a message into memory of its own
//! before taking the queue's lock, and out of it after): a sending process writes its
//! text into its stash, a slot and blocks set aside for it in the header's table
//! (`Stash`), and under the lock only links them (`commit_stashed`); a receiver reads the
//! text without the lock (`peek`) and under it checks, by the slot's generation, that it
//! read the message it takes (`same`).
//!
//! The memory is shared with processes we do not trust: every index read from it is
//! bounds-checked and every walk is bounded, so corruption gives EIDRM, never a wild access
//! or an endless loop. Links are stored as index + 1 (0 = none).

use crate::ipc::sync::RobustMutex;
use crate::ipc::{Errno, Result};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering::*};

pub const MAGIC: u64 = 0x6970_6373_6d73_6771; // "ipcsmsgq"
/// 2: the lock is ipc::sync's own robust lock, no longer a pthread mutex.
/// 3: slots carry a generation (`Slot::gen`), the header holds the senders' stashes.
/// 4: a free slot keeps the blocks of the text it held (`push_slot_keeping_text`).
/// 5: the header laid out by cache line (the lock with what its holders change), the
/// spare slot, a slot per line.
/// 6: the event counts spinners watch (`Header::sent`, `Header::received`); an unlink
/// leaves the slot's generation as it is.
pub const VERSION: u32 = 6;
/// Bytes of message text per data block.
pub const BLOCK: usize = 1024;
/// The header occupies the first page (the broker maps just this much).
pub const HEADER_SIZE: usize = 4096;
const SLOT_SIZE: usize = std::mem::size_of::<Slot>();

/// A free slot just taken (`pop_slot`): its link, and the chain of blocks its last text
/// held, `count` blocks from `first` (the taker's now, to use or give back).
struct Popped {
    link: u32,
    first: u32,
    count: u64,
}

/// How many messages `peek` looks at before it leaves the search to `find`.
const PEEK_STEPS: usize = 16;

/// What shared memory that makes no sense yields.
const CORRUPT: Errno = Errno(libc::EIDRM);

/// Laid out by who touches what: every send and receive takes the lock and changes the
/// list and the counts, so these share the lock's cache line, which the critical section
/// then finds in its cache as soon as it holds the lock (a stream's two processes pass
/// one line to and fro, not three). What is read on every call but seldom written shares
/// a second line, which stays cached on both sides.
#[repr(C, align(64))]
pub struct Header {
    pub lock: RobustMutex,
    /// Set by the broker at IPC_RMID: waiters fail with EIDRM.
    pub removed: AtomicU32,
    pub qnum: AtomicU64,
    pub cbytes: AtomicU64,
    /// First and last queued message (slot + 1).
    pub head: AtomicU32,
    pub tail: AtomicU32,
    /// Free slots and blocks (index + 1, chained through `next` / `block_next`).
    free_slot: AtomicU32,
    free_block: AtomicU32,
    /// The slot freed last (0: none), kept out of the free list with the chain of blocks
    /// its text held, the chain's first block and length here: a stream's sender takes
    /// them back from this line without touching the slot's, which the receiver that
    /// freed it has in its cache (`pop_slot`).
    spare_slot: AtomicU32,
    spare_first: AtomicU32,
    spare_blocks: AtomicU32,
    /// Senders waiting (a hint: reset to 0 by whoever wakes them all).
    pub space_waiters: AtomicU32,
    /// Receivers waiting (likewise).
    pub msg_waiters: AtomicU32,
    _pad0: u32,
    // The second line: written seldom (the pids and times only when they change).
    pub magic: AtomicU64,
    pub version: AtomicU32,
    /// Slots and blocks the memfd holds (fixed at creation).
    pub capacity: AtomicU32,
    /// msg_qbytes: written by the broker (IPC_SET), read under the lock.
    pub qbytes: AtomicU64,
    pub lspid: AtomicI32,
    pub lrpid: AtomicI32,
    pub stime: AtomicI64,
    pub rtime: AtomicI64,
    /// Futex word of blocked senders: bumped when space may have freed.
    pub space_seq: AtomicU32,
    /// Futex word of blocked receivers: bumped when a message arrived.
    pub msg_seq: AtomicU32,
    /// Slots and blocks ever handed out: beyond these the memory is untouched (zero), so
    /// a new queue needs no initialised free list.
    slot_hwm: AtomicU32,
    block_hwm: AtomicU32,
    /// Bumped by every send and every receive once its critical section is over (and by
    /// the broker at IPC_RMID and IPC_SET): what a caller spinning for a message or for
    /// space watches (`Sleep::spin`), each in a line of its own, so that the spinner does
    /// not take the lock's line, again and again, from the critical section it waits for.
    pub sent: Line<AtomicU32>,
    pub received: Line<AtomicU32>,
    /// Senders' stashes (`Stash`).
    stashes: [Stash; STASHES],
}

/// How many processes may hold a stash in one queue at once; more senders take the path
/// that copies under the lock.
pub const STASHES: usize = 16;
/// The most blocks a stash holds: messages of up to this many blocks are written before
/// the lock is taken (8 KiB, the default MSGMAX).
pub const STASH_BLOCKS: u32 = 8;
/// What the stashes may hold of a queue's slots and blocks at most: the memfd gets this
/// much room beyond what its messages may use.
pub const STASHED_MAX: u32 = STASHES as u32 * STASH_BLOCKS;

/// A slot and a chain of blocks set aside for one sending process, so that it can write
/// its next message's text before it takes the lock (as the kernel copies a message into
/// its own memory before it takes the queue's lock); under the lock it then only links the
/// slot (`commit_stashed`). Changed only under the lock: by its owner, and by whoever
/// finds the owner dead. Its owner keeps a copy (`StashView`) and writes into the slot and
/// blocks without the lock, so nothing else may touch them while the owner lives.
#[repr(C)]
pub struct Stash {
    /// The owning process (0: free).
    owner: AtomicI32,
    /// Its slot (link, 0: none), its chain's first block and its length.
    slot: AtomicU32,
    first_block: AtomicU32,
    blocks: AtomicU32,
}

/// A stash's contents as its owner last left them (it checks, under the lock, that the
/// queue's copy still says the same before it uses what it wrote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StashView {
    pub index: u32,
    pub slot: u32,
    pub first_block: u32,
    pub blocks: u32,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(Header, magic) == 64 && std::mem::offset_of!(Header, sent) == 128);

/// A value alone in its cache line.
#[repr(C, align(64))]
pub struct Line<T>(pub T);

/// One per cache line: neighbours in use by the two sides of a stream at once would
/// otherwise pass a line to and fro.
#[repr(C, align(64))]
pub struct Slot {
    mtype: AtomicI64,
    /// The text's length (MSGMAX is an int: it fits).
    size: AtomicU32,
    /// A new odd value each time the slot is linked (under the lock; 0 before the first
    /// time): a receiver that read a message without the lock (`peek`) knows, finding the
    /// slot in the queue under the lock with the same value, that the message stayed
    /// queued meanwhile, so what it read was that message, whole and unchanged (to be
    /// found again after an unlink, a slot must be linked again). An unlink leaves it as
    /// it is, so that the receiver's critical section need not take the slot's line for
    /// writing; a peek that finds a freed slot is caught by the check under the lock.
    gen: AtomicU32,
    next: AtomicU32,
    first_block: AtomicU32,
}

fn offsets(capacity: u32) -> (usize, usize, usize, usize) {
    let c = capacity as usize;
    let slots = HEADER_SIZE;
    let block_next = slots + c * SLOT_SIZE;
    let blocks = (block_next + c * 4 + 63) & !63;
    let end = blocks + c * BLOCK;
    (slots, block_next, blocks, end)
}

/// Bytes of memfd a queue of `capacity` needs.
pub fn memfd_len(capacity: u32) -> usize {
    (offsets(capacity).3 + 4095) & !4095
}

/// Blocks a message of `size` bytes uses.
pub fn blocks_for(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64)
}

/// How msgrcv picks a message (the kernel's `convert_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    Any,
    Equal(i64),
    NotEqual(i64),
    /// The lowest type ≤ this.
    LessEqual(i64),
    /// MSG_COPY: the message at this position.
    Number(i64),
}

/// A message found by `find`: where it is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    prev: u32,
    slot: u32,
    /// The first block of its text (read once, under the lock, as everything here).
    first_block: u32,
    pub mtype: i64,
    pub size: u64,
    /// The slot's generation when it was read (`Slot::gen`).
    gen: u32,
}

impl Found {
    /// Its slot's link (what `unlink` returns of the message after it).
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

/// A view of a mapped queue. All operations but `header`'s atomics need the lock.
pub struct Queue {
    base: *mut u8,
    capacity: u32,
    /// Where the slots, the block links and the blocks start (from `offsets`, computed once).
    slots: *mut u8,
    block_links: *mut u8,
    blocks: *mut u8,
}

unsafe impl Send for Queue {}
unsafe impl Sync for Queue {}

impl Queue {
    /// Lays out a fresh queue in zero-filled memory (the broker, once).
    ///
    /// # Safety
    /// `base` must point to `memfd_len(capacity)` writable, zeroed, page-aligned bytes.
    pub unsafe fn init(base: *mut u8, capacity: u32, qbytes: u64) -> Result<()> {
        let h = &*(base as *const Header);
        RobustMutex::init(&h.lock as *const RobustMutex as *mut RobustMutex)?;
        h.capacity.store(capacity, Relaxed);
        h.qbytes.store(qbytes, Relaxed);
        h.version.store(VERSION, Relaxed);
        h.magic.store(MAGIC, Release);
        Ok(())
    }

    /// A view of a mapped queue of `len` bytes; EIDRM if it is not a queue of this
    /// version or does not fit in the mapping.
    ///
    /// # Safety
    /// `base` must point to `len` mapped, writable, page-aligned bytes that outlive the view.
    pub unsafe fn new(base: *mut u8, len: usize) -> Result<Queue> {
        if len < HEADER_SIZE {
            return Err(CORRUPT);
        }
        let h = &*(base as *const Header);
        if h.magic.load(Acquire) != MAGIC || h.version.load(Relaxed) != VERSION {
            return Err(CORRUPT);
        }
        // Read once: a later change of the header's capacity cannot widen our bounds.
        let capacity = h.capacity.load(Relaxed);
        if capacity == 0 || memfd_len(capacity) > len {
            return Err(CORRUPT);
        }
        let (slots, block_links, blocks, _) = offsets(capacity);
        Ok(Queue { base, capacity, slots: base.add(slots), block_links: base.add(block_links), blocks: base.add(blocks) })
    }

    pub fn header(&self) -> &Header {
        unsafe { &*(self.base as *const Header) }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The slot of link `link` (index + 1).
    fn slot(&self, link: u32) -> Result<&Slot> {
        if link == 0 || link > self.capacity {
            return Err(CORRUPT);
        }
        Ok(unsafe { &*(self.slots.add((link as usize - 1) * SLOT_SIZE) as *const Slot) })
    }

    fn block_next(&self, link: u32) -> Result<&AtomicU32> {
        if link == 0 || link > self.capacity {
            return Err(CORRUPT);
        }
        Ok(unsafe { &*(self.block_links.add((link as usize - 1) * 4) as *const AtomicU32) })
    }

    fn block(&self, link: u32) -> Result<*mut u8> {
        if link == 0 || link > self.capacity {
            return Err(CORRUPT);
        }
        Ok(unsafe { self.blocks.add((link as usize - 1) * BLOCK) })
    }

    /// `msg_fits_inqueue`: bytes and count both bounded by msg_qbytes.
    #[inline(always)]
    pub fn fits(&self, size: u64) -> bool {
        let h = self.header();
        let qbytes = h.qbytes.load(Relaxed);
        size.saturating_add(h.cbytes.load(Relaxed)) <= qbytes && h.qnum.load(Relaxed).saturating_add(1) <= qbytes
    }

    /// A free slot and the blocks it kept: the spare, else the free list's first, else the
    /// one past the high-water mark (which kept none).
    #[inline(always)]
    fn pop_slot(&self) -> Result<Option<Popped>> {
        let h = self.header();
        let spare = h.spare_slot.load(Relaxed);
        if spare != 0 {
            let count = h.spare_blocks.load(Relaxed);
            if count > self.capacity {
                return Err(CORRUPT);
            }
            h.spare_slot.store(0, Relaxed);
            return Ok(Some(Popped { link: spare, first: h.spare_first.load(Relaxed), count: count as u64 }));
        }
        let head = h.free_slot.load(Relaxed);
        if head != 0 {
            let slot = self.slot(head)?;
            h.free_slot.store(slot.next.load(Relaxed), Relaxed);
            let count = blocks_for(slot.size.load(Relaxed) as u64);
            return Ok(Some(Popped { link: head, first: slot.first_block.load(Relaxed), count }));
        }
        let used = h.slot_hwm.load(Relaxed);
        if used >= self.capacity {
            return Ok(None);
        }
        h.slot_hwm.store(used + 1, Relaxed);
        Ok(Some(Popped { link: used + 1, first: 0, count: 0 }))
    }

    /// A chain of `n` (1 ≤ n ≤ capacity) blocks, its first returned: the free list's first
    /// ones, already chained there (only a chain's first `n - 1` links count, so the last
    /// one's link is left as it is), then blocks past the high-water mark, then the blocks
    /// free slots kept. None, and nothing taken, if there are not that many.
    #[inline(always)]
    fn take_blocks(&self, n: u64) -> Result<Option<u32>> {
        match self.take_free_blocks(n)? {
            Some(first) => Ok(Some(first)),
            // The blocks free slots kept are free too: released, they may be enough.
            None if self.release_kept_texts()? => self.take_free_blocks(n),
            None => Ok(None),
        }
    }

    /// Gives the blocks every free slot kept (`push_slot_keeping_text`) back to the free
    /// list. True if there were any.
    #[cold]
    fn release_kept_texts(&self) -> Result<bool> {
        self.spare_to_free_list()?;
        let mut released = false;
        let mut link = self.header().free_slot.load(Relaxed);
        // A list longer than the slots is corrupt.
        for _ in 0..self.capacity {
            if link == 0 {
                return Ok(released);
            }
            let slot = self.slot(link)?;
            let count = blocks_for(slot.size.load(Relaxed) as u64);
            self.push_blocks(slot.first_block.load(Relaxed), count)?;
            released |= count > 0;
            slot.size.store(0, Relaxed);
            slot.first_block.store(0, Relaxed);
            link = slot.next.load(Relaxed);
        }
        if link == 0 {
            Ok(released)
        } else {
            Err(CORRUPT)
        }
    }

    /// `take_blocks` from the free list and the untouched memory only.
    #[inline(always)]
    fn take_free_blocks(&self, n: u64) -> Result<Option<u32>> {
        let h = self.header();
        let first_free = h.free_block.load(Relaxed);
        let (mut taken, mut last, mut rest) = (0u64, 0u32, first_free);
        while taken < n && rest != 0 {
            last = rest;
            rest = self.block_next(rest)?.load(Relaxed);
            taken += 1;
        }
        if taken == n {
            h.free_block.store(rest, Relaxed);
            return Ok(Some(first_free));
        }
        // Past the high-water mark: blocks used + 1 ..= used + fresh, chained in order.
        let fresh = n - taken;
        let used = h.block_hwm.load(Relaxed);
        if used as u64 + fresh > self.capacity as u64 {
            return Ok(None);
        }
        h.free_block.store(rest, Relaxed);
        let end = used + fresh as u32;
        h.block_hwm.store(end, Relaxed);
        if taken > 0 {
            self.block_next(last)?.store(used + 1, Relaxed);
        }
        for b in used + 1..end {
            self.block_next(b)?.store(b + 1, Relaxed);
        }
        Ok(Some(if taken > 0 { first_free } else { used + 1 }))
    }

    /// Frees a slot that holds no blocks.
    #[inline(always)]
    fn push_slot(&self, link: u32) -> Result<()> {
        let slot = self.slot(link)?;
        slot.size.store(0, Relaxed);
        slot.first_block.store(0, Relaxed);
        self.push_slot_keeping_text(link, 0, 0)
    }

    /// Frees a slot with the blocks of the text it held (its `size` and `first_block`
    /// unchanged, naming `count` blocks from `first`): the next `pop_slot` gets them with
    /// it, without reading or writing any block link. It becomes the spare, so a stream's
    /// slot and blocks go back to the sender in the lock's line.
    #[inline(always)]
    fn push_slot_keeping_text(&self, link: u32, first: u32, count: u64) -> Result<()> {
        self.slot(link)?; // bounds: only a valid link becomes the spare
        self.spare_to_free_list()?;
        let h = self.header();
        h.spare_first.store(first, Relaxed);
        h.spare_blocks.store(count as u32, Relaxed);
        h.spare_slot.store(link, Relaxed);
        Ok(())
    }

    /// Moves the spare slot (if any) to the free list, the blocks it kept with it (its
    /// fields name them, as the spare's do).
    #[inline(always)]
    fn spare_to_free_list(&self) -> Result<()> {
        let h = self.header();
        let spare = h.spare_slot.load(Relaxed);
        if spare != 0 {
            self.slot(spare)?.next.store(h.free_slot.load(Relaxed), Relaxed);
            h.free_slot.store(spare, Relaxed);
            h.spare_slot.store(0, Relaxed);
        }
        Ok(())
    }

    /// The chain of `n` blocks for a slot just popped: the blocks it kept if they are `n`,
    /// else (those given back) `take_blocks`.
    #[inline(always)]
    fn blocks_for_slot(&self, popped: &Popped, n: u64) -> Result<Option<u32>> {
        let &Popped { first, count, .. } = popped;
        if count == n && n > 0 {
            return Ok(Some(first));
        }
        self.push_blocks(first, count)?;
        if n == 0 {
            return Ok(Some(0));
        }
        self.take_blocks(n)
    }

    /// Returns a chain of `count` blocks starting at `first` to the free list.
    #[inline(always)]
    fn push_blocks(&self, first: u32, count: u64) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        if count > self.capacity as u64 {
            return Err(CORRUPT);
        }
        let mut last = first;
        for _ in 1..count {
            last = self.block_next(last)?.load(Relaxed);
        }
        let h = self.header();
        self.block_next(last)?.store(h.free_block.load(Relaxed), Relaxed);
        h.free_block.store(first, Relaxed);
        Ok(())
    }

    /// Calls `f(ptr, offset, n)` over the first `len` bytes of the block chain that starts
    /// at `first`, once per run of blocks that follow each other in memory (a message's
    /// blocks usually do: the free list hands them back in the order it took them), so
    /// that a long message is one copy.
    #[inline(always)]
    fn runs(&self, first: u32, len: usize, mut f: impl FnMut(*mut u8, usize, usize) -> Result<()>) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if blocks_for(len as u64) > self.capacity as u64 {
            return Err(CORRUPT);
        }
        let mut link = first;
        let mut run = self.block(link)?;
        let mut run_off = 0;
        // `off`: where the next block's bytes start (the last block may be partly used).
        let mut off = BLOCK;
        while off < len {
            let next = self.block_next(link)?.load(Relaxed);
            if next != link + 1 || next > self.capacity {
                f(run, run_off, off - run_off)?;
                run = self.block(next)?;
                run_off = off;
            }
            link = next;
            off += BLOCK;
        }
        f(run, run_off, len - run_off)
    }

    /// Appends a message whose text `fill(dst, offset, len)` writes, run of blocks by run.
    /// `Ok(false)`: the memfd has no room left (only when msg_qbytes exceeds the capacity).
    /// A failing `fill` leaves the queue as it was. Does not check `fits`.
    #[inline(always)]
    pub fn enqueue(&self, mtype: i64, size: u64, fill: impl FnMut(*mut u8, usize, usize) -> Result<()>) -> Result<bool> {
        let nblocks = blocks_for(size);
        // (No text is longer than a u32: MSGMAX is an int.)
        let Ok(size32) = u32::try_from(size) else { return Ok(false) };
        if nblocks > self.capacity as u64 {
            return Ok(false);
        }
        let Some(popped) = self.pop_slot()? else { return Ok(false) };
        let slot_link = popped.link;
        // Take the blocks, then fill them; on failure give everything back.
        let first = match self.blocks_for_slot(&popped, nblocks)? {
            Some(first) => first,
            None => {
                self.push_slot(slot_link)?;
                return Ok(false);
            }
        };
        if let Err(e) = self.runs(first, size as usize, fill) {
            self.push_blocks(first, nblocks)?;
            self.push_slot(slot_link)?;
            return Err(e);
        }
        self.link(slot_link, mtype, size32, first)?;
        Ok(true)
    }

    /// A message's fields, written into its slot before `link`.
    #[inline(always)]
    fn write_slot(&self, slot_link: u32, mtype: i64, size: u32, first: u32) -> Result<&Slot> {
        let slot = self.slot(slot_link)?;
        slot.mtype.store(mtype, Relaxed);
        slot.size.store(size, Relaxed);
        slot.first_block.store(first, Relaxed);
        slot.next.store(0, Relaxed);
        Ok(slot)
    }

    /// Appends the message in slot `slot_link` (taken, its text in the chain at `first`).
    /// The fields are written again here even after `fill_stashed` wrote them: under the
    /// lock, so that what is linked is what the lock holder decided (the line is already
    /// in this CPU's cache then).
    #[inline(always)]
    fn link(&self, slot_link: u32, mtype: i64, size: u32, first: u32) -> Result<()> {
        let slot = self.write_slot(slot_link, mtype, size, first)?;
        // A new odd generation, seen by whoever sees the link below.
        slot.gen.store((slot.gen.load(Relaxed) + 1) | 1, Release);
        // The commit: one store makes the message part of the queue.
        let h = self.header();
        let tail = h.tail.load(Relaxed);
        if tail == 0 {
            h.head.store(slot_link, Release);
        } else {
            self.slot(tail)?.next.store(slot_link, Release);
        }
        h.tail.store(slot_link, Relaxed);
        h.qnum.store(h.qnum.load(Relaxed) + 1, Relaxed);
        h.cbytes.store(h.cbytes.load(Relaxed) + size as u64, Relaxed);
        Ok(())
    }

    fn stash(&self, index: u32) -> Result<&Stash> {
        self.header().stashes.get(index as usize).ok_or(CORRUPT)
    }

    fn stash_view(&self, index: u32) -> Result<StashView> {
        let st = self.stash(index)?;
        Ok(StashView {
            index,
            slot: st.slot.load(Relaxed),
            first_block: st.first_block.load(Relaxed),
            blocks: st.blocks.load(Relaxed),
        })
    }

    /// A stash for process `pid` (lock held): the one it holds, else a free one, else one
    /// whose owner `alive` says is dead (what it held given back). None if live processes
    /// hold them all.
    pub fn claim_stash(&self, pid: i32, alive: impl Fn(i32) -> bool) -> Result<Option<StashView>> {
        let stashes = &self.header().stashes;
        let mut free = None;
        for (i, st) in stashes.iter().enumerate() {
            match st.owner.load(Relaxed) {
                o if o == pid => return self.stash_view(i as u32).map(Some),
                0 if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        let i = match free {
            Some(i) => i,
            None => match stashes.iter().position(|st| !alive(st.owner.load(Relaxed))) {
                Some(i) => {
                    // Its owner died outside the lock (else `recover` cleared it): what
                    // it holds is nowhere else.
                    let dead = self.stash_view(i as u32)?;
                    if dead.slot != 0 {
                        self.push_slot(dead.slot)?;
                    }
                    self.push_blocks(dead.first_block, dead.blocks as u64)?;
                    i
                }
                None => return Ok(None),
            },
        };
        let st = &stashes[i];
        st.slot.store(0, Relaxed);
        st.first_block.store(0, Relaxed);
        st.blocks.store(0, Relaxed);
        st.owner.store(pid, Relaxed);
        self.stash_view(i as u32).map(Some)
    }

    /// Makes the stash `index` (its owner's, lock held) hold a slot and at least `want`
    /// blocks (1 ≤ want ≤ STASH_BLOCKS): a shorter chain is given back for a new one.
    /// What it holds after: less than asked if the memory has no more.
    pub fn refill_stash(&self, index: u32, want: u32) -> Result<StashView> {
        let st = self.stash(index)?;
        let want = want.clamp(1, STASH_BLOCKS);
        if st.slot.load(Relaxed) == 0 {
            if let Some(Popped { link, first, count }) = self.pop_slot()? {
                st.slot.store(link, Relaxed);
                // The blocks the slot kept join the stash if it has none and they are
                // enough (a stream's next message is the size of the last).
                if st.blocks.load(Relaxed) == 0 && (want as u64..=STASH_BLOCKS as u64).contains(&count) {
                    st.first_block.store(first, Relaxed);
                    st.blocks.store(count as u32, Relaxed);
                } else {
                    self.push_blocks(first, count)?;
                }
            }
        }
        let have = st.blocks.load(Relaxed);
        if have < want {
            if let Some(first) = self.take_blocks(want as u64)? {
                self.push_blocks(st.first_block.load(Relaxed), have as u64)?;
                st.first_block.store(first, Relaxed);
                st.blocks.store(want, Relaxed);
            }
        }
        self.stash_view(index)
    }

    /// Writes a message's text into the stash that `view` describes (its owner, without the
    /// lock), run of blocks by run; `commit_stashed` then links it.
    #[inline(always)]
    pub fn fill_stashed(&self, view: &StashView, mtype: i64, size: u64, fill: impl FnMut(*mut u8, usize, usize) -> Result<()>) -> Result<()> {
        let n = blocks_for(size);
        if view.slot == 0 || n > view.blocks as u64 {
            return Err(CORRUPT);
        }
        // The slot's fields as `link` will write them: its line, which the receiver that
        // freed the slot last read, comes to this CPU now rather than in the critical
        // section. (Only a stale `peek` reads a stashed slot, and `same` rejects it.)
        self.write_slot(view.slot, mtype, size as u32, if n == 0 { 0 } else { view.first_block })?;
        self.runs(view.first_block, size as usize, fill)
    }

    /// Appends the message that process `pid` wrote into its stash (`fill_stashed`, as
    /// `view` then described it; lock held, `fits` checked): the stash's slot and its first
    /// blocks, the rest staying stashed. Ok(false), nothing done, if the stash no longer
    /// holds what the text was written into: the caller writes the message under the lock.
    #[inline(always)]
    pub fn commit_stashed(&self, view: &StashView, pid: i32, mtype: i64, size: u64) -> Result<bool> {
        let st = self.stash(view.index)?;
        let n = blocks_for(size);
        // n ≤ STASH_BLOCKS below: the size fits a u32.
        if st.owner.load(Relaxed) != pid || self.stash_view(view.index)? != *view || view.slot == 0 || n > view.blocks as u64 {
            return Ok(false);
        }
        // The block after the message's last (none when it takes the whole chain).
        let mut rest = view.first_block;
        if n == view.blocks as u64 {
            rest = 0;
        } else {
            for _ in 0..n {
                rest = self.block_next(rest)?.load(Relaxed);
            }
        }
        self.link(view.slot, mtype, size as u32, if n == 0 { 0 } else { view.first_block })?;
        st.slot.store(0, Relaxed);
        st.first_block.store(rest, Relaxed);
        st.blocks.store(view.blocks - n as u32, Relaxed);
        Ok(true)
    }

    /// `find_msg`: the message `search` selects, if any.
    #[inline(always)]
    pub fn find(&self, search: Search) -> Result<Option<Found>> {
        let h = self.header();
        let mut prev = 0u32;
        let mut link = h.head.load(Acquire);
        let mut count = 0i64;
        let mut best: Option<Found> = None;
        let mut limit = match search {
            Search::LessEqual(t) => t,
            _ => 0,
        };
        for _ in 0..self.capacity {
            if link == 0 {
                return Ok(best);
            }
            let s = self.slot(link)?;
            let mtype = s.mtype.load(Relaxed);
            let size = s.size.load(Relaxed) as u64;
            let found = Found { prev, slot: link, first_block: s.first_block.load(Relaxed), mtype, size, gen: s.gen.load(Relaxed) };
            match search {
                Search::Any => return Ok(Some(found)),
                Search::Equal(t) if mtype == t => return Ok(Some(found)),
                Search::NotEqual(t) if mtype != t => return Ok(Some(found)),
                Search::Number(n) => {
                    if n == count {
                        return Ok(Some(found));
                    }
                    count += 1;
                }
                Search::LessEqual(_) if mtype <= limit => {
                    if mtype <= 1 {
                        // Nothing lower can follow (types are ≥ 1).
                        return Ok(Some(found));
                    }
                    limit = mtype - 1;
                    best = Some(found);
                }
                _ => {}
            }
            prev = link;
            link = s.next.load(Acquire);
        }
        if link == 0 {
            Ok(best)
        } else {
            Err(CORRUPT) // longer than the capacity: a cycle
        }
    }

    /// `find` without the lock, for a receiver that copies the text before it takes the
    /// lock (as the kernel copies outside its lock), so that the two sides of a stream copy
    /// at once. What it reads may be changing: it gives up (None) after PEEK_STEPS messages
    /// or on anything odd, and the caller may trust the result only once `same` confirms
    /// it under the lock. Copying from it is bounds-checked like any other read.
    /// It starts at `start` if not 0: the message that followed the one the caller took
    /// last (`unlink`), which for a stream's receiver is the head, found without reading
    /// the lock's line, which the sender is about to take (a hint: a message found from
    /// there that is not the one `find` picks fails `same`; its `prev` is 0 whatever
    /// precedes it, unused as only `find`'s result is unlinked).
    #[inline(always)]
    pub fn peek(&self, search: Search, start: u32) -> Option<Found> {
        let mut prev = 0u32;
        let mut link = if start != 0 { start } else { self.header().head.load(Acquire) };
        for _ in 0..PEEK_STEPS {
            if link == 0 {
                return None;
            }
            let s = self.slot(link).ok()?;
            // Acquire: the fields and text written before this generation are visible.
            let gen = s.gen.load(Acquire);
            if gen & 1 == 0 {
                return None;
            }
            let mtype = s.mtype.load(Relaxed);
            let found = Found { prev, slot: link, first_block: s.first_block.load(Relaxed), mtype, size: s.size.load(Relaxed) as u64, gen };
            match search {
                Search::Any => return Some(found),
                Search::Equal(t) if mtype == t => return Some(found),
                Search::NotEqual(t) if mtype != t => return Some(found),
                Search::Equal(_) | Search::NotEqual(_) => {}
                // Need the whole list, or never taken without the lock.
                Search::LessEqual(_) | Search::Number(_) => return None,
            }
            prev = link;
            link = s.next.load(Acquire);
        }
        None
    }

    /// Whether `peeked` (from `peek`, its text read since) is the message `found` (from
    /// `find`, the lock held) and stayed queued all along: the same slot, still at the
    /// generation it had before anything of it was read. The reads of the text must be
    /// ordered before `find`'s read of the generation (an Acquire fence after them, as in
    /// a seqlock).
    #[inline(always)]
    pub fn same(peeked: &Found, found: &Found) -> bool {
        peeked.slot == found.slot && peeked.gen == found.gen && peeked.size == found.size && peeked.first_block == found.first_block
    }

    /// Reads `len` bytes of the text of `found` through `sink(src, offset, len)`, run of
    /// blocks by run.
    #[inline(always)]
    pub fn copy_out(&self, found: &Found, len: usize, mut sink: impl FnMut(*const u8, usize, usize) -> Result<()>) -> Result<()> {
        let len = (len as u64).min(found.size) as usize;
        self.runs(found.first_block, len, |src, off, n| sink(src, off, n))
    }

    /// Removes `found` (just returned by `find`, the lock held since) from the queue.
    /// `on_commit` runs right after the store that removes it (msgrcv stores the type
    /// there, so that a receiver killed in between loses or duplicates nothing but a few
    /// instructions' worth of chance). Ok: the message that followed it (0: none).
    #[inline(always)]
    pub fn unlink(&self, found: &Found, on_commit: impl FnOnce()) -> Result<u32> {
        let h = self.header();
        let slot = self.slot(found.slot)?;
        let next = slot.next.load(Relaxed);
        // The commit: one store takes the message out of the queue.
        if found.prev == 0 {
            h.head.store(next, Release);
        } else {
            self.slot(found.prev)?.next.store(next, Release);
        }
        on_commit();
        if h.tail.load(Relaxed) == found.slot {
            h.tail.store(found.prev, Relaxed);
        }
        h.qnum.store(h.qnum.load(Relaxed).saturating_sub(1), Relaxed);
        h.cbytes.store(h.cbytes.load(Relaxed).saturating_sub(found.size), Relaxed);
        self.push_slot_keeping_text(found.slot, found.first_block, blocks_for(found.size))?;
        Ok(next)
    }

    /// After a holder of the lock died: rebuilds everything derived from the message list
    /// (tail, counters, free lists). EIDRM if the list itself is corrupt.
    /// Stashes whose owner `alive` says is dead, or that claim what something else holds,
    /// are emptied (their slot and blocks become free).
    pub fn recover(&self, alive: impl Fn(i32) -> bool) -> Result<()> {
        let h = self.header();
        let cap = self.capacity;
        let slot_hwm = h.slot_hwm.load(Relaxed).min(cap);
        let block_hwm = h.block_hwm.load(Relaxed).min(cap);
        h.slot_hwm.store(slot_hwm, Relaxed);
        h.block_hwm.store(block_hwm, Relaxed);
        let mut slot_used = vec![false; slot_hwm as usize];
        let mut block_used = vec![false; block_hwm as usize];
        let (mut qnum, mut cbytes) = (0u64, 0u64);
        let mut prev = 0u32;
        let mut link = h.head.load(Relaxed);
        while link != 0 {
            if link > slot_hwm || slot_used[link as usize - 1] {
                return Err(CORRUPT);
            }
            slot_used[link as usize - 1] = true;
            let s = self.slot(link)?;
            let size = s.size.load(Relaxed) as u64;
            let nblocks = blocks_for(size);
            if nblocks > block_hwm as u64 {
                return Err(CORRUPT);
            }
            let mut b = s.first_block.load(Relaxed);
            for k in 0..nblocks {
                if b == 0 || b > block_hwm || block_used[b as usize - 1] {
                    return Err(CORRUPT);
                }
                block_used[b as usize - 1] = true;
                if k + 1 < nblocks {
                    b = self.block_next(b)?.load(Relaxed);
                }
            }
            qnum += 1;
            cbytes += size;
            prev = link;
            link = s.next.load(Relaxed);
        }
        h.tail.store(prev, Relaxed);
        h.qnum.store(qnum, Relaxed);
        h.cbytes.store(cbytes, Relaxed);
        for st in &h.stashes {
            let owner = st.owner.load(Relaxed);
            if owner != 0 && !(alive(owner) && self.mark_stash(st, &mut slot_used, &mut block_used)) {
                st.owner.store(0, Relaxed);
                st.slot.store(0, Relaxed);
                st.first_block.store(0, Relaxed);
                st.blocks.store(0, Relaxed);
            }
        }
        // Everything handed out and neither in the queue nor stashed is free.
        h.spare_slot.store(0, Relaxed);
        h.free_slot.store(0, Relaxed);
        for i in (0..slot_hwm).rev() {
            if !slot_used[i as usize] {
                self.push_slot(i + 1)?;
            }
        }
        h.free_block.store(0, Relaxed);
        for i in (0..block_hwm).rev() {
            if !block_used[i as usize] {
                self.block_next(i + 1)?.store(h.free_block.load(Relaxed), Relaxed);
                h.free_block.store(i + 1, Relaxed);
            }
        }
        Ok(())
    }
}

impl Queue {
    /// `recover`: marks what a live owner's stash holds as used. False, nothing marked, if
    /// it holds anything out of bounds or already used.
    fn mark_stash(&self, st: &Stash, slot_used: &mut [bool], block_used: &mut [bool]) -> bool {
        let slot = st.slot.load(Relaxed);
        let blocks = st.blocks.load(Relaxed);
        if slot as usize > slot_used.len() || (slot != 0 && slot_used[slot as usize - 1]) || blocks > STASH_BLOCKS {
            return false;
        }
        let mut chain = [0u32; STASH_BLOCKS as usize];
        let mut b = st.first_block.load(Relaxed);
        for k in 0..blocks as usize {
            if b == 0 || b as usize > block_used.len() || block_used[b as usize - 1] || chain[..k].contains(&b) {
                return false;
            }
            chain[k] = b;
            if k + 1 < blocks as usize {
                let Ok(next) = self.block_next(b) else { return false };
                b = next.load(Relaxed);
            }
        }
        if slot != 0 {
            slot_used[slot as usize - 1] = true;
        }
        for &b in &chain[..blocks as usize] {
            block_used[b as usize - 1] = true;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    struct Mem {
        ptr: *mut u8,
        len: usize,
    }
    impl Mem {
        fn new(capacity: u32, qbytes: u64) -> (Mem, Queue) {
            let len = memfd_len(capacity);
            let ptr = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            } as *mut u8;
            unsafe { Queue::init(ptr, capacity, qbytes).unwrap() };
            let q = unsafe { Queue::new(ptr, len).unwrap() };
            (Mem { ptr, len }, q)
        }
    }
    impl Drop for Mem {
        fn drop(&mut self) {
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }

    fn text(id: u32, size: usize) -> Vec<u8> {
        (0..size).map(|i| (id as usize * 31 + i) as u8).collect()
    }

    fn send(q: &Queue, mtype: i64, data: &[u8]) -> Result<bool> {
        if !q.fits(data.len() as u64) {
            return Ok(false);
        }
        q.enqueue(mtype, data.len() as u64, |dst, off, len| {
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(off), dst, len) };
            Ok(())
        })
    }

    fn receive(q: &Queue, search: Search, copy_only: bool) -> Result<Option<(i64, Vec<u8>)>> {
        let Some(f) = q.find(search)? else { return Ok(None) };
        let mut out = vec![0u8; f.size as usize];
        q.copy_out(&f, f.size as usize, |src, off, len| {
            unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr().add(off), len) };
            Ok(())
        })?;
        if !copy_only {
            q.unlink(&f, || {})?;
        }
        Ok(Some((f.mtype, out)))
    }

    /// The kernel's find_msg over a plain list.
    fn model_find(m: &VecDeque<(i64, Vec<u8>)>, search: Search) -> Option<usize> {
        match search {
            Search::Any => (!m.is_empty()).then_some(0),
            Search::Equal(t) => m.iter().position(|x| x.0 == t),
            Search::NotEqual(t) => m.iter().position(|x| x.0 != t),
            Search::Number(n) => (n >= 0 && (n as usize) < m.len()).then_some(n as usize),
            Search::LessEqual(t) => {
                let min = m.iter().filter(|x| x.0 <= t).map(|x| x.0).min()?;
                m.iter().position(|x| x.0 == min)
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Send(i64, usize),
        Recv(Search, bool),
        Recover,
        /// A sender dies after taking slot and blocks, before linking.
        DieSending(usize),
        /// A receiver dies after unlinking, before freeing.
        DieReceiving,
        /// Process `p` writes a text into its stash (claimed and stocked first), without the
        /// lock: other operations may come before its `StashCommit`.
        StashFill(i32, usize),
        /// Process `p` links what it wrote (a message of type `t`).
        StashCommit(i32, i64),
        /// Process `p` dies (outside the lock).
        Kill(i32),
        /// Process `p` dies holding the lock, after linking its stashed message and before
        /// updating its stash; the next locker recovers.
        DieCommitting(i32, i64, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let search = prop_oneof![
            Just(Search::Any),
            (1i64..6).prop_map(Search::Equal),
            (1i64..6).prop_map(Search::NotEqual),
            (1i64..6).prop_map(Search::LessEqual),
            (-1i64..8).prop_map(Search::Number),
        ];
        prop_oneof![
            4 => (1i64..6, prop_oneof![0usize..4, 900usize..2500]).prop_map(|(t, s)| Op::Send(t, s)),
            4 => (search, any::<bool>()).prop_map(|(s, c)| Op::Recv(s, c)),
            1 => Just(Op::Recover),
            1 => (0usize..3000).prop_map(Op::DieSending),
            1 => Just(Op::DieReceiving),
            3 => (1i32..5, prop_oneof![0usize..4, 256usize..2500]).prop_map(|(p, s)| Op::StashFill(p, s)),
            3 => (1i32..5, 1i64..6).prop_map(|(p, t)| Op::StashCommit(p, t)),
            1 => (1i32..5).prop_map(Op::Kill),
            1 => (1i32..5, 1i64..6, 256usize..2500).prop_map(|(p, t, s)| Op::DieCommitting(p, t, s)),
        ]
    }

    /// Process `pid`'s stash, claimed and stocked for `size` bytes (as the client does
    /// after a send), or None if none is free or it cannot hold the text.
    fn stocked(q: &Queue, pid: i32, size: usize, alive: &dyn Fn(i32) -> bool) -> Option<StashView> {
        let view = q.claim_stash(pid, alive).unwrap()?;
        let view = q.refill_stash(view.index, blocks_for(size as u64).max(1) as u32).unwrap();
        (view.slot != 0 && blocks_for(size as u64) <= view.blocks as u64).then_some(view)
    }

    /// The slots and blocks the stashes hold.
    fn stashed(q: &Queue) -> (u64, u64) {
        let live = q.header().stashes.iter().filter(|st| st.owner.load(Relaxed) != 0);
        live.fold((0, 0), |(s, b), st| (s + (st.slot.load(Relaxed) != 0) as u64, b + st.blocks.load(Relaxed) as u64))
    }

    /// Every slot and block handed out is in exactly one place: a free list, a queued
    /// message, a stash.
    fn accounted(q: &Queue) -> bool {
        let h = q.header();
        let (mut slots, mut blocks) = (0u64, 0u64);
        if h.spare_slot.load(Relaxed) != 0 {
            slots += 1;
            blocks += h.spare_blocks.load(Relaxed) as u64;
        }
        let mut l = h.free_slot.load(Relaxed);
        while l != 0 && slots <= q.capacity as u64 {
            slots += 1;
            // The blocks of the text it held, kept with it.
            blocks += blocks_for(q.slot(l).unwrap().size.load(Relaxed) as u64);
            l = q.slot(l).unwrap().next.load(Relaxed);
        }
        let mut b = h.free_block.load(Relaxed);
        while b != 0 && blocks <= q.capacity as u64 {
            blocks += 1;
            b = q.block_next(b).unwrap().load(Relaxed);
        }
        slots += h.qnum.load(Relaxed);
        let mut m = h.head.load(Relaxed);
        while m != 0 {
            let s = q.slot(m).unwrap();
            blocks += blocks_for(s.size.load(Relaxed) as u64);
            m = s.next.load(Relaxed);
        }
        for st in &h.stashes {
            if st.owner.load(Relaxed) != 0 {
                slots += (st.slot.load(Relaxed) != 0) as u64;
                blocks += st.blocks.load(Relaxed) as u64;
            }
        }
        slots == h.slot_hwm.load(Relaxed) as u64 && blocks == h.block_hwm.load(Relaxed) as u64
    }

    proptest! {
        #[test]
        // Capacity 12: the memory runs out often, so the blocks free slots kept are
        // gathered back (`release_kept_texts`) between the other steps.
        fn queue_matches_model(ops in proptest::collection::vec(op(), 1..120), cap in prop_oneof![Just(64u32), Just(12u32)]) {
            let (_mem, q) = Mem::new(cap, 20000);
            let mut model: VecDeque<(i64, Vec<u8>)> = VecDeque::new();
            let mut id = 0u32;
            let dead = std::cell::RefCell::new(std::collections::HashSet::new());
            let alive = |pid: i32| !dead.borrow().contains(&pid);
            let mut written: std::collections::HashMap<i32, (StashView, Vec<u8>)> = Default::default();
            for op in ops {
                match op {
                    Op::StashFill(pid, size) => {
                        dead.borrow_mut().remove(&pid); // a new process with that pid
                        id += 1;
                        let data = text(id, size);
                        if let Some(view) = stocked(&q, pid, size, &alive) {
                            q.fill_stashed(&view, 1, size as u64, |dst, off, len| {
                                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(off), dst, len) };
                                Ok(())
                            })
                            .unwrap();
                            written.insert(pid, (view, data));
                        }
                    }
                    Op::StashCommit(pid, t) => {
                        let bytes: usize = model.iter().map(|m| m.1.len()).sum();
                        if let Some((view, data)) = written.remove(&pid) {
                            if bytes + data.len() <= 20000 {
                                // Nothing else touched the stash of a live process.
                                prop_assert!(q.commit_stashed(&view, pid, t, data.len() as u64).unwrap());
                                model.push_back((t, data));
                            }
                        }
                    }
                    Op::Kill(pid) => {
                        dead.borrow_mut().insert(pid);
                        written.remove(&pid);
                    }
                    Op::DieCommitting(pid, t, size) => {
                        dead.borrow_mut().remove(&pid);
                        written.remove(&pid);
                        id += 1;
                        let data = text(id, size);
                        let bytes: usize = model.iter().map(|m| m.1.len()).sum();
                        if bytes + size <= 20000 {
                            if let Some(view) = stocked(&q, pid, size, &alive) {
                                q.fill_stashed(&view, 1, size as u64, |dst, off, len| {
                                    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(off), dst, len) };
                                    Ok(())
                                })
                                .unwrap();
                                // commit_stashed's link, and no more.
                                q.link(view.slot, t, size as u32, view.first_block).unwrap();
                                model.push_back((t, data));
                                dead.borrow_mut().insert(pid);
                                q.recover(&alive).unwrap();
                            }
                        }
                    }
                    Op::Send(t, size) => {
                        id += 1;
                        let data = text(id, size);
                        let bytes: usize = model.iter().map(|m| m.1.len()).sum();
                        let fits = bytes + size <= 20000 && model.len() < 20000;
                        let sent = send(&q, t, &data).unwrap();
                        if sent {
                            model.push_back((t, data));
                        } else {
                            // Only qbytes or the capacity refuse: the slots or blocks that
                            // messages and stashes hold (those free slots kept are free).
                            let blocks: u64 = model.iter().map(|m| blocks_for(m.1.len() as u64)).sum();
                            let (stashed_slots, stashed_blocks) = stashed(&q);
                            let cap = cap as u64;
                            prop_assert!(!fits || model.len() as u64 + stashed_slots >= cap || blocks + stashed_blocks + blocks_for(size as u64) > cap);
                        }
                    }
                    Op::Recv(s, copy) => {
                        let got = receive(&q, s, copy).unwrap();
                        let want = model_find(&model, s);
                        match want {
                            None => prop_assert!(got.is_none()),
                            Some(i) => {
                                prop_assert_eq!(got.as_ref(), Some(&model[i]));
                                if !copy {
                                    model.remove(i);
                                }
                            }
                        }
                    }
                    Op::Recover => q.recover(&alive).unwrap(),
                    Op::DieSending(size) => {
                        // Take resources like enqueue, then "die" before the commit.
                        if q.pop_slot().unwrap().is_some() && size > 0 {
                            q.take_blocks(blocks_for(size as u64)).unwrap();
                        }
                        q.recover(|_| true).unwrap();
                    }
                    Op::DieReceiving => {
                        if let Some(f) = q.find(Search::Any).unwrap() {
                            // Commit only (as unlink's first store), then die.
                            let next = q.slot(f.slot).unwrap().next.load(Relaxed);
                            q.header().head.store(next, Relaxed);
                            model.pop_front();
                            q.recover(|_| true).unwrap();
                        }
                    }
                }
                let h = q.header();
                prop_assert_eq!(h.qnum.load(Relaxed), model.len() as u64);
                prop_assert_eq!(h.cbytes.load(Relaxed), model.iter().map(|m| m.1.len() as u64).sum::<u64>());
                prop_assert!(accounted(&q));
            }
        }
    }

    #[test]
    fn blocks_kept_by_free_slots_serve_any_size() {
        let (_mem, q) = Mem::new(8, 1 << 20);
        // Eight one-block messages received: every block is kept by a free slot.
        for i in 0..8 {
            assert!(send(&q, 1, &text(i, 1000)).unwrap());
        }
        for _ in 0..8 {
            assert!(receive(&q, Search::Any, false).unwrap().is_some());
        }
        assert_eq!(q.header().free_block.load(Relaxed), 0);
        assert_eq!(q.header().block_hwm.load(Relaxed), 8);
        assert!(accounted(&q));
        // A one-block message takes a slot with its block; a longer one gathers blocks
        // that other free slots kept.
        assert!(send(&q, 2, &text(20, 900)).unwrap());
        assert!(send(&q, 3, &text(21, 5000)).unwrap());
        assert!(send(&q, 4, &text(22, 2048)).unwrap());
        // All eight blocks are in messages now.
        assert!(!send(&q, 5, &text(23, 1)).unwrap());
        assert!(accounted(&q));
        assert_eq!(receive(&q, Search::Equal(3), false).unwrap(), Some((3, text(21, 5000))));
        assert_eq!(receive(&q, Search::Any, false).unwrap(), Some((2, text(20, 900))));
        assert_eq!(receive(&q, Search::Any, false).unwrap(), Some((4, text(22, 2048))));
        assert!(accounted(&q));
    }

    #[test]
    fn a_stream_goes_round_one_slot_and_block_through_the_spare() {
        let (_mem, q) = Mem::new(64, 20000);
        for i in 0..10 {
            assert!(send(&q, 1, &text(i, 1000)).unwrap());
            assert_eq!(receive(&q, Search::Any, false).unwrap(), Some((1, text(i, 1000))));
            let h = q.header();
            // Freed as the spare, with its block: the free lists stay empty.
            assert_eq!((h.spare_slot.load(Relaxed), h.spare_first.load(Relaxed), h.spare_blocks.load(Relaxed)), (1, 1, 1));
            assert_eq!((h.free_slot.load(Relaxed), h.free_block.load(Relaxed)), (0, 0));
            assert_eq!((h.slot_hwm.load(Relaxed), h.block_hwm.load(Relaxed)), (1, 1));
            assert!(accounted(&q));
        }
    }

    #[test]
    fn a_peek_from_a_hint_is_confirmed_only_while_the_hint_is_the_message_found() {
        let (_mem, q) = Mem::new(16, 20000);
        for i in 0..3 {
            assert!(send(&q, 1, &text(i, 600)).unwrap());
        }
        let first = q.find(Search::Any).unwrap().unwrap();
        let next = q.unlink(&first, || {}).unwrap();
        assert_ne!(next, 0, "the second message follows the first");
        // The hint is the head: the peek is the message found.
        let peeked = q.peek(Search::Any, next).unwrap();
        let found = q.find(Search::Any).unwrap().unwrap();
        assert!(Queue::same(&peeked, &found));
        assert_eq!(q.unlink(&found, || {}).unwrap(), q.find(Search::Any).unwrap().unwrap().slot);
        // A stale hint: the slot was freed and linked again behind the third message.
        assert!(send(&q, 1, &text(9, 600)).unwrap());
        let stale = q.peek(Search::Any, next).unwrap();
        let found = q.find(Search::Any).unwrap().unwrap();
        assert!(!Queue::same(&stale, &found));
        assert_eq!(receive(&q, Search::Any, false).unwrap(), Some((1, text(2, 600))));
        assert_eq!(receive(&q, Search::Any, false).unwrap(), Some((1, text(9, 600))));
        // A hint out of bounds: no peek.
        assert_eq!(q.peek(Search::Any, 1000), None);
        assert!(accounted(&q));
    }

    #[test]
    fn a_peek_is_confirmed_only_at_the_generation_it_read() {
        let (_mem, q) = Mem::new(16, 20000);
        // The slot read is taken, freed, and linked again at the head for a message of the
        // same size in the same block: only its generation tells them apart.
        assert!(send(&q, 1, &text(1, 600)).unwrap());
        let peeked = q.peek(Search::Any, 0).unwrap();
        assert_eq!(receive(&q, Search::Any, false).unwrap(), Some((1, text(1, 600))));
        assert!(send(&q, 1, &text(2, 600)).unwrap());
        let found = q.find(Search::Any).unwrap().unwrap();
        assert_eq!((found.slot, found.first_block, found.size), (peeked.slot, peeked.first_block, peeked.size));
        assert!(!Queue::same(&peeked, &found));
        // A hint at a slot freed and not linked again, the message after it queued.
        assert!(send(&q, 1, &text(3, 600)).unwrap());
        assert!(send(&q, 1, &text(4, 600)).unwrap());
        let first = q.find(Search::Any).unwrap().unwrap();
        let next = q.unlink(&first, || {}).unwrap();
        let second = q.find(Search::Any).unwrap().unwrap();
        assert_eq!(second.slot, next);
        q.unlink(&second, || {}).unwrap();
        let stale = q.peek(Search::Any, next).unwrap();
        let found = q.find(Search::Any).unwrap().unwrap();
        assert!(!Queue::same(&stale, &found));
        assert_eq!(receive(&q, Search::Any, false).unwrap(), Some((1, text(4, 600))));
        assert!(accounted(&q));
    }

    #[test]
    fn corrupt_links_are_errors() {
        let (_mem, q) = Mem::new(8, 4000);
        assert!(send(&q, 1, &[1, 2, 3]).unwrap());
        assert!(send(&q, 2, &[4; 300]).unwrap());
        // A cycle.
        let tail = q.header().tail.load(Relaxed);
        q.slot(tail).unwrap().next.store(q.header().head.load(Relaxed), Relaxed);
        assert_eq!(q.find(Search::Equal(9)), Err(CORRUPT));
        assert_eq!(q.recover(|_| true), Err(CORRUPT));
        // Out of bounds.
        q.header().head.store(1000, Relaxed);
        assert_eq!(q.find(Search::Any), Err(CORRUPT));
        q.header().head.store(0, Relaxed);
        q.header().free_slot.store(77, Relaxed);
        assert_eq!(send(&q, 1, &[1]), Err(CORRUPT));
        q.recover(|_| true).unwrap();
        assert!(send(&q, 1, &[1]).unwrap());
        // A spare out of bounds, or naming more blocks than the queue has.
        q.header().spare_slot.store(77, Relaxed);
        assert_eq!(send(&q, 1, &[1]), Err(CORRUPT));
        q.recover(|_| true).unwrap();
        assert!(receive(&q, Search::Any, false).unwrap().is_some());
        assert_ne!(q.header().spare_slot.load(Relaxed), 0);
        q.header().spare_blocks.store(u32::MAX, Relaxed);
        assert_eq!(send(&q, 1, &[1]), Err(CORRUPT));
        q.recover(|_| true).unwrap();
        assert!(send(&q, 1, &[1]).unwrap());
        // A capacity larger than the mapping is refused.
        q.header().capacity.store(1 << 30, Relaxed);
        assert!(unsafe { Queue::new(_mem.ptr, _mem.len) }.is_err());
    }
}
