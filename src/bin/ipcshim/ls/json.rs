//! `ipcshim ls --json`: one JSON document with every field of the selected families'
//! objects (times in seconds since the epoch, 0 when not set), the namespace's limits and
//! usage. Semaphore values are included where the caller may read them (else null).

use super::{Families, Snapshot};
use crate::text::{json_string, user};
use ipcshim::inspect::{self, Queue, SemSet, Segment, Semaphore};
use ipcshim::shm::{SHM_DEST, SHM_LOCKED};

/// The fields every object has: key, id, owner and permissions.
fn perm_fields(id_name: &str, id: i32, p: &libc::ipc_perm) -> String {
    format!(
        "\"key\":{},\"{id_name}\":{id},\"owner\":{},\"uid\":{},\"gid\":{},\"cuid\":{},\"cgid\":{},\"mode\":{},\"perms\":\"{:o}\"",
        p.__key,
        json_string(&user(p.uid)),
        p.uid,
        p.gid,
        p.cuid,
        p.cgid,
        p.mode,
        p.mode & 0o777
    )
}

pub fn queue(q: &Queue) -> String {
    let ds = &q.ds;
    format!(
        "{{{},\"used_bytes\":{},\"messages\":{},\"qbytes\":{},\"lspid\":{},\"lrpid\":{},\"stime\":{},\"rtime\":{},\"ctime\":{}}}",
        perm_fields("msqid", q.id, &ds.msg_perm),
        ds.__msg_cbytes,
        ds.msg_qnum,
        ds.msg_qbytes,
        ds.msg_lspid,
        ds.msg_lrpid,
        ds.msg_stime,
        ds.msg_rtime,
        ds.msg_ctime
    )
}

pub fn segment(s: &Segment) -> String {
    let ds = &s.ds;
    let mode = ds.shm_perm.mode as u32;
    format!(
        "{{{},\"bytes\":{},\"nattch\":{},\"cpid\":{},\"lpid\":{},\"atime\":{},\"dtime\":{},\"ctime\":{},\"dest\":{},\"locked\":{}}}",
        perm_fields("shmid", s.id, &ds.shm_perm),
        ds.shm_segsz,
        ds.shm_nattch,
        ds.shm_cpid,
        ds.shm_lpid,
        ds.shm_atime,
        ds.shm_dtime,
        ds.shm_ctime,
        mode & SHM_DEST != 0,
        mode & SHM_LOCKED != 0
    )
}

pub fn sem_set(s: &SemSet, sems: Option<&[Semaphore]>) -> String {
    let ds = &s.ds;
    let values = match sems {
        Some(sems) => {
            let each: Vec<String> =
                sems.iter().map(|v| format!("{{\"value\":{},\"ncount\":{},\"zcount\":{},\"pid\":{}}}", v.value, v.ncount, v.zcount, v.pid)).collect();
            format!("[{}]", each.join(","))
        }
        None => "null".into(),
    };
    format!(
        "{{{},\"nsems\":{},\"otime\":{},\"ctime\":{},\"semaphores\":{values}}}",
        perm_fields("semid", s.id, &ds.sem_perm),
        ds.sem_nsems,
        ds.sem_otime,
        ds.sem_ctime
    )
}

pub fn document(snap: &Snapshot, families: Families, live: bool) -> String {
    let namespace = match std::env::var_os("IPCSHIM_SOCKET") {
        Some(p) => crate::cli::namespace_name(std::path::Path::new(&p)),
        None => ipcshim::client::namespace::name(),
    };
    let l = &snap.limits;
    let u = &snap.usage;
    let mut parts = vec![
        format!("\"namespace\":{}", json_string(&namespace)),
        format!("\"broker_running\":{live}"),
        format!(
            "\"limits\":{{\"msgmni\":{},\"msgmax\":{},\"msgmnb\":{},\"shmmni\":{},\"shmmax\":{},\"shmall\":{},\"shmmin\":{},\
             \"semmni\":{},\"semmsl\":{},\"semmns\":{},\"semopm\":{},\"semvmx\":{}}}",
            l.msgmni, l.msgmax, l.msgmnb, l.shmmni, l.shmmax, l.shmall, l.shmmin, l.semmni, l.semmsl, l.semmns, l.semopm, l.semvmx
        ),
        format!(
            "\"summary\":{{\"queues\":{},\"messages\":{},\"message_bytes\":{},\"segments\":{},\"shm_pages\":{},\"shm_resident_pages\":{},\
             \"shm_swapped_pages\":{},\"semaphore_arrays\":{},\"semaphores\":{}}}",
            u.queues, u.messages, u.message_bytes, u.segments, u.shm_pages, u.shm_resident, u.shm_swapped, u.sem_sets, u.semaphores
        ),
    ];
    if families.msg {
        let items: Vec<String> = snap.queues.iter().map(queue).collect();
        parts.push(format!("\"message_queues\":[{}]", items.join(",")));
    }
    if families.shm {
        let items: Vec<String> = snap.segments.iter().map(segment).collect();
        parts.push(format!("\"shared_memory\":[{}]", items.join(",")));
    }
    if families.sem {
        let items: Vec<String> =
            snap.sem_sets.iter().map(|s| sem_set(s, inspect::semaphores(s.id, s.ds.sem_nsems as usize).ok().as_deref())).collect();
        parts.push(format!("\"semaphore_arrays\":[{}]", items.join(",")));
    }
    format!("{{{}}}\n", parts.join(","))
}
