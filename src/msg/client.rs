//! The client's side of message queues: msgget's fast lookup, msgsnd and msgrcv (ipc/msg.c
//! `do_msgsnd` / `do_msgrcv`), all inside the process when nothing has to wait.
//!
//! Each process maps a queue's memfd once (asked from the broker, which checks the caller's
//! rights) and keeps the mapping by id. Every call checks the id and the caller's access
//! against the namespace table, so a removed queue gives EINVAL and changed permissions
//! EACCES, as the kernel's lookup would.

use super::layout::{Queue, Search};
use crate::ipc::usercopy::check_user;
use super::{MSG_COPY, MSG_EXCEPT, MSG_NOERROR};
use crate::client::{client, creds};
use crate::ipc::perm::{S_IRUGO, S_IWUGO};
use crate::ipc::sync::{futex_wait, futex_wake, Locked};
use crate::ipc::{Errno, Family, Result, IPC_INFO, IPC_NOWAIT};
use crate::sys::Mapping;
use crate::wire::Op;
use parking_lot::Mutex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::Arc;

/// One queue mapped in this process.
struct Mapped {
    _map: Mapping,
    queue: Queue,
}

static MAPPED: Mutex<Option<HashMap<i32, Arc<Mapped>>>> = Mutex::new(None);

/// What a thread remembers of the queue it used last (one thread-local: each access to
/// one costs a call). While the table's version of the msg family and our credentials'
/// generation stay the same, the id is still alive and the access decision still holds.
struct Recent {
    version: u64,
    creds: u64,
    id: i32,
    may_read: bool,
    may_write: bool,
    queue: Option<Arc<Mapped>>,
}

thread_local! {
    static RECENT: RefCell<Option<Recent>> = const { RefCell::new(None) };
}

/// The kernel's `ktime_get_real_seconds` (the coarse clock `time` reads, too).
fn now_secs() -> i64 {
    unsafe { libc::time(std::ptr::null_mut()) as i64 }
}

/// The namespace's MSGMAX, asked once (0: not yet known).
static MSGMAX: AtomicU64 = AtomicU64::new(0);

fn msgmax() -> Result<u64> {
    let v = MSGMAX.load(Relaxed);
    if v != 0 {
        return Ok(v);
    }
    let reply = client().request(&[Op::Ctl as i64, Family::Msg as i64, 0, IPC_INFO as i64])?;
    // [ret, msgpool, msgmap, msgmax, …]
    let v = reply.word(3)?.max(0) as u64;
    MSGMAX.store(v, Relaxed);
    Ok(v)
}

fn denied(access: u32, may_read: bool, may_write: bool) -> bool {
    (access == S_IRUGO && !may_read) || (access == S_IWUGO && !may_write)
}

/// `ipcperms` against the namespace table: EINVAL for an id that names no queue. Returns
/// the queue if this thread used it last.
fn check_access(id: i32, access: u32) -> Result<Option<Arc<Mapped>>> {
    if id < 0 {
        return Err(Errno(libc::EINVAL));
    }
    let table = client().table()?;
    let version = table.version(Family::Msg);
    let gen = creds::generation();
    let recent = RECENT.try_with(|r| {
        let r = r.try_borrow().ok()?;
        let r = r.as_ref().filter(|r| r.version == version && version & 1 == 0 && r.creds == gen && r.id == id)?;
        Some((r.may_read, r.may_write, r.queue.clone()))
    });
    if let Ok(Some((may_read, may_write, queue))) = recent {
        if denied(access, may_read, may_write) {
            return Err(Errno(libc::EACCES));
        }
        return Ok(queue);
    }
    let entry = table.by_id(Family::Msg, id).map_err(|_| Errno(libc::EAGAIN))?;
    let Some(entry) = entry else {
        forget(id);
        return Err(Errno(libc::EINVAL));
    };
    let own = creds::own();
    let (may_read, may_write) = (entry.perm.allows(&own, S_IRUGO), entry.perm.allows(&own, S_IWUGO));
    // Keep the mapping if this thread had it for the same id.
    let queue = RECENT
        .try_with(|r| {
            let mut r = r.try_borrow_mut().ok()?;
            let queue = r.take().filter(|r| r.id == id).and_then(|r| r.queue);
            *r = Some(Recent { version, creds: gen, id, may_read, may_write, queue: queue.clone() });
            queue
        })
        .ok()
        .flatten();
    if denied(access, may_read, may_write) {
        return Err(Errno(libc::EACCES));
    }
    Ok(queue)
}

/// Drops this process's mapping of a queue that is gone (threads still using it keep it).
pub(crate) fn forget(id: i32) {
    if let Some(m) = MAPPED.lock().as_mut() {
        m.remove(&id);
    }
    let _ = RECENT.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            if r.as_ref().map(|r| r.id) == Some(id) {
                *r = None;
            }
        }
    });
}

/// Runs `f` on the queue with this id, after the access check. The fast path borrows the
/// thread's cached mapping for the call (no reference count to touch); a nested call from
/// a signal handler finds the cache borrowed and takes the slow path.
#[inline(always)]
fn with_queue<R>(id: i32, access: u32, f: impl FnOnce(&Arc<Mapped>) -> Result<R>) -> Result<R> {
    if id < 0 {
        return Err(Errno(libc::EINVAL));
    }
    let version = client().table()?.version(Family::Msg);
    let gen = creds::generation();
    let mut f = Some(f);
    let fast = RECENT.try_with(|r| {
        let r = r.try_borrow().ok()?;
        let r = r.as_ref().filter(|r| r.version == version && version & 1 == 0 && r.creds == gen && r.id == id)?;
        let mapped = r.queue.as_ref()?;
        if denied(access, r.may_read, r.may_write) {
            return Some(Err(Errno(libc::EACCES)));
        }
        Some((f.take()?)(mapped))
    });
    if let Ok(Some(result)) = fast {
        return result;
    }
    let mapped = queue(id, access)?;
    (f.take().ok_or(Errno(libc::EIO))?)(&mapped)
}

/// The queue with this id, after the access check.
fn queue(id: i32, access: u32) -> Result<Arc<Mapped>> {
    if let Some(m) = check_access(id, access)? {
        return Ok(m);
    }
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(after_fork));
    });
    let known = MAPPED.lock().as_ref().and_then(|m| m.get(&id)).cloned();
    if let Some(m) = known {
        remember(id, &m);
        return Ok(m);
    }
    let reply = client().request(&[Op::Open as i64, Family::Msg as i64, id as i64, access as i64])?;
    let fd = reply.fd.ok_or(Errno(libc::EPROTO))?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Errno::last());
    }
    let map = Mapping::map(fd.as_raw_fd(), st.st_size as usize, true)?;
    let queue = unsafe { Queue::new(map.as_ptr(), map.len())? };
    let mapped = Arc::new(Mapped { _map: map, queue });
    let mut all = MAPPED.lock();
    let all = all.get_or_insert_with(HashMap::new);
    // Let go of queues removed since (their memory lives as long as someone maps them).
    all.retain(|_, m| m.queue.header().removed.load(Relaxed) == 0);
    all.insert(id, mapped.clone());
    remember(id, &mapped);
    Ok(mapped)
}

/// In a forked child: the map's lock may have been held by a thread that does not exist
/// here. The mappings themselves are inherited and stay valid.
extern "C" fn after_fork() {
    if MAPPED.is_locked() {
        unsafe { MAPPED.force_unlock() };
    }
}

fn remember(id: i32, m: &Arc<Mapped>) {
    let _ = RECENT.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            if let Some(r) = r.as_mut().filter(|r| r.id == id) {
                r.queue = Some(m.clone());
            }
        }
    });
}

/// The queue's lock, held until dropped. A holder that died is repaired after.
struct Guard<'a> {
    queue: &'a Queue,
}

/// Tries this many times (about 3 µs here) before sleeping on a held lock: it is held
/// for a few hundred nanoseconds at most, far less than a sleep and a wake-up cost. This
/// spins on the queue's internal lock only, never while waiting for a message or for
/// space (those sleep at once). Measured with two processes streaming through one queue:
/// 40 tries gave about 12 context switches per 100 messages, 100 tries under 1.
const LOCK_TRIES: u32 = 100;

#[inline(always)]
fn lock(queue: &Queue) -> Result<Guard<'_>> {
    let mutex = &queue.header().lock;
    let mut locked = None;
    for _ in 0..LOCK_TRIES {
        if let Some(r) = mutex.try_lock() {
            locked = Some(r?);
            break;
        }
        std::hint::spin_loop();
    }
    let locked = match locked {
        Some(l) => l,
        None => mutex.lock()?,
    };
    let guard = Guard { queue };
    if let Locked::Recovered = locked {
        queue.recover()?;
    }
    Ok(guard)
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.queue.header().lock.unlock();
    }
}

/// Which side of the queue a caller sleeps on.
#[derive(Clone, Copy)]
enum Side {
    /// A sender waiting for space.
    Space,
    /// A receiver waiting for a message.
    Message,
}

fn words(h: &super::layout::Header, side: Side) -> (&AtomicU32, &AtomicU32) {
    match side {
        Side::Space => (&h.space_seq, &h.space_waiters),
        Side::Message => (&h.msg_seq, &h.msg_waiters),
    }
}

/// A call that has to wait: it registered as a waiter and released the lock. The C entry
/// point sleeps (`Sleep::sleep`) outside the panic guard, so that pthread_cancel can end
/// the sleep by unwinding, then calls again with the `Resume`.
pub struct Sleep {
    mapped: Arc<Mapped>,
    side: Side,
    expected: u32,
    /// msgsnd: the type read before sleeping (the kernel copies the message once).
    mtype: i64,
}

pub struct Resume {
    sleep: Box<Sleep>,
    /// EINTR if a signal handler ran.
    waited: Result<()>,
}

/// What a step that must sleep returns, its `Sleep` put in the caller's slot (so that
/// the fast path's result stays small enough to come back in registers).
const SLEEPING: Errno = Errno(0);

impl Sleep {
    /// Sleeps until the side's sequence moves, a signal handler runs (EINTR) or the queue
    /// is removed. A cancellation point.
    pub fn sleep(self: Box<Self>) -> Resume {
        let (seq, _) = words(self.mapped.queue.header(), self.side);
        let waited = cancellable(|| futex_wait(seq, self.expected, None));
        Resume { sleep: self, waited }
    }
}

/// Registers the caller as a waiter on `side` and lets go of the lock. `waiters` counts
/// sleepers so that wakers skip the system call when there are none; a waker resets it
/// to 0 as it bumps the sequence and wakes everyone.
fn go_to_sleep(guard: Guard<'_>, mapped: &Arc<Mapped>, side: Side, mtype: i64) -> Sleep {
    let (seq, waiters) = words(mapped.queue.header(), side);
    waiters.store(waiters.load(Relaxed) + 1, Relaxed);
    let expected = seq.load(Relaxed);
    drop(guard);
    Sleep { mapped: mapped.clone(), side, expected, mtype }
}

/// Back from sleeping, the lock held again: IPC_RMID gives EIDRM, a signal EINTR, and the
/// caller's rights are checked again (the kernel checks them on every pass).
fn woke(queue: &Queue, resume: &Resume, id: i32, access: u32) -> Result<()> {
    let (seq, waiters) = words(queue.header(), resume.sleep.side);
    if seq.load(Relaxed) == resume.sleep.expected {
        waiters.store(waiters.load(Relaxed).saturating_sub(1), Relaxed);
    }
    if queue.header().removed.load(Acquire) != 0 {
        return Err(Errno(libc::EIDRM));
    }
    resume.waited?;
    check_access(id, access)?;
    Ok(())
}

type SetCancelType = unsafe extern "C-unwind" fn(libc::c_int, *mut libc::c_int) -> libc::c_int;
const PTHREAD_CANCEL_ASYNCHRONOUS: libc::c_int = 1;

/// glibc's pthread_setcanceltype, looked up once (not declared: the C header is generated
/// from our declarations).
fn setcanceltype() -> Option<SetCancelType> {
    static FN: once_cell::sync::OnceCell<usize> = once_cell::sync::OnceCell::new();
    let f = *FN.get_or_init(|| unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"pthread_setcanceltype".as_ptr()) as usize });
    (f != 0).then(|| unsafe { std::mem::transmute::<usize, SetCancelType>(f) })
}

/// msgsnd and msgrcv are cancellation points: asleep, the thread accepts asynchronous
/// cancellation, as glibc's own blocking calls do, so pthread_cancel ends the wait (the
/// queue's lock is not held then; a cancelled receiver takes no message).
fn cancellable<R>(f: impl FnOnce() -> R) -> R {
    let Some(set) = setcanceltype() else { return f() };
    let mut old = 0;
    unsafe { set(PTHREAD_CANCEL_ASYNCHRONOUS, &mut old) };
    let r = f();
    unsafe { set(old, &mut old) };
    r
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

/// msgsnd, up to the point where it would sleep. `msgp` points to the caller's `struct
/// msgbuf` (a long, then the text). `resume`: back from sleeping.
///
/// # Safety
/// `msgp` is the caller's pointer, checked here: unreadable memory gives EFAULT (see
/// `usercopy`), but another thread may not unmap it during the call.
pub unsafe fn msgsnd(id: i32, msgp: *const u8, msgsz: usize, flags: i32, resume: Option<Resume>, sleep: &mut Option<Box<Sleep>>) -> Result<()> {
    let text = unsafe { msgp.add(std::mem::size_of::<libc::c_long>()) };
    if let Some(resume) = resume {
        // The kernel copied the text before sleeping; we copy it now: probe it again
        // (EFAULT rather than a crash if the program unmapped it meanwhile).
        check_user(text, msgsz, false)?;
        let mapped = resume.sleep.mapped.clone();
        return send(&mapped, id, resume.sleep.mtype, text, msgsz, flags, Some(resume), sleep);
    }
    check_user(msgp, 8, false)?;
    let mtype = unsafe { std::ptr::read_unaligned(msgp as *const i64) };
    if (msgsz as isize) < 0 || id < 0 || msgsz as u64 > msgmax()? {
        return Err(Errno(libc::EINVAL));
    }
    if mtype < 1 {
        return Err(Errno(libc::EINVAL));
    }
    // Probed now (EFAULT before anything else, as load_msg); copied under the lock.
    check_user(text, msgsz, false)?;
    with_queue(id, S_IWUGO, |m| send(m, id, mtype, text, msgsz, flags, None, sleep))
}

#[allow(clippy::too_many_arguments)]
fn send(
    mapped: &Arc<Mapped>,
    id: i32,
    mtype: i64,
    text: *const u8,
    msgsz: usize,
    flags: i32,
    resume: Option<Resume>,
    sleep: &mut Option<Box<Sleep>>,
) -> Result<()> {
    let q = &mapped.queue;
    let h = q.header();
    let guard = lock(q)?;
    if let Some(resume) = &resume {
        woke(q, resume, id, S_IWUGO)?;
    }
    if h.removed.load(Acquire) != 0 {
        return Err(Errno(libc::EIDRM));
    }
    let mut sent = false;
    if q.fits(msgsz as u64) {
        sent = q.enqueue(mtype, msgsz as u64, |dst, off, len| {
            unsafe { std::ptr::copy_nonoverlapping(text.add(off), dst, len) };
            Ok(())
        })?;
    }
    if !sent {
        if flags & IPC_NOWAIT != 0 {
            return Err(Errno(libc::EAGAIN));
        }
        *sleep = Some(Box::new(go_to_sleep(guard, mapped, Side::Space, mtype)));
        return Err(SLEEPING);
    }
    h.lspid.store(creds::own_pid(), Relaxed);
    h.stime.store(now_secs(), Relaxed);
    let wake = bump(&h.msg_seq, &h.msg_waiters);
    drop(guard);
    if wake {
        futex_wake(&h.msg_seq, i32::MAX);
    }
    Ok(())
}

/// msgrcv, up to the point where it would sleep. Done: the number of text bytes stored.
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
    sleep: &mut Option<Box<Sleep>>,
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
    let args = Receive { id, msgp, bufsz, search, flags, copy_limit };
    if let Some(resume) = resume {
        let mapped = resume.sleep.mapped.clone();
        return receive(&mapped, &args, Some(resume), sleep);
    }
    with_queue(id, S_IRUGO, |m| receive(m, &args, None, sleep))
}

struct Receive {
    id: i32,
    msgp: *mut u8,
    bufsz: usize,
    search: Search,
    flags: i32,
    copy_limit: usize,
}

fn receive(mapped: &Arc<Mapped>, args: &Receive, resume: Option<Resume>, sleep: &mut Option<Box<Sleep>>) -> Result<usize> {
    let &Receive { id, msgp, bufsz, search, flags, copy_limit } = args;
    let q = &mapped.queue;
    let h = q.header();
    let text = msgp.wrapping_add(std::mem::size_of::<libc::c_long>());
    let guard = lock(q)?;
    let waited = resume.is_some();
    if let Some(resume) = &resume {
        woke(q, resume, id, S_IRUGO)?;
    }
    if h.removed.load(Acquire) != 0 {
        return Err(Errno(libc::EIDRM));
    }
    let Some(found) = q.find(search)? else {
        if flags & IPC_NOWAIT != 0 {
            return Err(Errno(libc::ENOMSG));
        }
        *sleep = Some(Box::new(go_to_sleep(guard, mapped, Side::Message, 0)));
        return Err(SLEEPING);
    };
    if (bufsz as u64) < found.size && flags & MSG_NOERROR == 0 {
        return Err(Errno(libc::E2BIG));
    }
    let len = (bufsz as u64).min(found.size) as usize;
    // A buffer we cannot write: EFAULT, and the message stays queued.
    check_user(msgp, 8 + len, true)?;
    let store_type = || unsafe { std::ptr::write_unaligned(msgp as *mut i64, found.mtype) };
    let copy_text = || {
        q.copy_out(&found, len, |src, off, n| {
            unsafe { std::ptr::copy_nonoverlapping(src, text.add(off), n) };
            Ok(())
        })
    };
    if flags & MSG_COPY != 0 {
        // copy_msg: a copy cannot be truncated.
        if found.size > copy_limit as u64 {
            return Err(Errno(libc::EINVAL));
        }
        copy_text()?;
        store_type();
        return Ok(len);
    }
    // The text first, then the removal, then at once the type: the receive counts as done
    // from the removal on, and a receiver killed in between loses only that one message.
    copy_text()?;
    q.unlink(&found, store_type)?;
    // Linux records the process id of a receiver, except when it hands a message to a
    // receiver that was blocked (pipelined_send): then the receiving thread's id.
    let receiver = if waited { unsafe { libc::gettid() } } else { creds::own_pid() };
    h.lrpid.store(receiver, Relaxed);
    h.rtime.store(now_secs(), Relaxed);
    let wake = bump(&h.space_seq, &h.space_waiters);
    drop(guard);
    if wake {
        futex_wake(&h.space_seq, i32::MAX);
    }
    Ok(len)
}

/// msgget: existing keys are found in the namespace table; creating asks the broker.
pub fn msgget(key: i32, flags: i32) -> Result<i32> {
    crate::client::get::get(Family::Msg, key, flags, 0, |_| Ok(()))
}
