//! The listings of `ipcs`, column for column (util-linux sys-utils/ipcs.c): sections for
//! message queues, shared memory and semaphore arrays, in that order, each followed by an
//! empty line, after one leading empty line.

use super::{Families, Format, Snapshot};
use crate::text::{cut, group, time_or_not_set, user, user_name};
use ipcshim::shm::{SHM_DEST, SHM_LOCKED};
use std::fmt::Write;

pub fn render(snap: &Snapshot, families: Families, format: Format, bytes: bool) -> String {
    let mut out = String::from("\n");
    if families.msg {
        queues(&mut out, snap, format, bytes);
        out.push('\n');
    }
    if families.shm {
        segments(&mut out, snap, format, bytes);
        out.push('\n');
    }
    if families.sem {
        sem_sets(&mut out, snap, format);
        out.push('\n');
    }
    out
}

/// "id owner" as the listings start a line: the owner's name cut to 10 characters, or the
/// uid. `id_width` is 8 or 10, as ipcs has it per listing.
fn id_owner(out: &mut String, id: i32, uid: u32, id_width: usize) {
    let _ = match user_name(uid) {
        Some(name) => write!(out, "{id:<id_width$} {:<10}", cut(&name, 10)),
        None => write!(out, "{id:<id_width$} {uid:<10}"),
    };
}

/// A line of the creator listing: id, perms, cuid, cgid, uid, gid (names uncut).
fn creator_line(out: &mut String, id: i32, p: &libc::ipc_perm) {
    let _ = writeln!(
        out,
        "{id:<10} {:<10o} {:<10} {:<10} {:<10} {:<10}",
        p.mode & 0o777,
        user(p.cuid),
        group(p.cgid),
        user(p.uid),
        group(p.gid)
    );
}

/// A time in the msg/shm time listings: month, day and clock ("%-20.16s" of ctime + 4).
fn short_time(t: i64) -> String {
    let full = time_or_not_set(t);
    let shown = if t == 0 { full.as_str() } else { cut(&full[4..], 16) };
    format!("{shown:<20}")
}

fn key(k: i32) -> String {
    format!("0x{:08x}", k as u32)
}

fn queues(out: &mut String, snap: &Snapshot, format: Format, bytes: bool) {
    let l = &snap.limits;
    let u = &snap.usage;
    match format {
        Format::Limits => {
            let _ = write!(
                out,
                "------ Messages Limits --------\nmax queues system wide = {}\nmax size of message (bytes) = {}\ndefault max size of queue (bytes) = {}\n",
                l.msgmni as i32, l.msgmax, l.msgmnb as i32
            );
            return;
        }
        Format::Summary => {
            let space = if bytes { format!("used space (bytes) = {}\n", u.message_bytes) } else { format!("used space = {} bytes\n", u.message_bytes) };
            let _ = write!(out, "------ Messages Status --------\nallocated queues = {}\nused headers = {}\n{space}", u.queues, u.messages);
            return;
        }
        Format::Creator => out.push_str("------ Message Queues Creators/Owners --------\nmsqid      perms      cuid       cgid       uid        gid       \n"),
        Format::Time => out.push_str("------ Message Queues Send/Recv/Change Times --------\nmsqid    owner      send                 recv                 change              \n"),
        Format::Pid => out.push_str("------ Message Queues PIDs --------\nmsqid      owner      lspid      lrpid     \n"),
        Format::Default => out.push_str("------ Message Queues --------\nkey        msqid      owner      perms      used-bytes   messages    \n"),
    }
    for q in &snap.queues {
        let (p, ds) = (&q.ds.msg_perm, &q.ds);
        match format {
            Format::Creator => creator_line(out, q.id, p),
            Format::Time => {
                id_owner(out, q.id, p.uid, 8);
                let _ = writeln!(out, " {} {} {}", short_time(ds.msg_stime), short_time(ds.msg_rtime), short_time(ds.msg_ctime));
            }
            Format::Pid => {
                id_owner(out, q.id, p.uid, 8);
                let _ = writeln!(out, "  {:5}     {:5}", ds.msg_lspid, ds.msg_lrpid);
            }
            _ => {
                let _ = write!(out, "{} ", key(p.__key));
                id_owner(out, q.id, p.uid, 10);
                let _ = writeln!(out, " {:<10o} {:<12} {:<12}", p.mode & 0o777, ds.__msg_cbytes, ds.msg_qnum);
            }
        }
    }
}

fn segments(out: &mut String, snap: &Snapshot, format: Format, bytes: bool) {
    let l = &snap.limits;
    let u = &snap.usage;
    match format {
        Format::Limits => {
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
            let _ = writeln!(out, "------ Shared Memory Limits --------\nmax number of segments = {}", l.shmmni);
            // The total is SHMALL pages; ipcs saturates it (to a multiple of the unit) on overflow.
            let unit = if bytes { page } else { page / 1024 };
            let total = l.shmall.checked_mul(unit).unwrap_or(u64::MAX - u64::MAX % unit);
            if bytes {
                let _ = writeln!(out, "max seg size (bytes) = {}\nmax total shared memory (bytes) = {total}", l.shmmax);
            } else {
                let _ = writeln!(out, "max seg size (kbytes) = {}\nmax total shared memory (kbytes) = {total}", l.shmmax / 1024);
            }
            let _ = writeln!(out, "min seg size (bytes) = {}", l.shmmin);
            return;
        }
        Format::Summary => {
            let _ = write!(
                out,
                "------ Shared Memory Status --------\nsegments allocated {}\npages allocated {}\npages resident  {}\npages swapped   {}\nSwap performance: 0 attempts\t 0 successes\n",
                u.segments, u.shm_pages, u.shm_resident, u.shm_swapped
            );
            return;
        }
        Format::Creator => out.push_str("------ Shared Memory Segment Creators/Owners --------\nshmid      perms      cuid       cgid       uid        gid       \n"),
        Format::Time => out.push_str("------ Shared Memory Attach/Detach/Change Times --------\nshmid      owner      attached             detached             changed             \n"),
        Format::Pid => out.push_str("------ Shared Memory Creator/Last-op PIDs --------\nshmid      owner      cpid       lpid      \n"),
        Format::Default => out.push_str("------ Shared Memory Segments --------\nkey        shmid      owner      perms      bytes      nattch     status      \n"),
    }
    for s in &snap.segments {
        let (p, ds) = (&s.ds.shm_perm, &s.ds);
        match format {
            Format::Creator => creator_line(out, s.id, p),
            Format::Time => {
                id_owner(out, s.id, p.uid, 10);
                let _ = writeln!(out, " {} {} {}", short_time(ds.shm_atime), short_time(ds.shm_dtime), short_time(ds.shm_ctime));
            }
            Format::Pid => {
                id_owner(out, s.id, p.uid, 10);
                let _ = writeln!(out, " {:<10} {:<10}", ds.shm_cpid, ds.shm_lpid);
            }
            _ => {
                let _ = write!(out, "{} ", key(p.__key));
                id_owner(out, s.id, p.uid, 10);
                let dest = if p.mode as u32 & SHM_DEST != 0 { "dest" } else { " " };
                let locked = if p.mode as u32 & SHM_LOCKED != 0 { "locked" } else { " " };
                let _ = writeln!(out, " {:<10o} {:<10} {:<10} {dest:<6} {locked:<6}", p.mode & 0o777, ds.shm_segsz, ds.shm_nattch);
            }
        }
    }
}

fn sem_sets(out: &mut String, snap: &Snapshot, format: Format) {
    let l = &snap.limits;
    let u = &snap.usage;
    match format {
        Format::Limits => {
            let _ = write!(
                out,
                "------ Semaphore Limits --------\nmax number of arrays = {}\nmax semaphores per array = {}\nmax semaphores system wide = {}\nmax ops per semop call = {}\nsemaphore max value = {}\n",
                l.semmni as i32, l.semmsl as i32, l.semmns as i32, l.semopm as i32, l.semvmx as u32
            );
            return;
        }
        Format::Summary => {
            let _ = write!(out, "------ Semaphore Status --------\nused arrays = {}\nallocated semaphores = {}\n", u.sem_sets, u.semaphores);
            return;
        }
        // ipcs has no PID listing for semaphores: not even a header.
        Format::Pid => return,
        Format::Creator => out.push_str("------ Semaphore Arrays Creators/Owners --------\nsemid      perms      cuid       cgid       uid        gid       \n"),
        Format::Time => out.push_str("------ Semaphore Operation/Change Times --------\nsemid    owner      last-op                    last-changed              \n"),
        Format::Default => out.push_str("------ Semaphore Arrays --------\nkey        semid      owner      perms      nsems     \n"),
    }
    for s in &snap.sem_sets {
        let (p, ds) = (&s.ds.sem_perm, &s.ds);
        match format {
            Format::Creator => creator_line(out, s.id, p),
            Format::Time => {
                id_owner(out, s.id, p.uid, 8);
                let _ = writeln!(out, "  {:<26} {:<26}", time_or_not_set(ds.sem_otime), time_or_not_set(ds.sem_ctime));
            }
            _ => {
                let _ = write!(out, "{} ", key(p.__key));
                id_owner(out, s.id, p.uid, 10);
                let _ = writeln!(out, " {:<10o} {:<10}", p.mode & 0o777, ds.sem_nsems);
            }
        }
    }
}
