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
/// the holder: `holder_gone`) and by the broker's
/// `try_lock_or_recover`. Thread ids are those of the pid namespace of the caller: the
/// processes of one ipcshim namespace must share a pid namespace (README).
#[repr(C)]
pub struct RobustMutex {
    /// 0: free; otherwise the holder's tid, | WAITERS while someone may sleep on it.
    word: AtomicU32,
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

/// Call in a forked child (the fork handler does): thread ids are new there.
pub fn after_fork() {
    FORK_GENERATION.fetch_add(1, Relaxed);
}

/// This thread's id, cached with the fork generation it was read in.
#[inline(always)]
pub(crate) fn my_tid() -> u32 {
    let gen = FORK_GENERATION.load(Relaxed).wrapping_add(1) as u64;
    let c = super::thread::words().tid.get();
    if c >> 32 == gen {
        return c as u32;
    }
    my_tid_slow(gen)
}

#[cold]
fn my_tid_slow(gen: u64) -> u32 {
    let t = unsafe { libc::gettid() } as u32;
    super::thread::words().tid.set(gen << 32 | t as u64);
    t
}

/// Whether the thread `tid` of a lock word is gone: no such task, or a zombie (a killed
/// process stays one until its parent reaps it, and holds nothing any more). A tid that
/// is ours is a leftover for the broker, which never leaves a lock held (a client's
/// `lock` refuses its own tid before it asks).
///
/// Asked of the kernel with a one-byte process_vm_readv from the task: the kernel finds the
/// task by its id (a thread's as well as a process's) and takes its memory before any
/// permission check, so ESRCH means exactly "no task, or one that has left its memory
/// behind" (a zombie, an exited thread), and EPERM (another user's, or hidden by
/// hidepid) or EFAULT (the address read is unmapped) mean a live task. No descriptor, no
/// /proc: a full descriptor table or a /proc that hides other users changes nothing.
pub(crate) fn holder_gone(tid: u32, me: u32) -> bool {
    if tid == me || tid == 0 || tid > i32::MAX as u32 {
        return true;
    }
    match read_one_byte(tid as libc::pid_t, std::ptr::null()) {
        Err(Errno(libc::ESRCH)) => true,
        Err(Errno(libc::ENOSYS)) => holder_gone_by_proc(tid),
        // Another user's task, or a seccomp filter refusing the call: which one, our own
        // memory tells (a filter refuses that too).
        Err(Errno(libc::EPERM)) => {
            static PROBE: u8 = 0;
            match read_one_byte(unsafe { libc::getpid() }, &PROBE) {
                Ok(()) => false,
                Err(_) => holder_gone_by_proc(tid),
            }
        }
        // EFAULT, or success: the task lives. ENOMEM, EINTR: unknown, so alive (waiting
        // longer is safe, taking a live holder's lock is not).
        _ => false,
    }
}

/// Reads one byte at `remote` in task `tid` (into a local byte that is dropped).
fn read_one_byte(tid: libc::pid_t, remote: *const u8) -> Result<()> {
    let mut byte = 0u8;
    let local = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
    let remote = libc::iovec { iov_base: remote as *mut libc::c_void, iov_len: 1 };
    if unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `holder_gone` where process_vm_readv is filtered out: kill(tid, 0), then the state in
/// /proc/TID/stat. When /proc cannot tell (a task kill says exists but /proc hides, or no
/// descriptor is free) the holder counts as alive: a zombie is waited out until reaped
/// rather than a live holder's lock taken.
fn holder_gone_by_proc(tid: u32) -> bool {
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
        // ENOENT: reaped since kill looked, or hidden (hidepid): kill, asked again, tells.
        Err(e) => e.raw_os_error() == Some(libc::ENOENT) && unsafe { libc::kill(tid as i32, 0) } == -1 && Errno::last() == Errno(libc::ESRCH),
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

    /// Whether the lock is free now (a hint: `try_lock_as` may still fail).
    #[inline(always)]
    pub fn looks_free(&self) -> bool {
        self.word.load(Relaxed) == 0
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
    #[inline(always)]
    pub fn unlock_as(&self, me: u32) {
        // Usually held by us with no one asleep: one exchange, nothing to wake.
        if self.word.compare_exchange(me, 0, Release, Relaxed).is_err() {
            self.unlock_contended(me);
        }
    }

    #[cold]
    fn unlock_contended(&self, me: u32) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// A child that has exited and is not reaped: a zombie until `wait`.
    fn zombie() -> Child {
        let child = Command::new("true").spawn().unwrap();
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PID, child.id(), &mut info, libc::WEXITED | libc::WNOWAIT) };
        assert_eq!(r, 0, "waitid");
        child
    }

    /// The id of a process that existed and is reaped (free until the ids wrap round).
    fn missing() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    }

    /// A thread of ours that lives until `stop` is set, and its tid.
    fn live_thread(stop: &'static std::sync::atomic::AtomicBool) -> (std::thread::JoinHandle<()>, u32) {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        (h, rx.recv().unwrap())
    }

    /// What the lock's waiters decide, asked from a process that has no rights on the live
    /// tasks and sees nothing of them in /proc: as root, a child turned nobody (uid 65534)
    /// with /proc remounted hidepid=2 where a mount namespace is allowed (the hidden,
    /// unsignallable holder that used to have its lock taken over); then again with every
    /// descriptor in use. Live tasks: a process, one of our threads. Gone: a zombie, a
    /// missing pid, a thread that exited from a live process.
    #[test]
    fn holder_gone_without_rights_proc_or_descriptors() {
        static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let mut live = Command::new("sleep").arg("1000").spawn().unwrap();
        let mut zombie = zombie();
        let missing = missing();
        let (thread, live_tid) = live_thread(&STOP);
        let exited_tid = {
            let (tx, rx) = std::sync::mpsc::channel();
            let h = std::thread::spawn(move || tx.send(unsafe { libc::gettid() } as u32).unwrap());
            let tid = rx.recv().unwrap();
            h.join().unwrap();
            // join returns when the thread clears its tid, a moment before the kernel has
            // let go of it: wait for /proc to stop listing it.
            while std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
            tid
        };
        let live_pid = live.id();
        let zombie_pid = zombie.id();

        // In the child: only async-signal-safe-enough calls (no locks the fork could have
        // left held: holder_gone takes none); results as bits of the exit status.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let check = |gone: &dyn Fn(u32) -> bool| -> i32 {
                let mut bad = 0;
                for (i, (tid, want)) in
                    [(live_pid, false), (live_tid, false), (zombie_pid, true), (missing, true), (exited_tid, true)].into_iter().enumerate()
                {
                    if gone(tid) != want {
                        bad |= 1 << i;
                    }
                }
                bad
            };
            unsafe {
                if libc::geteuid() == 0 {
                    if libc::unshare(libc::CLONE_NEWNS) == 0 {
                        libc::mount(c"none".as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null());
                        libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), 0, c"hidepid=2".as_ptr().cast());
                    }
                    if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                        libc::_exit(0x80);
                    }
                }
                let mut bad = check(&|t| holder_gone(t, 0));
                // The fallback, where it can tell: a hidden task is not taken for gone.
                if holder_gone_by_proc(live_pid) || !holder_gone_by_proc(missing) {
                    bad |= 1 << 5;
                }
                let lim = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                while libc::dup(2) >= 0 {}
                if Errno::last() != Errno(libc::EMFILE) {
                    libc::_exit(0x40);
                }
                bad |= check(&|t| holder_gone(t, 0));
                libc::_exit(bad);
            }
        }
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        STOP.store(true, Relaxed);
        thread.join().unwrap();
        live.kill().unwrap();
        live.wait().unwrap();
        zombie.wait().unwrap();
        assert!(libc::WIFEXITED(status), "checker died: {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "wrong verdicts (bits: 0 live process, 1 live thread, 2 zombie, 3 missing pid, 4 exited thread, 5 /proc fallback; 0x40 table not filled, 0x80 setuid)"
        );
    }

    /// The /proc fallback (process_vm_readv filtered out), where /proc shows the tasks.
    #[test]
    fn holder_gone_by_proc_where_proc_shows() {
        let mut live = Command::new("sleep").arg("1000").spawn().unwrap();
        let mut zombie = zombie();
        assert!(!holder_gone_by_proc(live.id()));
        assert!(holder_gone_by_proc(zombie.id()));
        assert!(holder_gone_by_proc(missing()));
        live.kill().unwrap();
        live.wait().unwrap();
        zombie.wait().unwrap();
    }

    #[test]
    fn holder_gone_for_ourselves_and_garbage() {
        let me = my_tid();
        assert!(holder_gone(me, me), "our own tid is a leftover (the broker's)");
        assert!(holder_gone(0, me));
        assert!(holder_gone(u32::MAX, me));
        assert!(!holder_gone(unsafe { libc::getpid() } as u32, 0));
    }
}
