//! Finding the namespace's broker, and starting one when none answers: no set-up step.

use crate::log;
use super::namespace::socket_paths;
use crate::broker::sockaddr;
use crate::ipc::{Errno, Result};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a client waits for any one reply of the broker (over the socket, or in its
/// mailbox: `Client::request`).
pub const REPLY_TIMEOUT_SECS: libc::time_t = 30;

/// How long a client waits for a broker it started to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the broker listening at `path`, if one does.
pub fn try_connect(path: &Path) -> Result<OwnedFd> {
    let fd = super::owned(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    let (addr, len) = sockaddr(path)?;
    loop {
        let r = unsafe { libc::connect(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) };
        if r == 0 {
            // A broker that accepted but never answers (wedged, or out of descriptors) must
            // not hang us: replies come within this, or the call fails.
            let tv = libc::timeval { tv_sec: REPLY_TIMEOUT_SECS, tv_usec: 0 };
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            return Ok(fd);
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
    }
}

/// The uid the broker at the other end runs as.
fn server_uid(fd: &OwnedFd) -> Option<u32> {
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred as *mut _ as *mut libc::c_void, &mut len)
    };
    (r == 0).then_some(cred.uid)
}

/// A connection to the namespace's broker: the shared one if it answers and is run by root
/// or by us, else the per-user one; started on demand.
pub fn connect() -> Result<OwnedFd> {
    let me = unsafe { libc::geteuid() };
    let (shared, personal) = socket_paths(me);
    let mut last = Errno(libc::ECONNREFUSED);
    for path in [&shared, &personal] {
        match connect_or_start(path) {
            Ok(fd) => match server_uid(&fd) {
                Some(uid) if uid == 0 || uid == me => return Ok(fd),
                other => {
                    let who = other.map_or("an unknown uid".to_string(), |uid| format!("uid {uid}"));
                    log::warn(&format!("not trusting the broker at {}: it runs as {who}, neither root nor you", path.display()));
                    last = Errno(libc::EACCES);
                }
            },
            // No command to start a broker with: the other path would fail the same way.
            Err(Errno(libc::ENOEXEC)) => return Err(Errno(libc::ENOSYS)),
            Err(e) => last = e,
        }
        if shared == personal {
            break;
        }
    }
    Err(last)
}

thread_local! {
    /// Set while this thread only looks (src/inspect/procfs.rs): a missing broker is then an
    /// empty namespace, not one to start.
    static NO_START: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` without starting a broker on this thread if none answers.
pub fn without_starting<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_START.with(|n| n.set(self.0));
        }
    }
    let _restore = Restore(NO_START.with(|n| n.replace(true)));
    f()
}

fn connect_or_start(path: &Path) -> Result<OwnedFd> {
    match try_connect(path) {
        Ok(fd) => return Ok(fd),
        Err(Errno(libc::ECONNREFUSED)) | Err(Errno(libc::ENOENT)) if NO_START.with(|n| n.get()) => {
            return Err(Errno(libc::ENOENT))
        }
        Err(Errno(libc::ECONNREFUSED)) | Err(Errno(libc::ENOENT)) => {}
        Err(e) => return Err(e),
    }
    start_broker(path)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match try_connect(path) {
            Ok(fd) => return Ok(fd),
            Err(e) if Instant::now() >= deadline => {
                log::warn(&format!("the broker at {} does not answer ({})", path.display(), e.0));
                return Err(Errno(libc::ENOSYS));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The `ipcshim` command: `IPCSHIM_BROKER`, else next to this library, else on PATH.
pub fn broker_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IPCSHIM_BROKER") {
        return Some(PathBuf::from(p));
    }
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    if unsafe { libc::dladdr(broker_binary as *const libc::c_void, &mut info) } != 0 && !info.dli_fname.is_null() {
        let me = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
        let me = Path::new(std::ffi::OsStr::new(std::str::from_utf8(me.to_bytes()).unwrap_or("")));
        for dir in [me.parent().map(Path::to_path_buf), me.parent().and_then(Path::parent).map(|d| d.join("bin"))].into_iter().flatten() {
            let candidate = dir.join("ipcshim");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("ipcshim")).find(|p| p.is_file()))
}

/// Starts the broker for `path`: ENOEXEC if there is no command to start it with, ENOSYS if
/// it would not start.
fn start_broker(path: &Path) -> Result<()> {
    let Some(bin) = broker_binary() else {
        log::warn("cannot start a broker: no ipcshim command; set IPCSHIM_BROKER or put ipcshim on PATH");
        return Err(Errno(libc::ENOEXEC));
    };
    if let Some(dir) = path.parent() {
        make_socket_dir(dir);
    }
    let status = std::process::Command::new(&bin)
        .arg("broker")
        .arg("--daemon")
        .arg("--socket")
        .arg(path)
        .env_remove("LD_PRELOAD")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(if log::enabled() { std::process::Stdio::inherit() } else { std::process::Stdio::null() })
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        // ECHILD (the program ignores SIGCHLD) leaves the outcome to the connect loop.
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(()),
        Ok(s) => {
            log::warn(&format!(
                "the broker {} would not start ({s}); run `{} broker --socket {}` to see why",
                bin.display(),
                bin.display(),
                path.display()
            ));
            Err(Errno(libc::ENOSYS))
        }
        Err(e) => {
            log::warn(&format!("cannot start a broker: {}: {e}; set IPCSHIM_BROKER to the ipcshim command", bin.display()));
            Err(Errno(libc::ENOEXEC))
        }
    }
}

/// The socket directory: sticky and world-writable for the shared namespaces (like /tmp),
/// private for a per-user one.
pub fn make_socket_dir(dir: &Path) {
    let shared = !dir.file_name().map(|n| n.to_string_lossy().starts_with("ipcshim-")).unwrap_or(false);
    if dir.exists() {
        return;
    }
    if std::fs::create_dir_all(dir).is_ok() {
        use std::os::unix::fs::PermissionsExt;
        let mode = if shared { 0o1777 } else { 0o700 };
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    }
}
