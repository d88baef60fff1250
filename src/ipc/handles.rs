//! Retiring a process's handles on mapped objects (semaphore sets, message queues).
//!
//! A handle is found through a lock-free array of pointers and used without a lock, so one
//! taken out of the array (the object removed, or mapped again) cannot be freed at once: a
//! thread may still hold it. It goes on a `Retired` list and is freed once
//! - no thread is counted in its `users` (an `InUse` guard: one that sleeps or waits for
//!   the object's lock, however long), and
//! - no thread's hazard slot holds it (a `Pinned` guard: every call from the moment it
//!   finds the handle in the array, fast path included, however long a signal handler
//!   stalls it there), and
//! - a grace period has passed (cheap insurance: hazards are looked at only then).
//!
//! Hazard slots: each thread has a small stack of slots (`Hazards`, registered in a global
//! list on its first call, given back for reuse by a TLS destructor at thread exit). A call
//! claims its next slot (raising its depth, a plain store), reads the array, and puts the
//! pointer it read in the slot; a signal handler calling in meanwhile pushes above it, so
//! nested calls keep every outer handle pinned. The retiring side, once the handle is out
//! of the array, runs `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every
//! thread's earlier stores visible, before it looks at the slots: a claimed slot still
//! empty may come to hold anything, so that sweep frees nothing; a reader whose claim it
//! does not see reads the array after the handle left it and never uses it. (Claiming
//! first spares a second read of the array and its compare: 3 ns of a 38 ns semop pair,
//! though msg_64 pairs came out 5 ns slower, unexplained; the price: a thread stalled
//! between the claim and the pointer's store, a few instructions, postpones every free of
//! its process until it goes on.) Without membarrier (an old kernel, a seccomp filter)
//! both sides use a SeqCst fence instead.

use super::thread::{words, Exclusive};
use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

/// A handle with a count of the threads that use it for longer than a call's fast path.
pub trait Counted {
    fn users(&self) -> &AtomicU32;
}

/// How long a retired handle waits at least before its hazards are looked at (a
/// membarrier costs an interrupt on every CPU running one of our threads).
const GRACE: Duration = if cfg!(test) { Duration::ZERO } else { Duration::from_secs(2) };

/// Hazard slots per thread: one per nesting level (a call, a signal handler's call inside
/// it, ...). A call nested deeper than this is not pinned and relies on the grace period.
const SLOTS: usize = 8;

/// One thread's hazard slots.
#[repr(align(64))]
struct Hazards {
    slots: [AtomicPtr<()>; SLOTS],
    /// Slots in use (only this thread and its signal handlers change it).
    depth: AtomicUsize,
    /// No membarrier: a reader fences after publishing.
    fence: bool,
    /// Given back by an exited thread, for the next new thread.
    free: AtomicBool,
    /// The next record of the global list (records are never freed).
    next: *const Hazards,
}

/// Every thread's `Hazards`, pushed at the head, never unlinked.
static ALL: AtomicPtr<Hazards> = AtomicPtr::new(std::ptr::null_mut());

/// 0: not decided yet; 1: membarrier (registered at the first sweep); 2: fences instead.
static BARRIER: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Gives the record back at thread exit (touched once, when the record is taken).
    static GIVE_BACK: GiveBack = const { GiveBack };
}

struct GiveBack;

impl Drop for GiveBack {
    fn drop(&mut self) {
        let rec = words().hazards.replace(std::ptr::null()) as *const Hazards;
        if !rec.is_null() {
            // Every pin of this thread is over: its slots are null. Its depth too, unless
            // the thread left a call from a signal handler (pthread_exit) between a claim
            // and its pointer: that claim would otherwise stop every sweep for good.
            let r = unsafe { &*rec };
            r.depth.store(0, Relaxed);
            r.free.store(true, Release);
        }
    }
}

/// Whether readers must fence (decided once, before the first record is handed out).
fn needs_fence() -> bool {
    match BARRIER.load(Acquire) {
        1 => false,
        2 => true,
        _ => {
            // Only asked here: registering may wait for an RCU grace period, which the
            // first sweep can afford and a process's first call should not pay.
            let cmds = unsafe { libc::syscall(libc::SYS_membarrier, libc::MEMBARRIER_CMD_QUERY, 0, 0) };
            let v = if cmds > 0 && cmds & libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED as libc::c_long != 0 { 1 } else { 2 };
            // Another thread may have decided meanwhile: its choice stands.
            match BARRIER.compare_exchange(0, v, AcqRel, Acquire) {
                Ok(_) => v == 2,
                Err(other) => other == 2,
            }
        }
    }
}

fn membarrier(cmd: libc::c_int) -> bool {
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// Makes every thread's earlier hazard stores visible to this one.
fn barrier() -> bool {
    if needs_fence() {
        fence(SeqCst);
        return true;
    }
    // Registered once for the process, at the first sweep (or again in a forked child
    // that did not inherit it). Failing, nothing is freed.
    membarrier(libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED)
        || (membarrier(libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) && membarrier(libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED))
}

/// This thread's record (a forked child's is its parent's thread's, kept by `after_fork`).
#[inline(always)]
fn mine() -> *const Hazards {
    let rec = super::thread::hazards_word() as *const Hazards;
    if rec.is_null() {
        return register();
    }
    rec
}

/// Takes a free record or makes one, for this thread.
#[cold]
fn register() -> *const Hazards {
    let fence = needs_fence();
    let mut p = ALL.load(Acquire) as *const Hazards;
    let rec = loop {
        if p.is_null() {
            let new = Box::into_raw(Box::new(Hazards {
                slots: [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS],
                depth: AtomicUsize::new(0),
                fence,
                free: AtomicBool::new(false),
                next: std::ptr::null(),
            }));
            let mut head = ALL.load(Acquire);
            loop {
                unsafe { (*new).next = head };
                match ALL.compare_exchange_weak(head, new, AcqRel, Acquire) {
                    Ok(_) => break,
                    Err(now) => head = now,
                }
            }
            break new as *const Hazards;
        }
        let r = unsafe { &*p };
        if r.free.load(Relaxed) && r.free.compare_exchange(true, false, Acquire, Relaxed).is_ok() {
            break p;
        }
        p = r.next;
    };
    words().hazards.set(rec as *const ());
    // Registers the destructor; failing (the thread is exiting), the record stays ours.
    let _ = GIVE_BACK.try_with(|_| ());
    rec
}

/// A handle read from its slot in the array and pinned: it is not freed before this is
/// dropped. Restores the thread's hazard stack on drop.
pub struct Pinned<T: 'static> {
    handle: &'static T,
    rec: *const Hazards,
    /// The slot index, or SLOTS if nested too deep to pin.
    level: usize,
}

/// The handle in `slot`, pinned, or None if the slot is empty.
#[inline(always)]
pub fn pin<T>(slot: &AtomicPtr<T>) -> Option<Pinned<T>> {
    let rec = mine();
    let r = unsafe { &*rec };
    let level = r.depth.load(Relaxed);
    if level >= SLOTS {
        let p = slot.load(Acquire);
        return (!p.is_null()).then(|| Pinned { handle: unsafe { &*p }, rec, level: SLOTS });
    }
    // Depth first: a signal handler calling in between the two stores uses the next slot.
    // The depth is also the claim, made before the array is read: a sweep that sees a
    // slot below the depth still empty frees nothing, and one that does not see the claim
    // ran its barrier before our read, which then finds the array without the handles it
    // retired.
    r.depth.store(level + 1, Relaxed);
    if r.fence {
        fence(SeqCst);
    } else {
        compiler_fence(SeqCst);
    }
    let p = slot.load(Acquire);
    if p.is_null() {
        compiler_fence(SeqCst);
        r.depth.store(level, Relaxed);
        return None;
    }
    r.slots[level].store(p as *mut (), Relaxed);
    Some(Pinned { handle: unsafe { &*p }, rec, level })
}

/// What `hazards` reports for a claimed slot still empty: its call is reading the array
/// and may come to hold any handle.
const PENDING: *mut () = 1 as *mut ();

impl<T> Pinned<T> {
    #[inline(always)]
    pub fn get(&self) -> &'static T {
        self.handle
    }
}

impl<T> Drop for Pinned<T> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.level < SLOTS {
            let r = unsafe { &*self.rec };
            // Release: whatever this call did (an `InUse` count) is seen by a sweep that
            // finds the slot empty.
            r.slots[self.level].store(std::ptr::null_mut(), Release);
            // Release too: a sweep that reads the lower depth (and so skips the slot) also
            // sees everything this call did, where stores may pass each other.
            r.depth.store(self.level, Release);
        }
    }
}

/// Every pointer some thread's hazard slot holds now (after a `barrier`); PENDING among
/// them if some call is reading the array. A claim lasts a few instructions: a record that
/// shows one is read again for a while before it counts as pending, so that a thread
/// calling in a tight loop does not hold up every sweep.
fn hazards() -> Vec<*mut ()> {
    let mut out = Vec::new();
    let mut p = ALL.load(Acquire) as *const Hazards;
    while !p.is_null() {
        let r = unsafe { &*p };
        let mut pending = true;
        for _ in 0..CLAIM_LOOKS {
            let held = out.len();
            // Slots below the depth are claimed (an empty one: its call is reading the
            // array); those above it are empty.
            let depth = r.depth.load(Acquire).min(SLOTS);
            pending = false;
            for (i, s) in r.slots.iter().enumerate() {
                let h = s.load(Acquire);
                if !h.is_null() {
                    out.push(h);
                } else if i < depth {
                    pending = true;
                }
            }
            if !pending {
                break;
            }
            out.truncate(held);
            std::hint::spin_loop();
        }
        if pending {
            out.push(PENDING);
        }
        p = r.next;
    }
    out
}

/// How many times `hazards` reads a record that shows a claim before it counts as pending.
const CLAIM_LOOKS: usize = 1000;

/// In a forked child: the other threads' records are the parent's threads', which do not
/// exist here; their slots would pin handles forever.
pub(crate) fn after_fork() {
    let me = words().hazards.get() as *const Hazards;
    let mut p = ALL.load(Acquire) as *const Hazards;
    while !p.is_null() {
        let r = unsafe { &*p };
        if p != me {
            for s in &r.slots {
                s.store(std::ptr::null_mut(), Relaxed);
            }
            r.depth.store(0, Relaxed);
            r.free.store(true, Release);
        }
        p = r.next;
    }
}

/// Handles replaced or found removed, freed once no thread can still be using them.
pub struct Retired<T: Counted>(Exclusive<List<T>>);

struct List<T> {
    /// In the order retired, so the first is the oldest.
    entries: Vec<(Instant, *mut T)>,
    /// When the last sweep was: sweeps come at most every SWEEP_EVERY, each freeing all
    /// that are due, not one per retirement (a process that makes and removes queues in a
    /// loop retires thousands a second: a walk of the list and a membarrier each was most
    /// of its time).
    swept: Option<Instant>,
}
// The list owns the handles on it (each came from `Box::into_raw`) and frees them from
// whichever thread sweeps.
unsafe impl<T: Send> Send for List<T> {}

const SWEEP_EVERY: Duration = if cfg!(test) { Duration::ZERO } else { Duration::from_millis(250) };

impl<T: Counted + Send> Retired<T> {
    pub const fn new() -> Retired<T> {
        Retired(Exclusive::new(List { entries: Vec::new(), swept: None }))
    }

    /// Takes `h` out of `slot` and retires it, unless another thread already did (or put
    /// another handle there).
    pub fn take(&self, slot: &AtomicPtr<T>, h: &T) {
        let p = h as *const T as *mut T;
        if slot.compare_exchange(p, std::ptr::null_mut(), AcqRel, Acquire).is_ok() {
            self.push(p);
        }
    }

    /// Puts `h` in `slot`, retiring the handle it replaces. The caller then `pin`s it (it
    /// may be retired again at once).
    pub fn install(&self, slot: &AtomicPtr<T>, h: Box<T>) {
        let old = slot.swap(Box::into_raw(h), AcqRel);
        if !old.is_null() {
            self.push(old);
        }
    }

    /// Adds `p` (from `Box::into_raw`, no longer reachable from the array) to the list and
    /// frees the handles whose time has come.
    fn push(&self, p: *mut T) {
        // try_lock: in a child forked while another thread held the list, the lock stays
        // held forever; the handle is then simply never freed.
        let Some(mut r) = self.0.try_lock() else { return };
        let now = Instant::now();
        r.entries.push((now, p));
        let due = |&(when, _): &(Instant, *mut T)| now.duration_since(when) >= GRACE;
        if !r.entries.first().is_some_and(due) || r.swept.is_some_and(|t| now.duration_since(t) < SWEEP_EVERY) {
            return;
        }
        r.swept = Some(now);
        if !barrier() {
            return;
        }
        // Slots first, then users: a call counts itself in users while pinned, then
        // unpins (Release), so a sweep that finds its slot empty sees its count.
        let pinned = hazards();
        if pinned.contains(&PENDING) {
            return;
        }
        r.entries.retain(|e| {
            if !due(e) || pinned.contains(&(e.1 as *mut ())) || unsafe { &*e.1 }.users().load(Acquire) > 0 {
                return true;
            }
            drop(unsafe { Box::from_raw(e.1) });
            false
        });
    }
}

/// Counts a thread in a handle's `users` while it sleeps or waits for the object's lock,
/// however long that takes (taken while the handle is `Pinned`, and kept past the pin).
pub struct InUse(&'static AtomicU32);

impl InUse {
    #[inline]
    pub fn new<T: Counted>(h: &'static T) -> InUse {
        let users = h.users();
        users.fetch_add(1, AcqRel);
        InUse(users)
    }
}

impl Drop for InUse {
    #[inline]
    fn drop(&mut self) {
        self.0.fetch_sub(1, AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle that counts its drops.
    struct Counting {
        users: AtomicU32,
        dropped: &'static AtomicU32,
    }

    impl Counted for Counting {
        fn users(&self) -> &AtomicU32 {
            &self.users
        }
    }

    impl Drop for Counting {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, SeqCst);
        }
    }

    /// A handle pinned is not freed, nor any while a slot is claimed and not yet filled
    /// (its call is reading the array, and may come to hold any handle); once the pin is
    /// over, the next sweep frees them. (No grace period under test.)
    #[test]
    fn pinned_and_pending_handles_outlive_their_retirement() {
        static DROPPED: AtomicU32 = AtomicU32::new(0);
        static RETIRED: Retired<Counting> = Retired::new();
        let new = || Box::new(Counting { users: AtomicU32::new(0), dropped: &DROPPED });
        let slot = AtomicPtr::new(std::ptr::null_mut());
        // Each install after the first retires the handle it replaces, and sweeps.
        RETIRED.install(&slot, new());
        let pinned = pin(&slot).expect("installed");
        RETIRED.install(&slot, new());
        assert_eq!(DROPPED.load(SeqCst), 0, "pinned: kept");
        drop(pinned);
        // A claim in progress: this thread's next slot claimed and still empty, as between
        // the claim and the pointer's store of a call that a signal handler interrupted.
        let r = unsafe { &*mine() };
        r.depth.store(1, SeqCst);
        RETIRED.install(&slot, new());
        assert_eq!(DROPPED.load(SeqCst), 0, "a pending claim: nothing freed");
        r.depth.store(0, SeqCst);
        RETIRED.install(&slot, new());
        assert_eq!(DROPPED.load(SeqCst), 3, "all retired once no slot holds them");
    }
}
