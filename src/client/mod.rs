//! The in-process side: the connection to the broker (made on first use, verified before
//! every use, remade after fork or when a program closed it), the namespace table mapping,
//! and the process's own credentials.

pub mod creds;
pub mod fork;
pub mod get;
pub mod namespace;
pub mod reserve;
pub mod spawn;

use crate::ipc::table::{Table, TABLE_SIZE};
use crate::ipc::thread::{lock_held, Exclusive, Held, HeldGuard};
use crate::ipc::{Errno, Result};
use crate::log;
use crate::sys::{fd_identity, Mapping};
use crate::wire::{self, ring::Answer, Frame, Op};
use reserve::{raw_close, Reserve};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicPtr, Ordering};

/// Our socket to the broker. Held as a raw descriptor with its identity: if a program
/// closed it or dup2'ed something else onto its number, we notice, never write protocol
/// bytes into the program's file, and never close what is now the program's descriptor.
struct Conn {
    fd: RawFd,
    identity: (u64, u64),
    /// Where notices go without a system call (None if the broker gave no ring).
    ring: Option<wire::ring::Ring>,
    /// Whether a notice went over the socket on this connection: the broker looks at the
    /// rings of such connections only, so the first notice goes that way.
    ring_used: bool,
}

impl Conn {
    fn is_ours(&self) -> bool {
        fd_identity(self.fd) == Some(self.identity)
    }

    fn close(self) {
        if self.is_ours() {
            raw_close(self.fd);
        }
    }
}

struct TableMap {
    _map: Mapping,
    table: Table,
}

pub struct Client {
    conn: Mutex<Option<Conn>>,
    /// The current broker's namespace table. Replaced (the old mapping leaked on purpose:
    /// lock-free readers may still use it) only if the broker was restarted.
    table: AtomicPtr<TableMap>,
    table_identity: Exclusive<Option<(u64, u64)>>,
    /// Taken after `conn` when both are needed.
    reserve: Exclusive<Reserve>,
}

/// The longest a blocked call sleeps before it looks again, and asks whether the broker
/// still lives (`Client::broker_lost`).
pub const LOOK_AROUND: std::time::Duration = std::time::Duration::from_secs(1);

/// Bumped each time a broker's namespace table is adopted (see `broker_epoch`).
static BROKER_EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The current table's version word of each family (`Family as usize`), for the fast
/// paths' cached permission checks: one load away (a replaced table stays mapped).
static VERSIONS: [AtomicPtr<std::sync::atomic::AtomicU64>; 3] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 3];

/// A cached permission decision (rights in bits 0-1) holds while the key it was stored
/// with is current: its family's table version (an entry read under `version`) and the
/// credentials' generation. Bit 2: a valid key.
pub fn rights_key(version: u64) -> u64 {
    (version << 25) | ((creds::generation() & 0x3f_ffff) << 3) | 4
}

/// The current `rights_key` of a family; None before the first table is adopted.
#[inline(always)]
pub fn current_rights_key(family: crate::ipc::Family) -> Option<u64> {
    let v = VERSIONS[family as usize].load(Ordering::Acquire);
    if v.is_null() {
        return None;
    }
    Some(rights_key(unsafe { &*v }.load(Ordering::Acquire)))
}

/// The pid whose hello the broker has seen (0 before the first, and in a forked child).
static REGISTERED_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

// Made with the thread marked, as a signal handler's call must not wait for it (abi::call).
static CLIENT: Lazy<Client> = Lazy::new(|| crate::ipc::thread::not_reentrant(|| Client { conn: Mutex::new(None), table: AtomicPtr::new(std::ptr::null_mut()), table_identity: Exclusive::new(None), reserve: Exclusive::new(Reserve::new()) }));

pub fn client() -> &'static Client {
    &CLIENT
}

/// The connection, locked by `Client::conn`.
type ConnGuard<'a> = HeldGuard<parking_lot::MutexGuard<'a, Option<Conn>>>;

impl Client {
    /// The connection's lock; EDEADLK for a signal handler's call while the call it
    /// interrupted holds it or waits for it (waiting for the broker's answer, say).
    fn conn(&self) -> Result<ConnGuard<'_>> {
        lock_held(Held::BrokerConnection, || self.conn.lock())
    }

    /// A request and its reply. `Err` is the broker's errno, or the connection's failure:
    /// EMFILE when the reply carried a descriptor this process had no room for, even after
    /// freeing its reserve (the connection stays usable).
    pub fn request(&self, words: &[i64]) -> Result<Frame> {
        let mut guard = self.conn()?;
        let by_mailbox = words.len() <= wire::ring::MAILBOX_WORDS && words.first().and_then(|&op| Op::from_i64(op)).is_some_and(Op::uses_mailbox);
        // The mailbox is memory: no need to check the socket first (a system call that
        // costs as much as the rest of the request); `mailbox_round_trip` checks it only
        // when it writes to it or must wait long.
        if let Some(conn) = guard.as_ref().filter(|c| by_mailbox && c.ring.is_some()) {
            match self.mailbox_round_trip(conn, words) {
                Ok(Answer::Words(words)) => return status_of(Frame { words, ..Frame::default() }),
                Ok(Answer::OnSocket) if conn.is_ours() => {
                    let fd = conn.fd;
                    return status_of(await_reply(&mut guard, fd)?);
                }
                Ok(Answer::OnSocket) => return Err(lost(&mut guard)),
                Err(MailboxLost::Unanswered) => return Err(lost(&mut guard)),
                // Not carried out: sent again below, on a new connection.
                Err(MailboxLost::TakenBack) => {
                    // (A program that closed our socket needs no warning: that is expected.)
                    if guard.as_ref().is_some_and(Conn::is_ours) {
                        log::warn("the connection to the broker closed, reconnecting");
                    }
                    guard.take().map(Conn::close);
                }
            }
        }
        let fd = self.ensure_connected(&mut guard)?;
        let fd = match wire::send(fd, words, None) {
            Ok(()) => fd,
            // The broker went away before reading the request.
            Err(e) => self.reconnect_and_send(&mut guard, words, &format!("connection to the broker lost ({})", e.0))?,
        };
        let mut reply = await_reply(&mut guard, fd)?;
        if reply.fd_dropped && self.reserve.lock().release_one() {
            // Our descriptor table is full: the reserve's slot is free now, ask again. (Only
            // Open is answered with a descriptor, and it changes nothing in the broker.)
            if wire::send(fd, words, None).is_err() {
                return Err(lost(&mut guard));
            }
            reply = await_reply(&mut guard, fd)?;
        }
        status_of(reply)
    }

    /// Forgets a lost connection, connects again and sends the request on the new one.
    fn reconnect_and_send(&self, guard: &mut Option<Conn>, words: &[i64], why: &str) -> Result<RawFd> {
        log::warn(&format!("{why}, reconnecting"));
        guard.take().map(Conn::close);
        let fd = self.ensure_connected(guard)?;
        wire::send(fd, words, None)?;
        Ok(fd)
    }

    /// A request through the connection's mailbox (wire::ring): posted, the broker rung
    /// if it does not poll the mailbox, the answer awaited spinning and then sleeping.
    fn mailbox_round_trip(&self, conn: &Conn, words: &[i64]) -> std::result::Result<Answer, MailboxLost> {
        let Some(ring) = conn.ring.as_ref() else { return Err(MailboxLost::TakenBack) };
        let seq = ring.post(words);
        let start = std::time::Instant::now();
        let give_up = start + std::time::Duration::from_secs(spawn::REPLY_TIMEOUT_SECS as u64);
        // Never write to a descriptor that is no longer our socket.
        if !ring.broker_polls() && !(conn.is_ours() && wire::send(conn.fd, &[Op::Doorbell as i64], None).is_ok()) {
            return self.connection_lost(conn, seq, give_up);
        }
        let mut spins = 0u32;
        loop {
            if let Some(answer) = ring.answer(seq) {
                return Ok(answer);
            }
            // The clock is read now and then: it costs more than a look at the answer.
            spins += 1;
            if spins % 64 != 0 || start.elapsed() < REPLY_SPIN {
                std::hint::spin_loop();
                continue;
            }
            // Nobody answers on a connection the broker closed (it died), or the program did.
            if !conn.is_ours() || socket_closed(conn.fd) {
                return self.connection_lost(conn, seq, give_up);
            }
            // A broker that does not answer for this long (stopped, wedged) fails the call,
            // as over the socket.
            let now = std::time::Instant::now();
            if now >= give_up {
                return match self.connection_lost(conn, seq, give_up) {
                    Err(MailboxLost::TakenBack) => Err(MailboxLost::Unanswered),
                    other => other,
                };
            }
            ring.wait_for_answer(seq, (now + LOOK_AROUND).min(give_up));
        }
    }

    /// The connection of a posted request is lost: take the request back to send it
    /// again, or, if the broker claimed it first, wait for its answer (a broker that claims
    /// a request answers it, even on a connection it has closed) until `give_up`; or for a
    /// moment only if our socket says the broker is gone.
    fn connection_lost(&self, conn: &Conn, seq: u32, give_up: std::time::Instant) -> std::result::Result<Answer, MailboxLost> {
        let Some(ring) = conn.ring.as_ref() else { return Err(MailboxLost::TakenBack) };
        if ring.take_back(seq) {
            return Err(MailboxLost::TakenBack);
        }
        let deadline = if conn.is_ours() && socket_closed(conn.fd) { give_up.min(std::time::Instant::now() + LOOK_AROUND) } else { give_up };
        loop {
            if let Some(answer) = ring.answer(seq) {
                return Ok(answer);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(MailboxLost::Unanswered);
            }
            ring.wait_for_answer(seq, (now + LOOK_AROUND).min(deadline));
        }
    }

    /// Whether this process can spare a descriptor the broker sent for longer than the
    /// call that asked for it: true when our reserve is in place (remade if it can be). A
    /// caller that would cache one (shmat) closes it after use instead when this is false.
    pub fn can_spare_descriptor(&self) -> bool {
        let Ok(_guard) = self.conn() else { return false };
        self.reserve.lock().keep()
    }

    /// Runs `f`, which needs one descriptor for a moment and closes it again, with the
    /// reserve's slot free: for the calls that must work in a process whose descriptor
    /// table is full (waking a semaphore sleeper). Costs two system calls more.
    pub fn with_reserve_released<R>(&self, f: impl FnOnce() -> R) -> R {
        // (In a signal handler whose interrupted call holds the lock: without the slot.)
        let Ok(_guard) = self.conn() else { return f() };
        let mut reserve = self.reserve.lock();
        let released = reserve.release_one();
        let r = f();
        if released {
            reserve.keep();
        }
        r
    }

    /// A one-way notice: sent, not answered.
    pub fn notify(&self, words: &[i64]) -> Result<()> {
        let mut guard = self.conn()?;
        // The ring is memory, not a descriptor: no need to check the socket first, and the
        // broker drains it even after a program closed our socket.
        if let (Some(ring), [op, arg]) = (guard.as_ref().filter(|c| c.ring_used).and_then(|c| c.ring.as_ref()), words) {
            if ring.push(*op, *arg) {
                return Ok(());
            }
        }
        let fd = self.ensure_connected(&mut guard)?;
        wire::send(fd, words, None)?;
        if let Some(c) = guard.as_mut() {
            c.ring_used = true;
        }
        Ok(())
    }

    /// A notice the broker must act on at once (it frees memory): the socket wakes it.
    /// Sent after any ring entries of this connection, and the broker drains the ring
    /// before applying it, so order is kept.
    pub fn notify_now(&self, words: &[i64]) -> Result<()> {
        let mut guard = self.conn()?;
        let fd = self.ensure_connected(&mut guard)?;
        wire::send(fd, words, None)
    }

    /// Connects now if this process has no connection (a forked child with attachments
    /// says hello at once).
    pub fn connect_now(&self) -> Result<()> {
        let mut guard = self.conn()?;
        self.ensure_connected(&mut guard).map(|_| ())
    }

    /// Makes sure the broker knows this process (and so will see it die) before it records
    /// anything the broker must undo at its death, such as SEM_UNDO adjustments. Cheap
    /// after the first call in a process.
    pub fn ensure_registered(&self) -> Result<()> {
        if REGISTERED_PID.load(Ordering::Acquire) == crate::client::creds::own_pid() {
            return Ok(());
        }
        self.connect_now()?;
        REGISTERED_PID.store(crate::client::creds::own_pid(), Ordering::Release);
        Ok(())
    }

    /// The namespace table, connecting first if needed.
    #[inline]
    pub fn table(&self) -> Result<&'static Table> {
        let p = self.table.load(Ordering::Acquire);
        if !p.is_null() {
            return Ok(unsafe { &(*p).table });
        }
        self.table_slow()
    }

    #[cold]
    fn table_slow(&self) -> Result<&'static Table> {
        let mut guard = self.conn()?;
        self.ensure_connected(&mut guard)?;
        let p = self.table.load(Ordering::Acquire);
        if p.is_null() {
            return Err(Errno(libc::EIO));
        }
        Ok(unsafe { &(*p).table })
    }

    /// Makes sure this process has a working connection (and has said hello), and returns it.
    fn ensure_connected(&self, guard: &mut Option<Conn>) -> Result<RawFd> {
        if let Some(c) = guard.as_ref() {
            if c.is_ours() {
                self.reserve.lock().keep();
                return Ok(c.fd);
            }
            // Closed or replaced by the program: forget it without touching the descriptor.
            *guard = None;
        }
        // Our reserve's slots are the room a program with a full table left us.
        self.reserve.lock().release_all();
        let sock = spawn::connect()?;
        let inherited = fork::inherited_attachments();
        let mut hello = vec![Op::Hello as i64, inherited.len() as i64];
        hello.extend(inherited.iter().map(|&id| id as i64));
        // A broker that closes on us here (it refused the connection) is a missing broker.
        let refused = |e: Errno| {
            log::warn(&format!("the broker closed the connection ({})", e.0));
            Errno(libc::ENOSYS)
        };
        // A broker refusing us (our uid's connection quota) says so and closes at once,
        // maybe before our hello: its answer is still there to read.
        let sent = wire::send(sock.as_raw_fd(), &hello, None);
        let mut answer = wire::recv(sock.as_raw_fd(), if sent.is_ok() { 0 } else { libc::MSG_DONTWAIT });
        if matches!(answer, Err(Errno(libc::ECONNRESET))) {
            // It closed with our hello unread: the reset is reported before its answer.
            answer = wire::recv(sock.as_raw_fd(), libc::MSG_DONTWAIT);
        }
        let reply = match answer {
            Ok(Some(reply)) if reply.fd_dropped => {
                // The namespace table could not be received: no descriptor to spare.
                return Err(Errno(libc::EMFILE));
            }
            Ok(Some(reply)) => reply,
            _ if sent.is_err() => return Err(refused(sent.unwrap_err())),
            other => {
                log::warn(&format!("the broker accepted the connection but did not answer ({other:?})"));
                return Err(Errno(libc::ENOSYS));
            }
        };
        let status = reply.word(0)?;
        if status == -(libc::EAGAIN as i64) {
            log::warn("the broker refused the connection: this uid holds its quota of connections (IPCSHIM_LIMITS conns_per_uid)");
            return Err(Errno(libc::EAGAIN));
        }
        if status < 0 {
            // The broker could not serve us (out of descriptors, say): as if it were missing.
            log::warn(&format!("the broker refused the connection (errno {})", -status));
            return Err(Errno(libc::ENOSYS));
        }
        if reply.word(1)? != crate::ipc::table::VERSION as i64 {
            log::warn("the broker speaks another protocol version");
            return Err(Errno(libc::EPROTO));
        }
        let table_fd = reply.fd.ok_or(Errno(libc::EPROTO))?;
        self.adopt_table(table_fd)?;
        fork::hello_done();
        wire::send(sock.as_raw_fd(), &[Op::Ring as i64], None).map_err(refused)?;
        let ring = match wire::recv(sock.as_raw_fd(), 0).map_err(refused)? {
            Some(Frame { fd: Some(ring_fd), .. }) => wire::ring::Ring::map(ring_fd.as_raw_fd()).ok(),
            _ => None,
        };
        let identity = fd_identity(sock.as_raw_fd()).ok_or(Errno(libc::EBADF))?;
        let fd = sock.into_raw_fd();
        *guard = Some(Conn { fd, identity, ring, ring_used: false });
        self.reserve.lock().keep();
        Ok(fd)
    }

    fn adopt_table(&self, fd: OwnedFd) -> Result<()> {
        let identity = fd_identity(fd.as_raw_fd());
        let mut current = self.table_identity.lock();
        if *current == identity && !self.table.load(Ordering::Acquire).is_null() {
            return Ok(());
        }
        let map = Mapping::map(fd.as_raw_fd(), TABLE_SIZE, false)?;
        let table = unsafe { Table::new(map.as_ptr()) };
        if !table.is_valid() {
            return Err(Errno(libc::EPROTO));
        }
        let boxed = Box::into_raw(Box::new(TableMap { _map: map, table }));
        self.table.store(boxed, Ordering::Release);
        for family in crate::ipc::Family::ALL {
            let word = unsafe { &(*boxed).table }.version_word(family);
            VERSIONS[family as usize].store(word as *const _ as *mut _, Ordering::Release);
        }
        *current = identity;
        BROKER_EPOCH.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Which broker this process talks to: changes when a new broker (a new namespace
    /// table) is met, that is, after the old one died.
    pub fn broker_epoch(&self) -> u64 {
        BROKER_EPOCH.load(Ordering::Acquire)
    }

    /// Whether the broker of `epoch` is gone: another broker has been met since, or our
    /// connection to it has been closed by its death. A sleeper on one of its objects
    /// asks this now and then: nobody will ever wake it (a killed broker is a reboot of the
    /// namespace, and the kernel's sleepers would not survive a reboot either).
    pub fn broker_lost(&self, epoch: u64) -> bool {
        if self.broker_epoch() != epoch {
            return true;
        }
        // (Asked by a signal handler's call while the interrupted one holds the lock: not
        // known to be lost.)
        let Ok(guard) = self.conn() else { return false };
        guard.as_ref().filter(|c| c.is_ours()).is_some_and(|c| socket_closed(c.fd))
    }

    /// In a forked child: the inherited socket is the parent's; let it go (closing our copy
    /// does not affect the parent) so the child opens its own.
    pub(crate) fn forget_connection_after_fork(&self) {
        // The lock may have been held by another thread of the parent at fork time; the
        // child has only this thread, so take the state over without waiting.
        let slot = unsafe { &mut *self.conn.data_ptr() };
        let reserve = unsafe { self.reserve.get_unlocked() };
        if let Some(c) = slot.take() {
            // Its slot stays ours, for the child's own connection.
            if c.is_ours() {
                reserve.take_over(c.fd);
            }
        }
        if self.conn.is_locked() {
            unsafe { self.conn.force_unlock() };
        }
        self.reserve.unlock_after_fork();
        crate::ipc::thread::forget_held_after_fork();
    }
}

/// How long a client polls for a reply before it sleeps: the broker usually answers within
/// a few microseconds, and a sleep and wake-up costs more than that on most machines.
const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// The reply to the request just sent. A connection that fails here is lost: forgotten,
/// and the call fails with EIDRM (the broker, and so the namespace, may be gone).
fn await_reply(guard: &mut Option<Conn>, fd: RawFd) -> Result<Frame> {
    match recv_reply(fd) {
        Ok(Some(f)) => Ok(f),
        Ok(None) | Err(_) => Err(lost(guard)),
    }
}

fn lost(guard: &mut Option<Conn>) -> Errno {
    guard.take().map(Conn::close);
    log::warn("the broker closed the connection during a request");
    Errno(libc::EIDRM)
}

/// How a mailbox request ended without an answer.
enum MailboxLost {
    /// Taken back before the broker saw it: send it again.
    TakenBack,
    /// Not answered in time (REPLY_TIMEOUT_SECS), or claimed by a broker that died before
    /// it answered: it may have been carried out.
    Unanswered,
}

/// A reply whose status is an errno is that error; one whose descriptor did not fit in our
/// table is EMFILE.
fn status_of(reply: Frame) -> Result<Frame> {
    let status = reply.word(0)?;
    if status < 0 {
        return Err(Errno((-status) as i32));
    }
    if reply.fd_dropped {
        return Err(Errno(libc::EMFILE));
    }
    Ok(reply)
}

/// Whether the broker closed our socket (it died, or dropped us). The caller has checked
/// that the descriptor is still ours.
fn socket_closed(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
    // A raw system call: glibc's poll is a cancellation point, and semop is not one.
    let ready = unsafe { libc::syscall(libc::SYS_poll, &mut p as *mut libc::pollfd, 1, 0) };
    ready == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

fn recv_reply(fd: RawFd) -> Result<Option<Frame>> {
    let start = std::time::Instant::now();
    loop {
        match wire::recv(fd, libc::MSG_DONTWAIT) {
            Err(Errno(libc::EAGAIN)) if start.elapsed() < REPLY_SPIN => std::hint::spin_loop(),
            Err(Errno(libc::EAGAIN)) => return wire::recv(fd, 0),
            other => return other,
        }
    }
}

/// Descriptors the library holds are created close-on-exec; this builds an OwnedFd from a
/// raw descriptor returned by a system call.
pub(crate) fn owned(fd: RawFd) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(Errno::last());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// After setuid and friends: re-read our credentials, and reconnect so the broker sees
/// the new ones.
pub fn creds_changed() {
    creds::invalidate();
    let mut guard = CLIENT.conn.lock();
    if let Some(c) = guard.take() {
        c.close();
    }
}
