//! What the subcommands share: usage errors, and finding the namespace's broker.

use ipcshim::client::{self, namespace::socket_paths, spawn};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A mistake in the command line: one line saying what to do, exit status 2.
pub fn usage_error(cmd: &str, what: impl Describe) -> ExitCode {
    eprintln!("ipcshim {cmd}: {}; try 'ipcshim {cmd} --help'", what.describe());
    ExitCode::from(2)
}

/// What went wrong on the command line, in words.
pub trait Describe {
    fn describe(self) -> String;
}

impl Describe for &str {
    fn describe(self) -> String {
        self.to_string()
    }
}

impl Describe for String {
    fn describe(self) -> String {
        self
    }
}

/// Option errors in getopt's words, as util-linux's ipcs and ipcrm print them.
impl Describe for lexopt::Error {
    fn describe(self) -> String {
        use lexopt::Error::*;
        match self {
            MissingValue { option: Some(o) } if o.starts_with("--") => format!("option '{o}' requires an argument"),
            MissingValue { option: Some(o) } => format!("option requires an argument -- '{}'", o.trim_start_matches('-')),
            UnexpectedOption(o) if o.starts_with("--") => format!("unrecognized option '{o}'"),
            UnexpectedOption(o) => format!("invalid option -- '{}'", o.trim_start_matches('-')),
            UnexpectedArgument(a) => format!("unknown argument: {}", a.to_string_lossy()),
            UnexpectedValue { option, .. } => format!("option '{option}' doesn't allow an argument"),
            other => other.to_string(),
        }
    }
}

/// `--socket PATH` names the namespace for the rest of the command, the library included.
pub fn use_socket(path: OsString) {
    // Single-threaded here: the command has not started any thread yet.
    std::env::set_var("IPCSHIM_SOCKET", path);
}

/// The socket of the namespace's broker, as the library would pick it: the shared one if a
/// broker answers there, else the per-user one if one answers there, else the shared one.
pub fn namespace_socket() -> PathBuf {
    let (shared, personal) = socket_paths(unsafe { libc::geteuid() });
    let answers = |p: &PathBuf| crate::broker::ask(p, &[ipcshim::wire::Op::Status as i64]).is_ok();
    if !answers(&shared) && answers(&personal) {
        personal
    } else {
        shared
    }
}

/// The namespace's name, from its socket's file name.
pub fn namespace_name(socket: &Path) -> String {
    socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// For the views (`ls`, `rm`): runs `f` with the library never starting a broker, after
/// connecting it to the namespace's running one. `f` gets `Ok(false)` if none runs (the
/// namespace is empty), `Err` if one is there but cannot be used.
pub fn with_running_broker<T>(f: impl FnOnce(Result<bool, String>) -> T) -> T {
    spawn::without_starting(|| f(connect_to_running_broker()))
}

fn connect_to_running_broker() -> Result<bool, String> {
    match client::client().connect_now() {
        Ok(()) => Ok(true),
        Err(ipcshim::ipc::Errno(libc::ECONNREFUSED | libc::ENOENT)) => Ok(false),
        Err(e) => Err(format!("cannot use the namespace's broker: {}", crate::text::strerror(e.0))),
    }
}
