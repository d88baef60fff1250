//! This thread's words that the fast paths read on every call: its hazard record (handles.rs)
//! and its cached thread id (sync.rs); and which process-wide locks it holds (`lock_held`).
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
