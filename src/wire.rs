//! The client–broker protocol: one SOCK_SEQPACKET message per request or reply, each a
//! little-endian sequence of i64 words, optionally carrying one descriptor (SCM_RIGHTS).
//!
//! Request: `[op, args…]`. Reply: `[status, values…]` where status is >= 0 on success and
//! `-errno` on failure. Notices (ops marked one-way) get no reply. The broker treats every
//! message as untrusted: `Frame` accessors bound-check and a malformed request gets EINVAL.

use crate::ipc::{Errno, Result};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The most words a message may hold (semaphore arrays travel in shared memory, not here).
pub const MAX_WORDS: usize = 1024;

/// Request opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Op {
    /// `[inherited_count, ids…]` → `[0]` + the namespace table (read-only). First message
    /// of every connection; lists the shm attachments the process inherited by fork.
    Hello = 1,
    /// `[family, key, flags, size]` → `[id]`: the `*get` calls that may create.
    Get = 2,
    /// `[family, id, read_only]` → `[0, size]` + the object's memfd.
    Open = 3,
    /// One-way `[id]`: this process mapped the segment (shmat).
    ShmAttached = 4,
    /// One-way `[id]`: this process unmapped one attachment (shmdt).
    ShmDetached = 5,
    /// One-way `[child_pid, count, ids…]`: a child forked with these attachments.
    ShmInherited = 6,
    /// `[family, id, cmd, args…]` → `[ret, fields…]`: the `*ctl` calls the broker serves.
    Ctl = 7,
    /// `[force]` → `[0]`: stop the broker.
    Stop = 8,
    /// `[]` → `[pid, objects, processes, connections, queues, semaphore sets, segments,
    /// bytes of memory the objects hold]`.
    Status = 9,
    /// `[]` → `[0]` + this connection's shared memory: notice ring and mailbox (see `ring`).
    Ring = 10,
    /// One-way `[]`: a request waits in this connection's mailbox (see `ring`); sent only
    /// when the broker does not poll that mailbox.
    Doorbell = 11,
}

impl Op {
    pub fn from_i64(v: i64) -> Option<Op> {
        Some(match v {
            1 => Op::Hello,
            2 => Op::Get,
            3 => Op::Open,
            4 => Op::ShmAttached,
            5 => Op::ShmDetached,
            6 => Op::ShmInherited,
            7 => Op::Ctl,
            8 => Op::Stop,
            9 => Op::Status,
            10 => Op::Ring,
            11 => Op::Doorbell,
            _ => return None,
        })
    }

    /// Notices the client does not wait for.
    pub fn is_one_way(self) -> bool {
        matches!(self, Op::ShmAttached | Op::ShmDetached | Op::ShmInherited | Op::Doorbell)
    }

    /// Requests the client sends through its mailbox (see `ring`): their answers carry no
    /// descriptor.
    pub fn uses_mailbox(self) -> bool {
        matches!(self, Op::Get | Op::Ctl | Op::Status | Op::Stop)
    }
}

/// A received message: its words and perhaps a descriptor.
#[derive(Debug, Default)]
pub struct Frame {
    pub words: Vec<i64>,
    pub fd: Option<OwnedFd>,
    /// The message carried a descriptor the receiver had no room for (its descriptor table
    /// is full): the kernel dropped it (MSG_CTRUNC). The words arrived whole, so the
    /// connection is still in step.
    pub fd_dropped: bool,
}

impl Frame {
    /// The message's words, read with their bounds checked.
    pub fn args(&self) -> Words<'_> {
        Words(&self.words)
    }

    /// As `Words::word`.
    pub fn word(&self, i: usize) -> Result<i64> {
        self.args().word(i)
    }

    /// As `Words::int`.
    pub fn int(&self, i: usize) -> Result<i32> {
        self.args().int(i)
    }

    /// As `Words::tail`.
    pub fn tail(&self, count_at: usize, max: usize) -> Result<&[i64]> {
        self.args().tail(count_at, max)
    }
}

/// A request's words (from the socket or a mailbox), each read checked: a short or
/// out-of-range request is EINVAL.
#[derive(Clone, Copy, Debug)]
pub struct Words<'a>(pub &'a [i64]);

impl<'a> Words<'a> {
    /// Word `i`, or EINVAL if the message is too short.
    pub fn word(self, i: usize) -> Result<i64> {
        self.0.get(i).copied().ok_or(Errno(libc::EINVAL))
    }

    /// Word `i` as an i32, EINVAL when out of range.
    pub fn int(self, i: usize) -> Result<i32> {
        i32::try_from(self.word(i)?).map_err(|_| Errno(libc::EINVAL))
    }

    /// Words from `i` on, at most `max`, checked against the count stored at word `i - 1`.
    pub fn tail(self, count_at: usize, max: usize) -> Result<&'a [i64]> {
        let n = usize::try_from(self.word(count_at)?).map_err(|_| Errno(libc::EINVAL))?;
        if n > max || count_at + 1 + n > self.0.len() {
            return Err(Errno(libc::EINVAL));
        }
        Ok(&self.0[count_at + 1..count_at + 1 + n])
    }

    /// The words from `i` on (none if there are fewer).
    pub fn from(self, i: usize) -> &'a [i64] {
        self.0.get(i..).unwrap_or(&[])
    }
}

/// Sends one message. `MSG_NOSIGNAL`: a broken connection is an error, never SIGPIPE.
pub fn send(sock: RawFd, words: &[i64], fd: Option<RawFd>) -> Result<()> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let mut cmsg_buf = [0u64; 4];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        unsafe {
            msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        }
    }
    loop {
        // Raw system calls: glibc's sendmsg/recvmsg are thread cancellation points, the
        // SysV calls they serve are not (a pending pthread_cancel would unwind through us).
        let r = unsafe { libc::syscall(libc::SYS_sendmsg, sock, &msg as *const libc::msghdr, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// Receives one message. `Ok(None)` on end of stream; EAGAIN when non-blocking and empty.
/// A message that is truncated or not a whole number of words is EINVAL (and any descriptor
/// it carried is closed). A descriptor that could not be received is `fd_dropped`.
pub fn recv(sock: RawFd, flags: i32) -> Result<Option<Frame>> {
    let mut buf = vec![0u8; MAX_WORDS * 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cmsg_buf = [0u64; 8];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cmsg_buf) as _;
    let n = loop {
        let r = unsafe { libc::syscall(libc::SYS_recvmsg, sock, &mut msg as *mut libc::msghdr, flags | libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let control_truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
    if n == 0 && fds.is_empty() && msg.msg_flags & libc::MSG_TRUNC == 0 && !control_truncated {
        // A zero-length SEQPACKET read is the end of the stream.
        return Ok(None);
    }
    // MSG_CTRUNC with nothing received: our 64-byte control buffer holds any one
    // descriptor, so the descriptor table was full (EMFILE inside the kernel). More than
    // one descriptor is not our protocol.
    if msg.msg_flags & libc::MSG_TRUNC != 0 || n % 8 != 0 || fds.len() > 1 || (control_truncated && !fds.is_empty()) {
        return Err(Errno(libc::EINVAL));
    }
    let words = buf[..n].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    Ok(Some(Frame { words, fd: fds.pop(), fd_dropped: control_truncated }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) }, 0);
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn words_and_descriptor_round_trip() {
        let (a, b) = pair();
        let file = std::fs::File::open("/dev/null").unwrap();
        send(a.as_raw_fd(), &[7, -1, i64::MAX], Some(file.as_raw_fd())).unwrap();
        let f = recv(b.as_raw_fd(), 0).unwrap().unwrap();
        assert_eq!(f.words, vec![7, -1, i64::MAX]);
        assert!(f.fd.is_some());
        assert_eq!(f.int(2), Err(Errno(libc::EINVAL)));
        assert_eq!(f.word(3), Err(Errno(libc::EINVAL)));
        drop(a);
        assert!(recv(b.as_raw_fd(), 0).unwrap().is_none());
    }

    #[test]
    fn malformed_frames_are_rejected() {
        let (a, b) = pair();
        unsafe { libc::send(a.as_raw_fd(), b"abc".as_ptr() as *const libc::c_void, 3, 0) };
        assert_eq!(recv(b.as_raw_fd(), 0).unwrap_err(), Errno(libc::EINVAL));
        let f = Frame { words: vec![1, 2, 5, 6], ..Frame::default() };
        assert_eq!(f.tail(1, 10).unwrap(), &[5, 6]);
        assert!(f.tail(2, 10).is_err(), "count past the end");
        assert!(f.tail(9, 10).is_err(), "count word missing");
        assert!(f.tail(1, 1).is_err());
    }
}

/// Each connection's shared memory, a memfd the broker makes and both map: a ring of
/// one-way notices and a mailbox for requests.
///
/// Notices (shmat, shmdt) cost a few stores instead of a system call and a wake-up of the
/// broker. A connection's first notice goes over the socket; from then on the broker drains
/// its ring before it answers any request, so anything a client did before another client
/// asks is seen in the answer.
///
/// The mailbox carries a request whose answer needs no descriptor (`Op::uses_mailbox`)
/// without a system call on either side while the broker is polling: the client posts the
/// request's words and waits for the answer's number to change; the broker, which looks at
/// mailboxes it polls (those of recently active connections, said by their `polled` flag)
/// and once more as it stops polling one, claims the request and answers in place. A
/// client whose mailbox is not polled rings the broker with a `Doorbell` on the socket; a
/// client that waits longer than it spins sleeps on the answer's futex, which the broker
/// then wakes. Both sides write a flag, fence, then read the other's flag, so one of them
/// always sees the other.
///
/// A request is claimed once, by the broker (which then always answers it) or by the
/// client taking it back (when its connection is lost, so that it can send it again
/// elsewhere): a compare-and-swap decides, so no request is carried out twice or lost.
///
/// The client writes all of it: the broker bounds-checks it like any other input.
pub mod ring {
    use crate::ipc::Result;
    use crate::sys::Mapping;
    use std::os::fd::RawFd;
    use std::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicU64, Ordering::*};

    pub const CAPACITY: usize = 1024;
    /// The most words a request or an answer in the mailbox may hold; longer ones go over
    /// the socket.
    pub const MAILBOX_WORDS: usize = 32;
    /// `Mailbox::answer_len` of an answer sent over the socket instead (it carries a
    /// descriptor or does not fit).
    const ON_SOCKET: u32 = u32::MAX;

    #[repr(C)]
    struct Layout {
        /// Next entry the broker will read (written by the broker).
        head: AtomicU64,
        _pad1: [u64; 7],
        /// Next entry the client will write (written by the client).
        tail: AtomicU64,
        _pad2: [u64; 7],
        entries: [[AtomicI64; 2]; CAPACITY],
        mailbox: Mailbox,
    }

    #[repr(C, align(64))]
    struct Mailbox {
        /// The latest request: its number × 2, plus 1 once claimed (by the broker, or by
        /// the client taking it back). 0 before the first. The client writes the words,
        /// then this.
        state: AtomicU32,
        request_len: AtomicU32,
        request: [AtomicI64; MAILBOX_WORDS],
        /// The client sleeps on `answered` (set before its futex wait, cleared after).
        sleeping: AtomicU32,
        _pad: [u32; 13],
        /// Written by the broker: the answer's words, then the number it answers.
        answered: AtomicU32,
        answer_len: AtomicU32,
        answer: [AtomicI64; MAILBOX_WORDS],
        /// Written by the broker: 1 while it polls this mailbox.
        polled: AtomicU32,
    }

    pub const SIZE: usize = std::mem::size_of::<Layout>();

    /// The broker's answer to a mailbox request.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Answer {
        Words(Vec<i64>),
        /// Read the answer from the socket.
        OnSocket,
    }

    #[derive(Debug)]
    pub struct Ring {
        map: Mapping,
    }

    impl Ring {
        pub fn map(fd: RawFd) -> Result<Ring> {
            Ok(Ring { map: Mapping::map(fd, SIZE, true)? })
        }

        fn layout(&self) -> &Layout {
            unsafe { &*(self.map.as_ptr() as *const Layout) }
        }

        fn mailbox(&self) -> &Mailbox {
            &self.layout().mailbox
        }

        /// Appends `[op, arg]`; false when the ring is full (send on the socket instead).
        pub fn push(&self, op: i64, arg: i64) -> bool {
            let l = self.layout();
            let tail = l.tail.load(Relaxed);
            if tail.wrapping_sub(l.head.load(Acquire)) >= CAPACITY as u64 {
                return false;
            }
            let e = &l.entries[(tail % CAPACITY as u64) as usize];
            e[0].store(op, Relaxed);
            e[1].store(arg, Relaxed);
            l.tail.store(tail.wrapping_add(1), Release);
            true
        }

        /// Hands every pending entry to `f`, oldest first. A ring whose indexes make no
        /// sense (a client scribbled on it) is emptied.
        pub fn drain(&self, mut f: impl FnMut(i64, i64)) {
            let l = self.layout();
            let head = l.head.load(Relaxed);
            let tail = l.tail.load(Acquire);
            let pending = tail.wrapping_sub(head);
            if pending as usize > CAPACITY {
                l.head.store(tail, Release);
                return;
            }
            for i in 0..pending {
                let e = &l.entries[(head.wrapping_add(i) % CAPACITY as u64) as usize];
                f(e[0].load(Relaxed), e[1].load(Relaxed));
            }
            l.head.store(tail, Release);
        }

        pub fn is_empty(&self) -> bool {
            let l = self.layout();
            l.tail.load(Acquire) == l.head.load(Relaxed)
        }

        /// Client: posts a request (at most MAILBOX_WORDS words; one at a time, after the
        /// previous one was answered or taken back) and returns its number. Followed by a
        /// full fence, so that reading `broker_polls` next cannot be ordered before it.
        pub fn post(&self, words: &[i64]) -> u32 {
            let m = self.mailbox();
            debug_assert!(words.len() <= MAILBOX_WORDS);
            for (slot, &w) in m.request.iter().zip(words) {
                slot.store(w, Relaxed);
            }
            m.request_len.store(words.len() as u32, Relaxed);
            // Numbers run from 1 to 2^31 - 1 and round.
            let seq = ((m.state.load(Relaxed) >> 1) % 0x7fff_ffff) + 1;
            m.state.store(seq << 1, Release);
            fence(SeqCst);
            seq
        }

        /// Client, after `post`: whether the broker polls this mailbox (else ring it).
        pub fn broker_polls(&self) -> bool {
            self.mailbox().polled.load(Relaxed) != 0
        }

        /// Broker: says it polls this mailbox, or no longer (then followed by a full fence
        /// before the broker's last look at it: see `has_request`).
        pub fn set_polled(&self, polled: bool) {
            self.mailbox().polled.store(polled as u32, Relaxed);
        }

        /// Client: takes request `seq` back. False if the broker has claimed it (it will
        /// answer).
        pub fn take_back(&self, seq: u32) -> bool {
            self.mailbox().state.compare_exchange(seq << 1, (seq << 1) | 1, AcqRel, Acquire).is_ok()
        }

        /// Client: the answer to request `seq`, if it has come.
        pub fn answer(&self, seq: u32) -> Option<Answer> {
            let m = self.mailbox();
            if m.answered.load(Acquire) != seq {
                return None;
            }
            let len = m.answer_len.load(Relaxed);
            if len == ON_SOCKET {
                return Some(Answer::OnSocket);
            }
            // The broker writes at most MAILBOX_WORDS; the bound is for a scribbled length.
            Some(Answer::Words(m.answer.iter().take(len as usize).map(|w| w.load(Relaxed)).collect()))
        }

        /// Client: sleeps until the answer to `seq` comes, a signal, or `deadline`.
        pub fn wait_for_answer(&self, seq: u32, deadline: std::time::Instant) {
            let m = self.mailbox();
            m.sleeping.store(1, Relaxed);
            fence(SeqCst);
            let now = m.answered.load(Acquire);
            if now != seq {
                let _ = crate::ipc::sync::futex_wait(&m.answered, now, Some(deadline));
            }
            m.sleeping.store(0, Relaxed);
        }

        /// Broker: claims the waiting request, if any: appends its words to `words` and
        /// returns its number. A length past the mailbox gives no words (an invalid
        /// request). A claimed request must be answered.
        pub fn take_request(&self, words: &mut Vec<i64>) -> Option<u32> {
            let m = self.mailbox();
            let state = m.state.load(Acquire);
            if state == 0 || state & 1 != 0 || m.state.compare_exchange(state, state | 1, AcqRel, Relaxed).is_err() {
                return None;
            }
            // Claimed: the client no longer writes the words.
            let len = m.request_len.load(Relaxed) as usize;
            if len <= MAILBOX_WORDS {
                words.extend(m.request[..len].iter().map(|w| w.load(Relaxed)));
            }
            Some(state >> 1)
        }

        /// Broker: whether a request waits unclaimed. (As it stops polling a mailbox, the
        /// broker clears `polled` and fences before it asks this.)
        pub fn has_request(&self) -> bool {
            let state = self.mailbox().state.load(Acquire);
            state != 0 && state & 1 == 0
        }

        /// Broker: answers request `seq` with `words`, or says the answer went over the
        /// socket (None; the caller sends it there when it carries a descriptor or has more
        /// than MAILBOX_WORDS words), and wakes the client if it sleeps.
        pub fn answer_request(&self, seq: u32, words: Option<&[i64]>) {
            let m = self.mailbox();
            match words {
                Some(w) if w.len() <= MAILBOX_WORDS => {
                    for (slot, &v) in m.answer.iter().zip(w) {
                        slot.store(v, Relaxed);
                    }
                    m.answer_len.store(w.len() as u32, Relaxed);
                }
                _ => m.answer_len.store(ON_SOCKET, Relaxed),
            }
            m.answered.store(seq, Release);
            fence(SeqCst);
            if m.sleeping.load(Relaxed) != 0 {
                crate::ipc::sync::futex_wake(&m.answered, 1);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::os::fd::AsRawFd;

        #[test]
        fn push_drain_full_and_corrupt() {
            let fd = crate::sys::sealed_memfd("ring-test", SIZE as u64, 0).unwrap();
            let client = Ring::map(fd.as_raw_fd()).unwrap();
            let broker = Ring::map(fd.as_raw_fd()).unwrap();
            assert!(broker.is_empty());
            for i in 0..CAPACITY as i64 {
                assert!(client.push(4, i));
            }
            assert!(!client.push(4, -1), "full");
            let mut seen = Vec::new();
            broker.drain(|op, arg| seen.push((op, arg)));
            assert_eq!(seen.len(), CAPACITY);
            assert_eq!(seen[7], (4, 7));
            assert!(client.push(5, 99));
            seen.clear();
            broker.drain(|op, arg| seen.push((op, arg)));
            assert_eq!(seen, vec![(5, 99)]);
            // A scribbled tail far ahead: the broker reads nothing and resets.
            client.layout().tail.store(u64::MAX / 2, Relaxed);
            let mut n = 0;
            broker.drain(|_, _| n += 1);
            assert_eq!(n, 0);
            assert!(broker.is_empty());
        }

        #[test]
        fn mailbox_request_and_answers() {
            let fd = crate::sys::sealed_memfd("mailbox-test", SIZE as u64, 0).unwrap();
            let client = Ring::map(fd.as_raw_fd()).unwrap();
            let broker = Ring::map(fd.as_raw_fd()).unwrap();
            let take = || {
                let mut words = Vec::new();
                broker.take_request(&mut words).map(|seq| (seq, words))
            };
            assert_eq!(take(), None);
            let seq = client.post(&[2, 1, 77, 0o600, 1]);
            assert!(broker.has_request());
            assert_eq!(take(), Some((seq, vec![2, 1, 77, 0o600, 1])));
            assert!(!broker.has_request(), "claimed once");
            assert!(!client.take_back(seq), "the broker has it");
            assert_eq!(client.answer(seq), None);
            broker.answer_request(seq, Some(&[5]));
            assert_eq!(client.answer(seq), Some(Answer::Words(vec![5])));
            // Too long to fit, or with a descriptor: the answer is on the socket.
            let seq = client.post(&[7]);
            take().unwrap();
            broker.answer_request(seq, Some(&[0; MAILBOX_WORDS + 1]));
            assert_eq!(client.answer(seq), Some(Answer::OnSocket));
            // Taken back before the broker looked: the broker never sees it.
            let seq = client.post(&[9]);
            assert!(client.take_back(seq));
            assert_eq!(take(), None);
            // A scribbled length gives an empty (invalid) request, never a read past the box.
            let seq = client.post(&[1]);
            client.mailbox().request_len.store(u32::MAX - 1, Relaxed);
            assert_eq!(take(), Some((seq, vec![])));
            broker.answer_request(seq, Some(&[0]));
            assert_eq!(client.answer(seq), Some(Answer::Words(vec![0])));
            // Numbers round without reaching 0 (no request) or clashing with the taken bit.
            client.mailbox().state.store(0x7fff_fffe << 1 | 1, Relaxed);
            assert_eq!(client.post(&[1]), 0x7fff_ffff);
            client.mailbox().state.store(0x7fff_ffff << 1 | 1, Relaxed);
            assert_eq!(client.post(&[1]), 1);
        }
    }
}
