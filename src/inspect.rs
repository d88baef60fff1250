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
