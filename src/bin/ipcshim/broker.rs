//! `ipcshim broker`: runs a namespace's broker; and `ask`, one request to a running one.

use crate::cli::{usage_error, use_socket};
use ipcshim::broker::{self, Broker};
use ipcshim::client::namespace::socket_paths;
use ipcshim::client::spawn::{make_socket_dir, try_connect};
use ipcshim::ipc::limits::Limits;
use ipcshim::wire::{self, Op};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;

const HELP: &str = "\
Usage:
 ipcshim broker [--daemon] [--socket PATH]

Run the namespace's broker in the foreground. The library starts one itself when a program
first uses a namespace; run it by hand (as root, with --daemon) to share one namespace
between users. Exits at once, successfully, if a broker already runs for the socket.

Options:
 -d, --daemon       detach once the socket listens (fork, new session, stdio on /dev/null,
                    other inherited descriptors closed)
     --socket PATH  the socket to listen on (default: the namespace's)
 -h, --help         display this help";

pub fn main(args: Vec<OsString>) -> ExitCode {
    use lexopt::prelude::*;
    let mut daemon = false;
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        match parser.next() {
            Ok(None) => break,
            Ok(Some(Short('d') | Long("daemon"))) => daemon = true,
            Ok(Some(Long("socket"))) => match parser.value() {
                Ok(v) => use_socket(v),
                Err(e) => return usage_error("broker", e),
            },
            Ok(Some(Short('h') | Long("help"))) => {
                println!("{HELP}");
                return ExitCode::SUCCESS;
            }
            Ok(Some(arg)) => return usage_error("broker", arg.unexpected()),
            Err(e) => return usage_error("broker", e),
        }
    }
    // The shared socket (IPCSHIM_SOCKET when set): per-user ones are the library's fallback.
    run_broker(&socket_paths(unsafe { libc::geteuid() }).0, daemon)
}

fn run_broker(socket: &Path, daemon: bool) -> ExitCode {
    if let Some(dir) = socket.parent() {
        make_socket_dir(dir);
    }
    // One broker per socket: the lock is held for the broker's whole life, and its file is
    // removed when the broker stops (so that namespaces leave nothing behind). A starter
    // may have opened the file just before a stopping broker removed it: having the lock of
    // a removed file proves nothing, so it checks that the file it locked is still there.
    let lock_path = format!("{}.lock", socket.display());
    // A broker holding the lock is running, starting or stopping: wait (a little) for it
    // to answer on the socket, or to let go of the lock as it stops.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let lock = loop {
        let lock = match std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&lock_path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("ipcshim: cannot open {lock_path}: {e}; choose another IPCSHIM_DIR or IPCSHIM_SOCKET");
                return ExitCode::from(1);
            }
        };
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            if is_at_path(&lock, &lock_path) {
                break lock;
            }
            continue;
        }
        if try_connect(socket).is_ok() || std::time::Instant::now() >= give_up {
            // Another broker runs (or is starting) for this namespace: nothing to do.
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let listener = match broker::bind_listener(socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ipcshim: cannot listen on {}: {}", socket.display(), std::io::Error::from_raw_os_error(e.0));
            return ExitCode::from(1);
        }
    };
    if daemon {
        // The listener is bound before the fork: clients may connect as soon as we exit.
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!("ipcshim: fork: {}", std::io::Error::last_os_error());
                return ExitCode::from(1);
            }
            0 => unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
                if null > 2 {
                    libc::close(null);
                }
                libc::chdir(c"/".as_ptr());
                close_inherited(&[listener.as_raw_fd(), lock.as_raw_fd()]);
            },
            _ => unsafe { libc::_exit(0) },
        }
    }
    broker::raise_descriptor_limit();
    broker::lift_file_size_limit();
    let mut b = match Broker::new(listener, socket.to_path_buf(), Limits::from_machine()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ipcshim: cannot start the broker: {}", std::io::Error::from_raw_os_error(e.0));
            return ExitCode::from(1);
        }
    };
    let r = b.run();
    // Removed while still locked (see above), if it is still ours.
    if is_at_path(&lock, &lock_path) {
        let _ = std::fs::remove_file(&lock_path);
    }
    drop(lock);
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipcshim: broker failed: {}", std::io::Error::from_raw_os_error(e.0));
            ExitCode::from(1)
        }
    }
}

/// Whether `file` is the file now at `path` (not one removed since it was opened).
fn is_at_path(file: &std::fs::File, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Closes every descriptor above stdio but `keep`: a daemon must not hold what the program
/// that started it left open (a pipe whose reader waits for end-of-file, make's jobserver).
fn close_inherited(keep: &[i32]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep.into_iter().map(|fd| fd as u32).filter(|&fd| fd >= 3) {
        if fd > from {
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0u32) };
        }
        from = fd + 1;
    }
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
}

/// How long `ask` waits for each answer.
const ASK_TIMEOUT_SECS: libc::time_t = 10;

/// One request to a running broker (never starts one), on a connection of its own.
pub fn ask(socket: &Path, words: &[i64]) -> Result<Vec<i64>, String> {
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = broker::sockaddr(socket).map_err(|e| format!("bad socket path ({})", e.0))?;
    if unsafe { libc::connect(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(format!("no broker answers at {} ({})", socket.display(), std::io::Error::last_os_error()));
    }
    // A stopped or wedged broker is an error after a while, not a hang.
    let timeout = libc::timeval { tv_sec: ASK_TIMEOUT_SECS, tv_usec: 0 };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        let len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, &timeout as *const _ as *const libc::c_void, len) };
    }
    let io = |e: ipcshim::ipc::Errno| match e.0 {
        libc::EAGAIN => format!(
            "the broker at {} does not answer within {ASK_TIMEOUT_SECS} s (stopped? wedged?); `kill` it if it stays so",
            socket.display()
        ),
        e => std::io::Error::from_raw_os_error(e).to_string(),
    };
    wire::send(fd.as_raw_fd(), &[Op::Hello as i64, 0], None).map_err(io)?;
    wire::recv(fd.as_raw_fd(), 0).map_err(io)?;
    wire::send(fd.as_raw_fd(), words, None).map_err(io)?;
    let reply = wire::recv(fd.as_raw_fd(), 0).map_err(io)?.ok_or("the broker closed the connection")?;
    match reply.words.first() {
        Some(&s) if s < 0 => Err(std::io::Error::from_raw_os_error(-s as i32).to_string()),
        Some(_) => Ok(reply.words),
        None => Err("empty reply".into()),
    }
}
