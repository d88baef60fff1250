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
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

/// A process-shared, robust pthread mutex placed in shared memory. When its holder dies,
/// the next locker is told (`Locked::Recovered`) and must check or repair what the lock
/// protects before using it.
#[repr(C)]
pub struct RobustMutex {
    raw: libc::pthread_mutex_t,
}

pub enum Locked {
    Clean,
    /// The previous holder died holding the lock; the state may be half-updated.
    Recovered,
}

impl RobustMutex {
    /// Initialises the mutex in place (the broker does this once, in a fresh memfd).
    ///
    /// # Safety
    /// `this` must point to writable shared memory no one else uses yet.
    pub unsafe fn init(this: *mut RobustMutex) -> Result<()> {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        let r = libc::pthread_mutex_init(&mut (*this).raw, &attr);
        libc::pthread_mutexattr_destroy(&mut attr);
        if r != 0 {
            return Err(Errno(r));
        }
        Ok(())
    }

    /// Takes the lock. A lock whose holder died is made consistent and reported as
    /// `Recovered`. A lock left unusable (ENOTRECOVERABLE, or garbage written over it) is
    /// EIDRM: the object is treated as gone rather than hanging or crashing.
    pub fn lock(&self) -> Result<Locked> {
        let p = &self.raw as *const libc::pthread_mutex_t as *mut libc::pthread_mutex_t;
        match unsafe { libc::pthread_mutex_lock(p) } {
            0 => Ok(Locked::Clean),
            libc::EOWNERDEAD => {
                unsafe { libc::pthread_mutex_consistent(p) };
                Ok(Locked::Recovered)
            }
            _ => Err(Errno(libc::EIDRM)),
        }
    }

    /// `lock` without waiting: `None` if another holds the lock.
    pub fn try_lock(&self) -> Option<Result<Locked>> {
        let p = &self.raw as *const libc::pthread_mutex_t as *mut libc::pthread_mutex_t;
        match unsafe { libc::pthread_mutex_trylock(p) } {
            0 => Some(Ok(Locked::Clean)),
            libc::EBUSY => None,
            libc::EOWNERDEAD => {
                unsafe { libc::pthread_mutex_consistent(p) };
                Some(Ok(Locked::Recovered))
            }
            _ => Some(Err(Errno(libc::EIDRM))),
        }
    }

    pub fn unlock(&self) {
        let p = &self.raw as *const libc::pthread_mutex_t as *mut libc::pthread_mutex_t;
        unsafe { libc::pthread_mutex_unlock(p) };
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
