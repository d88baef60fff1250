//! The files a program reads to list System V objects and limits — /proc/sysvipc/{msg,sem,shm}
//! and /proc/sys/kernel/{msgmax,msgmnb,msgmni,sem,shmmax,shmall,shmmni} — generated from the
//! namespace in the kernel's exact format (ipc/msg.c, sem.c, shm.c `sysvipc_*_proc_show`,
//! and the sysctl's `%d`/`%lu` lines), so that `ipcs`, `lsipc` and anything else that parses
//! them see ipcshim's objects unmodified. The preloaded `open`/`fopen` serve them
//! (src/abi/open.rs) as a read-only memfd holding a snapshot taken at open.

use super::{Queue, SemSet, Segment};
use crate::ipc::limits::Limits;
use crate::ipc::{Errno, Result, IPC_INFO};
use std::cell::Cell;
use std::fmt::Write;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

/// One of the files ipcshim answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Msg,
    Sem,
    Shm,
    Limit(Limit),
}

/// The /proc/sys/kernel files that hold the namespace's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Msgmax,
    Msgmnb,
    Msgmni,
    Sem,
    Shmmax,
    Shmall,
    Shmmni,
}

/// The file an absolute path names, if it is one of ours. Cheap on every other path: it is
/// called for every file a program opens. Only the absolute paths are recognised (the only
/// form the tools use).
pub fn view_for(path: &[u8]) -> Option<View> {
    if path.len() < 12 || path[1] != b'p' || !path.starts_with(b"/proc/sys") {
        return None;
    }
    match &path[9..] {
        b"vipc/msg" => Some(View::Msg),
        b"vipc/sem" => Some(View::Sem),
        b"vipc/shm" => Some(View::Shm),
        b"/kernel/msgmax" => Some(View::Limit(Limit::Msgmax)),
        b"/kernel/msgmnb" => Some(View::Limit(Limit::Msgmnb)),
        b"/kernel/msgmni" => Some(View::Limit(Limit::Msgmni)),
        b"/kernel/sem" => Some(View::Limit(Limit::Sem)),
        b"/kernel/shmmax" => Some(View::Limit(Limit::Shmmax)),
        b"/kernel/shmall" => Some(View::Limit(Limit::Shmall)),
        b"/kernel/shmmni" => Some(View::Limit(Limit::Shmmni)),
        _ => None,
    }
}

// The header lines, as the kernel writes them (ipc_init_proc_interface's headers).
const MSG_HEADER: &str =
    "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n";
const SEM_HEADER: &str = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n";
const SHM_HEADER: &str = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n";

/// /proc/sysvipc/msg: `"%10d %10d  %4o  %10lu %10lu %5u %5u %5u %5u %5u %5u %10llu %10llu %10llu\n"`.
pub fn msg_text(queues: &[Queue]) -> String {
    let mut s = String::from(MSG_HEADER);
    for q in queues {
        let (p, d) = (&q.ds.msg_perm, &q.ds);
        let _ = writeln!(
            s,
            "{:10} {:10}  {:4o}  {:10} {:10} {:5} {:5} {:5} {:5} {:5} {:5} {:10} {:10} {:10}",
            p.__key, q.id, p.mode, d.__msg_cbytes, d.msg_qnum, d.msg_lspid as u32, d.msg_lrpid as u32,
            p.uid, p.gid, p.cuid, p.cgid, d.msg_stime as u64, d.msg_rtime as u64, d.msg_ctime as u64
        );
    }
    s
}

/// /proc/sysvipc/sem: `"%10d %10d  %4o %10u %5u %5u %5u %5u %10llu %10llu\n"`.
pub fn sem_text(sets: &[SemSet]) -> String {
    let mut s = String::from(SEM_HEADER);
    for set in sets {
        let (p, d) = (&set.ds.sem_perm, &set.ds);
        let _ = writeln!(
            s,
            "{:10} {:10}  {:4o} {:10} {:5} {:5} {:5} {:5} {:10} {:10}",
            p.__key, set.id, p.mode, d.sem_nsems, p.uid, p.gid, p.cuid, p.cgid, d.sem_otime as u64, d.sem_ctime as u64
        );
    }
    s
}

/// /proc/sysvipc/shm: `"%10d %10d  %4o %21lu %5u %5u  %5lu %5u %5u %5u %5u %10llu %10llu
/// %10llu %21lu %21lu\n"` (64-bit). rss is the segment's size in whole pages and swap 0: the
/// same accounting as ipcshim's SHM_INFO (see the README).
pub fn shm_text(segments: &[Segment]) -> String {
    let mut s = String::from(SHM_HEADER);
    for seg in segments {
        let (p, d) = (&seg.ds.shm_perm, &seg.ds);
        let rss = crate::sys::round_up_to_page(d.shm_segsz as u64).unwrap_or(u64::MAX);
        let _ = writeln!(
            s,
            "{:10} {:10}  {:4o} {:21} {:5} {:5}  {:5} {:5} {:5} {:5} {:5} {:10} {:10} {:10} {:21} {:21}",
            p.__key, seg.id, p.mode, d.shm_segsz, d.shm_cpid as u32, d.shm_lpid as u32, d.shm_nattch,
            p.uid, p.gid, p.cuid, p.cgid, d.shm_atime as u64, d.shm_dtime as u64, d.shm_ctime as u64, rss, 0
        );
    }
    s
}

/// A limit file: one number (`%d` or `%lu`), or sem's four separated by tabs.
pub fn limit_text(limits: &Limits, which: Limit) -> String {
    match which {
        Limit::Msgmax => format!("{}\n", limits.msgmax),
        Limit::Msgmnb => format!("{}\n", limits.msgmnb),
        Limit::Msgmni => format!("{}\n", limits.msgmni),
        Limit::Sem => format!("{}\t{}\t{}\t{}\n", limits.semmsl, limits.semmns, limits.semopm, limits.semmni),
        Limit::Shmmax => format!("{}\n", limits.shmmax),
        Limit::Shmall => format!("{}\n", limits.shmall),
        Limit::Shmmni => format!("{}\n", limits.shmmni),
    }
}

/// The namespace's limits as its programs see them (the three IPC_INFO calls); with no
/// broker, those a new one would start with.
fn namespace_limits() -> Limits {
    let mut l = Limits::from_machine();
    let mut msg = [0u8; std::mem::size_of::<crate::abi::msg::MsgInfo>()];
    if unsafe { crate::abi::msg::msgctl(0, IPC_INFO, msg.as_mut_ptr() as *mut libc::msqid_ds) } >= 0 {
        let m = unsafe { &*(msg.as_ptr() as *const crate::abi::msg::MsgInfo) };
        (l.msgmax, l.msgmnb, l.msgmni) = (m.msgmax as u64, m.msgmnb as u64, m.msgmni as u64);
    }
    let mut sem: libc::seminfo = unsafe { std::mem::zeroed() };
    if unsafe { crate::abi::sem::semctl(0, 0, IPC_INFO, &mut sem as *mut libc::seminfo as libc::c_ulong) } >= 0 {
        (l.semmsl, l.semmns, l.semopm, l.semmni) =
            (sem.semmsl as u64, sem.semmns as u64, sem.semopm as u64, sem.semmni as u64);
    }
    let mut shm = [0u8; std::mem::size_of::<crate::abi::shm::ShmInfoLimits>()];
    if unsafe { crate::abi::shm::shmctl(0, IPC_INFO, shm.as_mut_ptr() as *mut libc::shmid_ds) } >= 0 {
        let s = unsafe { &*(shm.as_ptr() as *const crate::abi::shm::ShmInfoLimits) };
        (l.shmmax, l.shmall, l.shmmni) = (s.shmmax as u64, s.shmall as u64, s.shmmni as u64);
    }
    l
}

thread_local! {
    /// Set while this thread builds a view: the files it reads itself (the machine's limits)
    /// are the kernel's.
    static BUILDING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is building a view (its own opens then go to the kernel).
pub fn building() -> bool {
    BUILDING.with(Cell::get)
}

/// The file's contents now. Reading never starts a broker: with none, the namespace is
/// empty (the kernel's files always exist, with their header).
pub fn contents(view: View) -> Vec<u8> {
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            BUILDING.with(|b| b.set(false));
        }
    }
    BUILDING.with(|b| b.set(true));
    let _done = Done;
    let text = crate::client::spawn::without_starting(|| match view {
        View::Msg => msg_text(&super::queues()),
        View::Sem => sem_text(&super::sem_sets()),
        View::Shm => shm_text(&super::segments()),
        View::Limit(which) => limit_text(&namespace_limits(), which),
    });
    text.into_bytes()
}

/// A read-only descriptor (close-on-exec if asked) on a snapshot of the file, at the lowest
/// free number as open(2) would give.
pub fn open(view: View, cloexec: bool) -> Result<RawFd> {
    let data = contents(view);
    let memfd = crate::client::owned(unsafe { libc::memfd_create(c"ipcshim-proc".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    let mut written = 0;
    while written < data.len() {
        let n = unsafe { libc::write(memfd.as_raw_fd(), data[written..].as_ptr() as *const libc::c_void, data.len() - written) };
        match n {
            n if n > 0 => written += n as usize,
            _ if Errno::last().0 == libc::EINTR => {}
            _ => return Err(if n == 0 { Errno(libc::EIO) } else { Errno::last() }),
        }
    }
    // Reopened read-only, as the kernel's files (writes fail with EBADF), onto the memfd's
    // number. The reopen takes a second descriptor for a moment where the kernel's open
    // needs one: in a full table the client's reserve slot lends it; with no reserve either
    // (no broker met yet), the memfd itself is given, sealed (writes fail with EPERM).
    let reopen = || reopen_read_only(memfd.as_raw_fd(), cloexec);
    match reopen() {
        Err(Errno(libc::EMFILE)) => match crate::client::client().with_reserve_released(reopen) {
            Err(Errno(libc::EMFILE)) => seal(memfd.as_raw_fd(), cloexec)?,
            r => r?,
        },
        r => r?,
    }
    Ok(memfd.into_raw_fd())
}

/// Replaces `fd` (a memfd) by a read-only open file description of the same file.
fn reopen_read_only(fd: RawFd, cloexec: bool) -> Result<()> {
    let path = format!("/proc/self/fd/{fd}\0");
    let ro = crate::client::owned(unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) as RawFd })?;
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    if unsafe { libc::dup3(ro.as_raw_fd(), fd, flags) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `fd` (a memfd) made unwritable in place, read from the start: the view with no
/// descriptor to spare for `reopen_read_only`.
fn seal(fd: RawFd, cloexec: bool) -> Result<()> {
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0
        || unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0
        || (!cloexec && unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0)
    {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue {
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        ds.msg_perm.__key = 0x1234abcd;
        ds.msg_perm.mode = 0o644;
        ds.__msg_cbytes = 4;
        ds.msg_qnum = 1;
        ds.msg_lspid = 8622;
        ds.msg_ctime = 1795367921;
        ds.msg_stime = 1795367922;
        Queue { id: 40, ds }
    }

    #[test]
    fn lines_are_the_kernels() {
        assert_eq!(
            msg_text(&[queue()]).lines().nth(1).unwrap(),
            " 305441741         40   644           4          1  8622     0     0     0     0     0 1795367922          0 1795367921"
        );
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        (ds.sem_perm.__key, ds.sem_perm.mode, ds.sem_nsems, ds.sem_ctime) = (23655, 0o600, 1, 1795367920);
        assert_eq!(
            sem_text(&[SemSet { id: 48, ds }]).lines().nth(1).unwrap(),
            "     23655         48   600          1     0     0     0     0          0 1795367920"
        );
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        (ds.shm_perm.mode, ds.shm_segsz, ds.shm_cpid, ds.shm_lpid, ds.shm_nattch) = (0o1600, 3333, 8403, 8403, 1);
        (ds.shm_atime, ds.shm_dtime, ds.shm_ctime) = (1795367911, 1795367911, 1795367911);
        assert_eq!(
            shm_text(&[Segment { id: 7, ds }]).lines().nth(1).unwrap(),
            "         0          7  1600                  3333  8403  8403      1     0     0     0     0 1795367911 1795367911 1795367911                  4096                     0"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(view_for(b"/proc/sysvipc/shm"), Some(View::Shm));
        assert_eq!(view_for(b"/proc/sys/kernel/sem"), Some(View::Limit(Limit::Sem)));
        for other in [&b"/proc/sysvipc/shmx"[..], b"/proc/sysvipc", b"/proc/sys/kernel/sem_next_id", b"/etc/passwd", b"", b"proc/sysvipc/msg"] {
            assert_eq!(view_for(other), None);
        }
        let l = Limits::default();
        assert_eq!(limit_text(&l, Limit::Sem), "32000\t1024000000\t500\t32000\n");
        assert_eq!(limit_text(&l, Limit::Shmmax), "18446744073692774399\n");
    }
}
