//! Sleeping in semop and being woken by another process.
//!
//! signal(7): semop and semtimedop fail with EINTR when a handler runs, even one installed
//! with SA_RESTART, and also after the process was stopped (SIGSTOP) and continued, with no
//! handler at all. A FUTEX_WAIT with a timeout gives the first but not the second: the
//! kernel silently restarts it after SIGCONT. epoll_pwait gives both, and one thing more:
//! it installs the caller's signal mask atomically with going to sleep. So each sleeping
//! thread has a datagram socket bound to an abstract address made of its pid, tid and a
//! nonce (stored in its waiter slot), watched by an epoll instance of its own; a waker
//! sends the socket one byte. A wake-up sent before the sleeper waits stays queued, so none
//! is lost; stale ones are drained before the next wait and only cause a re-check.
//!
//! A call blocks the asynchronous signals (`SignalsHeld`) before it makes itself visible as
//! a waiter and sleeps with its own mask restored: a signal that arrives once another
//! process could see it waiting (GETNCNT) interrupts the wait, as in the kernel, instead
//! of running its handler just before the sleep and being missed.
//!
//! The descriptors are checked before each use (a program may close or dup2 over them) and
//! made again in a forked child (the name holds the pid).
//!
//! A process whose descriptor table is full (the kernel's semop needs no descriptors)
//! still works: a waker sends from a socket made in the slot of the client's reserve
//! descriptor, and a thread that cannot make its wake-up socket sleeps in short ppoll
//! slices with the caller's mask, re-checking its waiter slot after each (no EINTR after
//! SIGSTOP/SIGCONT then).
//!
//! Receives, sends and closes are raw system calls: glibc's wrappers are thread
//! cancellation points, semop is not (a pthread_cancel'ed thread blocked in the kernel's
//! semop stays blocked; one in a cancellation point would unwind through our frames).

use crate::client::creds::own_pid;
use crate::ipc::{Errno, Result};
use crate::sys::fd_identity;
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering::*};
use std::time::Instant;

/// Where a sleeper can be woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub pid: i32,
    pub tid: i32,
    pub nonce: u32,
}

/// A descriptor this module made, and how to tell that it still is the one it made.
struct Owned {
    fd: RawFd,
    identity: (u64, u64),
}

impl Owned {
    fn new(fd: RawFd) -> Result<Owned> {
        match fd_identity(fd) {
            Some(identity) => Ok(Owned { fd, identity }),
            None => {
                raw_close(fd);
                Err(Errno(libc::EBADF))
            }
        }
    }

    fn ours(&self) -> bool {
        fd_identity(self.fd) == Some(self.identity)
    }
}

/// Closed when the thread exits (thread-local destructors) or when replaced — if the
/// descriptor is still ours.
impl Drop for Owned {
    fn drop(&mut self) {
        if self.ours() {
            raw_close(self.fd);
        }
    }
}

struct WakeSocket {
    socket: Owned,
    /// Watches `socket` alone.
    epoll: Owned,
    address: Address,
}

impl WakeSocket {
    fn ours(&self) -> bool {
        self.socket.ours() && self.epoll.ours()
    }
}

/// The socket a thread sends wake-ups from, and the pid that made it.
struct SendSocket {
    socket: Owned,
    pid: i32,
}

thread_local! {
    static RECEIVER: RefCell<Option<WakeSocket>> = const { RefCell::new(None) };
    /// No wake-up socket could be made (no descriptor to spare): sleeps poll.
    static POLLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static SENDER: RefCell<Option<SendSocket>> = const { RefCell::new(None) };
}

static NONCE: AtomicU32 = AtomicU32::new(1);

fn sockaddr(a: Address) -> (libc::sockaddr_un, libc::socklen_t) {
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = format!("ipcshim.semwake.{}.{}.{}", a.pid, a.tid, a.nonce);
    // Abstract namespace: sun_path[0] = 0, then the name (no terminator).
    for (d, s) in addr.sun_path[1..].iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    (addr, len as libc::socklen_t)
}

fn make_receiver() -> Result<WakeSocket> {
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let socket = Owned::new(fd)?;
    let pid = own_pid();
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    let mut bound = None;
    for _ in 0..16 {
        let address = Address { pid, tid, nonce: NONCE.fetch_add(1, Relaxed) };
        let (sa, len) = sockaddr(address);
        if unsafe { libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) } == 0 {
            bound = Some(address);
            break;
        }
        if Errno::last().0 != libc::EADDRINUSE {
            return Err(Errno::last());
        }
    }
    let address = bound.ok_or(Errno(libc::EADDRINUSE))?;
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(Errno::last());
    }
    let epoll = Owned::new(ep)?;
    let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
        return Err(Errno::last());
    }
    Ok(WakeSocket { socket, epoll, address })
}

/// The calling thread's wake-up address, its socket made (or remade) if needed and
/// drained of stale wake-ups. Call before publishing the address in a waiter slot.
pub fn prepare() -> Result<Address> {
    RECEIVER.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(s) = r.as_ref() {
            if s.ours() && s.address.pid == own_pid() {
                let mut b = [0u8; 8];
                while raw_recv(s.socket.fd, &mut b, libc::MSG_DONTWAIT) >= 0 {}
                return Ok(s.address);
            }
            // Inherited from the parent by fork (this copy is ours: dropping closes it), or
            // closed under us (dropping leaves the descriptor alone).
            *r = None;
        }
        let s = match make_receiver() {
            Ok(s) => s,
            Err(Errno(libc::EMFILE | libc::ENFILE)) => {
                // An address nobody listens at (wakers' sends fail, harmlessly): poll.
                POLLING.with(|p| p.set(true));
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
                return Ok(Address { pid: own_pid(), tid, nonce: NONCE.fetch_add(1, Relaxed) });
            }
            Err(e) => return Err(e),
        };
        POLLING.with(|p| p.set(false));
        let a = s.address;
        *r = Some(s);
        Ok(a)
    })
}

fn raw_recv(fd: RawFd, buf: &mut [u8], flags: i32) -> isize {
    unsafe { libc::syscall(libc::SYS_recvfrom, fd, buf.as_mut_ptr(), buf.len(), flags, std::ptr::null_mut::<u8>(), std::ptr::null_mut::<u8>()) as isize }
}

fn raw_close(fd: RawFd) {
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// The asynchronous signals held back from the moment a call may become visible as a
/// waiter until it sleeps (which lets them in) and after; the caller's mask comes back
/// when this is dropped. Faults (SIGSEGV, SIGBUS…) stay deliverable: a bad pointer must
/// still be the program's fault, and our own probes catch them. pthread_sigmask leaves
/// glibc's internal signals (cancellation, setxid) alone.
pub struct SignalsHeld {
    callers: libc::sigset_t,
}

impl SignalsHeld {
    pub fn hold() -> SignalsHeld {
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            for sync in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS] {
                libc::sigdelset(&mut all, sync);
            }
            let mut callers: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut callers);
            SignalsHeld { callers }
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.callers, std::ptr::null_mut()) };
    }
}

/// How a sleep ended, short of an error; either way the caller re-checks its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slept {
    /// A wake-up arrived (or something else ended the wait early).
    Woken,
    /// Nothing came within the sleep's bound (`LOOK_AROUND`, or a polling slice), the
    /// caller's deadline not yet passed: time to look whether the broker still lives.
    TimedOut,
}

/// Sleeps until a wake-up arrives (`Woken`), a while passes (`TimedOut`), the deadline
/// passes (EAGAIN, what semtimedop says) or a signal interrupts (EINTR, also after a stop).
/// The caller's signal mask is in force only while asleep.
pub fn sleep(deadline: Option<Instant>, held: &SignalsHeld) -> Result<Slept> {
    let fds = RECEIVER.with(|r| r.borrow().as_ref().filter(|s| s.ours()).map(|s| (s.socket.fd, s.epoll.fd)));
    let Some((socket, epoll)) = fds else {
        if POLLING.with(|p| p.get()) {
            return poll_slice(deadline, held);
        }
        // Our descriptors were closed under us: the caller re-prepares and re-checks.
        return Err(Errno(libc::EBADF));
    };
    let timeout = match deadline {
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(Errno(libc::EAGAIN));
            }
            let left = d - now;
            Some(libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long })
        }
        None => None,
    };
    // Bounded, so that the caller looks now and then whether the broker is still there.
    let timeout = match timeout {
        Some(t) if t.tv_sec < crate::client::LOOK_AROUND.as_secs() as libc::time_t => Some(t),
        _ => Some(libc::timespec { tv_sec: crate::client::LOOK_AROUND.as_secs() as libc::time_t, tv_nsec: 0 }),
    };
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    let r = epoll_pwait2(epoll, &mut event, timeout.as_ref(), &held.callers);
    if r > 0 {
        let mut b = [0u8; 8];
        while raw_recv(socket, &mut b, libc::MSG_DONTWAIT) >= 0 {}
        return Ok(Slept::Woken);
    }
    match (r, Errno::last()) {
        (0, _) if deadline.is_some_and(|d| Instant::now() >= d) => Err(Errno(libc::EAGAIN)),
        (0, _) => Ok(Slept::TimedOut),
        (_, Errno(libc::EINTR)) => Err(Errno(libc::EINTR)),
        _ => Ok(Slept::Woken),
    }
}

/// How long a thread without a wake-up socket sleeps before it re-checks.
const POLL_SLICE: std::time::Duration = std::time::Duration::from_millis(1);

/// One slice of a sleep without a wake-up socket: `TimedOut` when it ends (nothing can
/// wake it; the caller re-checks), EAGAIN past the deadline, EINTR when a signal's handler
/// ran (ppoll installs the caller's mask atomically, as epoll_pwait2).
fn poll_slice(deadline: Option<Instant>, held: &SignalsHeld) -> Result<Slept> {
    let mut slice = POLL_SLICE;
    if let Some(d) = deadline {
        let now = Instant::now();
        if now >= d {
            return Err(Errno(libc::EAGAIN));
        }
        slice = slice.min(d - now);
    }
    let ts = libc::timespec { tv_sec: 0, tv_nsec: slice.subsec_nanos() as libc::c_long };
    const KERNEL_SIGSET_SIZE: usize = 8;
    let r = unsafe { libc::syscall(libc::SYS_ppoll, std::ptr::null_mut::<libc::pollfd>(), 0usize, &ts, &held.callers as *const libc::sigset_t, KERNEL_SIGSET_SIZE) };
    if r < 0 && Errno::last().0 == libc::EINTR {
        return Err(Errno(libc::EINTR));
    }
    Ok(Slept::TimedOut)
}

/// epoll_pwait2 (nanosecond timeout; Linux 5.11), else epoll_pwait with the timeout
/// rounded up to milliseconds. Raw system calls: glibc's are cancellation points.
fn epoll_pwait2(epoll: RawFd, event: &mut libc::epoll_event, timeout: Option<&libc::timespec>, mask: &libc::sigset_t) -> i64 {
    const KERNEL_SIGSET_SIZE: usize = 8;
    let ts = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    let r = unsafe { libc::syscall(libc::SYS_epoll_pwait2, epoll, event as *mut libc::epoll_event, 1, ts, mask as *const libc::sigset_t, KERNEL_SIGSET_SIZE) };
    if r >= 0 || Errno::last().0 != libc::ENOSYS {
        return r;
    }
    let ms = timeout.map_or(-1, |t| (t.tv_sec as i64 * 1000 + (t.tv_nsec as i64 + 999_999) / 1_000_000).min(i32::MAX as i64) as i32);
    unsafe { libc::syscall(libc::SYS_epoll_pwait, epoll, event as *mut libc::epoll_event, 1, ms, mask as *const libc::sigset_t, KERNEL_SIGSET_SIZE) }
}

/// Wakes the sleeper at `a` (any process). Best effort: a sleeper that is gone is gone.
pub fn wake(a: Address) {
    let (sa, len) = sockaddr(a);
    SENDER.with(|s| {
        let mut s = s.borrow_mut();
        let pid = own_pid();
        let usable = s.as_ref().is_some_and(|c| c.pid == pid && c.socket.ours());
        if !usable {
            // Made by the parent before a fork (our copy: dropping closes it), or closed under
            // us (dropping leaves the descriptor alone).
            *s = None;
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                if matches!(Errno::last(), Errno(libc::EMFILE | libc::ENFILE)) {
                    // Our descriptor table is full: send once from the reserve's slot.
                    crate::client::client().with_reserve_released(|| send_once(a));
                }
                return;
            }
            let Ok(socket) = Owned::new(fd) else { return };
            *s = Some(SendSocket { socket, pid });
        }
        let Some(fd) = s.as_ref().map(|c| c.socket.fd) else { return };
        send_wake(fd, &sa, len);
    });
}

fn send_wake(fd: RawFd, sa: &libc::sockaddr_un, len: libc::socklen_t) {
    unsafe {
        libc::syscall(libc::SYS_sendto, fd, b"w".as_ptr(), 1usize, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL, sa as *const libc::sockaddr_un, len)
    };
}

/// Wakes `a` from a socket made for this one send.
fn send_once(a: Address) {
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        let (sa, len) = sockaddr(a);
        send_wake(fd, &sa, len);
        raw_close(fd);
    }
}
