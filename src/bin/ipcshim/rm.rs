//! `ipcshim rm`: removes objects of the namespace by id or key, with ipcrm's options,
//! messages and exit status (util-linux sys-utils/ipcrm.c): each failure is reported and
//! counted, the others still done; exit status 1 if any failed.

use crate::cli::{usage_error, use_socket, with_running_broker, Describe};
use ipcshim::abi::{msg, sem, shm};
use ipcshim::inspect;
use ipcshim::ipc::{Errno, Family, IPC_RMID};
use std::ffi::OsString;
use std::process::ExitCode;

const HELP: &str = "\
Usage:
 ipcshim rm [options]
 ipcshim rm shm|msg|sem <id>...

Remove System V IPC objects of the namespace, as ipcrm(1) removes the kernel's. Never
starts a broker: without one the namespace is empty. Exit status 1 if any removal failed.

Options:
 -m, --shmem-id <id>        remove shared memory segment by id
 -M, --shmem-key <key>      remove shared memory segment by key
 -q, --queue-id <id>        remove message queue by id
 -Q, --queue-key <key>      remove message queue by key
 -s, --semaphore-id <id>    remove semaphore by id
 -S, --semaphore-key <key>  remove semaphore by key
 -a, --all[=shm|msg|sem]    remove all (in the specified category) that the caller may read
 -v, --verbose              explain what is being done
     --socket PATH          the broker's socket (default: the namespace's)
 -h, --help                 display this help

Keys are decimal, or hexadecimal with 0x, or octal with 0.";

enum Action {
    Id(Family, i32),
    /// A key as given (messages quote it) and its value.
    Key(Family, String, i32),
    /// An id of the old form that is not a number: reported in its turn.
    BadId(String),
    /// An id or key that cannot be read: ipcrm stops there, after the removals before it.
    Fatal(String),
}

struct Request {
    actions: Vec<Action>,
    /// `-a`: None for every family.
    all: Option<Option<Family>>,
    verbose: bool,
    /// The old form `rm shm|msg|sem ID...`: says "resource(s) deleted" on success.
    old_form: bool,
}

/// How a command ends early: a usage error (2) or an ipcrm-style fatal error (1).
enum Stop {
    Usage(String),
    Fatal(String),
    Help,
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let req = match parse(args) {
        Ok(r) => r,
        Err(Stop::Help) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(Stop::Usage(what)) => return usage_error("rm", what),
        Err(Stop::Fatal(what)) => return fatal(&what),
    };
    with_running_broker(|live| match live {
        Ok(live) => remove(&req, live),
        Err(e) => fatal(&e),
    })
}

fn remove(req: &Request, live: bool) -> ExitCode {
    let ns = Namespace { live, verbose: req.verbose };
    let mut failures = 0;
    for action in &req.actions {
        let r = match action {
            Action::Id(family, id) => ns.remove(*family, *id, false),
            Action::Key(family, text, key) => match ns.key_to_id(*family, text, *key) {
                Ok(Some(id)) => ns.remove(*family, id, true),
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            },
            Action::BadId(text) => {
                eprintln!("ipcshim rm: invalid id: {text}");
                Ok(false)
            }
            Action::Fatal(what) => Err(what.clone()),
        };
        match r {
            Ok(true) => {}
            Ok(false) => failures += 1,
            Err(e) => return fatal(&e),
        }
    }
    if let Some(which) = req.all {
        // ipcrm's order: segments, semaphore sets, queues.
        for family in [Family::Shm, Family::Sem, Family::Msg] {
            if which.is_some_and(|f| f != family) || !live {
                continue;
            }
            for id in inspect::readable_ids(family) {
                match ns.remove(family, id, false) {
                    Ok(true) => {}
                    Ok(false) => failures += 1,
                    Err(e) => return fatal(&e),
                }
            }
        }
    }
    if failures > 0 {
        return ExitCode::from(1);
    }
    if req.old_form {
        println!("resource(s) deleted");
    }
    ExitCode::SUCCESS
}

fn fatal(what: &str) -> ExitCode {
    eprintln!("ipcshim rm: {what}");
    ExitCode::from(1)
}

fn family_option(c: char) -> Option<(Family, bool)> {
    Some(match c {
        'm' => (Family::Shm, false),
        'M' => (Family::Shm, true),
        'q' => (Family::Msg, false),
        'Q' => (Family::Msg, true),
        's' => (Family::Sem, false),
        'S' => (Family::Sem, true),
        _ => return None,
    })
}

fn parse(args: Vec<OsString>) -> Result<Request, Stop> {
    use lexopt::prelude::*;
    let mut req = Request { actions: vec![], all: None, verbose: false, old_form: false };
    if args.is_empty() {
        return Err(Stop::Usage("bad usage".into()));
    }
    if let Some(family) = args[0].to_str().and_then(family_named) {
        return old_form(family, &args[1..]);
    }
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| Stop::Usage(e.describe()))? {
        let (c, long) = match &arg {
            Short(c) => (*c, None),
            Long(l) => (' ', Some(*l)),
            Value(v) => return Err(Stop::Usage(format!("unknown argument: {}", v.to_string_lossy()))),
        };
        let option = match long {
            Some("shmem-id") => Some((Family::Shm, false)),
            Some("shmem-key") => Some((Family::Shm, true)),
            Some("queue-id") => Some((Family::Msg, false)),
            Some("queue-key") => Some((Family::Msg, true)),
            Some("semaphore-id") => Some((Family::Sem, false)),
            Some("semaphore-key") => Some((Family::Sem, true)),
            Some(_) => None,
            None => family_option(c),
        };
        if let Some((family, by_key)) = option {
            let value = parser.value().map_err(|e| Stop::Usage(e.describe()))?.to_string_lossy().into_owned();
            let action = if by_key { parse_key(&value).map(|key| Action::Key(family, value, key)) } else { parse_id(&value).map(|id| Action::Id(family, id)) };
            req.actions.push(action.unwrap_or_else(Action::Fatal));
            continue;
        }
        match arg {
            Short('a') | Long("all") => {
                req.all = Some(match parser.optional_value() {
                    None => None,
                    Some(v) => match v.to_str().and_then(family_named) {
                        Some(f) => Some(f),
                        None => return Err(Stop::Fatal(format!("unknown argument: {}", v.to_string_lossy()))),
                    },
                });
            }
            Short('v') | Long("verbose") => req.verbose = true,
            Long("socket") => use_socket(parser.value().map_err(|e| Stop::Usage(e.describe()))?),
            Short('h') | Long("help") => return Err(Stop::Help),
            arg => return Err(Stop::Usage(arg.unexpected().describe())),
        }
    }
    Ok(req)
}

/// `rm shm|msg|sem ID...`: ids as strtoul reads them; a bad one is reported and counted,
/// the good ones still removed.
fn old_form(family: Family, ids: &[OsString]) -> Result<Request, Stop> {
    if ids.is_empty() {
        return Err(Stop::Usage("not enough arguments".into()));
    }
    let mut req = Request { actions: vec![], all: None, verbose: false, old_form: true };
    for raw in ids {
        let text = raw.to_string_lossy();
        match strtoul(&text, 10) {
            // C's int conversion of the unsigned long: "-5" is -5.
            Ok(v) => req.actions.push(Action::Id(family, v as i32)),
            Err(_) => req.actions.push(Action::BadId(text.into_owned())),
        }
    }
    Ok(req)
}

fn family_named(word: &str) -> Option<Family> {
    Family::ALL.into_iter().find(|f| f.name() == word)
}

/// An id as ipcrm's strtos32_or_err reads it.
fn parse_id(text: &str) -> Result<i32, String> {
    let out_of_range = || format!("failed to parse argument: '{text}': {}", crate::text::strerror(libc::ERANGE));
    match text.trim_start().parse::<i64>() {
        Ok(v) => i32::try_from(v).map_err(|_| out_of_range()),
        Err(e) if matches!(e.kind(), std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow) => Err(out_of_range()),
        Err(_) => Err(format!("failed to parse argument: '{text}'")),
    }
}

/// A key as ipcrm reads it: strtoul in base 0 (decimal, 0x hexadecimal, 0 octal),
/// converted to key_t.
fn parse_key(text: &str) -> Result<i32, String> {
    match strtoul(text, 0) {
        Ok(v) => Ok(v as i32),
        Err(Some(e)) => Err(format!("failed to parse argument: '{text}': {}", crate::text::strerror(e))),
        Err(None) => Err(format!("failed to parse argument: '{text}'")),
    }
}

/// C's strtoul over the whole string: leading blanks, a sign (a minus negates, modulo
/// 2^64), the base's prefix when `base` is 0 or 16. `Err(Some(ERANGE))` on overflow,
/// `Err(None)` if the text is not a number.
fn strtoul(text: &str, base: u32) -> Result<u64, Option<i32>> {
    let mut t = text.trim_start();
    let negative = t.starts_with('-');
    t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (radix, digits) = match base {
        0 | 16 if (t.starts_with("0x") || t.starts_with("0X")) && t.len() > 2 => (16, &t[2..]),
        0 if t.starts_with('0') && t.len() > 1 => (8, &t[1..]),
        0 => (10, t),
        b => (b, t),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(None);
    }
    let v = u64::from_str_radix(digits, radix).map_err(|_| Some(libc::ERANGE))?;
    Ok(if negative { v.wrapping_neg() } else { v })
}

/// The namespace the removals act on; without a broker it is empty.
struct Namespace {
    live: bool,
    verbose: bool,
}

impl Namespace {
    /// IPC_RMID on `id`. Ok(false): a failure reported (ipcrm's warning); Err: a fatal
    /// error. `by_key` only changes the wording, as ipcrm's does.
    fn remove(&self, family: Family, id: i32, by_key: bool) -> Result<bool, String> {
        if self.verbose {
            let what = match family {
                Family::Shm => "shared memory segment",
                Family::Msg => "message queue",
                Family::Sem => "semaphore",
            };
            println!("removing {what} id `{id}'");
        }
        let r = if !self.live {
            Err(Errno(libc::EINVAL))
        } else {
            let r = unsafe {
                match family {
                    Family::Shm => shm::shmctl(id, IPC_RMID, std::ptr::null_mut()),
                    Family::Msg => msg::msgctl(id, IPC_RMID, std::ptr::null_mut()),
                    Family::Sem => sem::semctl(id, 0, IPC_RMID, 0),
                }
            };
            if r < 0 {
                Err(Errno::last())
            } else {
                Ok(())
            }
        };
        let what = if by_key { "key" } else { "id" };
        let message = match r {
            Ok(()) => return Ok(true),
            Err(Errno(libc::EACCES | libc::EPERM)) => format!("permission denied for {what}"),
            Err(Errno(libc::EINVAL)) => format!("invalid {what}"),
            Err(Errno(libc::EIDRM)) => format!("already removed {what}"),
            Err(e) => return Err(format!("{what} failed: {}", crate::text::strerror(e.0))),
        };
        eprintln!("ipcshim rm: {message} ({id})");
        Ok(false)
    }

    /// The id of the object with `key` (`*get(key, 0, 0)`). Ok(None): a failure reported.
    fn key_to_id(&self, family: Family, text: &str, key: i32) -> Result<Option<i32>, String> {
        if key == ipcshim::ipc::IPC_PRIVATE {
            eprintln!("ipcshim rm: illegal key ({text})");
            return Ok(None);
        }
        let id = if !self.live {
            Err(Errno(libc::ENOENT))
        } else {
            let id = match family {
                Family::Shm => shm::shmget(key, 0, 0),
                Family::Msg => msg::msgget(key, 0),
                Family::Sem => sem::semget(key, 0, 0),
            };
            if id < 0 {
                Err(Errno::last())
            } else {
                Ok(id)
            }
        };
        let message = match id {
            Ok(id) => return Ok(Some(id)),
            Err(Errno(libc::EACCES)) => "permission denied for key",
            Err(Errno(libc::EIDRM)) => "already removed key",
            Err(Errno(libc::ENOENT)) => "invalid key",
            Err(e) => return Err(format!("key failed: {}", crate::text::strerror(e.0))),
        };
        eprintln!("ipcshim rm: {message} ({text})");
        Ok(None)
    }
}
