//! shmget, shmat, shmdt, shmctl.

use super::trace::{traced, Cmd, Flags, Key, GET_FLAGS};
use super::{call, fill_perm};
use crate::ipc::usercopy::{read_user, write_user};
use crate::ipc::{Errno, Family, IPC_INFO, IPC_RMID, IPC_SET, IPC_STAT};
use crate::shm::{attach, SHM_EXEC, SHM_INFO, SHM_RDONLY, SHM_REMAP, SHM_RND, SHM_LOCK, SHM_STAT, SHM_STAT_ANY, SHM_UNLOCK};
use crate::wire::Op;

#[no_mangle]
pub extern "C" fn shmget(key: libc::key_t, size: libc::size_t, shmflg: libc::c_int) -> libc::c_int {
    traced!("shmget", "{}, {}, {}", Key(key), size, Flags(shmflg, GET_FLAGS); call(-1, || attach::shmget(key, size, shmflg)))
}

#[no_mangle]
pub extern "C" fn shmat(shmid: libc::c_int, shmaddr: *const libc::c_void, shmflg: libc::c_int) -> *mut libc::c_void {
    traced!("shmat", "{}, {:p}, {}", shmid, shmaddr, Flags(shmflg, AT_FLAGS);
        call(usize::MAX as *mut libc::c_void, || attach::shmat(shmid, shmaddr as usize, shmflg).map(|a| a as *mut libc::c_void)))
}

const AT_FLAGS: &[(libc::c_int, &str)] =
    &[(SHM_RDONLY, "SHM_RDONLY"), (SHM_RND, "SHM_RND"), (SHM_REMAP, "SHM_REMAP"), (SHM_EXEC, "SHM_EXEC")];
const CTL_CMDS: &[(libc::c_int, &str)] = &[
    (SHM_LOCK, "SHM_LOCK"),
    (SHM_UNLOCK, "SHM_UNLOCK"),
    (SHM_STAT, "SHM_STAT"),
    (SHM_INFO, "SHM_INFO"),
    (SHM_STAT_ANY, "SHM_STAT_ANY"),
];

#[no_mangle]
pub extern "C" fn shmdt(shmaddr: *const libc::c_void) -> libc::c_int {
    traced!("shmdt", "{:p}", shmaddr; call(-1, || attach::shmdt(shmaddr as usize).map(|_| 0)))
}

/// glibc's `struct shminfo` (IPC_INFO).
#[repr(C)]
pub struct ShmInfoLimits {
    pub shmmax: libc::c_ulong,
    pub shmmin: libc::c_ulong,
    pub shmmni: libc::c_ulong,
    pub shmseg: libc::c_ulong,
    pub shmall: libc::c_ulong,
    pub unused: [libc::c_ulong; 4],
}

/// glibc's `struct shm_info` (SHM_INFO).
#[repr(C)]
pub struct ShmInfoUsage {
    pub used_ids: libc::c_int,
    pub shm_tot: libc::c_ulong,
    pub shm_rss: libc::c_ulong,
    pub shm_swp: libc::c_ulong,
    pub swap_attempts: libc::c_ulong,
    pub swap_successes: libc::c_ulong,
}

/// # Safety
/// `buf` must be NULL or point to the structure `cmd` reads or writes.
#[no_mangle]
pub unsafe extern "C" fn shmctl(shmid: libc::c_int, cmd: libc::c_int, buf: *mut libc::shmid_ds) -> libc::c_int {
    traced!("shmctl", "{}, {}, {:p}", shmid, Cmd(cmd, CTL_CMDS), buf; call(-1, || shmctl_impl(shmid, cmd, buf)))
}

unsafe fn shmctl_impl(shmid: libc::c_int, cmd: libc::c_int, buf: *mut libc::shmid_ds) -> crate::ipc::Result<libc::c_int> {
    if shmid < 0 || cmd < 0 {
        return Err(Errno(libc::EINVAL));
    }
    // A 64-bit kernel's shmctl takes no version bits (no `ipc_parse_version`, and glibc adds
    // none there): IPC_64 in `cmd` is an unknown command.
    if !matches!(cmd, IPC_STAT | IPC_SET | IPC_RMID | IPC_INFO | SHM_INFO | SHM_STAT | SHM_STAT_ANY | SHM_LOCK | SHM_UNLOCK) {
        return Err(Errno(libc::EINVAL));
    }
    let mut req = vec![Op::Ctl as i64, Family::Shm as i64, shmid as i64, cmd as i64];
    if cmd == IPC_SET {
        // The kernel copies the caller's structure in before it looks at the id.
        let ds = read_user(buf)?;
        req.extend([ds.shm_perm.uid as i64, ds.shm_perm.gid as i64, ds.shm_perm.mode as i64]);
    }
    let reply = crate::client::client().request(&req)?;
    // The reply is [return value, fields…]; results are copied out last, as the kernel.
    let ret = reply.word(0)?;
    let f = &reply.words[1..];
    match cmd {
        IPC_STAT | SHM_STAT | SHM_STAT_ANY if f.len() >= 14 => {
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            fill_perm(&mut ds.shm_perm, f);
            ds.shm_segsz = f[7] as usize;
            ds.shm_atime = f[8];
            ds.shm_dtime = f[9];
            ds.shm_ctime = f[10];
            ds.shm_cpid = f[11] as i32;
            ds.shm_lpid = f[12] as i32;
            ds.shm_nattch = f[13] as _;
            write_user(buf, &ds)?;
        }
        IPC_INFO if f.len() >= 5 => {
            let mut info: ShmInfoLimits = std::mem::zeroed();
            (info.shmmax, info.shmmin, info.shmmni, info.shmseg, info.shmall) =
                (f[0] as _, f[1] as _, f[2] as _, f[3] as _, f[4] as _);
            write_user(buf as *mut ShmInfoLimits, &info)?;
        }
        SHM_INFO if f.len() >= 6 => {
            let mut info: ShmInfoUsage = std::mem::zeroed();
            info.used_ids = f[0] as i32;
            (info.shm_tot, info.shm_rss, info.shm_swp, info.swap_attempts, info.swap_successes) =
                (f[1] as _, f[2] as _, f[3] as _, f[4] as _, f[5] as _);
            write_user(buf as *mut ShmInfoUsage, &info)?;
        }
        _ => {}
    }
    Ok(ret as libc::c_int)
}
