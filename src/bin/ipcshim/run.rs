//! `ipcshim run`: a program under the library, in a chosen or private namespace.

use crate::broker::ask;
use crate::cli::usage_error;
use ipcshim::client::namespace::socket_paths;
use ipcshim::wire::Op;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const HELP: &str = "\
Usage:
 ipcshim run [--private | --namespace NAME] [--] CMD [ARG...]

Run CMD with libipcshim.so preloaded (found next to this command, in ../lib, or at
IPCSHIM_LIB). CMD and every program it starts use ipcshim's System V IPC instead of the
kernel's. The exit status is CMD's (128+N if it was killed by signal N, 127 if it cannot
be run).

Options:
 -p, --private         a fresh namespace of its own, removed with its objects once CMD and
                       every process that used it have exited
 -n, --namespace NAME  the namespace NAME (kept until 'ipcshim stop'); default: the
                       inherited IPCSHIM_NAMESPACE or IPCSHIM_SOCKET, else \"default\"
 -h, --help            display this help";

pub fn main(args: Vec<OsString>) -> ExitCode {
    use lexopt::prelude::*;
    let mut namespace: Option<String> = None;
    let mut private = false;
    let mut command: Vec<OsString> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        match parser.next() {
            Ok(None) => break,
            Ok(Some(Short('p') | Long("private"))) => private = true,
            Ok(Some(Short('n') | Long("namespace"))) => match parser.value().map(|v| v.string()) {
                Ok(Ok(name)) => namespace = Some(name),
                Ok(Err(e)) | Err(e) => return usage_error("run", e),
            },
            Ok(Some(Short('h') | Long("help"))) => {
                println!("{HELP}");
                return ExitCode::SUCCESS;
            }
            Ok(Some(Value(cmd))) => {
                // The first word that is not an option is CMD; the rest are its arguments.
                command.push(cmd);
                command.extend(parser.raw_args().map(|r| r.collect::<Vec<_>>()).unwrap_or_default());
                break;
            }
            Ok(Some(arg)) => return usage_error("run", arg.unexpected()),
            Err(e) => return usage_error("run", e),
        }
    }
    if command.is_empty() {
        return usage_error("run", "no command given");
    }
    run(namespace, private, &command)
}

/// The library the command preloads: IPCSHIM_LIB, else next to this binary or in ../lib.
fn library_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IPCSHIM_LIB") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("libipcshim.so"), dir.join("../lib/libipcshim.so")].into_iter().find(|p| p.is_file())
}

fn run(mut namespace: Option<String>, private: bool, command: &[OsString]) -> ExitCode {
    let Some(lib) = library_path() else {
        eprintln!("ipcshim run: cannot find libipcshim.so next to this command; set IPCSHIM_LIB");
        return ExitCode::from(1);
    };
    if private {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        namespace = Some(format!("private-{}-{nanos}", std::process::id()));
    }
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", lib.display()),
        _ => lib.display().to_string(),
    };
    let mut child = std::process::Command::new(&command[0]);
    child.args(&command[1..]).env("LD_PRELOAD", preload);
    if let Ok(me) = std::env::current_exe() {
        child.env("IPCSHIM_BROKER", me);
    }
    if let Some(ns) = &namespace {
        child.env("IPCSHIM_NAMESPACE", ns).env_remove("IPCSHIM_SOCKET");
    }
    let status = match child.status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ipcshim run: cannot run {}: {e}", command[0].to_string_lossy());
            return ExitCode::from(127);
        }
    };
    if private {
        std::env::set_var("IPCSHIM_NAMESPACE", namespace.as_deref().unwrap_or_default());
        std::env::remove_var("IPCSHIM_SOCKET");
        tear_down(&socket_paths(unsafe { libc::geteuid() }).0);
    }
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig) as u8),
        _ => ExitCode::from(1),
    }
}

/// Stops a private namespace's broker once no process uses it any more, and removes its
/// files. Processes that outlive the command (daemons) keep it alive until they exit.
fn tear_down(socket: &Path) {
    loop {
        match ask(socket, &[Op::Status as i64]) {
            // The status request's own connection counts as one process: ours.
            Ok(w) if w.len() >= 5 && w[3] <= 1 => break,
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    if ask(socket, &[Op::Stop as i64, 1]).is_ok() {
        // The broker unlinks its socket as it exits, just after answering: wait for that
        // (bounded), so that nothing of the namespace is left when the command returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while socket.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let _ = std::fs::remove_file(format!("{}.lock", socket.display()));
}
