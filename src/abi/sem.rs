//! semget, semop, semtimedop, semctl: argument conversion and the checks the kernel makes
//! before it looks at the set (E2BIG, EINVAL, EFAULT, the timeout), in its order.

use super::call;
use super::trace::{traced, Cmd, Flags, Key, GET_FLAGS};
use crate::ipc::{Errno, Family, Result, IPC_64, IPC_INFO, IPC_RMID, IPC_SET, IPC_STAT};
use crate::ipc::usercopy::{copy_from_user, copy_to_user};
use crate::sem::ops::{SemOp, SEMVMX};
use crate::sem::{client, GETALL, GETNCNT, GETPID, GETVAL, GETZCNT, SEM_INFO, SEM_STAT, SEM_STAT_ANY, SETALL, SETVAL};
use crate::wire::Op;
use std::time::Duration;

#[no_mangle]
pub extern "C" fn semget(key: libc::key_t, nsems: libc::c_int, semflg: libc::c_int) -> libc::c_int {
    traced!("semget", "{}, {}, {}", Key(key), nsems, Flags(semflg, GET_FLAGS); call(-1, || client::semget(key, nsems, semflg)))
}

const CTL_CMDS: &[(libc::c_int, &str)] = &[
    (GETPID, "GETPID"),
    (GETVAL, "GETVAL"),
    (GETALL, "GETALL"),
    (GETNCNT, "GETNCNT"),
    (GETZCNT, "GETZCNT"),
    (SETVAL, "SETVAL"),
    (SETALL, "SETALL"),
    (SEM_STAT, "SEM_STAT"),
    (SEM_INFO, "SEM_INFO"),
    (SEM_STAT_ANY, "SEM_STAT_ANY"),
];

/// `semtimedop`'s checks before the id, in the kernel's order: the timeout is copied in
/// (EFAULT), then E2BIG, EINVAL for no operations, the operations copied in (EFAULT), the
/// timeout's validity (EINVAL).
unsafe fn semtimedop_impl(id: i32, sops: *const libc::sembuf, nsops: usize, timeout: *const libc::timespec) -> Result<()> {
    // The system call's nsops is an unsigned int: the upper half of a size_t never reaches
    // the kernel.
    let nsops = nsops as u32 as usize;
    let timeout = if timeout.is_null() {
        None
    } else {
        let mut ts: libc::timespec = std::mem::zeroed();
        copy_from_user(&mut ts as *mut libc::timespec as *mut u8, timeout as *const u8, std::mem::size_of::<libc::timespec>())?;
        Some(ts)
    };
    if nsops > 1 && nsops > client::semopm()? {
        return Err(Errno(libc::E2BIG));
    }
    if nsops == 0 {
        return Err(Errno(libc::EINVAL));
    }
    // copy_from_user: EFAULT for NULL or an unreadable address, as the kernel. Small calls
    // stay on the stack.
    const SMALL: usize = 16;
    let mut small: [libc::sembuf; SMALL] = std::mem::zeroed();
    let mut large: Vec<libc::sembuf> = Vec::new();
    let raw: &mut [libc::sembuf] = if nsops <= SMALL {
        &mut small[..nsops]
    } else {
        large.resize(nsops, std::mem::zeroed());
        &mut large
    };
    copy_from_user(raw.as_mut_ptr() as *mut u8, sops as *const u8, nsops * std::mem::size_of::<libc::sembuf>())?;
    let timeout = match timeout {
        None => None,
        Some(ts) if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) => return Err(Errno(libc::EINVAL)),
        Some(ts) => Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)),
    };
    if id < 0 {
        return Err(Errno(libc::EINVAL));
    }
    let to_op = |b: &libc::sembuf| SemOp { num: b.sem_num, op: b.sem_op, flg: b.sem_flg };
    let mut small_ops = [SemOp { num: 0, op: 0, flg: 0 }; SMALL];
    let large_ops: Vec<SemOp>;
    let ops: &[SemOp] = if nsops <= SMALL {
        for (o, b) in small_ops.iter_mut().zip(raw.iter()) {
            *o = to_op(b);
        }
        &small_ops[..nsops]
    } else {
        large_ops = raw.iter().map(to_op).collect();
        &large_ops
    };
    client::semop(id, ops, timeout)
}

/// # Safety
/// `sops` must be NULL or point to `nsops` operations.
#[no_mangle]
pub unsafe extern "C" fn semop(semid: libc::c_int, sops: *mut libc::sembuf, nsops: libc::size_t) -> libc::c_int {
    // The fast path reads the operation directly (a probe would double its cost): a bad
    // pointer there is the program's SIGSEGV, NULL the general path's EFAULT. It stays
    // here, and all else out of line, so that it pays for no more than it uses.
    if nsops == 1 && !sops.is_null() && !crate::log::tracing() {
        let b = std::ptr::read(sops);
        if client::semop_fast(semid, SemOp { num: b.sem_num, op: b.sem_op, flg: b.sem_flg }) {
            return 0;
        }
    }
    semop_general(semid, sops, nsops)
}

#[inline(never)]
unsafe fn semop_general(semid: libc::c_int, sops: *mut libc::sembuf, nsops: libc::size_t) -> libc::c_int {
    traced!("semop", "{}, {:p}, {}", semid, sops, nsops; semop_impl(semid, sops, nsops))
}

unsafe fn semop_impl(semid: libc::c_int, sops: *mut libc::sembuf, nsops: libc::size_t) -> libc::c_int {
    call(-1, || {
        if nsops == 1 && !sops.is_null() {
            let b = std::ptr::read(sops);
            if let Some(r) = client::semop_cached(semid, SemOp { num: b.sem_num, op: b.sem_op, flg: b.sem_flg }) {
                return r.map(|_| 0);
            }
        }
        semtimedop_impl(semid, sops, nsops, std::ptr::null()).map(|_| 0)
    })
}

/// # Safety
/// `sops` must be NULL or point to `nsops` operations; `timeout` NULL or a timespec.
#[no_mangle]
pub unsafe extern "C" fn semtimedop(
    semid: libc::c_int,
    sops: *mut libc::sembuf,
    nsops: libc::size_t,
    timeout: *const libc::timespec,
) -> libc::c_int {
    traced!("semtimedop", "{}, {:p}, {}, {:p}", semid, sops, nsops, timeout;
        call(-1, || semtimedop_impl(semid, sops, nsops, timeout).map(|_| 0)))
}

/// `semctl` is variadic in C. Its fourth argument, when there is one, is a `union semun`
/// (an int or a pointer): on x86_64 and aarch64 Linux a variadic argument of that class is
/// passed exactly like a named integer argument (rcx / x3), so a fixed fourth parameter of
/// pointer width reads it correctly; for commands without one we never look at it. (An int
/// `val` arrives in the low 32 bits of the register; we read only those.)
///
/// # Safety
/// For the commands that take a pointer, `arg` must be NULL or point to the structure or
/// array the command reads or writes.
#[no_mangle]
pub unsafe extern "C" fn semctl(semid: libc::c_int, semnum: libc::c_int, cmd: libc::c_int, arg: libc::c_ulong) -> libc::c_int {
    traced!("semctl", "{}, {}, {}{}", semid, semnum, Cmd(cmd, CTL_CMDS), SemArg(cmd, arg); call(-1, || semctl_impl(semid, semnum, cmd, arg)))
}

/// semctl's fourth argument in a trace, for the commands that have one (else it is garbage).
struct SemArg(i32, libc::c_ulong);

impl std::fmt::Display for SemArg {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.0 & !IPC_64 {
            GETVAL | GETPID | GETNCNT | GETZCNT | IPC_RMID => Ok(()),
            SETVAL => write!(f, ", {}", self.1 as u32 as i32),
            _ => write!(f, ", {:#x}", self.1),
        }
    }
}

unsafe fn semctl_impl(semid: i32, semnum: i32, cmd: i32, arg: libc::c_ulong) -> Result<i32> {
    // Not even IPC_64 may be set: on x86_64 and aarch64 the kernel takes the 64-bit
    // layouts without it and rejects it as an unknown command (glibc does not set it there).
    if semid < 0 || cmd < 0 {
        return Err(Errno(libc::EINVAL));
    }
    match cmd {
        GETVAL | GETPID | GETNCNT | GETZCNT => client::get_one(semid, semnum, cmd),
        SETVAL => {
            let val = arg as u32 as i32;
            if !(0..=SEMVMX).contains(&val) {
                return Err(Errno(libc::ERANGE));
            }
            client::setval(semid, semnum, val as u16).map(|_| 0)
        }
        GETALL => client::getall(semid, arg as *mut u16).map(|_| 0),
        SETALL => client::setall(semid, arg as *const u16).map(|_| 0),
        IPC_STAT | SEM_STAT | SEM_STAT_ANY | IPC_SET | IPC_RMID | IPC_INFO | SEM_INFO => broker_ctl(semid, cmd, arg as *mut libc::c_void),
        _ => Err(Errno(libc::EINVAL)),
    }
}

/// The commands the broker serves.
unsafe fn broker_ctl(semid: i32, cmd: i32, buf: *mut libc::c_void) -> Result<i32> {
    let mut req = vec![Op::Ctl as i64, Family::Sem as i64, semid as i64, cmd as i64];
    if cmd == IPC_SET {
        let mut ds: libc::semid_ds = std::mem::zeroed();
        copy_from_user(&mut ds as *mut libc::semid_ds as *mut u8, buf as *const u8, std::mem::size_of::<libc::semid_ds>())?;
        req.extend([ds.sem_perm.uid as i64, ds.sem_perm.gid as i64, ds.sem_perm.mode as i64]);
    }
    let reply = crate::client::client().request(&req)?;
    let ret = reply.word(0)?;
    let f = &reply.words[1..];
    match cmd {
        IPC_STAT | SEM_STAT | SEM_STAT_ANY => {
            if f.len() < 10 {
                return Err(Errno(libc::EPROTO));
            }
            let mut ds: libc::semid_ds = std::mem::zeroed();
            super::fill_perm(&mut ds.sem_perm, f);
            ds.sem_nsems = f[7] as _;
            ds.sem_otime = f[8] as _;
            ds.sem_ctime = f[9] as _;
            copy_to_user(buf as *mut u8, &ds as *const libc::semid_ds as *const u8, std::mem::size_of::<libc::semid_ds>())?;
        }
        IPC_INFO | SEM_INFO => {
            if f.len() < 10 {
                return Err(Errno(libc::EPROTO));
            }
            let mut si: libc::seminfo = std::mem::zeroed();
            (si.semmap, si.semmni, si.semmns, si.semmnu, si.semmsl) =
                (f[0] as i32, f[1] as i32, f[2] as i32, f[3] as i32, f[4] as i32);
            (si.semopm, si.semume, si.semusz, si.semvmx, si.semaem) =
                (f[5] as i32, f[6] as i32, f[7] as i32, f[8] as i32, f[9] as i32);
            copy_to_user(buf as *mut u8, &si as *const libc::seminfo as *const u8, std::mem::size_of::<libc::seminfo>())?;
        }
        _ => {}
    }
    Ok(ret as i32)
}
