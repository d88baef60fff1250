//! Descriptors held in reserve. The kernel's System V IPC needs no descriptors, so a
//! program may fill its descriptor table and go on using it. ipcshim needs a free slot for
//! a moment whenever the broker sends an object's memfd (mapped, then closed) or a
//! semaphore waker needs a socket; so a connected client keeps one slot filled with a
//! descriptor of its own (a memfd, for a unique identity), frees it just before such a
//! moment and fills it again after. A forked child turns the slot of the parent's
//! connection into a second reserve slot rather than freeing it: reconnecting takes two
//! slots (the socket, and one for the namespace table that then becomes the reserve).

use crate::sys::fd_identity;
use std::os::fd::RawFd;

struct Slot {
    fd: RawFd,
    identity: (u64, u64),
}

impl Slot {
    fn ours(&self) -> bool {
        fd_identity(self.fd) == Some(self.identity)
    }
}

#[derive(Default)]
pub struct Reserve {
    slots: Vec<Slot>,
}

impl Reserve {
    pub const fn new() -> Reserve {
        Reserve { slots: Vec::new() }
    }

    /// Makes sure a slot is held (cheap when one is); false if the table has no room.
    pub fn keep(&mut self) -> bool {
        if !self.slots.is_empty() {
            return true;
        }
        let fd = unsafe { libc::memfd_create(c"ipcshim-reserve".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return false;
        }
        match fd_identity(fd) {
            Some(identity) => {
                self.slots.push(Slot { fd, identity });
                true
            }
            None => false,
        }
    }

    /// Frees one slot; false if none was held (or the program had closed them).
    pub fn release_one(&mut self) -> bool {
        while let Some(s) = self.slots.pop() {
            if s.ours() {
                raw_close(s.fd);
                return true;
            }
        }
        false
    }

    pub fn release_all(&mut self) {
        while self.release_one() {}
    }

    /// In a forked child: `fd`, the parent's connection (checked to be ours), becomes a
    /// reserve slot, replaced by our reserve file in one dup3 so that the program never
    /// sees the slot free. Without a reserve slot to copy it is closed.
    pub fn take_over(&mut self, fd: RawFd) {
        let copy = self.slots.iter().find(|s| s.ours()).map(|s| (s.fd, s.identity));
        if let Some((from, identity)) = copy {
            if unsafe { libc::syscall(libc::SYS_dup3, from, fd, libc::O_CLOEXEC) } == fd as libc::c_long {
                self.slots.push(Slot { fd, identity });
                return;
            }
        }
        raw_close(fd);
    }
}

/// close(2) by system call: glibc's close is a cancellation point, the SysV calls are not.
pub(crate) fn raw_close(fd: RawFd) {
    unsafe { libc::syscall(libc::SYS_close, fd) };
}
