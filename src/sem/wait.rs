//! Sleeping in semop and being woken by another process.
//!
//! signal(7): semop and semtimedop fail with EINTR when a handler runs, even one installed
//! with SA_RESTART, and also after the process was stopped (SIGSTOP) and continued, with no
//! handler at all. A FUTEX_WAIT with a timeout gives the first but not the second: the
//! kernel silently restarts it after SIGCONT. A socket receive with a timeout
//! (SO_RCVTIMEO) gives both (`sock_intr_errno`: -EINTR whenever a timeout is set). So each
//! sleeping thread has a datagram socket bound to an abstract address made of its pid, tid
//! and a nonce (stored in its waiter slot); a waker sends it one byte. A wake-up sent before
//! the sleeper reaches recv stays queued, so none is lost; stale ones are drained before
//! the next wait and only cause a re-check.
//!
//! The descriptor is checked before each use (a program may close or dup2 over it) and made
//! again in a forked child (the name holds the pid).
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
use std::time::{Duration, Instant};

/// Where a sleeper can be woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub pid: i32,
    pub tid: i32,
    pub nonce: u32,
}

struct WakeSocket {
    fd: RawFd,
    identity: (u64, u64),
    address: Address,
}

/// A thread's sockets are closed when the thread exits (thread-local destructors) or
/// when they are replaced — if the descriptor is still ours.
impl Drop for WakeSocket {
    fn drop(&mut self) {
        if fd_identity(self.fd) == Some(self.identity) {
            raw_close(self.fd);
        }
    }
}

/// The socket a thread sends wake-ups from, and the pid that made it.
struct SendSocket {
    fd: RawFd,
    identity: (u64, u64),
    pid: i32,
}

impl Drop for SendSocket {
    fn drop(&mut self) {
        if fd_identity(self.fd) == Some(self.identity) {
            raw_close(self.fd);
        }
    }
}

thread_local! {
    static RECEIVER: RefCell<Option<WakeSocket>> = const { RefCell::new(None) };
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
    let pid = own_pid();
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    for _ in 0..16 {
        let address = Address { pid, tid, nonce: NONCE.fetch_add(1, Relaxed) };
        let (sa, len) = sockaddr(address);
        if unsafe { libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) } == 0 {
            let identity = fd_identity(fd).ok_or(Errno(libc::EBADF))?;
            return Ok(WakeSocket { fd, identity, address });
        }
        if Errno::last().0 != libc::EADDRINUSE {
            break;
        }
    }
    let e = Errno::last();
    raw_close(fd);
    Err(e)
}

/// The calling thread's wake-up address, its socket made (or remade) if needed and
/// drained of stale wake-ups. Call before publishing the address in a waiter slot.
pub fn prepare() -> Result<Address> {
    RECEIVER.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(s) = r.as_ref() {
            let ours = fd_identity(s.fd) == Some(s.identity);
            if ours && s.address.pid == own_pid() {
                let mut b = [0u8; 8];
                while raw_recv(s.fd, &mut b, libc::MSG_DONTWAIT) >= 0 {}
                return Ok(s.address);
            }
            // Inherited from the parent by fork (this copy is ours: dropping closes it), or
            // closed under us (dropping leaves the descriptor alone).
            *r = None;
        }
        let s = make_receiver()?;
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

/// How long one receive lasts when the caller gave no timeout; the wait is renewed.
const RENEW: Duration = Duration::from_secs(3600);

/// Sleeps until a wake-up arrives (Ok; callers re-check their condition), the deadline
/// passes (EAGAIN, what semtimedop says) or a signal interrupts (EINTR, also after a stop).
pub fn sleep(deadline: Option<Instant>) -> Result<()> {
    let fd = RECEIVER.with(|r| r.borrow().as_ref().filter(|s| fd_identity(s.fd) == Some(s.identity)).map(|s| s.fd));
    let Some(fd) = fd else {
        // Our socket was closed under us: the caller re-prepares and re-checks.
        return Err(Errno(libc::EBADF));
    };
    let timeout = match deadline {
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(Errno(libc::EAGAIN));
            }
            (d - now).max(Duration::from_micros(1))
        }
        None => RENEW,
    };
    let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: timeout.subsec_micros() as libc::suseconds_t };
    unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const libc::c_void, std::mem::size_of::<libc::timeval>() as u32)
    };
    let mut b = [0u8; 8];
    let r = raw_recv(fd, &mut b, 0);
    if r >= 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno(libc::EINTR) => Err(Errno(libc::EINTR)),
        Errno(libc::EAGAIN) if deadline.is_some_and(|d| Instant::now() >= d) => Err(Errno(libc::EAGAIN)),
        _ => Ok(()),
    }
}

/// Wakes the sleeper at `a` (any process). Best effort: a sleeper that is gone is gone.
pub fn wake(a: Address) {
    let (sa, len) = sockaddr(a);
    SENDER.with(|s| {
        let mut s = s.borrow_mut();
        let pid = own_pid();
        let usable = s.as_ref().is_some_and(|c| c.pid == pid && fd_identity(c.fd) == Some(c.identity));
        if !usable {
            // Made by the parent before a fork (our copy: dropping closes it), or closed under
            // us (dropping leaves the descriptor alone).
            *s = None;
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return;
            }
            let Some(identity) = fd_identity(fd) else { return };
            *s = Some(SendSocket { fd, identity, pid });
        }
        let Some(fd) = s.as_ref().map(|c| c.fd) else { return };
        unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                b"w".as_ptr(),
                1usize,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                &sa as *const libc::sockaddr_un,
                len,
            )
        };
    });
}
