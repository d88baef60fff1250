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
                       every process it started have exited (like a kernel IPC namespace);
                       returns when CMD ends, leaving a reaper for background jobs
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
    if private {
        std::env::set_var("IPCSHIM_NAMESPACE", namespace.as_deref().unwrap_or_default());
        std::env::remove_var("IPCSHIM_SOCKET");
        return run_private(child);
    }
    match child.status() {
        Ok(status) => exit_code(status),
        Err(e) => cannot_run(&command[0], e),
    }
}

fn cannot_run(command: &OsString, e: std::io::Error) -> ExitCode {
    eprintln!("ipcshim run: cannot run {}: {e}", command.to_string_lossy());
    ExitCode::from(127)
}

/// CMD's status as ours: its code, or 128+N if it was killed by signal N.
fn status_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => (128 + sig) as u8,
        _ => 1,
    }
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    ExitCode::from(status_code(status))
}

/// The signals a terminal sends a whole process group: CMD takes them; the reaper and this
/// command must outlive them to report CMD's status and tear the namespace down.
const GROUP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP];

fn set_group_signals(action: libc::sighandler_t) {
    for sig in GROUP_SIGNALS {
        unsafe { libc::signal(sig, action) };
    }
}

/// A private namespace lives as long as the processes started in it, as a kernel IPC
/// namespace does. A reaper process, the subreaper of CMD's tree, runs CMD and
/// reports its status; descendants that outlive CMD (daemons, background jobs — whether
/// they have used the namespace yet or not) are reparented to the reaper instead of init,
/// and the reaper tears the namespace down after the last has exited. This command exits
/// with CMD's status as soon as CMD has ended and the namespace is gone, or, if
/// descendants remain, at once, leaving the reaper to finish.
fn run_private(mut child: std::process::Command) -> ExitCode {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("ipcshim run: pipe: {}", std::io::Error::last_os_error());
        return ExitCode::from(1);
    }
    let (mut from_reaper, mut to_parent) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
    set_group_signals(libc::SIG_IGN);
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("ipcshim run: fork: {}", std::io::Error::last_os_error());
            ExitCode::from(1)
        }
        0 => {
            drop(from_reaper);
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            unsafe {
                child.pre_exec(|| {
                    set_group_signals(libc::SIG_DFL);
                    Ok(())
                });
            }
            let code = match child.status() {
                Ok(status) => status_code(status),
                Err(e) => {
                    let _ = cannot_run(&child.get_program().to_os_string(), e);
                    127
                }
            };
            let socket = socket_paths(unsafe { libc::geteuid() }).0;
            let alone = reap_descendants(&socket, false);
            if alone {
                tear_down(&socket);
            }
            let _ = to_parent.write_all(&[code, alone as u8]);
            drop(to_parent);
            if !alone {
                // Hold nothing of the caller's (a pipe it reads to the end, a directory).
                unsafe {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                    for fd in 0..3 {
                        libc::dup2(null, fd);
                    }
                    libc::chdir(c"/".as_ptr());
                }
                reap_descendants(&socket, true);
                tear_down(&socket);
            }
            unsafe { libc::_exit(0) }
        }
        reaper => {
            drop(to_parent);
            let mut report = [0u8; 2];
            if from_reaper.read_exact(&mut report).is_err() {
                eprintln!("ipcshim run: the namespace's reaper (pid {reaper}) died; the namespace may be left behind");
                return ExitCode::from(1);
            }
            if report[1] == 1 {
                unsafe { libc::waitpid(reaper, std::ptr::null_mut(), 0) };
            }
            ExitCode::from(report[0])
        }
    }
}

/// Reaps the reaper's descendants as they end: those already gone, or (`wait`) all of
/// them. True when none is left but the namespace's broker (a client started it, and
/// being a daemon it was reparented to us).
fn reap_descendants(socket: &Path, wait: bool) -> bool {
    loop {
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        let broker = ask(socket, &[Op::Status as i64]).ok().and_then(|w| w.get(1).copied());
        let others = children().into_iter().any(|pid| Some(pid as i64) != broker);
        if !others {
            return true;
        }
        if !wait {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The reaper's living children (reaped ones are gone; zombies are reaped before this).
fn children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
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
