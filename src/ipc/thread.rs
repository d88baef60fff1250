//! This thread's words that the fast paths read on every call: its hazard record (handles.rs)
//! and its cached thread id (sync.rs); which process-wide locks it holds (`lock_held`); and
//! whether it is inside malloc or a short lock (`not_reentrant`), where a signal handler's
//! call must not come in (docs/architecture.md, "Calls from signal handlers").
//! They live in initial-exec TLS made by a few lines of C (thread_words.c): two
//! instructions away on x86_64, a call elsewhere. Rust's
//! `thread_local!` in a shared library goes through `__tls_get_addr`, which cost an
//! uncontended semop pair a third of its time.
//!
//! A program may still dlopen the library: glibc keeps spare static TLS for libraries with
//! initial-exec variables (these four words).
//!
//! The words start at zero in every thread, live as long as it, and are only touched by
//! the thread itself and its signal handlers (hence `Cell`). A forked child's copy is its
//! parent's thread's: each user says what that means for its word.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

#[repr(C)]
pub struct ThreadWords {
    /// handles.rs: this thread's hazard record (null until its first pin).
    pub hazards: Cell<*const ()>,
    /// sync.rs: (fork generation + 1) << 32 | tid (0: not asked yet).
    pub tid: Cell<u64>,
    /// Which of the process-wide locks that calls hold across system calls this thread
    /// holds or waits for (`Held`): a signal handler's call then must not wait for them.
    pub held: Cell<u8>,
    /// How deep the thread is in sections that a signal handler's call must not enter
    /// (`not_reentrant`).
    pub not_reentrant: Cell<u8>,
}

/// A process-wide lock held across system calls (the broker connection's, shmat's and
/// shmdt's), taken with `lock_held`.
#[derive(Clone, Copy)]
pub enum Held {
    BrokerConnection = 1,
    ShmDetaching = 2,
    ShmState = 4,
}

/// A lock taken with `lock_held`: the thread's mark goes after the lock is let go.
pub struct HeldGuard<G> {
    guard: std::mem::ManuallyDrop<G>,
    which: Held,
}

impl<G> std::ops::Deref for HeldGuard<G> {
    type Target = G;
    fn deref(&self) -> &G {
        &self.guard
    }
}

impl<G> std::ops::DerefMut for HeldGuard<G> {
    fn deref_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> Drop for HeldGuard<G> {
    fn drop(&mut self) {
        // Let go first: a signal handler calling in once the mark is gone finds it free.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.guard) };
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        let held = &words().held;
        held.set(held.get() & !(self.which as u8));
    }
}

/// Takes `lock` (a blocking lock of the process), marking the thread first. A call made by
/// a signal handler while the call it interrupted holds or waits for the same lock fails
/// with EDEADLK (README), as for an object's lock: waiting would never end. Marking before
/// asking leaves no instant unguarded.
pub fn lock_held<G>(which: Held, lock: impl FnOnce() -> G) -> crate::ipc::Result<HeldGuard<G>> {
    let held = &words().held;
    if held.get() & which as u8 != 0 {
        return Err(crate::ipc::Errno(libc::EDEADLK));
    }
    held.set(held.get() | which as u8);
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    Ok(HeldGuard { guard: std::mem::ManuallyDrop::new(lock()), which })
}

/// Runs `f` (a call of malloc, free or realloc: alloc.rs) with the thread marked, so that
/// a signal handler's call into the library meanwhile fails at its entry (`may_enter`)
/// instead of calling malloc again: malloc is not async-signal-safe, and the heap was
/// corrupted ("double free detected"). The mark is written and read with volatile
/// accesses: the compiler knows malloc reads no memory of ours, and could otherwise move
/// the writes across the call.
#[inline(always)]
pub fn not_reentrant<R>(f: impl FnOnce() -> R) -> R {
    mark_not_reentrant(1);
    let r = f();
    mark_not_reentrant(u8::MAX);
    r
}

/// Adds `delta` (1, or u8::MAX to take 1 away) to the thread's `not_reentrant` depth, with
/// compiler fences on the inside of the section.
#[inline(always)]
fn mark_not_reentrant(delta: u8) {
    let mark = words().not_reentrant.as_ptr();
    if delta != 1 {
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
    // A handler that interrupts us between the read and the write leaves the word as it
    // found it: its own sections end before it returns.
    unsafe { mark.write_volatile(mark.read_volatile().wrapping_add(delta)) };
    if delta == 1 {
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// At the entry of a call that may allocate: EDEADLK when it comes from a signal handler
/// that interrupted this thread inside a `not_reentrant` section (README).
#[inline(always)]
pub fn may_enter() -> crate::ipc::Result<()> {
    if unsafe { words().not_reentrant.as_ptr().read_volatile() } != 0 {
        return Err(crate::ipc::Errno(libc::EDEADLK));
    }
    Ok(())
}

/// A process-wide lock held for a moment (a few system calls at most). While a thread holds
/// it, a signal handler's call into the library fails with EDEADLK at its entry
/// (`may_enter`, as inside malloc): waiting for the lock would never end, and the nested
/// call cannot know beforehand whether it will need it (a parking_lot mutex with the
/// thread marked).
pub struct Exclusive<T>(parking_lot::Mutex<T>);

/// The guard of an `Exclusive`: the mark goes after the lock is let go.
pub struct ExclusiveGuard<'a, T>(std::mem::ManuallyDrop<parking_lot::MutexGuard<'a, T>>);

impl<T> Exclusive<T> {
    pub const fn new(value: T) -> Exclusive<T> {
        Exclusive(parking_lot::Mutex::new(value))
    }

    pub fn lock(&self) -> ExclusiveGuard<'_, T> {
        mark_not_reentrant(1);
        ExclusiveGuard(std::mem::ManuallyDrop::new(self.0.lock()))
    }

    pub fn try_lock(&self) -> Option<ExclusiveGuard<'_, T>> {
        mark_not_reentrant(1);
        let guard = self.0.try_lock();
        if guard.is_none() {
            mark_not_reentrant(u8::MAX);
        }
        guard.map(|g| ExclusiveGuard(std::mem::ManuallyDrop::new(g)))
    }

    /// In a forked child, whose parent's other threads may have held it: free again.
    pub fn unlock_after_fork(&self) {
        if self.0.is_locked() {
            unsafe { self.0.force_unlock() };
        }
    }

    /// The value, without the lock.
    ///
    /// # Safety
    /// Only when no other thread can be using it (in a forked child, or in a fork handler).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_unlocked(&self) -> &mut T {
        &mut *self.0.data_ptr()
    }
}

impl<T> std::ops::Deref for ExclusiveGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for ExclusiveGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> Drop for ExclusiveGuard<'_, T> {
    fn drop(&mut self) {
        unsafe { std::mem::ManuallyDrop::drop(&mut self.0) };
        mark_not_reentrant(u8::MAX);
    }
}

/// `*cell`, computed by `f` the first time (0: not yet; `f` must not return 0). Without a
/// lock: a signal handler's call (or another thread) that comes while the value is being
/// computed computes it too, where a once-cell would have the handler wait for ever for
/// the call it interrupted.
#[inline]
pub fn computed_once(cell: &std::sync::atomic::AtomicUsize, f: impl FnOnce() -> usize) -> usize {
    match cell.load(Relaxed) {
        0 => {
            let v = f();
            cell.store(v, Relaxed);
            v
        }
        v => v,
    }
}

/// In a forked child: its one thread holds none of its parent's threads' locks.
pub fn forget_held_after_fork() {
    words().held.set(0);
}

// `hazards_word` reads the first word.
const _: () = assert!(std::mem::offset_of!(ThreadWords, hazards) == 0);

// thread_words.c reserves four words.
const _: () = assert!(std::mem::size_of::<ThreadWords>() <= 4 * std::mem::size_of::<usize>());

/// The calling thread's words (the reference must not leave the thread: `ThreadWords` is
/// not `Sync`, so it cannot).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn words() -> &'static ThreadWords {
    // What the C compiler makes of `&ipcshim_thread_words` in initial-exec mode, inline:
    // the thread pointer plus the variable's offset, which the dynamic linker wrote in
    // the GOT.
    let p: *const ThreadWords;
    unsafe {
        std::arch::asm!(
            "mov {p}, qword ptr fs:[0]",
            "add {p}, qword ptr [rip + ipcshim_thread_words@GOTTPOFF]",
            p = out(reg) p,
            options(pure, readonly, nostack),
        );
        &*p
    }
}

/// `words().hazards.get()` in one load from the thread's block (the first word), not
/// through its address: the fast paths read it on every call (a semop pair 0.7 ns faster).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn hazards_word() -> *const () {
    let p: *const ();
    unsafe {
        std::arch::asm!(
            "mov {p}, qword ptr [rip + ipcshim_thread_words@GOTTPOFF]",
            "mov {p}, qword ptr fs:[{p}]",
            p = out(reg) p,
            options(nostack, readonly, preserves_flags),
        );
    }
    p
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn hazards_word() -> *const () {
    words().hazards.get()
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn words() -> &'static ThreadWords {
    extern "C" {
        fn ipcshim_thread_words_addr() -> *mut ThreadWords;
    }
    unsafe { &*ipcshim_thread_words_addr() }
}

/// Whether this process has a single thread: glibc's `__libc_single_threaded`, which the
/// first pthread_create clears for good (false where the C library has no such flag).
#[inline(always)]
pub fn single_threaded() -> bool {
    static FLAG: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
    let p = FLAG.load(Relaxed);
    if p.is_null() {
        return single_threaded_flag(&FLAG);
    }
    unsafe { std::ptr::read_volatile(p) != 0 }
}

#[cold]
fn single_threaded_flag(flag: &AtomicPtr<u8>) -> bool {
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) } as *mut u8;
    // A zero byte of our own stands in for a missing flag: never single-threaded.
    static NEVER: u8 = 0;
    let p = if sym.is_null() { &NEVER as *const u8 as *mut u8 } else { sym };
    flag.store(p, Relaxed);
    unsafe { std::ptr::read_volatile(p) != 0 }
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn each_thread_has_its_own_words_starting_at_zero() {
        words().tid.set(0x1234);
        let (theirs, start) = std::thread::spawn(|| {
            let start = words().tid.get();
            words().tid.set(0x5678);
            (words() as *const _ as usize, start)
        })
        .join()
        .unwrap();
        assert_eq!(start, 0);
        assert_ne!(theirs, words() as *const _ as usize);
        assert_eq!(words().tid.get(), 0x1234);
        words().tid.set(0);
    }

    #[test]
    fn the_cached_thread_id_is_each_threads_own() {
        let mine = crate::ipc::sync::my_tid();
        assert_eq!(mine, unsafe { libc::gettid() } as u32);
        let theirs = std::thread::spawn(|| (crate::ipc::sync::my_tid(), unsafe { libc::gettid() } as u32)).join().unwrap();
        assert_eq!(theirs.0, theirs.1);
        assert_eq!(crate::ipc::sync::my_tid(), mine);
    }
}
