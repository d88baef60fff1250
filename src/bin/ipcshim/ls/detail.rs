//! `ipcshim ls -i ID -q|-m|-s`: one object in detail, as `ipcs -i` prints it.

use super::{json, Families, Snapshot};
use crate::text::time_or_not_set;
use ipcshim::inspect;
use ipcshim::ipc::Errno;
use std::fmt::Write;

pub enum Failure {
    /// No object of the family has this id (ipcs warns and exits successfully).
    NotFound,
    /// A semaphore set's values could not be read: the call and its errno.
    Values(&'static str, Errno),
}

/// `%#o`: octal with a leading 0, except for 0 itself.
fn alt_octal(v: u16) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("0{v:o}")
    }
}

pub fn show(snap: &Snapshot, families: Families, id: i32, as_json: bool) -> Result<String, Failure> {
    let mut out = String::new();
    if families.msg {
        let q = snap.queues.iter().find(|q| q.id == id).ok_or(Failure::NotFound)?;
        if as_json {
            return Ok(json::queue(q) + "\n");
        }
        let (p, ds) = (&q.ds.msg_perm, &q.ds);
        // ipcs takes qbytes from IPC_STAT, which needs read permission: 0 without it.
        let mut stat: libc::msqid_ds = unsafe { std::mem::zeroed() };
        let readable = unsafe { ipcshim::abi::msg::msgctl(id, ipcshim::ipc::IPC_STAT, &mut stat) } >= 0;
        let qbytes = if readable { ds.msg_qbytes } else { 0 };
        let _ = write!(
            out,
            "\nMessage Queue msqid={id}\nuid={}\tgid={}\tcuid={}\tcgid={}\tmode={}\n\
             cbytes={}\tqbytes={}\tqnum={}\tlspid={}\tlrpid={}\n\
             send_time={:<26}\nrcv_time={:<26}\nchange_time={:<26}\n\n",
            p.uid,
            p.gid,
            p.cuid,
            p.cgid,
            alt_octal(p.mode),
            ds.__msg_cbytes,
            qbytes,
            ds.msg_qnum,
            ds.msg_lspid,
            ds.msg_lrpid,
            time_or_not_set(ds.msg_stime),
            time_or_not_set(ds.msg_rtime),
            time_or_not_set(ds.msg_ctime)
        );
    } else if families.shm {
        let s = snap.segments.iter().find(|s| s.id == id).ok_or(Failure::NotFound)?;
        if as_json {
            return Ok(json::segment(s) + "\n");
        }
        let (p, ds) = (&s.ds.shm_perm, &s.ds);
        let _ = write!(
            out,
            "\nShared memory Segment shmid={id}\nuid={}\tgid={}\tcuid={}\tcgid={}\nmode={}\taccess_perms={}\n\
             bytes={}\tlpid={}\tcpid={}\tnattch={}\n\
             att_time={:<26}\ndet_time={:<26}\nchange_time={:<26}\n\n",
            p.uid,
            p.gid,
            p.cuid,
            p.cgid,
            alt_octal(p.mode),
            alt_octal(p.mode & 0o777),
            ds.shm_segsz,
            ds.shm_lpid,
            ds.shm_cpid,
            ds.shm_nattch,
            time_or_not_set(ds.shm_atime),
            time_or_not_set(ds.shm_dtime),
            crate::text::ctime(ds.shm_ctime)
        );
    } else {
        let s = snap.sem_sets.iter().find(|s| s.id == id).ok_or(Failure::NotFound)?;
        let sems = inspect::semaphores(id, s.ds.sem_nsems as usize).map_err(|(call, e)| Failure::Values(call, e))?;
        if as_json {
            return Ok(json::sem_set(s, Some(&sems)) + "\n");
        }
        let (p, ds) = (&s.ds.sem_perm, &s.ds);
        let _ = write!(
            out,
            "\nSemaphore Array semid={id}\nuid={}\t gid={}\t cuid={}\t cgid={}\nmode={}, access_perms={}\n\
             nsems = {}\notime = {:<26}\nctime = {:<26}\n{:<10} {:<10} {:<10} {:<10} {:<10}\n",
            p.uid,
            p.gid,
            p.cuid,
            p.cgid,
            alt_octal(p.mode),
            alt_octal(p.mode & 0o777),
            ds.sem_nsems,
            time_or_not_set(ds.sem_otime),
            crate::text::ctime(ds.sem_ctime),
            "semnum",
            "value",
            "ncount",
            "zcount",
            "pid"
        );
        for (n, sem) in sems.iter().enumerate() {
            let _ = writeln!(out, "{n:<10} {:<10} {:<10} {:<10} {:<10}", sem.value, sem.ncount, sem.zcount, sem.pid);
        }
        out.push('\n');
    }
    Ok(out)
}
