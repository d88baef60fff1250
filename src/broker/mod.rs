//! The broker: one process per namespace that owns the registry of all objects, holds
//! their memfds, checks every control request against the caller's real credentials, and
//! learns of every client process's death from a pidfd.
//!
//! It is single-threaded: an epoll loop over the listening socket, the client connections
//! and the pidfds. Requests are handled in an order that respects causality: in each batch
//! of ready descriptors the broker first reads everything, applies the one-way notices
//! (shm attach/detach, which clients send without waiting), then the deaths, then answers
//! the requests. A client that learned something (a peer attached, a child died) before
//! asking therefore always gets an answer that includes it.

pub mod fdstore;
pub mod process;
pub mod registry;

use crate::ipc::limits::Limits;
use crate::ipc::perm::{Creds, S_IRUGO, S_IWUGO, S_IXUGO};
use crate::ipc::table::{Entry, TableWriter, TABLE_SIZE};
use crate::ipc::{Errno, Family, Result};
use crate::msg::queue::Queues;
use crate::sem::set::SemSets;
use crate::shm::segment::Segments;
use registry::Change;
use crate::sys::{self, Mapping};
use crate::wire::ring::{self, Ring};
use crate::wire::{self, Frame, Op, Words};
use process::{peer_creds, Process};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Everything the namespace holds.
pub struct Namespace {
    pub limits: Limits,
    pub msg: Queues,
    pub sem: SemSets,
    pub shm: Segments,
    table_fd: OwnedFd,
    _table_map: Mapping,
    table: TableWriter,
    pub names: MemfdNames,
}

/// Unique memfd names for this broker's life: `ipcshim.PID.FAMILY.N`. The name shows in
/// /proc/PID/maps, where a segment's mappings are recognised by it.
#[derive(Debug)]
pub struct MemfdNames {
    /// The broker's pid, read once (a system call per name showed in create's profile).
    pid: u32,
    serial: u64,
}

impl MemfdNames {
    pub fn new() -> MemfdNames {
        MemfdNames { pid: std::process::id(), serial: 0 }
    }

    pub fn next(&mut self, family: Family) -> String {
        self.serial += 1;
        format!("ipcshim.{}.{}.{}", self.pid, family.name(), self.serial)
    }
}

impl Namespace {
    pub fn new(limits: Limits) -> Result<Namespace> {
        let table_fd = sys::sealed_memfd("ipcshim-table", TABLE_SIZE as u64, 0)?;
        let table_map = Mapping::map(table_fd.as_raw_fd(), TABLE_SIZE, true)?;
        let table = unsafe { TableWriter::new(table_map.as_ptr()) };
        Ok(Namespace { limits, msg: Queues::default(), sem: SemSets::default(), shm: Segments::default(), table_fd, _table_map: table_map, table, names: MemfdNames::new() })
    }

    /// Mirrors a change of the registry into the namespace table.
    fn publish(&self, family: Family, change: Change) {
        match change {
            Change::None => {}
            Change::Removed(index) => self.table.clear(family, index),
            Change::Updated(index) => {
                let found = match family {
                    Family::Shm => self.shm.registry.by_index(index).map(|o| (o.seq, o.perm, o.data.size)),
                    Family::Sem => self.sem.table_entry(index),
                    Family::Msg => self.msg.table_entry(index),
                };
                match found {
                    Some((seq, perm, size)) => self.table.publish(family, &Entry { index, seq, perm, size }),
                    None => self.table.clear(family, index),
                }
            }
        }
    }

    pub fn object_count(&self) -> usize {
        self.shm.registry.in_use() + self.sem.registry.in_use() + self.msg.registry.in_use()
    }

    /// Bytes of memory the objects' memfds hold now (their allocated pages, not their
    /// nominal sizes: a queue's or a sparse segment's pages are allocated as they are used).
    fn memory_held(&self) -> u64 {
        let held = |fd: &fdstore::ObjectFd| {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            match fd.with_fd(|fd| unsafe { libc::fstat(fd, &mut st) }) {
                Ok(0) => st.st_blocks as u64 * 512,
                _ => 0,
            }
        };
        self.shm.registry.iter().map(|(_, o)| held(&o.data.memfd)).sum::<u64>()
            + self.sem.registry.iter().filter_map(|(_, o)| o.data.memfd()).map(held).sum::<u64>()
            + self.msg.registry.iter().filter_map(|(_, o)| o.data.memfd()).map(held).sum::<u64>()
    }
}

struct Conn {
    /// Owns the socket: dropping the connection closes it.
    _socket: OwnedFd,
    /// Shared with the requests being answered (cloning a Creds allocates).
    creds: Rc<Creds>,
    /// The connection's shared memory (notice ring and mailbox), once the client asked
    /// for it.
    /// Shared with the process record once the connection closes (`orphan_rings`).
    ring: Option<Rc<Ring>>,
    /// Whether the client has sent a notice over the socket, as it does before it uses the
    /// ring: only such rings are looked at (most clients never write theirs).
    ring_used: bool,
}

/// An answer that is an error: the one word -errno.
fn error_answer(out: &mut Vec<i64>, errno: i32) {
    out.clear();
    out.push(-(errno as i64));
}

/// A request claimed from a connection's mailbox, with what answering it needs.
struct MailboxRequest {
    fd: RawFd,
    creds: Rc<Creds>,
    ring: Rc<Ring>,
    seq: u32,
    /// Where its words are in the batch's `Claimed::words`.
    words: std::ops::Range<usize>,
}

/// The requests claimed from the mailboxes in one batch; kept from batch to batch, so that
/// claiming allocates nothing.
#[derive(Default)]
struct Claimed {
    requests: Vec<MailboxRequest>,
    words: Vec<i64>,
}

impl Claimed {
    fn args(&self, r: &MailboxRequest) -> Words<'_> {
        Words(&self.words[r.words.clone()])
    }
}

impl MailboxRequest {
    /// Whether a death, a closed connection or a socket notice could change this request's
    /// answer: whether it needs the look at epoll after its claim (a system call). The
    /// semaphore sets' and queues' `*get` and IPC_RMID do not: deaths, closes and notices
    /// change attachments and semaphore values, never which keys and ids exist.
    fn may_see_events(&self, w: Words) -> bool {
        let w = w.0;
        let family = w.get(1).copied().and_then(Family::from_i64);
        let sem_or_msg = matches!(family, Some(Family::Sem | Family::Msg));
        match w.first().copied().and_then(Op::from_i64) {
            Some(Op::Get) => !sem_or_msg,
            Some(Op::Ctl) => !(sem_or_msg && w.get(3) == Some(&(crate::ipc::IPC_RMID as i64))),
            _ => true,
        }
    }
}

/// How long the broker polls for the next request before it sleeps.
const BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(50);

/// How often notices waiting in rings are applied when no request arrives.
const RING_POLL_MS: i32 = 100;

const LISTENER: u64 = 0;
const CONN: u64 = 1 << 32;
const PIDFD: u64 = 2 << 32;

pub struct Broker {
    listener: OwnedFd,
    epoll: OwnedFd,
    ns: Namespace,
    conns: HashMap<RawFd, Conn>,
    /// Connections per uid, held to `conn_quota` so that one user cannot take all the
    /// broker's descriptors from the others.
    conns_by_uid: HashMap<u32, usize>,
    conn_quota: usize,
    procs: HashMap<i32, Process>,
    pidfds: HashMap<RawFd, i32>,
    socket_path: PathBuf,
    stop: bool,
    /// Kept open to be given up when the broker runs out of descriptors (`refuse_one`).
    spare: Option<OwnedFd>,
    /// The mailboxes the broker polls (wire::ring): those of connections active lately.
    polled: Vec<Polled>,
    /// Buffers kept from one request to the next, so that answering allocates nothing:
    /// the batch's claimed mailbox requests, and an answer's words.
    claimed: Claimed,
    answer_words: Vec<i64>,
}

/// A polled mailbox, and when its connection last asked something.
struct Polled {
    fd: RawFd,
    ring: Rc<Ring>,
    last: std::time::Instant,
}

/// A mailbox idle this long stops being polled (its client rings the doorbell again), so
/// that a broker kept busy by some clients does not look at every other's mailbox for ever.
const POLL_IDLE: std::time::Duration = std::time::Duration::from_millis(1);
/// At most this many mailboxes are polled, the most recently active: a look at all of them
/// stays well under a microsecond or two whatever the number of connections.
const MAX_POLLED: usize = 64;

fn spare_descriptor() -> Option<OwnedFd> {
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The broker holds a descriptor per object and two per client process (its connection
/// and its pidfd): a namespace at the kernel's default limits holds 68,096 objects, more
/// than most hard limits allow. With CAP_SYS_RESOURCE (a root broker) the limit goes up to
/// the most the kernel allows (`fs.nr_open`; descriptor tables grow only as they are
/// used); otherwise the soft limit goes up to the hard one, and past that new objects fail
/// with ENOMEM.
pub fn raise_descriptor_limit() {
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return;
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<libc::rlim_t>().ok());
    if let Some(most) = nr_open.filter(|&n| n > r.rlim_max) {
        let raised = libc::rlimit { rlim_cur: most, rlim_max: most };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return;
        }
    }
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    }
}

/// The kernel's objects are not files: RLIMIT_FSIZE never limits them. Ours are memfds,
/// whose ftruncate past the limit fails with EFBIG *and* raises SIGXFSZ, which would kill
/// a broker started by a client under `ulimit -f` (the limit is inherited). So the
/// signal is ignored, the limit is lifted (with CAP_SYS_RESOURCE) or its soft value
/// raised to the hard one, and a memfd that still cannot be sized fails its creation with
/// ENOMEM (`sys::sealed_memfd`).
pub fn lift_file_size_limit() {
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    if unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &unlimited) } == 0 {
        return;
    }
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut r) } == 0 && r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &r) };
    }
}

/// Connections one uid may hold: as configured (`IPCSHIM_LIMITS=conns_per_uid=N`), else
/// a sixteenth of the descriptor limit (half the table is for connections and their
/// pidfds, shared by at least four users), between 64 and 4,096.
fn connection_quota(limits: &Limits) -> usize {
    match limits.conns_per_uid {
        0 => (fdstore::descriptor_limit() / 16).clamp(64, 4096),
        n => n.min(usize::MAX as u64) as usize,
    }
}

fn check(r: libc::c_int) -> Result<libc::c_int> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// Binds a SOCK_SEQPACKET listener at `path`, replacing a stale socket file.
pub fn bind_listener(path: &Path) -> Result<OwnedFd> {
    let fd = check(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = sockaddr(path)?;
    let _ = std::fs::remove_file(path);
    check(unsafe { libc::bind(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) })?;
    // Everyone may connect: each request is checked against the caller's credentials.
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno(libc::EINVAL))?;
    unsafe { libc::chmod(cpath.as_ptr(), 0o777) };
    check(unsafe { libc::listen(fd.as_raw_fd(), 1024) })?;
    Ok(fd)
}

pub fn sockaddr(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok((addr, std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t))
}

impl Broker {
    pub fn new(listener: OwnedFd, socket_path: PathBuf, limits: Limits) -> Result<Broker> {
        let epoll = unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let conn_quota = connection_quota(&limits);
        let b = Broker {
            listener,
            epoll,
            ns: Namespace::new(limits)?,
            conns: HashMap::new(),
            conns_by_uid: HashMap::new(),
            conn_quota,
            procs: HashMap::new(),
            pidfds: HashMap::new(),
            socket_path,
            stop: false,
            spare: spare_descriptor(),
            polled: Vec::new(),
            claimed: Claimed::default(),
            answer_words: Vec::new(),
        };
        b.watch(b.listener.as_raw_fd(), LISTENER)?;
        Ok(b)
    }

    fn watch(&self, fd: RawFd, token: u64) -> Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token | fd as u32 as u64 };
        check(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    fn unwatch(&self, fd: RawFd) {
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Serves until a Stop request.
    pub fn run(&mut self) -> Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 4096];
        while !self.stop {
            self.turn(&mut events, -1)?;
        }
        let _ = std::fs::remove_file(&self.socket_path);
        Ok(())
    }

    /// Whether a Stop request was granted.
    pub fn stopped(&self) -> bool {
        self.stop
    }

    /// One turn of the loop: waits up to `timeout` ms for ready descriptors (at most
    /// `events.len()`; -1: until one is ready, or RING_POLL when notices or deaths wait to
    /// be applied), then handles that batch. Public so that a harness (the
    /// fuzzer, fuzz/) can drive a broker in its own thread.
    pub fn turn(&mut self, events: &mut [libc::epoll_event], timeout: i32) -> Result<()> {
        let n = self.wait(events, timeout);
        if n < 0 {
            let e = Errno::last();
            return if e.0 == libc::EINTR { Ok(()) } else { Err(e) };
        }
        let mut requests: Vec<(RawFd, Frame)> = Vec::new();
        let mut closed: Vec<RawFd> = Vec::new();
        let mut deaths: Vec<i32> = Vec::new();
        self.harvest(&events[..n as usize], &mut requests, &mut closed, &mut deaths);
        // Requests in mailboxes are claimed after the harvest; what happened before they
        // were posted (a death, a close, a socket notice) may have become ready since: one
        // more look, so that the answers come after it, as the kernel's would.
        let mut posted = self.take_mailbox_requests();
        if posted.requests.iter().any(|r| r.may_see_events(posted.args(r))) {
            let m = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, 0) };
            if m > 0 {
                self.harvest(&events[..m as usize], &mut requests, &mut closed, &mut deaths);
            }
        }
        // Everything clients noted before this batch, before deaths and answers.
        self.drain_rings();
        for pid in deaths {
            self.process_died(pid);
        }
        self.ns.sem.retry_pending();
        for fd in closed {
            self.connection_closed(fd);
        }
        for (fd, frame) in requests {
            self.answer(fd, frame);
        }
        for r in &posted.requests {
            self.answer_mailbox(r, posted.args(r));
        }
        posted.requests.clear();
        posted.words.clear();
        self.claimed = posted;
        self.ns.sem.after_answers(&self.ns.limits, &mut self.ns.names);
        self.ns.msg.after_answers(&self.ns.limits, &mut self.ns.names);
        Ok(())
    }

    /// Reads what epoll reported: new connections are accepted, each ready connection's
    /// messages read (notices applied at once), dead processes and closed connections
    /// noted once each for the batch.
    fn harvest(&mut self, events: &[libc::epoll_event], requests: &mut Vec<(RawFd, Frame)>, closed: &mut Vec<RawFd>, deaths: &mut Vec<i32>) {
        for ev in events {
            let fd = (ev.u64 & 0xffff_ffff) as RawFd;
            match ev.u64 & !0xffff_ffff {
                LISTENER => self.accept_all(),
                CONN if !closed.contains(&fd) => {
                    self.read_all(fd, requests, closed);
                    // Active (a request, or a doorbell): its mailbox is polled from now.
                    if !closed.contains(&fd) {
                        self.poll_mailbox(fd);
                    }
                }
                PIDFD => {
                    if let Some(&pid) = self.pidfds.get(&fd) {
                        if !deaths.contains(&pid) {
                            deaths.push(pid);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// epoll_wait, but polling (the mailboxes, and the descriptors now and then) for a short
    /// while before sleeping: clients often send their next request right after an answer,
    /// and a wake-up costs more than the poll. A request found in a mailbox ends the poll.
    fn wait(&mut self, events: &mut [libc::epoll_event], timeout: i32) -> i32 {
        let epoll = self.epoll.as_raw_fd();
        let ready_now = |events: &mut [libc::epoll_event]| unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 0) };
        if timeout == 0 {
            // A harness's turn (`turn`): only what is ready now.
            return ready_now(events);
        }
        let start = std::time::Instant::now();
        for round in 0u32.. {
            // (`turn` looks at epoll again once it has claimed the requests.)
            if self.mailbox_request_waits() {
                return 0;
            }
            // A system call costs more than a look at the mailboxes: one per 16 looks, and
            // not at once (a client that was just answered posts its next request soon).
            if round % 16 == 15 {
                let n = ready_now(events);
                if n != 0 {
                    return n;
                }
                if self.stop_polling(false) {
                    return 0;
                }
            }
            if start.elapsed() >= BUSY_POLL {
                break;
            }
            std::hint::spin_loop();
        }
        // Clients that post from now on ring the doorbell.
        if self.stop_polling(true) {
            return 0;
        }
        // Notices left in rings are applied within RING_POLL even if nobody asks (asked
        // only here, before sleeping: it is a look at every connection's ring).
        let timeout = if timeout < 0 && (self.rings_pending() || self.ns.sem.has_pending()) { RING_POLL_MS } else { timeout };
        unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, timeout) }
    }

    /// Whether a polled mailbox holds a request not claimed yet.
    fn mailbox_request_waits(&self) -> bool {
        self.polled.iter().any(|p| p.ring.has_request())
    }

    /// Polls the connection's mailbox from now on (if it has one).
    fn poll_mailbox(&mut self, fd: RawFd) {
        let now = std::time::Instant::now();
        if let Some(p) = self.polled.iter_mut().find(|p| p.fd == fd) {
            p.last = now;
            return;
        }
        let Some(ring) = self.conns.get(&fd).and_then(|c| c.ring.clone()) else { return };
        if self.polled.len() >= MAX_POLLED {
            // The least recently active makes room, unless a request waits there.
            if let Some(i) = (0..self.polled.len()).min_by_key(|&i| self.polled[i].last) {
                let old = &self.polled[i];
                old.ring.set_polled(false);
                std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
                if old.ring.has_request() {
                    old.ring.set_polled(true);
                } else {
                    self.polled.swap_remove(i);
                }
            }
        }
        ring.set_polled(true);
        self.polled.push(Polled { fd, ring, last: now });
    }

    /// Stops polling the mailboxes idle for POLL_IDLE (`all`: every one, before sleeping).
    /// Each is looked at once more after its flag is cleared: one holding a request posted
    /// before its client could see that stays polled. True if such a request waits.
    fn stop_polling(&mut self, all: bool) -> bool {
        let now = std::time::Instant::now();
        let going = |p: &Polled| all || now.duration_since(p.last) >= POLL_IDLE;
        let mut any = false;
        for p in self.polled.iter().filter(|p| going(p)) {
            p.ring.set_polled(false);
            any = true;
        }
        if !any {
            return false;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let mut waiting = false;
        self.polled.retain(|p| {
            if !going(p) {
                return true;
            }
            if p.ring.has_request() {
                p.ring.set_polled(true);
                waiting = true;
                return true;
            }
            false
        });
        waiting
    }

    /// Claims the requests waiting in polled mailboxes; each is answered in this batch.
    fn take_mailbox_requests(&mut self) -> Claimed {
        let mut taken = std::mem::take(&mut self.claimed);
        let mut now = None;
        for p in self.polled.iter_mut() {
            let Some(conn) = self.conns.get(&p.fd) else { continue };
            let start = taken.words.len();
            if let Some(seq) = p.ring.take_request(&mut taken.words) {
                p.last = *now.get_or_insert_with(std::time::Instant::now);
                let words = start..taken.words.len();
                taken.requests.push(MailboxRequest { fd: p.fd, creds: conn.creds.clone(), ring: p.ring.clone(), seq, words });
            }
        }
        taken
    }

    fn accept_all(&mut self) {
        loop {
            let fd = unsafe {
                libc::accept4(self.listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            };
            if fd < 0 {
                // accept fails with EMFILE even when nobody waits: stop when nobody did.
                if matches!(Errno::last(), Errno(libc::EMFILE) | Errno(libc::ENFILE)) && self.refuse_one() {
                    continue;
                }
                return;
            }
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let Ok(creds) = peer_creds(fd.as_raw_fd()) else { continue };
            if self.conns_by_uid.get(&creds.uid).copied().unwrap_or(0) >= self.conn_quota {
                // Said before closing, so the client reads it whether or not its hello
                // went out first; it fails its call with EAGAIN.
                let _ = wire::send(fd.as_raw_fd(), &[-(libc::EAGAIN as i64)], None);
                continue;
            }
            if self.watch(fd.as_raw_fd(), CONN).is_ok() {
                *self.conns_by_uid.entry(creds.uid).or_insert(0) += 1;
                self.conns.insert(fd.as_raw_fd(), Conn { _socket: fd, creds: Rc::new(creds), ring: None, ring_used: false });
            }
        }
    }

    /// Out of descriptors: accept the next connection with the spare descriptor and close
    /// it at once (its client fails with a clear errno instead of waiting for ever, and the
    /// listener stops being ready), then take the spare back.
    /// Returns whether a connection was refused.
    fn refuse_one(&mut self) -> bool {
        self.spare = None;
        let fd = unsafe { libc::accept4(self.listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        self.spare = spare_descriptor();
        fd >= 0
    }

    /// Reads every queued message of one connection: notices are applied at once, requests
    /// are kept for after this batch's deaths (see the module comment).
    fn read_all(&mut self, fd: RawFd, requests: &mut Vec<(RawFd, Frame)>, closed: &mut Vec<RawFd>) {
        loop {
            match wire::recv(fd, libc::MSG_DONTWAIT) {
                Ok(Some(frame)) => {
                    let op = frame.words.first().copied().and_then(Op::from_i64);
                    match op {
                        Some(op) if op.is_one_way() => {
                            // A client's first notice comes over the socket, and its ring
                            // holds only newer ones; after that the ring holds the older
                            // (a notice comes this way when the ring is full).
                            let first = op != Op::Doorbell && self.conns.get(&fd).is_some_and(|c| !c.ring_used);
                            if !first {
                                self.drain_ring(fd);
                            }
                            if let Some(pid) = self.conns.get(&fd).map(|c| c.creds.pid) {
                                self.notice(pid, op, frame.args());
                            }
                            if first {
                                if let Some(c) = self.conns.get_mut(&fd) {
                                    c.ring_used = true;
                                }
                                self.drain_ring(fd);
                            }
                        }
                        _ => requests.push((fd, frame)),
                    }
                }
                Ok(None) => {
                    closed.push(fd);
                    return;
                }
                Err(Errno(libc::EAGAIN)) => return,
                Err(Errno(libc::EINVAL)) => requests.push((fd, Frame::default())),
                Err(_) => {
                    closed.push(fd);
                    return;
                }
            }
        }
    }

    /// Applies the notices waiting in one connection's ring.
    fn drain_ring(&mut self, fd: RawFd) {
        let Some(conn) = self.conns.get(&fd) else { return };
        let pid = conn.creds.pid;
        let mut notices = Vec::new();
        if let Some(ring) = conn.ring.as_ref() {
            ring.drain(|op, arg| notices.push([op, arg]));
        }
        self.apply_ring_notices(pid, notices);
    }

    /// Applies the notices waiting in a process's orphaned rings.
    fn drain_orphan_rings(&mut self, pid: i32) {
        let mut notices = Vec::new();
        if let Some(p) = self.procs.get(&pid) {
            for ring in &p.orphan_rings {
                ring.drain(|op, arg| notices.push([op, arg]));
            }
        }
        self.apply_ring_notices(pid, notices);
    }

    fn apply_ring_notices(&mut self, pid: i32, notices: Vec<[i64; 2]>) {
        for words in notices {
            if let Some(op) = Op::from_i64(words[0]).filter(|op| op.is_one_way()) {
                self.notice(pid, op, Words(&words));
            }
        }
    }

    fn drain_rings(&mut self) {
        let fds: Vec<RawFd> =
            self.conns.iter().filter(|(_, c)| c.ring_used && c.ring.as_ref().is_some_and(|r| !r.is_empty())).map(|(&fd, _)| fd).collect();
        for fd in fds {
            self.drain_ring(fd);
        }
        let pids: Vec<i32> =
            self.procs.iter().filter(|(_, p)| p.orphan_rings.iter().any(|r| !r.is_empty())).map(|(&pid, _)| pid).collect();
        for pid in pids {
            self.drain_orphan_rings(pid);
        }
    }

    fn rings_pending(&self) -> bool {
        self.conns.values().any(|c| c.ring_used && c.ring.as_ref().is_some_and(|r| !r.is_empty()))
            || self.procs.values().any(|p| p.orphan_rings.iter().any(|r| !r.is_empty()))
    }

    fn creds(&self, fd: RawFd) -> Option<Rc<Creds>> {
        self.conns.get(&fd).map(|c| c.creds.clone())
    }

    /// The process record of a pid, made (with its pidfd) on first sight. None when the
    /// process is already gone.
    fn process(&mut self, pid: i32) -> Option<&mut Process> {
        if !self.procs.contains_key(&pid) {
            let pidfd = sys::pidfd_open(pid).ok()?;
            self.watch(pidfd.as_raw_fd(), PIDFD).ok()?;
            self.pidfds.insert(pidfd.as_raw_fd(), pid);
            self.procs.insert(
                pid,
                Process {
                    pid,
                    pidfd,
                    attachments: HashMap::new(),
                    inherited_counted: false,
                    orphan_rings: Vec::new(),
                },
            );
        }
        self.procs.get_mut(&pid)
    }

    /// Counts an attachment held by `pid`; `lpid` is who made it (the parent, for an
    /// attachment inherited by fork, as the kernel does it during fork).
    fn attach(&mut self, pid: i32, id: i32, lpid: i32) {
        // A process already gone holds nothing: count only for a live one.
        if self.process(pid).is_none() || !self.ns.shm.attached(id, lpid) {
            return;
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            *p.attachments.entry(id).or_insert(0) += 1;
        }
    }

    fn detach(&mut self, pid: i32, id: i32, count: u32) {
        let change = self.ns.shm.detached(id, pid, count as u64);
        self.ns.publish(Family::Shm, change);
    }

    /// A one-way notice from process `pid`.
    fn notice(&mut self, pid: i32, op: Op, notice: Words) {
        match op {
            Op::ShmAttached => {
                if let Ok(id) = notice.int(1) {
                    self.attach(pid, id, pid);
                }
            }
            Op::ShmDetached => {
                let Ok(id) = notice.int(1) else { return };
                let held = self.procs.get_mut(&pid).and_then(|p| p.attachments.get_mut(&id));
                if let Some(n) = held {
                    if *n > 0 {
                        *n -= 1;
                        self.detach(pid, id, 1);
                    }
                }
            }
            Op::ShmInherited => {
                let (Ok(child), Ok(ids)) = (notice.int(1), notice.tail(2, wire::MAX_WORDS)) else { return };
                let ids: Vec<i32> = ids.iter().map(|&v| v as i32).collect();
                // Only a parent may speak for its child.
                if parent_of(child) != Some(pid) {
                    return;
                }
                self.count_inherited(child, &ids);
            }
            _ => {}
        }
    }

    /// Counts the attachments a child inherited by fork, once (the parent's notice and
    /// the child's hello both carry them).
    fn count_inherited(&mut self, child: i32, ids: &[i32]) {
        let Some(p) = self.process(child) else { return };
        if p.inherited_counted {
            return;
        }
        p.inherited_counted = true;
        let parent = parent_of(child).unwrap_or(child);
        for &id in ids {
            self.attach(child, id, parent);
        }
    }

    fn process_died(&mut self, pid: i32) {
        self.drain_orphan_rings(pid);
        let Some(p) = self.procs.remove(&pid) else { return };
        self.unwatch(p.pidfd.as_raw_fd());
        self.pidfds.remove(&p.pidfd.as_raw_fd());
        for (id, count) in p.attachments {
            if count > 0 {
                self.detach(pid, id, count);
            }
        }
        for change in self.ns.sem.process_died(pid) {
            self.ns.publish(Family::Sem, change);
        }
    }

    /// A connection closed: not a death (the pidfd says that). The process exec'd (and lost
    /// its mappings) or closed its descriptors (and kept them): /proc/PID/maps tells which.
    fn connection_closed(&mut self, fd: RawFd) {
        self.drain_ring(fd);
        self.unwatch(fd);
        self.polled.retain(|p| p.fd != fd);
        let Some(conn) = self.conns.remove(&fd) else { return };
        if let Some(held) = self.conns_by_uid.get_mut(&conn.creds.uid) {
            *held -= 1;
            if *held == 0 {
                self.conns_by_uid.remove(&conn.creds.uid);
            }
        }
        let pid = conn.creds.pid;
        let Some(p) = self.procs.get_mut(&pid) else { return };
        if let Some(ring) = conn.ring.filter(|_| conn.ring_used) {
            p.orphan_rings.push(ring);
        }
        let p = &*p;
        let names: Vec<(i32, String)> = p
            .attachments
            .iter()
            .filter(|(_, &n)| n > 0)
            .filter_map(|(&id, _)| {
                self.ns.shm.registry.by_id(id).ok().map(|o| (id, format!("/memfd:{}", o.data.memfd_name)))
            })
            .collect();
        let Some(seen) = process::count_mappings(pid, &names) else { return };
        for (id, _) in names {
            let held = self.procs.get(&pid).and_then(|p| p.attachments.get(&id)).copied().unwrap_or(0);
            let now = seen.get(&id).copied().unwrap_or(0).min(held);
            if now < held {
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.attachments.insert(id, now);
                }
                self.detach(pid, id, held - now);
            }
        }
    }

    fn answer(&mut self, fd: RawFd, frame: Frame) {
        let Some(creds) = self.creds(fd) else { return };
        if frame.words.first() == Some(&(Op::Ring as i64)) {
            return self.give_ring(fd);
        }
        let mut words = std::mem::take(&mut self.answer_words);
        let out_fd = self.request(&creds, frame.args(), &mut words);
        let sent = wire::send(fd, &words, out_fd.as_ref().map(|f| f.as_raw_fd()));
        self.answer_words = words;
        if sent.is_err() {
            // The client is gone or does not read: the pidfd, not this, decides its fate.
            self.connection_closed(fd);
        }
    }

    /// Answers a request claimed from a connection's mailbox (even if the connection has
    /// closed since: the process asked, and may wait): in the mailbox, or over the socket
    /// when the answer carries a descriptor or does not fit.
    fn answer_mailbox(&mut self, r: &MailboxRequest, args: Words) {
        // Only the requests a client may send this way (Op::uses_mailbox).
        let mut words = std::mem::take(&mut self.answer_words);
        let out_fd = if Op::from_i64(args.word(0).unwrap_or(0)).is_some_and(|op| op.uses_mailbox()) {
            self.request(&r.creds, args, &mut words)
        } else {
            error_answer(&mut words, libc::EINVAL);
            None
        };
        let lost = if out_fd.is_none() && words.len() <= ring::MAILBOX_WORDS {
            r.ring.answer_request(r.seq, Some(&words));
            false
        } else {
            let open = self.conns.contains_key(&r.fd);
            let sent = open && wire::send(r.fd, &words, out_fd.as_ref().map(|f| f.as_raw_fd())).is_ok();
            r.ring.answer_request(r.seq, None);
            open && !sent
        };
        self.answer_words = words;
        if lost {
            self.connection_closed(r.fd);
        }
    }

    /// Makes the connection's notice ring and mailbox and hands the client its descriptor.
    fn give_ring(&mut self, fd: RawFd) {
        let made = sys::sealed_memfd("ipcshim-ring", ring::SIZE as u64, 0).and_then(|memfd| Ok((Ring::map(memfd.as_raw_fd())?, memfd)));
        let sent = match made {
            Ok((r, memfd)) => {
                if let Some(c) = self.conns.get_mut(&fd) {
                    c.ring = Some(Rc::new(r));
                }
                // A new client asks soon: its first request needs no doorbell.
                self.poll_mailbox(fd);
                wire::send(fd, &[0], Some(memfd.as_raw_fd()))
            }
            Err(Errno(e)) => wire::send(fd, &[-(e as i64)], None),
        };
        if sent.is_err() {
            self.connection_closed(fd);
        }
    }

    /// Serves a request: its answer's words go into `out` (a negative first word is an
    /// errno), with the descriptor it carries, if any.
    fn request(&mut self, creds: &Creds, w: Words, out: &mut Vec<i64>) -> Option<OwnedFd> {
        out.clear();
        match self.serve(creds, w, out) {
            Ok(fd) => fd,
            Err(Errno(e)) => {
                error_answer(out, e);
                None
            }
        }
    }

    fn serve(&mut self, creds: &Creds, req: Words, out: &mut Vec<i64>) -> Result<Option<OwnedFd>> {
        let op = Op::from_i64(req.word(0)?).ok_or(Errno(libc::EINVAL))?;
        // A Stop granted earlier in this batch: the namespace is going, nothing more is
        // made or changed in it (a create would outlive its check that none is left).
        if self.stop {
            return Err(Errno(libc::EIDRM));
        }
        match op {
            Op::Hello => {
                let inherited: Vec<i32> = req.tail(1, wire::MAX_WORDS)?.iter().map(|&v| v as i32).collect();
                // A process that says hello again has let go of its older connections'
                // rings (it maps only its current one): apply what they hold and drop them.
                self.drain_orphan_rings(creds.pid);
                if let Some(p) = self.procs.get_mut(&creds.pid) {
                    p.orphan_rings.clear();
                }
                self.count_inherited(creds.pid, &inherited);
                let ro = sys::reopen_read_only(self.ns.table_fd.as_raw_fd())?;
                out.extend([0, crate::ipc::table::VERSION as i64, TABLE_SIZE as i64]);
                Ok(Some(ro))
            }
            Op::Get => {
                let family = Family::from_i64(req.word(1)?).ok_or(Errno(libc::EINVAL))?;
                let (key, flags, size) = (req.int(2)?, req.int(3)?, req.word(4)?);
                let (limits, names) = (&self.ns.limits, &mut self.ns.names);
                let (id, change) = match family {
                    Family::Shm => self.ns.shm.get(key, size as u64, flags, creds, limits, names)?,
                    Family::Sem => self.ns.sem.get(key, size, flags, creds, limits)?,
                    Family::Msg => self.ns.msg.get(key, size, flags, creds, limits, names)?,
                };
                self.ns.publish(family, change);
                out.push(id as i64);
                Ok(None)
            }
            Op::Open => {
                let family = Family::from_i64(req.word(1)?).ok_or(Errno(libc::EINVAL))?;
                let (id, access) = (req.int(2)?, req.word(3)? as u32 & (S_IRUGO | S_IWUGO | S_IXUGO));
                match family {
                    Family::Shm => {
                        let obj = self.ns.shm.registry.by_id(id)?;
                        if !obj.perm.allows(creds, access) {
                            return Err(Errno(libc::EACCES));
                        }
                        let fd = obj.data.memfd.open(access & S_IWUGO == 0)?;
                        out.extend([0, obj.data.size as i64]);
                        Ok(Some(fd))
                    }
                    Family::Sem | Family::Msg => {
                        let (words, fd) = match family {
                            Family::Sem => self.ns.sem.open(id, access, creds, &self.ns.limits, &mut self.ns.names)?,
                            _ => self.ns.msg.open(id, access, creds, &self.ns.limits, &mut self.ns.names)?,
                        };
                        out.push(0);
                        out.extend(words);
                        Ok(Some(fd))
                    }
                }
            }
            Op::Ctl => {
                let family = Family::from_i64(req.word(1)?).ok_or(Errno(libc::EINVAL))?;
                let (id, cmd) = (req.int(2)?, req.int(3)?);
                let args = req.from(4);
                let limits = &self.ns.limits;
                let (ret, fields, change) = match family {
                    Family::Shm => self.ns.shm.ctl(id, cmd, args, creds, limits)?,
                    Family::Sem => self.ns.sem.ctl(id, cmd, args, creds, limits)?,
                    Family::Msg => self.ns.msg.ctl(id, cmd, args, creds, limits)?,
                };
                self.ns.publish(family, change);
                if family == Family::Msg && cmd == crate::ipc::IPC_SET && ret == 0 {
                    self.ns.msg.wake_after_set(id);
                }
                // The reply is [return value, fields…]; a negative return value would read
                // as an errno.
                out.push(ret.max(0));
                out.extend(fields);
                Ok(None)
            }
            Op::Status => {
                out.extend([
                    0,
                    std::process::id() as i64,
                    self.ns.object_count() as i64,
                    self.procs.len() as i64,
                    self.conns.len() as i64,
                    self.ns.msg.registry.in_use() as i64,
                    self.ns.sem.registry.in_use() as i64,
                    self.ns.shm.registry.in_use() as i64,
                    self.ns.memory_held() as i64,
                ]);
                Ok(None)
            }
            Op::Stop => {
                let me = unsafe { libc::geteuid() };
                if creds.uid != 0 && creds.uid != me {
                    return Err(Errno(libc::EPERM));
                }
                if req.word(1).unwrap_or(0) == 0 && self.ns.object_count() > 0 {
                    return Err(Errno(libc::EBUSY));
                }
                self.stop = true;
                out.push(0);
                Ok(None)
            }
            _ => Err(Errno(libc::EINVAL)),
        }
    }
}

/// The parent pid of `pid` (from /proc/PID/stat), if it can be read.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
