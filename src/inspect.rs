//! Listing a namespace's objects, for the views that show them (`ipcshim ls`, the
//! /proc/sysvipc files a preloaded program reads). It goes through the same calls a C
//! program would make — IPC_INFO for the highest index in use, then *_STAT_ANY on every
//! index up to it — so what is listed is exactly what `ipcs` would list under the library.

pub mod procfs;

use crate::abi;
use crate::ipc::IPC_INFO;

/// One object: its id (as *_STAT_ANY returns it) and its `*_ds` structure.
pub struct Object<Ds> {
    pub id: i32,
    pub ds: Ds,
}

pub type Queue = Object<libc::msqid_ds>;
pub type SemSet = Object<libc::semid_ds>;
pub type Segment = Object<libc::shmid_ds>;

/// Calls `stat(index, &mut ds)` for every index up to `max_index`, keeping those in use.
fn collect<Ds>(max_index: i32, stat: impl Fn(i32, &mut Ds) -> i32) -> Vec<Object<Ds>> {
    (0..=max_index)
        .filter_map(|index| {
            // SAFETY: every *_ds is plain old data, valid when zeroed.
            let mut ds: Ds = unsafe { std::mem::zeroed() };
            let id = stat(index, &mut ds);
            (id >= 0).then_some(Object { id, ds })
        })
        .collect()
}

/// The message queues, in index order.
pub fn queues() -> Vec<Queue> {
    let mut info = [0u8; std::mem::size_of::<abi::msg::MsgInfo>()];
    let max = unsafe { abi::msg::msgctl(0, IPC_INFO, info.as_mut_ptr() as *mut libc::msqid_ds) };
    collect(max, |i, ds| unsafe { abi::msg::msgctl(i, crate::msg::MSG_STAT_ANY, ds) })
}

/// The semaphore sets, in index order.
pub fn sem_sets() -> Vec<SemSet> {
    let mut info: libc::seminfo = unsafe { std::mem::zeroed() };
    let max = unsafe { abi::sem::semctl(0, 0, IPC_INFO, &mut info as *mut libc::seminfo as libc::c_ulong) };
    collect(max, |i, ds| unsafe { abi::sem::semctl(i, 0, crate::sem::SEM_STAT_ANY, ds as *mut libc::semid_ds as libc::c_ulong) })
}

/// A set's values (GETALL), or None if it is gone or not readable.
pub fn sem_values(set: &SemSet) -> Option<Vec<u16>> {
    let mut values = vec![0u16; set.ds.sem_nsems as usize];
    let r = unsafe { abi::sem::semctl(set.id, 0, crate::sem::GETALL, values.as_mut_ptr() as libc::c_ulong) };
    (r == 0).then_some(values)
}

/// The shared memory segments, in index order.
pub fn segments() -> Vec<Segment> {
    let mut info = [0u8; std::mem::size_of::<abi::shm::ShmInfoLimits>()];
    let max = unsafe { abi::shm::shmctl(0, IPC_INFO, info.as_mut_ptr() as *mut libc::shmid_ds) };
    collect(max, |i, ds| unsafe { abi::shm::shmctl(i, crate::shm::SHM_STAT_ANY, ds) })
}

/// The ids `*_STAT` (not `_ANY`) returns: the objects the caller may read, which is what
/// `ipcrm -a` removes.
pub fn readable_ids(family: crate::ipc::Family) -> Vec<i32> {
    use crate::ipc::Family;
    match family {
        Family::Msg => {
            let max = msg_info(IPC_INFO).map_or(-1, |(max, _)| max);
            ids(collect(max, |i, ds: &mut libc::msqid_ds| unsafe { abi::msg::msgctl(i, crate::msg::MSG_STAT, ds) }))
        }
        Family::Sem => {
            let max = sem_info(IPC_INFO).map_or(-1, |(max, _)| max);
            ids(collect(max, |i, ds: &mut libc::semid_ds| unsafe {
                abi::sem::semctl(i, 0, crate::sem::SEM_STAT, ds as *mut libc::semid_ds as libc::c_ulong)
            }))
        }
        Family::Shm => {
            let max = shm_limits().map_or(-1, |(max, _)| max);
            ids(collect(max, |i, ds: &mut libc::shmid_ds| unsafe { abi::shm::shmctl(i, crate::shm::SHM_STAT, ds) }))
        }
    }
}

fn ids<Ds>(objects: Vec<Object<Ds>>) -> Vec<i32> {
    objects.into_iter().map(|o| o.id).collect()
}

/// `msgctl(0, cmd, …)` for IPC_INFO (limits) or MSG_INFO (usage): the highest index in use
/// and the structure, or None if the call fails (no broker).
pub fn msg_info(cmd: i32) -> Option<(i32, abi::msg::MsgInfo)> {
    let mut info: abi::msg::MsgInfo = unsafe { std::mem::zeroed() };
    let max = unsafe { abi::msg::msgctl(0, cmd, &mut info as *mut abi::msg::MsgInfo as *mut libc::msqid_ds) };
    (max >= 0).then_some((max, info))
}

/// `semctl(0, 0, cmd, …)` for IPC_INFO or SEM_INFO, as `msg_info`.
pub fn sem_info(cmd: i32) -> Option<(i32, libc::seminfo)> {
    let mut info: libc::seminfo = unsafe { std::mem::zeroed() };
    let max = unsafe { abi::sem::semctl(0, 0, cmd, &mut info as *mut libc::seminfo as libc::c_ulong) };
    (max >= 0).then_some((max, info))
}

/// `shmctl(0, IPC_INFO, …)`: the highest index in use and the limits.
pub fn shm_limits() -> Option<(i32, abi::shm::ShmInfoLimits)> {
    let mut info: abi::shm::ShmInfoLimits = unsafe { std::mem::zeroed() };
    let max = unsafe { abi::shm::shmctl(0, IPC_INFO, &mut info as *mut abi::shm::ShmInfoLimits as *mut libc::shmid_ds) };
    (max >= 0).then_some((max, info))
}

/// `shmctl(0, SHM_INFO, …)`: the highest index in use and the usage figures.
pub fn shm_usage() -> Option<(i32, abi::shm::ShmInfoUsage)> {
    let mut info: abi::shm::ShmInfoUsage = unsafe { std::mem::zeroed() };
    let max = unsafe { abi::shm::shmctl(0, crate::shm::SHM_INFO, &mut info as *mut abi::shm::ShmInfoUsage as *mut libc::shmid_ds) };
    (max >= 0).then_some((max, info))
}

/// One semaphore of a set, as GETVAL, GETNCNT, GETZCNT and GETPID report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Semaphore {
    pub value: i32,
    pub ncount: i32,
    pub zcount: i32,
    pub pid: i32,
}

/// The semaphores of set `id` (`nsems` of them), or the name of the call that failed and
/// its errno (the caller may not read the set, or it is gone).
pub fn semaphores(id: i32, nsems: usize) -> Result<Vec<Semaphore>, (&'static str, crate::ipc::Errno)> {
    use crate::sem::{GETNCNT, GETPID, GETVAL, GETZCNT};
    let get = |num: usize, cmd: i32, name: &'static str| {
        let r = unsafe { abi::sem::semctl(id, num as i32, cmd, 0) };
        if r < 0 {
            Err((name, crate::ipc::Errno::last()))
        } else {
            Ok(r)
        }
    };
    (0..nsems)
        .map(|n| {
            Ok(Semaphore {
                value: get(n, GETVAL, "semctl(GETVAL)")?,
                ncount: get(n, GETNCNT, "semctl(GETNCNT)")?,
                zcount: get(n, GETZCNT, "semctl(GETZCNT)")?,
                pid: get(n, GETPID, "semctl(GETPID)")?,
            })
        })
        .collect()
}
