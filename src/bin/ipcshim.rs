//! The `ipcshim` command: `broker` runs a namespace's broker; `status` and `stop` talk to it.

use ipcshim::broker::{self, Broker};
use ipcshim::client::namespace::socket_paths;
use ipcshim::client::spawn::make_socket_dir;
use ipcshim::ipc::limits::Limits;
use ipcshim::wire::{self, Op};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: ipcshim COMMAND [OPTIONS]

commands:
  run [--private | --namespace NAME] [--] CMD [ARG...]
                                      run CMD with the library preloaded, in the given namespace;
                                      --private: a fresh namespace, removed when CMD and every
                                      process that used it are gone. Exit status is CMD's.
  broker [--daemon] [--socket PATH]   run the namespace's broker (the library starts one itself)
  status [--socket PATH]              show the broker's pid, objects and clients
  stop [--force] [--socket PATH]      stop the broker (refused while objects exist, unless --force)

The namespace is IPCSHIM_NAMESPACE (default \"default\"); IPCSHIM_SOCKET names a socket directly.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if cmd == "run" {
        return run(&args[1..]);
    }
    let flag = |name: &str| args.iter().any(|a| a == name);
    let socket = args.iter().position(|a| a == "--socket").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let me = unsafe { libc::geteuid() };
    let socket = socket.unwrap_or_else(|| socket_paths(me).0);
    match cmd.as_str() {
        "broker" => run_broker(&socket, flag("--daemon")),
        "status" => status(&socket),
        "stop" => stop(&socket, flag("--force")),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("ipcshim: unknown command '{other}'; try 'ipcshim --help'");
            ExitCode::from(2)
        }
    }
}

fn run_broker(socket: &Path, daemon: bool) -> ExitCode {
    if let Some(dir) = socket.parent() {
        make_socket_dir(dir);
    }
    // One broker per socket: the lock is held for the broker's whole life.
    let lock_path = format!("{}.lock", socket.display());
    let lock = match std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&lock_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ipcshim: cannot open {lock_path}: {e}; choose another IPCSHIM_DIR or IPCSHIM_SOCKET");
            return ExitCode::from(1);
        }
    };
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        // Another broker runs (or is starting) for this namespace: nothing to do.
        return ExitCode::SUCCESS;
    }
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
            },
            _ => unsafe { libc::_exit(0) },
        }
    }
    broker::raise_descriptor_limit();
    let mut b = match Broker::new(listener, socket.to_path_buf(), Limits::from_machine()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ipcshim: cannot start the broker: {}", std::io::Error::from_raw_os_error(e.0));
            return ExitCode::from(1);
        }
    };
    let r = b.run();
    drop(lock);
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipcshim: broker failed: {}", std::io::Error::from_raw_os_error(e.0));
            ExitCode::from(1)
        }
    }
}

/// One request to a running broker (never starts one).
fn ask(socket: &Path, words: &[i64]) -> Result<Vec<i64>, String> {
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = broker::sockaddr(socket).map_err(|e| format!("bad socket path ({})", e.0))?;
    if unsafe { libc::connect(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(format!("no broker answers at {} ({})", socket.display(), std::io::Error::last_os_error()));
    }
    let io = |e: ipcshim::ipc::Errno| std::io::Error::from_raw_os_error(e.0).to_string();
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

fn status(socket: &Path) -> ExitCode {
    match ask(socket, &[Op::Status as i64]) {
        Ok(w) if w.len() >= 5 => {
            println!("socket:      {}", socket.display());
            println!("broker pid:  {}", w[1]);
            println!("objects:     {}", w[2]);
            println!("processes:   {}", w[3]);
            println!("connections: {}", w[4]);
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("ipcshim: short status reply");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ipcshim: {e}");
            ExitCode::from(1)
        }
    }
}

fn stop(socket: &Path, force: bool) -> ExitCode {
    match ask(socket, &[Op::Stop as i64, force as i64]) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if e.contains("busy") => {
            eprintln!("ipcshim: the namespace still holds objects; remove them or use 'ipcshim stop --force'");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ipcshim: {e}");
            ExitCode::from(1)
        }
    }
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

/// `ipcshim run`: CMD under the library, in a chosen or private namespace.
fn run(args: &[String]) -> ExitCode {
    let mut namespace = None;
    let mut private = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--private" => private = true,
            "--namespace" => {
                i += 1;
                namespace = args.get(i).cloned();
            }
            "--" => {
                i += 1;
                break;
            }
            "-h" | "--help" => {
                println!("usage: ipcshim run [--private | --namespace NAME] [--] CMD [ARG...]");
                return ExitCode::SUCCESS;
            }
            _ => break,
        }
        i += 1;
    }
    let Some(cmd) = args.get(i) else {
        eprintln!("ipcshim run: no command given; usage: ipcshim run [--private | --namespace NAME] [--] CMD [ARG...]");
        return ExitCode::from(2);
    };
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
    let mut child = std::process::Command::new(cmd);
    child.args(&args[i + 1..]).env("LD_PRELOAD", preload);
    if let Ok(me) = std::env::current_exe() {
        child.env("IPCSHIM_BROKER", me);
    }
    if let Some(ns) = &namespace {
        child.env("IPCSHIM_NAMESPACE", ns).env_remove("IPCSHIM_SOCKET");
    }
    let status = match child.status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ipcshim run: cannot run {cmd}: {e}");
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
    let _ = ask(socket, &[Op::Stop as i64, 1]);
    let _ = std::fs::remove_file(format!("{}.lock", socket.display()));
}
