//! `ipcshim ls`: the namespace's objects, as util-linux `ipcs` shows the kernel's — same
//! sections, headers, columns and options — or as one JSON document.
//!
//! Like ipcs (which reads /proc/sysvipc), it lists every object of the namespace whatever
//! its permissions (through *_STAT_ANY, src/inspect.rs); only a semaphore set's values
//! (`-i ID -s`, `--json`) need read permission, as GETVAL does.

mod detail;
mod json;
mod table;

use crate::cli::{usage_error, use_socket, with_running_broker};
use ipcshim::inspect::{self, Queue, SemSet, Segment};
use ipcshim::ipc::limits::Limits;
use ipcshim::ipc::IPC_INFO;
use std::ffi::OsString;
use std::process::ExitCode;

const HELP: &str = "\
Usage:
 ipcshim ls [resource-option...] [output-option] [--json]
 ipcshim ls -m|-q|-s -i <id>

List the System V IPC objects of the namespace, as ipcs(1) lists the kernel's: the same
sections, columns and options. Never starts a broker: without one the namespace is empty.

Options:
 -i, --id <id>      print details on the object identified by <id> (with one of -m -q -s);
                    a semaphore set's values need read permission on it
     --json         print one JSON document instead: the selected families' objects with
                    every field (semaphore values where readable), limits and usage
     --socket PATH  the broker's socket (default: the namespace's)
 -h, --help         display this help

Resource options:
 -m, --shmems       shared memory segments
 -q, --queues       message queues
 -s, --semaphores   semaphore arrays
 -a, --all          all (default)

Output options:
 -t, --time         show attach, detach and change times
 -p, --pid          show PIDs of creator and last operator
 -c, --creator      show creator and owner
 -l, --limits       show resource limits
 -u, --summary      show status summary
 -b, --bytes        show sizes in bytes";

/// The output formats of ipcs: the last one given counts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Default,
    Time,
    Pid,
    Creator,
    Limits,
    Summary,
}

/// Which families to show (all when none was chosen).
#[derive(Clone, Copy)]
pub struct Families {
    pub msg: bool,
    pub shm: bool,
    pub sem: bool,
}

struct Options {
    families: Families,
    format: Format,
    bytes: bool,
    id: Option<i32>,
    json: bool,
}

/// Everything the listings show, read once.
pub struct Snapshot {
    pub queues: Vec<Queue>,
    pub segments: Vec<Segment>,
    pub sem_sets: Vec<SemSet>,
    pub limits: Limits,
    pub usage: Usage,
}

/// The *_INFO figures of `ipcs -u`.
#[derive(Default)]
pub struct Usage {
    pub queues: i32,
    pub messages: i32,
    pub message_bytes: i32,
    pub segments: i32,
    pub shm_pages: u64,
    pub shm_resident: u64,
    pub shm_swapped: u64,
    pub sem_sets: i32,
    pub semaphores: i32,
}

fn parse(args: Vec<OsString>) -> Result<Options, ExitCode> {
    use lexopt::prelude::*;
    let mut o = Options { families: Families { msg: false, shm: false, sem: false }, format: Format::Default, bytes: false, id: None, json: false };
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return Err(usage_error("ls", e)),
        };
        match arg {
            Short('q') | Long("queues") => o.families.msg = true,
            Short('m') | Long("shmems") => o.families.shm = true,
            Short('s') | Long("semaphores") => o.families.sem = true,
            Short('a') | Long("all") => o.families = Families { msg: true, shm: true, sem: true },
            Short('t') | Long("time") => o.format = Format::Time,
            Short('p') | Long("pid") => o.format = Format::Pid,
            Short('c') | Long("creator") => o.format = Format::Creator,
            Short('l') | Long("limits") => o.format = Format::Limits,
            Short('u') | Long("summary") => o.format = Format::Summary,
            Short('b') | Long("bytes") => o.bytes = true,
            Long("json") => o.json = true,
            Short('i') | Long("id") => {
                let value = parser.value().map_err(|e| usage_error("ls", e))?;
                let text = value.to_string_lossy().into_owned();
                o.id = Some(text.trim().parse().map_err(|_| usage_error("ls", format!("failed to parse id argument: '{text}'")))?);
            }
            Long("socket") => use_socket(parser.value().map_err(|e| usage_error("ls", e))?),
            Short('h') | Long("help") => {
                println!("{HELP}");
                return Err(ExitCode::SUCCESS);
            }
            arg => return Err(usage_error("ls", arg.unexpected())),
        }
    }
    let f = &mut o.families;
    if o.id.is_some() && (f.msg as u8 + f.shm as u8 + f.sem as u8) != 1 {
        return Err(usage_error("ls", "when using an ID, a single resource must be specified"));
    }
    if !(f.msg || f.shm || f.sem) {
        *f = Families { msg: true, shm: true, sem: true };
    }
    Ok(o)
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let o = match parse(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    with_running_broker(|live| show(&o, live))
}

fn show(o: &Options, live: Result<bool, String>) -> ExitCode {
    let live = match live {
        Ok(live) => live,
        Err(e) => {
            eprintln!("ipcshim ls: {e}");
            return ExitCode::from(1);
        }
    };
    let snap = snapshot(live);
    let out = match (o.id, o.json) {
        (Some(id), json) => match detail::show(&snap, o.families, id, json) {
            Ok(text) => text,
            Err(detail::Failure::NotFound) => {
                // ipcs warns and succeeds.
                eprintln!("ipcshim ls: id {id} not found");
                return ExitCode::SUCCESS;
            }
            Err(detail::Failure::Values(call, e)) => {
                eprintln!("ipcshim ls: {call} failed: {}", crate::text::strerror(e.0));
                return ExitCode::from(1);
            }
        },
        (None, true) => json::document(&snap, o.families, live),
        (None, false) => table::render(&snap, o.families, o.format, o.bytes),
    };
    print!("{out}");
    ExitCode::SUCCESS
}

/// Reads the namespace: its objects, limits and usage. Without a broker: no objects, and
/// the limits a new broker would start with.
fn snapshot(live: bool) -> Snapshot {
    if !live {
        return Snapshot { queues: vec![], segments: vec![], sem_sets: vec![], limits: Limits::from_machine(), usage: Usage::default() };
    }
    let mut limits = Limits::from_machine();
    if let Some((_, m)) = inspect::msg_info(IPC_INFO) {
        (limits.msgmni, limits.msgmax, limits.msgmnb) = (m.msgmni as u64, m.msgmax as u64, m.msgmnb as u64);
    }
    if let Some((_, s)) = inspect::sem_info(IPC_INFO) {
        (limits.semmni, limits.semmsl, limits.semmns, limits.semopm, limits.semvmx) =
            (s.semmni as u64, s.semmsl as u64, s.semmns as u64, s.semopm as u64, s.semvmx as u64);
    }
    if let Some((_, s)) = inspect::shm_limits() {
        (limits.shmmni, limits.shmmax, limits.shmall, limits.shmmin) = (s.shmmni, s.shmmax, s.shmall, s.shmmin);
    }
    let mut usage = Usage::default();
    if let Some((_, m)) = inspect::msg_info(ipcshim::msg::MSG_INFO) {
        (usage.queues, usage.messages, usage.message_bytes) = (m.msgpool, m.msgmap, m.msgtql);
    }
    if let Some((_, s)) = inspect::sem_info(ipcshim::sem::SEM_INFO) {
        (usage.sem_sets, usage.semaphores) = (s.semusz, s.semaem);
    }
    if let Some((_, s)) = inspect::shm_usage() {
        (usage.segments, usage.shm_pages, usage.shm_resident, usage.shm_swapped) = (s.used_ids, s.shm_tot, s.shm_rss, s.shm_swp);
    }
    Snapshot { queues: inspect::queues(), segments: inspect::segments(), sem_sets: inspect::sem_sets(), limits, usage }
}
