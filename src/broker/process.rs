//! Client processes as the broker knows them: their credentials (from the socket and
//! /proc, never from what they say), their pidfd (how the broker learns of their death,
//! even by SIGKILL), and what they hold: shm attachments.

use crate::ipc::perm::Creds;
use crate::ipc::{Errno, Result};
use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};

/// One client process.
#[derive(Debug)]
pub struct Process {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// shm id → number of attachments this process holds.
    pub attachments: HashMap<i32, u32>,
    /// The attachments inherited by fork have been counted (by the parent's notice or by
    /// the child's hello, whichever came first).
    pub inherited_counted: bool,
    /// Notice rings of connections that closed while the process lives on: it may still
    /// append to them (a program that closed our socket keeps our mapping of its ring).
    pub orphan_rings: Vec<std::rc::Rc<crate::wire::ring::Ring>>,
}

/// The credentials of the process at the other end of a connected socket: uid, gid and pid
/// from SO_PEERCRED, supplementary groups from SO_PEERGROUPS, capabilities from /proc.
pub fn peer_creds(sock: RawFd) -> Result<Creds> {
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(sock, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred as *mut _ as *mut libc::c_void, &mut len)
    };
    if r != 0 {
        return Err(Errno::last());
    }
    let mut groups = vec![0u32; 256];
    let mut glen = (groups.len() * 4) as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(sock, libc::SOL_SOCKET, libc::SO_PEERGROUPS, groups.as_mut_ptr() as *mut libc::c_void, &mut glen)
    };
    if r == 0 {
        groups.truncate(glen as usize / 4);
    } else {
        groups.clear();
    }
    Ok(Creds { pid: cred.pid, uid: cred.uid, gid: cred.gid, groups, caps: effective_caps(cred.pid) })
}

/// The effective capability set of `pid` (the CapEff line of /proc/PID/status); none if
/// it cannot be read.
pub fn effective_caps(pid: i32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// How many mappings of each of `names` the process has now (/proc/PID/maps): the ground
/// truth for attachments after its connection closed, which happens at exec (the process
/// lost its mappings) and when a program closes all descriptors (it kept them).
pub fn count_mappings(pid: i32, names: &[(i32, String)]) -> Option<HashMap<i32, u32>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut counts = HashMap::new();
    for line in maps.lines() {
        for (id, name) in names {
            if line.ends_with(name.as_str()) || line.contains(&format!("{name} ")) {
                *counts.entry(*id).or_insert(0) += 1;
            }
        }
    }
    Some(counts)
}
