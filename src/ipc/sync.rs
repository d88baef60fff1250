//! Synchronisation inside shared memory that several processes map: a lock that survives
//! its holder's death, and futex waits that a signal handler interrupts.
//!
//! Why a futex *with a timeout*: signal(7) says a plain FUTEX_WAIT is restarted after a
//! handler installed with SA_RESTART, but msgsnd/msgrcv/semop/semtimedop must fail with
//! EINTR. A FUTEX_WAIT given a timeout is restarted through the restart block
//! (ERESTART_RESTARTBLOCK), which the kernel turns into EINTR whenever a handler runs,
//! SA_RESTART or not — the same rule as nanosleep. So every wait passes a timeout (the
//! caller's, or a long one that is simply renewed), and EINTR reaches the caller. The C
//! tests check this against the kernel's own semop/msgrcv under SA_RESTART.

use super::{Errno, Result};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering::*};
use std::time::{Duration, Instant};

/// A lock in shared memory that survives its holder's death: one futex word holding the
/// holder's thread id. When the holder is found dead, the next locker takes the lock over
/// and is told (`Locked::Recovered`), and must check or repair what the lock protects.
///
/// Why not a robust pthread mutex: the memory is writable by every process using the
/// object, and glibc trusts a mutex's bytes. A scribbled `__kind` sends it into elision
/// (SIGILL without TSX), priority-protection (an assertion, or a changed scheduling
/// priority) or PI paths, and its robust list links, kept in the mutex, are written through
/// at unlock: a wild store in the victim. Here any value is just "held by thread N": N
/// alive means wait (as behind a holder that is stopped), N gone means take over.
///
/// A dead holder is noticed by the waiters (each sleep is bounded and ends with a look at
/// the holder: kill(tid, 0), then /proc/TID/stat for a zombie) and by the broker's
/// `try_lock_or_recover`. Thread ids are those of the pid namespace of the caller: the
/// processes of one ipcshim namespace must share a pid namespace (README).
#[repr(C, align(8))]
pub struct RobustMutex {
    /// 0: free; otherwise the holder's tid, | WAITERS while someone may sleep on it.
    word: AtomicU32,
    /// The size of the pthread mutex this replaced, so that the layouts keep their offsets.
    _reserved: [u32; 9],
}

const WAITERS: u32 = 1 << 31;
const TID_MASK: u32 = !WAITERS;

pub enum Locked {
    Clean,
    /// The previous holder died holding the lock; the state may be half-updated.
    Recovered,
}

/// Bumped in every forked child, so that a thread's cached tid is not its parent's.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// (fork generation, tid) of this thread.
    static TID: Cell<(u32, u32)> = const { Cell::new((u32::MAX, 0)) };
}

/// Call in a forked child (the fork handler does): thread ids are new there.
pub fn after_fork() {
    FORK_GENERATION.fetch_add(1, Relaxed);
}

/// This thread's id, cached.
pub(crate) fn my_tid() -> u32 {
    let gen = FORK_GENERATION.load(Relaxed);
    TID.try_with(|c| {
        let (g, t) = c.get();
        if g == gen {
            return t;
        }
        let t = unsafe { libc::gettid() } as u32;
        c.set((gen, t));
        t
    })
    .unwrap_or_else(|_| unsafe { libc::gettid() } as u32)
}

/// Whether the thread `tid` of a lock word is gone: no such task, or a zombie (a killed
/// process stays one until its parent reaps it, and holds nothing any more). A tid that
/// is ours is a leftover for the broker, which never leaves a lock held (a client's
/// `lock` refuses its own tid before it asks).
pub(crate) fn holder_gone(tid: u32, me: u32) -> bool {
    if tid == me || tid == 0 || tid > i32::MAX as u32 {
        return true;
    }
    if unsafe { libc::kill(tid as i32, 0) } == -1 && Errno::last() == Errno(libc::ESRCH) {
        return true;
    }
    // /proc/TID/stat: "tid (comm) S ..."; comm may hold anything, so the state follows
    // the last ')'.
    match std::fs::read(format!("/proc/{tid}/stat")) {
        Ok(stat) => match stat.iter().rposition(|&b| b == b')') {
            Some(i) => matches!(stat.get(i + 2), Some(b'Z') | Some(b'X')),
            None => false,
        },
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
    }
}

/// The first sleep of a waiting locker, and the longest: each sleep ends with a look at
/// the holder, so a dead holder is noticed within the longest.
const FIRST_SLEEP: Duration = Duration::from_micros(500);
const LONGEST_SLEEP: Duration = Duration::from_millis(20);

impl RobustMutex {
    /// Initialises the lock in place (the broker does this once, in a fresh memfd).
    ///
    /// # Safety
    /// `this` must point to writable shared memory no one else uses yet.
    pub unsafe fn init(this: *mut RobustMutex) -> Result<()> {
        (*this).word.store(0, Release);
        Ok(())
    }

    fn take(&self, seen: u32, new: u32) -> bool {
        self.word.compare_exchange(seen, new, Acquire, Relaxed).is_ok()
    }

    /// Takes the lock, waiting as long as its holder lives. A lock whose holder died (or
    /// whose word was scribbled with the id of a thread that does not exist) is taken over
    /// and reported as `Recovered`. Never fails: the `Result` is for the callers' sake.
    pub fn lock(&self) -> Result<Locked> {
        let me = my_tid();
        let mut sleep = FIRST_SLEEP;
        let mut slept = false;
        loop {
            let v = self.word.load(Relaxed);
            if v & TID_MASK == me {
                // Held by this very thread: a signal handler interrupted one of our critical
                // sections and calls in again. Taking the lock over would corrupt what the
                // interrupted call is changing, waiting would never end: the nested call
                // fails (EDEADLK, as an error-checking mutex says) and the outer one goes on.
                return Err(Errno(libc::EDEADLK));
            }
            if v == 0 {
                // After a sleep others may sleep too: keep WAITERS so that unlock wakes them.
                if self.take(0, if slept { me | WAITERS } else { me }) {
                    return Ok(Locked::Clean);
                }
                continue;
            }
            if v & WAITERS == 0 && !self.take(v, v | WAITERS) {
                continue;
            }
            let deadline = Instant::now() + sleep;
            let _ = futex_wait(&self.word, v | WAITERS, Some(deadline));
            slept = true;
            if self.word.load(Relaxed) == v | WAITERS {
                if holder_gone(v & TID_MASK, me) && self.take(v | WAITERS, me | WAITERS) {
                    return Ok(Locked::Recovered);
                }
                sleep = (sleep * 2).min(LONGEST_SLEEP);
            }
        }
    }

    /// `lock` without waiting: `None` if another holds the lock (alive or not: see
    /// `try_lock_or_recover`).
    pub fn try_lock(&self) -> Option<Result<Locked>> {
        self.try_lock_as(my_tid())
    }

    /// `try_lock` for a caller that knows its thread id (`my_tid`).
    #[inline]
    pub fn try_lock_as(&self, me: u32) -> Option<Result<Locked>> {
        self.take(0, me).then_some(Ok(Locked::Clean))
    }

    /// `try_lock`, and if the holder is dead, the lock taken over (`Recovered`). Costs a
    /// look at the holder (a system call or two) when the lock is held.
    pub fn try_lock_or_recover(&self) -> Option<Result<Locked>> {
        let me = my_tid();
        let v = self.word.load(Relaxed);
        if v == 0 {
            return self.take(0, me).then_some(Ok(Locked::Clean));
        }
        // Keep WAITERS: sleepers of the dead holder must still be woken at our unlock.
        (holder_gone(v & TID_MASK, me) && self.take(v, me | (v & WAITERS))).then_some(Ok(Locked::Recovered))
    }

    /// Releases the lock if this thread holds it (a word scribbled since is left alone).
    pub fn unlock(&self) {
        self.unlock_as(my_tid())
    }

    /// `unlock` for a caller that knows its thread id (`my_tid`).
    #[inline]
    pub fn unlock_as(&self, me: u32) {
        let mut v = self.word.load(Relaxed);
        while v & TID_MASK == me {
            match self.word.compare_exchange(v, 0, Release, Relaxed) {
                Ok(_) => {
                    if v & WAITERS != 0 {
                        futex_wake(&self.word, 1);
                    }
                    return;
                }
                Err(now) => v = now,
            }
        }
    }
}

/// How long one futex wait lasts when the caller gave no timeout; the wait is renewed.
const RENEW: Duration = Duration::from_secs(3600);

/// Waits while `*word == expected`, until woken, until `deadline` (ETIMEDOUT... reported
/// as `Err(EAGAIN)`, what semtimedop says), or until a signal handler runs (`Err(EINTR)`).
/// Spurious returns are `Ok`: callers re-check their condition.
pub fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Result<()> {
    let timeout = match deadline {
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(Errno(libc::EAGAIN));
            }
            d - now
        }
        None => RENEW,
    };
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // Not FUTEX_PRIVATE_FLAG: the word is in memory other processes map.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &ts as *const libc::timespec) };
    if r == 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno(libc::EINTR) => Err(Errno(libc::EINTR)),
        Errno(libc::ETIMEDOUT) if deadline.is_some() => {
            if Instant::now() >= deadline.unwrap() {
                Err(Errno(libc::EAGAIN))
            } else {
                Ok(())
            }
        }
        // EAGAIN: the word already changed; ETIMEDOUT without a deadline: renew.
        _ => Ok(()),
    }
}

/// Wakes up to `n` waiters on `word` (in any process).
pub fn futex_wake(word: &AtomicU32, n: i32) {
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
}
