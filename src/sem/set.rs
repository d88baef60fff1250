//! The broker's side of semaphore sets: semget, the semctl commands the broker serves,
//! and SEM_UNDO at a process's death. Not implemented yet: every call fails with ENOSYS.

use crate::broker::registry::{Change, Registry};
use crate::ipc::limits::Limits;
use crate::ipc::perm::Creds;
use crate::ipc::{Errno, Result};
use std::os::fd::OwnedFd;

#[derive(Debug)]
pub struct SemSet {
    pub nsems: u64,
    pub memfd: OwnedFd,
}

#[derive(Debug, Default)]
pub struct SemSets {
    pub registry: Registry<SemSet>,
}

impl SemSets {
    /// semget. `nsems` is the caller's argument; `memfd_name` a unique name for a new set.
    pub fn get(&mut self, _key: i32, _nsems: i64, _flags: i32, _creds: &Creds, _limits: &Limits, _memfd_name: String) -> Result<(i32, Change)> {
        Err(Errno(libc::ENOSYS))
    }

    /// The set's memfd for a client that may read or alter it. Reply words after status.
    pub fn open(&self, _id: i32, _access: u32, _creds: &Creds) -> Result<(Vec<i64>, OwnedFd)> {
        Err(Errno(libc::ENOSYS))
    }

    /// semctl commands served by the broker. Returns (return value, fields, change).
    pub fn ctl(&mut self, _id: i32, _cmd: i32, _args: &[i64], _creds: &Creds, _limits: &Limits) -> Result<(i64, Vec<i64>, Change)> {
        Err(Errno(libc::ENOSYS))
    }

    /// A client process died: apply its SEM_UNDO adjustments and wake waiters.
    pub fn process_died(&mut self, _pid: i32) -> Vec<Change> {
        Vec::new()
    }

    /// (seq, perm, size) of the set at `index`, for the namespace table (size = nsems).
    pub fn table_entry(&self, index: usize) -> Option<(u32, crate::ipc::perm::Perm, u64)> {
        self.registry.by_index(index).map(|o| (o.seq, o.perm, o.data.nsems))
    }
}
