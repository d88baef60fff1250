//! The client's side of message queues: msgget's fast lookup, msgsnd and msgrcv (ipc/msg.c
//! `do_msgsnd` / `do_msgrcv`), all inside the process when nothing has to wait.
//!
//! Each process maps a queue's memfd once (asked from the broker, which checks the caller's
//! rights) and finds it by the id's index in a lock-free array (as semaphore sets). Every
//! call checks the id and the caller's access: a decision cached in the handle while the
//! namespace table's version and our credentials' generation are unchanged, else against
//! the table, so a removed queue gives EINVAL and changed permissions EACCES, as the
//! kernel's lookup would.

use super::layout::{blocks_for, Found, Header, Queue, Search, StashView, BLOCK, STASH_BLOCKS};
use super::{MSG_COPY, MSG_EXCEPT, MSG_NOERROR};
use crate::client::{client, creds, current_rights_key, rights_key};
use crate::ipc::handles::{pin, Counted, InUse, Pinned, Retired};
use crate::ipc::ids::MAX_INDEX;
use crate::ipc::perm::{Perm, S_IRUGO, S_IWUGO};
use crate::ipc::sync::{futex_wait, futex_wake, my_tid, Locked};
use crate::ipc::usercopy::check_user;
use crate::ipc::{now_secs, Errno, Family, Result, IPC_INFO, IPC_NOWAIT};
use crate::sys::Mapping;
use crate::wire::Op;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

/// One queue mapped in this process, found by its id's index in `HANDLES` (no lock: a call
/// pins it in a per-thread hazard slot, src/ipc/handles.rs, until it returns).
struct Handle {
    id: i32,
    queue: Queue,
    _map: Mapping,
    /// Cached access decision: rights (bits 0-1) | valid (bit 2) | creds generation
    /// (bits 3-24) | table version (bits 25-63). While the table's version of the msg
    /// family and our credentials' generation stay the same, the id is still alive and
    /// the decision still holds.
    rights: AtomicU64,
    /// Threads of this process that sleep on the queue or wait for its lock (the mapping
    /// must outlive them).
    users: AtomicU32,
    /// This process's record of spinning before sleeping on this queue (`Spin`).
    spin: Spin,
    /// This process's stash in the queue, as it last left it (`StashState`).
    stash: StashState,
    /// Whether the last message this process received here was long enough (AHEAD_MIN)
    /// and came from another process (the queue's lspid then): only then is reading ahead
    /// worth it (and a look at the queue before the lock does not steal lines from the
    /// sender).
    read_ahead: AtomicBool,
    /// Where `read_ahead` looks first (`NextHint`).
    next_hint: NextHint,
}

/// Where a receiver's read-ahead looks first (`Queue::peek`): the message that followed
/// the one this process received here last, as long as such hints prove right. With
/// several receivers on the queue, or a process that changes searches, the message after
/// ours is often taken by another; a peek from there would then be rejected every time
/// (`Queue::same`: a copy for nothing) where one from the head would not.
struct NextHint {
    /// The slot's link (0: none).
    link: AtomicU32,
    /// Whether the last hint named the message `find` then picked.
    right: AtomicBool,
}

impl NextHint {
    fn new() -> NextHint {
        NextHint { link: AtomicU32::new(0), right: AtomicBool::new(true) }
    }

    /// Where the read-ahead starts (0: the head).
    #[inline(always)]
    fn start(&self) -> u32 {
        if self.right.load(Relaxed) {
            self.link.load(Relaxed)
        } else {
            0
        }
    }

    /// This process took the message in slot `found` (as `find` picked it), and `next`
    /// followed it: whether the hint named `found` decides whether the next ones are
    /// used, and `next` is the next hint.
    #[inline(always)]
    fn taken(&self, found: u32, next: u32) {
        let link = self.link.load(Relaxed);
        if link != 0 && self.right.load(Relaxed) != (link == found) {
            self.right.store(link == found, Relaxed);
        }
        self.link.store(next, Relaxed);
    }
}

const READ: u32 = 1;
const WRITE: u32 = 2;

/// Index → handle. In .bss: pages are only made when touched.
static HANDLES: [AtomicPtr<Handle>; MAX_INDEX] = [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_INDEX];

/// Handles taken out of `HANDLES`, freed once no thread can still be using them.
static RETIRED: Retired<Handle> = Retired::new();

impl Counted for Handle {
    fn users(&self) -> &AtomicU32 {
        &self.users
    }
}

fn index_of(id: i32) -> usize {
    id as usize % MAX_INDEX
}

/// The mapped queue with this id (≥ 0), if this process has it, pinned for the call.
#[inline(always)]
fn cached(id: i32) -> Option<Pinned<Handle>> {
    let p = pin(&HANDLES[index_of(id)])?;
    (p.get().id == id).then_some(p)
}

/// The kernel's `ktime_get_real_seconds` (the coarse clock `time` reads, too).
/// The namespace's MSGMAX, asked once (0: not yet known).
static MSGMAX: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
fn msgmax() -> Result<u64> {
    match MSGMAX.load(Relaxed) {
        0 => msgmax_slow(),
        v => Ok(v),
    }
}

#[cold]
fn msgmax_slow() -> Result<u64> {
    let reply = client().request(&[Op::Ctl as i64, Family::Msg as i64, 0, IPC_INFO as i64])?;
    // [ret, msgpool, msgmap, msgmax, …]
    let v = reply.word(3)?.max(0) as u64;
    MSGMAX.store(v, Relaxed);
    Ok(v)
}

fn need(access: u32) -> u32 {
    if access == S_IRUGO {
        READ
    } else {
        WRITE
    }
}

fn rights_of(perm: &Perm) -> u32 {
    let c = creds::own();
    (if perm.allows(&c, S_IRUGO) { READ } else { 0 }) | (if perm.allows(&c, S_IWUGO) { WRITE } else { 0 })
}

/// `ipcperms` for a mapped queue: the cached decision while the table and the credentials
/// are unchanged, else the namespace table's. EINVAL (and the handle retired) if the id
/// names no queue any more.
#[inline(always)]
fn check(h: &'static Handle, access: u32) -> Result<()> {
    let key = match current_rights_key(Family::Msg) {
        Some(k) => k,
        None => rights_key(client().table()?.version(Family::Msg)),
    };
    let c = h.rights.load(Relaxed);
    let rights = if c & !3 == key { (c & 3) as u32 } else { recheck(h)? };
    if rights & need(access) == 0 {
        return Err(Errno(libc::EACCES));
    }
    Ok(())
}

#[cold]
fn recheck(h: &'static Handle) -> Result<u32> {
    let table = client().table()?;
    let version = table.version(Family::Msg);
    let key = rights_key(version);
    let entry = table.by_id(Family::Msg, h.id).map_err(|_| Errno(libc::EAGAIN))?;
    let Some(e) = entry else {
        RETIRED.take(&HANDLES[index_of(h.id)], h);
        return Err(Errno(libc::EINVAL));
    };
    let r = rights_of(&e.perm);
    if version & 1 == 0 && table.version(Family::Msg) == version {
        h.rights.store(key | r as u64, Relaxed);
    }
    Ok(r)
}

/// Drops this process's mapping of a queue that is gone (threads still using it keep it).
pub(crate) fn forget(id: i32) {
    if id >= 0 {
        if let Some(h) = cached(id) {
            RETIRED.take(&HANDLES[index_of(id)], h.get());
        }
    }
}

/// The queue with this id (≥ 0), pinned for the call, after the access check: EINVAL for
/// an id that names no queue, EACCES without the right. Maps it on first use.
#[inline(always)]
fn queue(id: i32, access: u32) -> Result<Pinned<Handle>> {
    loop {
        if let Some(h) = cached(id) {
            check(h.get(), access)?;
            return Ok(h);
        }
        // Mapped and installed; pinned on the next pass (unless already replaced or
        // retired: then again, and a removed queue fails the table's check).
        open(id, access)?;
    }
}

/// Checks the access against the namespace table, then maps the queue (the broker checks
/// the caller's rights again).
#[cold]
fn open(id: i32, access: u32) -> Result<()> {
    let table = client().table()?;
    let entry = table.by_id(Family::Msg, id).map_err(|_| Errno(libc::EAGAIN))?;
    let Some(entry) = entry else { return Err(Errno(libc::EINVAL)) };
    if rights_of(&entry.perm) & need(access) == 0 {
        return Err(Errno(libc::EACCES));
    }
    let reply = client().request(&[Op::Open as i64, Family::Msg as i64, id as i64, access as i64])?;
    let fd = reply.fd.ok_or(Errno(libc::EPROTO))?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Errno::last());
    }
    let map = Mapping::map(fd.as_raw_fd(), st.st_size as usize, true)?;
    let queue = unsafe { Queue::new(map.as_ptr(), map.len())? };
    let h = Box::new(Handle { id, queue, _map: map, rights: AtomicU64::new(0), users: AtomicU32::new(0), spin: Spin::new(), stash: StashState::default(), read_ahead: AtomicBool::new(false), next_hint: NextHint::new() });
    RETIRED.install(&HANDLES[index_of(id)], h);
    Ok(())
}

/// The queue's lock, held until dropped. A holder that died is repaired after.
struct Guard<'a> {
    queue: &'a Queue,
    /// This thread's id (the lock's word holds it).
    me: u32,
}

/// Tries this many times (about 3 µs here) before sleeping on a held lock: it is held
/// for a few hundred nanoseconds at most, far less than a sleep and a wake-up cost.
/// Measured with two processes streaming through one queue: 40 tries gave about 12
/// context switches per 100 messages, 100 tries under 1.
const LOCK_TRIES: u32 = 100;

#[inline(always)]
fn lock(h: &'static Handle) -> Result<Guard<'static>> {
    let queue = &h.queue;
    let me = my_tid();
    let locked = match queue.header().lock.try_lock_as(me) {
        Some(r) => r?,
        None => lock_contended(h, me)?,
    };
    let guard = Guard { queue, me };
    if let Locked::Recovered = locked {
        queue.recover(super::stash_owner_alive)?;
    }
    Ok(guard)
}

#[cold]
fn lock_contended(h: &'static Handle, me: u32) -> Result<Locked> {
    let mutex = &h.queue.header().lock;
    for _ in 1..LOCK_TRIES {
        std::hint::spin_loop();
        // Look before trying: a failed exchange takes the line from the holder as surely
        // as a successful one, and the holder needs it for its critical section.
        if mutex.looks_free() {
            if let Some(r) = mutex.try_lock_as(me) {
                return r;
            }
        }
    }
    let _in_use = InUse::new(h);
    mutex.lock()
}

impl Drop for Guard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.queue.header().lock.unlock_as(self.me);
    }
}

/// Which side of the queue a caller waits on.
#[derive(Clone, Copy)]
enum Side {
    /// A sender waiting for space.
    Space,
    /// A receiver waiting for a message.
    Message,
}

/// What a spinning caller on `side` watches: the other side's event count.
fn event(h: &Header, side: Side) -> &AtomicU32 {
    match side {
        Side::Space => &h.received.0,
        Side::Message => &h.sent.0,
    }
}

/// Tells spinners that a send or a receive is done (after its critical section; a bump
/// lost to a concurrent one still changes the value a spinner saw).
#[inline(always)]
fn announce(event: &AtomicU32) {
    event.store(event.load(Relaxed).wrapping_add(1), Release);
}

fn words(h: &Header, side: Side) -> (&AtomicU32, &AtomicU32) {
    match side {
        Side::Space => (&h.space_seq, &h.space_waiters),
        Side::Message => (&h.msg_seq, &h.msg_waiters),
    }
}

/// How long a call that must wait first watches the queue before it sleeps. Sleeping
/// and being woken cost the sleeper two system calls and a wake-up (several µs on the
/// 2-core VMs we measure on) and the waker a FUTEX_WAKE; a peer running on another core
/// usually sends or receives well within this. A spinning caller is not counted as a
/// waiter, so its peer makes no system call either.
const SPIN: Duration = Duration::from_micros(10);
/// How long a call that must wait spins instead when this process woke sleepers on the
/// queue that have not gone on yet: the peer it woke is coming (a VM takes tens of µs to
/// run a woken vCPU), and meanwhile a stream's sender fills the queue, or its receiver
/// empties it, well within that. With only SPIN, the two processes of a stream fall into
/// sleeping by turns once one of them was held up: each fills or drains the queue while
/// the other is being woken, spins in vain, sleeps, and is woken in turn (on a 2-vCPU VM
/// a thousand sleeps a run, a stream of 1 KiB messages 30% slower).
const WAKE_SPIN: Duration = Duration::from_micros(200);
/// After this many spins in a row that ended in a sleep, at most one wait in this many
/// spins (the peer is usually not running: each failed spin delays the peer if it waits
/// for our CPU, and costs us our scheduler credit).
const SPIN_BACKOFF_MAX: u32 = 1024;
/// A sleep shorter than this ended by a peer that was busy (`Spin::slept`).
const QUICK_WAKE: Duration = Duration::from_micros(100);

/// Exponential backoff of something that may fail: after a failure, skip the next 1, 2,
/// 4 … chances (up to SPIN_BACKOFF_MAX) before trying again.
struct Backoff {
    /// Chances left to skip before the next try.
    skip: AtomicU32,
    /// The current backoff (0 after a success).
    backoff: AtomicU32,
}

impl Backoff {
    const fn new() -> Backoff {
        Backoff { skip: AtomicU32::new(0), backoff: AtomicU32::new(0) }
    }

    /// Whether to try at this chance (a skipped chance counts down).
    fn try_now(&self) -> bool {
        let skip = self.skip.load(Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Relaxed);
            return false;
        }
        true
    }

    /// Try at the next chance, and after a failure skip one only.
    fn reset(&self) {
        self.backoff.store(0, Relaxed);
        self.skip.store(0, Relaxed);
    }

    fn outcome(&self, success: bool) {
        if success {
            self.reset();
        } else {
            let b = (self.backoff.load(Relaxed) * 2).clamp(1, SPIN_BACKOFF_MAX);
            self.backoff.store(b, Relaxed);
            self.skip.store(b, Relaxed);
        }
    }
}

/// Adaptive spinning, per queue and process: spin while spins succeed, back off after
/// failures.
struct Spin {
    spins: Backoff,
    /// WAKE_SPIN's, backed off apart: when CPUs are overcommitted, a woken peer waits for
    /// one, and a long spin keeps it waiting (a stream 6× slower with six busy loops on
    /// two CPUs). Its quick wakes do not reset this backoff; a call that completes after
    /// a long spin does, and one that sleeps after it counts as a failure (an event seen
    /// is not enough: a receiver of one type sees the messages of others go by).
    long_spins: Backoff,
    /// The sleepers this process woke on the queue last, until its next wait: the event
    /// count they bump when they go on (`Header::received` for receivers, bit 32 set,
    /// `Header::sent` for senders) as it was then, bit 33 set (0: none).
    woken: AtomicU64,
}

/// `Spin::woken`'s flags.
const WOKEN: u64 = 1 << 33;
const WOKEN_RECEIVERS: u64 = 1 << 32;

impl Spin {
    fn new() -> Spin {
        Spin { spins: Backoff::new(), long_spins: Backoff::new(), woken: AtomicU64::new(0) }
    }

    /// How long the next wait should spin before it sleeps (None: not at all): WAKE_SPIN
    /// if the sleepers this process woke last have not gone on yet (`Header::sent`,
    /// `Header::received`: the queue's event counts).
    fn length(&self, sent: &AtomicU32, received: &AtomicU32) -> Option<Duration> {
        let woken = self.woken.load(Relaxed);
        if woken != 0 {
            self.woken.store(0, Relaxed);
        }
        if !spinning_helps() || !self.spins.try_now() {
            return None;
        }
        if woken != 0 {
            let count = if woken & WOKEN_RECEIVERS != 0 { received } else { sent };
            if count.load(Relaxed) == woken as u32 && self.long_spins.try_now() {
                return Some(WAKE_SPIN);
            }
        }
        Some(SPIN)
    }

    /// This process woke the sleepers on `side` (the lock held: they have not gone on),
    /// which bump an event count, now at `count`, when they go on.
    fn woke(&self, side: Side, count: u32) {
        let receivers = match side {
            Side::Message => WOKEN_RECEIVERS,
            Side::Space => 0,
        };
        self.woken.store(WOKEN | receivers | count as u64, Relaxed);
    }

    /// After a sleep of `length`: one this short means the peer was busy, not idle (its
    /// wake-up came soon), so the next wait spins again. Without this, two processes that
    /// stream through a queue fall into sleeping by turns: a spin that fails while the
    /// peer is being woken (10-20 µs on a VM) makes the next waits skip spinning, whose
    /// sleeps make the peer's spins fail in turn.
    fn slept(&self, length: Duration) {
        if length < QUICK_WAKE {
            self.spins.reset();
        }
    }

    /// After a spin: whether it saw what it waited for.
    fn outcome(&self, ready: bool) {
        self.spins.outcome(ready);
    }

    /// A call that spun long (WAKE_SPIN) completed (true) or goes to sleep (false).
    fn long_spin_over(&self, completed: bool) {
        self.long_spins.outcome(completed);
    }
}

/// Whether this process may run on more than one CPU (asked once): spinning only helps if
/// the peer can run meanwhile.
fn spinning_helps() -> bool {
    static CPUS: AtomicU32 = AtomicU32::new(0);
    let mut n = CPUS.load(Relaxed);
    if n == 0 {
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        n = if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0 {
            (unsafe { libc::CPU_COUNT(&set) } as u32).max(1)
        } else {
            1
        };
        CPUS.store(n, Relaxed);
    }
    n > 1
}

/// A call that has to wait, and how: it may first watch the queue without the lock until
/// `until`, then it registers as a waiter and sleeps on the side's futex word. The C entry
/// point waits (`Sleep::sleep`) outside the panic guard, so that pthread_cancel can end a
/// sleep by unwinding, then calls again with the `Resume`.
pub struct Sleep {
    handle: &'static Handle,
    _in_use: InUse,
    side: Side,
    /// Spinning until then; None: registered as a waiter, `expected` the futex word's value.
    until: Option<Instant>,
    /// The spin is a WAKE_SPIN.
    long: bool,
    expected: u32,
    /// msgsnd: the type read before waiting (the kernel copies the message once).
    mtype: i64,
    /// The other side's event count (`event`) when the call found it had to wait: a
    /// change is worth a look.
    seen: u32,
}

pub struct Resume {
    sleep: Sleep,
    /// EINTR if a signal handler ran.
    waited: Result<()>,
}

/// What a step that must wait returns, its `Sleep` put in the caller's slot (so that the
/// fast path's result stays small enough to come back in registers).
const SLEEPING: Errno = Errno(0);

impl Sleep {
    /// Spins, or sleeps until the side's sequence moves, a signal handler runs (EINTR) or
    /// the queue is removed. Sleeping is a cancellation point.
    pub fn sleep(self) -> Resume {
        let waited = match self.until {
            Some(until) => {
                let ready = self.spin(until);
                self.handle.spin.outcome(ready);
                Ok(())
            }
            None => {
                let (seq, _) = words(self.handle.queue.header(), self.side);
                let epoch = crate::client::client().broker_epoch();
                let asleep_since = Instant::now();
                let waited = loop {
                    // Bounded, to look now and then whether the broker still lives: if it was
                    // killed, the namespace was rebooted and the queue is gone with it. The
                    // look (a lock, a system call) is made with cancellation deferred.
                    let deadline = Instant::now() + crate::client::LOOK_AROUND;
                    match cancellable(|| futex_wait(seq, self.expected, Some(deadline))) {
                        Err(Errno(libc::EAGAIN)) if seq.load(Relaxed) == self.expected => {
                            if crate::client::client().broker_lost(epoch) {
                                break Err(Errno(libc::EIDRM));
                            }
                        }
                        Err(Errno(libc::EAGAIN)) => break Ok(()),
                        other => break other,
                    }
                };
                self.handle.spin.slept(asleep_since.elapsed());
                waited
            }
        };
        Resume { sleep: self, waited }
    }

    /// Watches the other side's event count until it moves (true: the call looks at the
    /// queue again, under the lock) or `until` (false).
    fn spin(&self, until: Instant) -> bool {
        let h = self.handle.queue.header();
        let event = event(h, self.side);
        loop {
            for _ in 0..32 {
                if event.load(Relaxed) != self.seen {
                    return true;
                }
                std::hint::spin_loop();
            }
            // `removed` now and then only, as a backstop (it is in the lock's line, and the
            // broker bumps both event counts at IPC_RMID).
            if h.removed.load(Relaxed) != 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
        }
    }
}

/// The caller cannot proceed now: it spins first if it has not spun its time in this call
/// and `Spin` says so, else it registers as a waiter on `side` and lets go of the lock.
/// `waiters` counts sleepers so that wakers skip the system call when there are none; a
/// waker resets it to 0 as it bumps the sequence and wakes everyone.
fn wait(guard: Guard<'_>, h: &'static Handle, side: Side, mtype: i64, resume: Option<Resume>) -> Sleep {
    let header = h.queue.header();
    let (seq, waiters) = words(header, side);
    let seen = event(header, side).load(Relaxed);
    let (until, long) = match resume.as_ref().map(|r| (r.sleep.until, r.sleep.long)) {
        None => match h.spin.length(&header.sent.0, &header.received.0) {
            Some(length) => (Some(Instant::now() + length), length == WAKE_SPIN),
            None => (None, false),
        },
        Some((Some(until), long)) if Instant::now() < until => (Some(until), long),
        Some((_, long)) => {
            if long {
                h.spin.long_spin_over(false);
            }
            (None, false)
        }
    };
    let expected = seq.load(Relaxed);
    if until.is_none() {
        waiters.store(waiters.load(Relaxed) + 1, Relaxed);
    }
    drop(guard);
    let in_use = match resume {
        Some(r) => r.sleep._in_use,
        None => InUse::new(h),
    };
    Sleep { handle: h, _in_use: in_use, side, until, long, expected, mtype, seen }
}

/// Back from sleeping, the lock held again: IPC_RMID gives EIDRM, a signal EINTR. The
/// caller then checks its rights again where the kernel would (on every pass it makes).
fn woke(queue: &Queue, resume: &Resume) -> Result<()> {
    let sleep = &resume.sleep;
    if sleep.until.is_none() {
        let (seq, waiters) = words(queue.header(), sleep.side);
        if seq.load(Relaxed) == sleep.expected {
            waiters.store(waiters.load(Relaxed).saturating_sub(1), Relaxed);
        }
    }
    if queue.header().removed.load(Acquire) != 0 {
        return Err(Errno(libc::EIDRM));
    }
    resume.waited?;
    Ok(())
}

type SetCancelType = unsafe extern "C-unwind" fn(libc::c_int, *mut libc::c_int) -> libc::c_int;
const PTHREAD_CANCEL_ASYNCHRONOUS: libc::c_int = 1;

/// glibc's pthread_setcanceltype, looked up once (not declared: the C header is generated
/// from our declarations).
fn setcanceltype() -> Option<SetCancelType> {
    static FN: AtomicUsize = AtomicUsize::new(0);
    // 1: not found.
    let f = crate::ipc::thread::computed_once(&FN, || unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"pthread_setcanceltype".as_ptr()) as usize }.max(1));
    (f != 1).then(|| unsafe { std::mem::transmute::<usize, SetCancelType>(f) })
}

/// msgsnd and msgrcv are cancellation points: asleep, the thread accepts asynchronous
/// cancellation, as glibc's own blocking calls do, so pthread_cancel ends the wait (the
/// queue's lock is not held then; a cancelled receiver takes no message). `f` must be
/// async-cancel-safe: no lock, no allocation — the futex wait alone.
fn cancellable<R>(f: impl FnOnce() -> R) -> R {
    let Some(set) = setcanceltype() else { return f() };
    let mut old = 0;
    unsafe { set(PTHREAD_CANCEL_ASYNCHRONOUS, &mut old) };
    let r = f();
    unsafe { set(old, &mut old) };
    r
}

/// Stores `value` into the header's `field` unless it holds it already: the pids and times
/// share a line that both sides of a stream read on every call, which stays cached in both
/// as long as no one writes it.
macro_rules! store_changed {
    ($field:expr, $value:expr) => {{
        let value = $value;
        if $field.load(Relaxed) != value {
            $field.store(value, Relaxed);
        }
    }};
}

/// Wakes every sleeper on `seq` if there is one (call with the lock held; the wake-up
/// itself happens when `wake_after` runs, after unlocking).
fn bump(seq: &AtomicU32, waiters: &AtomicU32) -> bool {
    if waiters.load(Relaxed) == 0 {
        return false;
    }
    waiters.store(0, Relaxed);
    seq.store(seq.load(Relaxed).wrapping_add(1), Release);
    true
}

/// msgsnd, up to the point where it would wait. `msgp` points to the caller's `struct
/// msgbuf` (a long, then the text). `resume`: back from waiting.
///
/// # Safety
/// `msgp` is the caller's pointer, checked here: unreadable memory gives EFAULT (see
/// `usercopy`), but another thread may not unmap it during the call.
pub unsafe fn msgsnd(id: i32, msgp: *const u8, msgsz: usize, flags: i32, resume: Option<Resume>, sleep: &mut Option<Sleep>) -> Result<()> {
    let text = unsafe { msgp.add(std::mem::size_of::<libc::c_long>()) };
    if let Some(resume) = resume {
        // The kernel copied the text before sleeping; we copy it now: probe it again
        // (EFAULT rather than a crash if the program unmapped it meanwhile).
        check_user(text, msgsz, false)?;
        let h = resume.sleep.handle;
        return send(h, resume.sleep.mtype, text, msgsz, flags, Some(resume), sleep);
    }
    // The type and the text probed at once when the arguments are valid (the usual case);
    // else, or if that fails, one by one in the kernel's order. The text is probed now
    // (EFAULT before anything else, as load_msg) and copied under the lock.
    let valid = id >= 0 && msgsz as u64 <= MSGMAX.load(Relaxed);
    if !valid || check_user(msgp, 8 + msgsz, false).is_err() {
        check_send_args(id, msgp, msgsz)?;
    }
    let mtype = unsafe { std::ptr::read_unaligned(msgp as *const i64) };
    if mtype < 1 {
        return Err(Errno(libc::EINVAL));
    }
    let h = queue(id, S_IWUGO)?;
    send(h.get(), mtype, text, msgsz, flags, None, sleep)
}

/// msgsnd's checks of its arguments in the kernel's order: the type is read (EFAULT), then
/// the size and id (EINVAL), the type (EINVAL), the text (EFAULT).
#[cold]
fn check_send_args(id: i32, msgp: *const u8, msgsz: usize) -> Result<()> {
    check_user(msgp, 8, false)?;
    let mtype = unsafe { std::ptr::read_unaligned(msgp as *const i64) };
    if (msgsz as isize) < 0 || id < 0 || msgsz as u64 > msgmax()? {
        return Err(Errno(libc::EINVAL));
    }
    if mtype < 1 {
        return Err(Errno(libc::EINVAL));
    }
    check_user(msgp.wrapping_add(8), msgsz, false)
}

/// A process's stash in one queue (layout.rs `Stash`): which one, and what it held when
/// the process last left the lock (one call at a time: `OneCall`).
#[derive(Default)]
struct StashState {
    busy: OneCall,
    /// Whether the last message this process sent went to another process (the queue's
    /// lrpid then): only then is the text worth writing ahead.
    useful: AtomicBool,
    /// The process whose stash `view` describes (0: none; a forked child has its own).
    pid: AtomicI32,
    index: AtomicU32,
    slot: AtomicU32,
    first_block: AtomicU32,
    blocks: AtomicU32,
    /// Sends left before asking for a stash again, after none was free.
    retry: AtomicU32,
}

/// How many sends a process makes without a stash after finding none free (looking again
/// may ask whether each owner lives: a system call each).
const STASH_RETRY: u32 = 1024;

/// Something of a process's (per queue) that one call at a time may use, in a
/// single-threaded process: the only other call that can come is a signal handler's,
/// interrupting ours, and it finds the thing taken and does without. So plain loads and
/// stores do.
#[derive(Default)]
struct OneCall(AtomicBool);

/// A call's hold on a `OneCall`, until it returns.
struct Taken<'a>(&'a OneCall);

impl OneCall {
    #[inline(always)]
    fn take(&self) -> Option<Taken<'_>> {
        if !crate::ipc::thread::single_threaded() || self.0.load(Relaxed) {
            return None;
        }
        self.0.store(true, Relaxed);
        std::sync::atomic::compiler_fence(SeqCst);
        Some(Taken(self))
    }
}

impl Drop for Taken<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        std::sync::atomic::compiler_fence(SeqCst);
        self.0 .0.store(false, Relaxed);
    }
}

/// One call's hold on its process's stash, from before it takes the lock until it returns.
struct Stashed<'a> {
    _taken: Taken<'a>,
    /// The stash as it was when this call wrote its message into it; None: not written.
    written: Option<StashView>,
}

impl StashState {
    /// Takes the stash and writes the message into it, when that is worth it (`useful`, a
    /// text of AHEAD_MIN bytes or more) and the stash has room for the message. Some: the
    /// stash is taken (for `restock`), written or not.
    #[inline(always)]
    fn write(&self, q: &Queue, mtype: i64, text: *const u8, msgsz: usize) -> Option<Stashed<'_>> {
        if !self.useful.load(Relaxed) || msgsz < AHEAD_MIN {
            return None;
        }
        let taken = self.busy.take()?;
        let mut stashed = Stashed { _taken: taken, written: None };
        if self.pid.load(Relaxed) == creds::own_pid() {
            let view = StashView {
                index: self.index.load(Relaxed),
                slot: self.slot.load(Relaxed),
                first_block: self.first_block.load(Relaxed),
                blocks: self.blocks.load(Relaxed),
            };
            let fill = |dst: *mut u8, off: usize, len: usize| {
                unsafe { std::ptr::copy_nonoverlapping(text.add(off), dst, len) };
                Ok(())
            };
            if q.fill_stashed(&view, mtype, msgsz as u64, fill).is_ok() {
                stashed.written = Some(view);
            }
        }
        Some(stashed)
    }

    /// After a message was sent (lock held): notes whether messages go to another process,
    /// and if so readies the stash for a next message of this size.
    #[inline(always)]
    fn after_send(&self, q: &Queue, msgsz: usize, stashed: Option<&Stashed<'_>>) {
        let useful = q.header().lrpid.load(Relaxed) != creds::own_pid();
        if useful != self.useful.load(Relaxed) {
            self.useful.store(useful, Relaxed);
        }
        if useful && msgsz >= AHEAD_MIN {
            match stashed {
                Some(_) => self.restock(q, msgsz),
                None => {
                    if let Some(_taken) = self.busy.take() {
                        self.restock(q, msgsz);
                    }
                }
            }
        }
    }

    /// Fills the stash (taken, lock held) for a next message of this size, claiming one
    /// first if the process has none. Failures leave the process without a stash.
    #[inline(never)]
    fn restock(&self, q: &Queue, msgsz: usize) {
        let want = blocks_for(msgsz as u64);
        if want > STASH_BLOCKS as u64 {
            return;
        }
        let pid = creds::own_pid();
        let index = if self.pid.load(Relaxed) == pid {
            self.index.load(Relaxed)
        } else {
            let retry = self.retry.load(Relaxed);
            if retry > 0 {
                self.retry.store(retry - 1, Relaxed);
                return;
            }
            match q.claim_stash(pid, super::stash_owner_alive) {
                Ok(Some(view)) => view.index,
                _ => {
                    self.retry.store(STASH_RETRY, Relaxed);
                    return;
                }
            }
        };
        match q.refill_stash(index, want as u32) {
            Ok(view) => {
                self.index.store(view.index, Relaxed);
                self.slot.store(view.slot, Relaxed);
                self.first_block.store(view.first_block, Relaxed);
                self.blocks.store(view.blocks, Relaxed);
                self.pid.store(pid, Relaxed);
            }
            Err(_) => self.pid.store(0, Relaxed),
        }
    }
}

#[inline(always)]
fn send(h: &'static Handle, mtype: i64, text: *const u8, msgsz: usize, flags: i32, resume: Option<Resume>, sleep: &mut Option<Sleep>) -> Result<()> {
    let q = &h.queue;
    let header = q.header();
    // The text goes into the stash before the lock is taken, as the kernel copies it
    // before taking its own; then the critical section only links it.
    let stashed = h.stash.write(q, mtype, text, msgsz);
    let guard = lock(h)?;
    if let Some(resume) = &resume {
        woke(q, resume)?;
        // The kernel wakes (ss_wakeup) only the senders whose message fits now: one that
        // still does not fit sleeps on, its rights not checked again (an IPC_SET taking
        // away write permission leaves it asleep until there is room).
        if q.fits(msgsz as u64) {
            check(h, S_IWUGO)?;
        }
    }
    if header.removed.load(Acquire) != 0 {
        return Err(Errno(libc::EIDRM));
    }
    let mut sent = false;
    if q.fits(msgsz as u64) {
        // The stash's copy, unless the stash changed meanwhile (emptied by a `recover`
        // that judged it corrupt): then a copy under the lock.
        let written = stashed.as_ref().and_then(|s| s.written);
        sent = match written {
            Some(view) => q.commit_stashed(&view, creds::own_pid(), mtype, msgsz as u64)?,
            None => false,
        } || q.enqueue(mtype, msgsz as u64, |dst, off, len| {
            unsafe { std::ptr::copy_nonoverlapping(text.add(off), dst, len) };
            Ok(())
        })?;
        if sent {
            h.stash.after_send(q, msgsz, stashed.as_ref());
        }
    }
    if !sent {
        if flags & IPC_NOWAIT != 0 {
            return Err(Errno(libc::EAGAIN));
        }
        *sleep = Some(wait(guard, h, Side::Space, mtype, resume));
        return Err(SLEEPING);
    }
    store_changed!(header.lspid, creds::own_pid());
    store_changed!(header.stime, now_secs());
    let wake = bump(&header.msg_seq, &header.msg_waiters);
    if wake {
        h.spin.woke(Side::Message, header.received.0.load(Relaxed));
    }
    drop(guard);
    announce(&header.sent.0);
    if wake {
        futex_wake(&header.msg_seq, i32::MAX);
    }
    if let Some(resume) = &resume {
        if resume.sleep.long {
            h.spin.long_spin_over(true);
        }
    }
    Ok(())
}

/// msgrcv, up to the point where it would wait. Done: the number of text bytes stored.
///
/// # Safety
/// As `msgsnd`, for writing.
pub unsafe fn msgrcv(
    id: i32,
    msgp: *mut u8,
    bufsz: usize,
    msgtyp: i64,
    flags: i32,
    resume: Option<Resume>,
    sleep: &mut Option<Sleep>,
) -> Result<usize> {
    if id < 0 || (bufsz as isize) < 0 {
        return Err(Errno(libc::EINVAL));
    }
    let mut copy_limit = bufsz;
    if flags & MSG_COPY != 0 {
        if flags & MSG_EXCEPT != 0 || flags & IPC_NOWAIT == 0 {
            return Err(Errno(libc::EINVAL));
        }
        copy_limit = bufsz.min(msgmax()? as usize);
        // prepare_copy loads that much of the buffer before looking at the queue: an
        // unreadable buffer is EFAULT even for a bad id or an empty queue.
        check_user(msgp, copy_limit, false)?;
    }
    let search = if flags & MSG_COPY != 0 {
        Search::Number(msgtyp)
    } else if msgtyp == 0 {
        Search::Any
    } else if msgtyp < 0 {
        Search::LessEqual(if msgtyp == i64::MIN { i64::MAX } else { -msgtyp })
    } else if flags & MSG_EXCEPT != 0 {
        Search::NotEqual(msgtyp)
    } else {
        Search::Equal(msgtyp)
    };
    let args = Receive { msgp, bufsz, search, flags, copy_limit };
    if let Some(resume) = resume {
        let h = resume.sleep.handle;
        return receive(h, &args, Some(resume), sleep);
    }
    let h = queue(id, S_IRUGO)?;
    receive(h.get(), &args, None, sleep)
}

struct Receive {
    msgp: *mut u8,
    bufsz: usize,
    search: Search,
    flags: i32,
    copy_limit: usize,
}

#[inline(always)]
fn receive(h: &'static Handle, args: &Receive, resume: Option<Resume>, sleep: &mut Option<Sleep>) -> Result<usize> {
    let &Receive { msgp, bufsz, search, flags, copy_limit } = args;
    let q = &h.queue;
    let header = q.header();
    let text = msgp.wrapping_add(std::mem::size_of::<libc::c_long>());
    let ahead = if flags & MSG_COPY == 0 { read_ahead(h, args) } else { None };
    let guard = lock(h)?;
    let waited = resume.is_some();
    if let Some(resume) = &resume {
        woke(q, resume)?;
        check(h, S_IRUGO)?;
    }
    if header.removed.load(Acquire) != 0 {
        return Err(Errno(libc::EIDRM));
    }
    let Some(found) = q.find(search)? else {
        if flags & IPC_NOWAIT != 0 {
            return Err(Errno(libc::ENOMSG));
        }
        *sleep = Some(wait(guard, h, Side::Message, 0, resume));
        return Err(SLEEPING);
    };
    if (bufsz as u64) < found.size && flags & MSG_NOERROR == 0 {
        return Err(Errno(libc::E2BIG));
    }
    let len = (bufsz as u64).min(found.size) as usize;
    let store_type = || unsafe { std::ptr::write_unaligned(msgp as *mut i64, found.mtype) };
    // A buffer we cannot write: EFAULT, and the message stays queued.
    check_user(msgp, 8 + len, true)?;
    // copy_msg: a copy cannot be truncated.
    if flags & MSG_COPY != 0 && found.size > copy_limit as u64 {
        return Err(Errno(libc::EINVAL));
    }
    // Read ahead and still the message found: it is copied into the caller's buffer once
    // the lock is released, as the kernel's store_msg runs after its unlock.
    let ahead = ahead.filter(|a| Queue::same(&a.found, &found));
    if ahead.is_none() {
        q.copy_out(&found, len, |src, off, n| {
            unsafe { std::ptr::copy_nonoverlapping(src, text.add(off), n) };
            Ok(())
        })?;
    }
    if flags & MSG_COPY != 0 {
        store_type();
        return Ok(len);
    }
    // The text first, then the removal, then at once the type: the receive counts as done
    // from the removal on, and a receiver killed in between loses only that one message.
    let next = q.unlink(&found, store_type)?;
    h.next_hint.taken(found.slot(), next);
    // Linux records the process id of a receiver, except when it hands a message to a
    // receiver that was blocked (pipelined_send): then the receiving thread's id.
    let pid = creds::own_pid();
    let receiver = if waited { my_tid() as i32 } else { pid };
    h.read_ahead.store(header.lspid.load(Relaxed) != pid && len >= AHEAD_MIN, Relaxed);
    store_changed!(header.lrpid, receiver);
    store_changed!(header.rtime, now_secs());
    let wake = bump(&header.space_seq, &header.space_waiters);
    if wake {
        h.spin.woke(Side::Space, header.sent.0.load(Relaxed));
    }
    drop(guard);
    announce(&header.received.0);
    if let Some(ahead) = ahead {
        unsafe { std::ptr::copy_nonoverlapping(ahead.text(), text, len) };
    }
    if wake {
        futex_wake(&header.space_seq, i32::MAX);
    }
    if let Some(resume) = &resume {
        if resume.sleep.long {
            h.spin.long_spin_over(true);
        }
    }
    Ok(len)
}

/// What msgrcv may read of a message before it takes the lock: as much as a stash holds.
const AHEAD: usize = STASH_BLOCKS as usize * BLOCK;

/// Texts shorter than this are copied under the lock: writing or reading them ahead would
/// cost more than it saves.
const AHEAD_MIN: usize = 256;

/// The process's buffer for `read_ahead` (one: it is used by single-threaded processes
/// only, one call at a time).
struct AheadBuffer {
    busy: OneCall,
    buf: std::cell::UnsafeCell<[u8; AHEAD]>,
}

// `buf` is used only while `busy` is taken.
unsafe impl Sync for AheadBuffer {}

static AHEAD_BUFFER: AheadBuffer = AheadBuffer { busy: OneCall(AtomicBool::new(false)), buf: std::cell::UnsafeCell::new([0; AHEAD]) };

/// A message's text read ahead (`read_ahead`), what `found` then said of it.
struct Ahead {
    _taken: Taken<'static>,
    found: Found,
}

impl Ahead {
    fn text(&self) -> *const u8 {
        AHEAD_BUFFER.buf.get() as *const u8
    }
}

/// msgrcv's read ahead: the text of the message `find` will probably pick, read without
/// the lock (`Queue::peek`) into a buffer of the process, so that the critical section
/// only confirms that it is that message (`Queue::same`) and copies it from memory of our
/// own, and the sender can meanwhile write the next one (a stream's two sides then copy
/// at once, as with the kernel, which copies outside its lock). Not into the caller's
/// buffer: a call that then takes another message, or none, must not have written there.
/// Only for texts of AHEAD_MIN to AHEAD bytes, from another process (`Handle::read_ahead`).
#[inline(always)]
fn read_ahead(h: &Handle, args: &Receive) -> Option<Ahead> {
    let q = &h.queue;
    if !h.read_ahead.load(Relaxed) {
        return None;
    }
    let taken = AHEAD_BUFFER.busy.take()?;
    let peeked = q.peek(args.search, h.next_hint.start())?;
    if (args.bufsz as u64) < peeked.size && args.flags & MSG_NOERROR == 0 {
        return None;
    }
    let len = (args.bufsz as u64).min(peeked.size) as usize;
    if !(AHEAD_MIN..=AHEAD).contains(&len) {
        return None;
    }
    let buf = AHEAD_BUFFER.buf.get() as *mut u8;
    q.copy_out(&peeked, len, |src, off, n| {
        unsafe { std::ptr::copy_nonoverlapping(src, buf.add(off), n) };
        Ok(())
    })
    .ok()?;
    // The copy happens before the generation is read again under the lock (seqlock).
    std::sync::atomic::fence(Acquire);
    Some(Ahead { _taken: taken, found: peeked })
}

/// msgget: existing keys are found in the namespace table; creating asks the broker.
pub fn msgget(key: i32, flags: i32) -> Result<i32> {
    crate::client::get::get(Family::Msg, key, flags, 0, |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_spins_resume_after_a_quick_wake_only() {
        let spin = Spin::new();
        spin.outcome(false);
        spin.outcome(false);
        assert!(spin.spins.skip.load(Relaxed) > 0, "failed spins make the next waits sleep at once");
        // Woken soon: the peer was busy, and spinning would have caught it.
        spin.slept(Duration::from_micros(30));
        assert_eq!(spin.spins.skip.load(Relaxed), 0);
        // A long sleep: the peer was idle; the waits after a failure go on skipping.
        spin.outcome(false);
        spin.slept(Duration::from_millis(5));
        assert!(spin.spins.skip.load(Relaxed) > 0);
    }

    #[test]
    fn long_spins_follow_a_wake_and_back_off_on_their_own() {
        if !spinning_helps() {
            return; // one CPU: nothing spins
        }
        let spin = Spin::new();
        let (sent, received) = (AtomicU32::new(7), AtomicU32::new(9));
        let length = || spin.length(&sent, &received);
        assert_eq!(length(), Some(SPIN), "no wake yet");
        spin.woke(Side::Message, received.load(Relaxed));
        assert_eq!(length(), Some(WAKE_SPIN), "the receivers woken have not received");
        assert_eq!(length(), Some(SPIN), "one long spin a wake");
        spin.woke(Side::Space, sent.load(Relaxed));
        sent.fetch_add(1, Relaxed);
        assert_eq!(length(), Some(SPIN), "the senders woken have sent");
        // A call that slept after its long spin: the next wait after a wake spins SPIN
        // only, even once a quick wake has ended the skipping of spins.
        spin.woke(Side::Space, sent.load(Relaxed));
        assert_eq!(length(), Some(WAKE_SPIN));
        spin.outcome(false);
        spin.long_spin_over(false);
        spin.slept(Duration::from_micros(30));
        spin.woke(Side::Space, sent.load(Relaxed));
        assert_eq!(length(), Some(SPIN), "one chance skipped after one failure");
        spin.woke(Side::Space, sent.load(Relaxed));
        assert_eq!(length(), Some(WAKE_SPIN));
        // An event seen does not reset the backoff; a call completed does.
        spin.outcome(true);
        spin.long_spin_over(false);
        spin.woke(Side::Message, received.load(Relaxed));
        assert_eq!(length(), Some(SPIN));
        spin.woke(Side::Message, received.load(Relaxed));
        assert_eq!(length(), Some(SPIN), "two chances skipped after two failures");
        spin.woke(Side::Message, received.load(Relaxed));
        assert_eq!(length(), Some(WAKE_SPIN));
        spin.long_spin_over(true);
        spin.woke(Side::Message, received.load(Relaxed));
        assert_eq!(length(), Some(WAKE_SPIN), "a call completed after a long spin resets the backoff");
    }

    #[test]
    fn a_hint_is_used_while_it_names_the_message_found() {
        let hint = NextHint::new();
        assert_eq!(hint.start(), 0, "no hint yet: the head");
        hint.taken(5, 6);
        assert_eq!(hint.start(), 6);
        // Another receiver took slot 6: the next read-aheads start at the head ...
        hint.taken(7, 8);
        assert_eq!(hint.start(), 0);
        // ... until a hint would have been right again.
        hint.taken(8, 9);
        assert_eq!(hint.start(), 9);
        // The queue ran empty: no hint, the head.
        hint.taken(9, 0);
        assert_eq!(hint.start(), 0);
    }
}
