//! msgget, msgsnd, msgrcv, msgctl.

use super::trace::{traced, Cmd, Flags, Key, GET_FLAGS};
use super::{call, fill_perm};
use crate::ipc::usercopy::{read_user, write_user};
use crate::ipc::{Errno, Family, IPC_INFO, IPC_RMID, IPC_SET, IPC_STAT};
use crate::msg::client::{self, Resume, Sleep};
use crate::msg::{MSG_COPY, MSG_EXCEPT, MSG_INFO, MSG_NOERROR, MSG_STAT, MSG_STAT_ANY};
use crate::ipc::IPC_NOWAIT;
use crate::wire::Op;

#[no_mangle]
pub extern "C" fn msgget(key: libc::key_t, msgflg: libc::c_int) -> libc::c_int {
    traced!("msgget", "{}, {}", Key(key), Flags(msgflg, GET_FLAGS); call(-1, || client::msgget(key, msgflg)))
}

const SND_RCV_FLAGS: &[(libc::c_int, &str)] =
    &[(IPC_NOWAIT, "IPC_NOWAIT"), (MSG_NOERROR, "MSG_NOERROR"), (MSG_EXCEPT, "MSG_EXCEPT"), (MSG_COPY, "MSG_COPY")];
const CTL_CMDS: &[(libc::c_int, &str)] = &[(MSG_STAT, "MSG_STAT"), (MSG_INFO, "MSG_INFO"), (MSG_STAT_ANY, "MSG_STAT_ANY")];

/// Runs a msgsnd / msgrcv to the end: each step under the panic guard (`call`), each
/// wait outside it. Sleeping is a cancellation point: pthread_cancel unwinds from there
/// into the caller (hence "C-unwind"), and a panic guard in between would stop it.
#[inline(always)]
fn run<T: Copy>(mut step: impl FnMut(Option<Resume>, &mut Option<Sleep>) -> crate::ipc::Result<T>, fail: T) -> T {
    let mut sleep = None;
    let v = call(fail, || step(None, &mut sleep));
    match sleep {
        None => v,
        Some(s) => run_waiting(step, s, fail),
    }
}

#[cold]
#[inline(never)]
fn run_waiting<T: Copy>(mut step: impl FnMut(Option<Resume>, &mut Option<Sleep>) -> crate::ipc::Result<T>, first: Sleep, fail: T) -> T {
    let mut resume = Some(first.sleep());
    loop {
        let mut sleep = None;
        let v = call(fail, || step(resume.take(), &mut sleep));
        match sleep {
            None => return v,
            Some(s) => resume = Some(s.sleep()),
        }
    }
}

#[no_mangle]
pub extern "C-unwind" fn msgsnd(msqid: libc::c_int, msgp: *const libc::c_void, msgsz: libc::size_t, msgflg: libc::c_int) -> libc::c_int {
    traced!("msgsnd", "{}, {:p}, {}, {}", msqid, msgp, msgsz, Flags(msgflg, SND_RCV_FLAGS);
        run(|resume, sleep| unsafe { client::msgsnd(msqid, msgp as *const u8, msgsz, msgflg, resume, sleep) }.map(|_| 0), -1))
}

#[no_mangle]
pub extern "C-unwind" fn msgrcv(
    msqid: libc::c_int,
    msgp: *mut libc::c_void,
    msgsz: libc::size_t,
    msgtyp: libc::c_long,
    msgflg: libc::c_int,
) -> libc::ssize_t {
    traced!("msgrcv", "{}, {:p}, {}, {}, {}", msqid, msgp, msgsz, msgtyp, Flags(msgflg, SND_RCV_FLAGS);
        run(|resume, sleep| unsafe { client::msgrcv(msqid, msgp as *mut u8, msgsz, msgtyp, msgflg, resume, sleep) }.map(|n| n as libc::ssize_t), -1))
}

/// glibc's `struct msginfo` (IPC_INFO, MSG_INFO).
#[repr(C)]
pub struct MsgInfo {
    pub msgpool: libc::c_int,
    pub msgmap: libc::c_int,
    pub msgmax: libc::c_int,
    pub msgmnb: libc::c_int,
    pub msgmni: libc::c_int,
    pub msgssz: libc::c_int,
    pub msgtql: libc::c_int,
    pub msgseg: libc::c_ushort,
}

/// # Safety
/// `buf` must be NULL or point to the structure `cmd` reads or writes.
#[no_mangle]
pub unsafe extern "C" fn msgctl(msqid: libc::c_int, cmd: libc::c_int, buf: *mut libc::msqid_ds) -> libc::c_int {
    traced!("msgctl", "{}, {}, {:p}", msqid, Cmd(cmd, CTL_CMDS), buf; call(-1, || msgctl_impl(msqid, cmd, buf)))
}

unsafe fn msgctl_impl(msqid: libc::c_int, cmd: libc::c_int, buf: *mut libc::msqid_ds) -> crate::ipc::Result<libc::c_int> {
    if msqid < 0 || cmd < 0 {
        return Err(Errno(libc::EINVAL));
    }
    // IPC_64 is not stripped: x86_64 and arm64 kernels (no ARCH_WANT_IPC_PARSE_VERSION)
    // take `cmd` as it is, and glibc passes it through there, so IPC_STAT | IPC_64 is EINVAL.
    if !matches!(cmd, IPC_STAT | IPC_SET | IPC_RMID | IPC_INFO | MSG_INFO | MSG_STAT | MSG_STAT_ANY) {
        return Err(Errno(libc::EINVAL));
    }
    let mut req = vec![Op::Ctl as i64, Family::Msg as i64, msqid as i64, cmd as i64];
    if cmd == IPC_SET {
        // copy_msqid_from_user comes first.
        let ds = read_user(buf)?;
        req.extend([ds.msg_perm.uid as i64, ds.msg_perm.gid as i64, ds.msg_perm.mode as i64, ds.msg_qbytes as i64]);
    }
    let reply = crate::client::client().request(&req)?;
    if cmd == IPC_RMID {
        client::forget(msqid);
    }
    // The reply is [return value, fields…].
    let ret = reply.word(0)?;
    let f = &reply.words[1..];
    match cmd {
        IPC_STAT | MSG_STAT | MSG_STAT_ANY if f.len() >= 15 => {
            let mut ds: libc::msqid_ds = std::mem::zeroed();
            fill_perm(&mut ds.msg_perm, f);
            ds.msg_qbytes = f[7] as _;
            ds.msg_qnum = f[8] as _;
            ds.__msg_cbytes = f[9] as _;
            ds.msg_lspid = f[10] as i32;
            ds.msg_lrpid = f[11] as i32;
            ds.msg_stime = f[12];
            ds.msg_rtime = f[13];
            ds.msg_ctime = f[14];
            write_user(buf, &ds)?;
        }
        IPC_INFO | MSG_INFO if f.len() >= 8 => {
            let mut info: MsgInfo = std::mem::zeroed();
            info.msgpool = f[0] as i32;
            info.msgmap = f[1] as i32;
            info.msgmax = f[2] as i32;
            info.msgmnb = f[3] as i32;
            info.msgmni = f[4] as i32;
            info.msgssz = f[5] as i32;
            info.msgtql = f[6] as i32;
            info.msgseg = f[7] as u16;
            write_user(buf as *mut MsgInfo, &info)?;
        }
        _ => {}
    }
    Ok(ret as libc::c_int)
}
