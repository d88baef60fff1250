//! The broker's life as a user meets it: started on demand, unreachable, killed, shared
//! between users only when trusted, namespaces kept apart, and garbage on its socket.
//! Each test drives the real library (preloaded into tests/probe.c) and the real command.

mod common;

use common::{as_user, bin, compile, is_root, kill_and_wait, lib, scratch_with_mode, wait_for_socket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// tests/probe.c, built once per test binary.
fn probe() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| compile("probe", "probe")).clone()
}

/// A scratch directory for sockets, world-traversable so that other uids can use it.
fn scratch(name: &str) -> PathBuf {
    scratch_with_mode(name, 0o1777)
}

/// Runs the probe under the library with `env`, as `uid` if given; returns its output line.
fn run(env: &[(&str, &str)], uid: Option<u32>, args: &[&str]) -> String {
    let mut c = Command::new(probe());
    c.args(args).env("LD_PRELOAD", lib()).env_remove("IPCSHIM_NAMESPACE").env_remove("IPCSHIM_SOCKET");
    c.env("IPCSHIM_BROKER", bin());
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(uid) = uid {
        as_user(&mut c, uid);
    }
    let out = c.output().expect("probe runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stop(env: &[(&str, &str)]) {
    let mut c = Command::new(bin());
    c.arg("stop").arg("--force");
    for (k, v) in env {
        c.env(k, v);
    }
    let _ = c.output();
}

/// `program` under the library, in the namespace of scratch directory `dir`, its stdin and
/// stdout piped.
fn preloaded(program: &Path, dir: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("LD_PRELOAD", lib()).env("IPCSHIM_BROKER", bin()).env("IPCSHIM_DIR", dir);
    c.env_remove("IPCSHIM_NAMESPACE").env_remove("IPCSHIM_SOCKET");
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    c
}

/// A namespace of its own (in scratch directory `name`) whose broker runs, started by the
/// creation of a segment of `key`: (directory, socket, broker pid).
fn running_broker(name: &str, key: &str) -> (PathBuf, PathBuf, i32) {
    let dir = scratch(name);
    value(&run(&[("IPCSHIM_DIR", dir.to_str().unwrap())], None, &["create", key]));
    let socket = dir.join("ipcshim/default.sock");
    let pid = broker_pid(&socket);
    (dir, socket, pid)
}

/// The pid of the broker at `socket`, from `ipcshim status`.
fn broker_pid(socket: &Path) -> i32 {
    let text = String::from_utf8_lossy(&Command::new(bin()).arg("status").arg("--socket").arg(socket).output().unwrap().stdout).to_string();
    text.lines().find_map(|l| l.strip_prefix("broker pid:")).unwrap().trim().parse().unwrap()
}

fn value(line: &str) -> i32 {
    line.strip_prefix("ok ").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("expected ok, got {line:?}"))
}

/// Looks `key` up until the broker answers with `id`: it has connections to close first,
/// which takes it a moment (more on a loaded machine). Fails after 10 s.
fn answers_within_10s(env: &[(&str, &str)], key: &str, id: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = run(env, None, &["lookup", key]);
        if answer == format!("ok {id}") {
            return;
        }
        assert!(Instant::now() < deadline, "still refused: {answer}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unreachable_broker_fails_fast_with_enosys_and_says_why() {
    let dir = scratch("nobroker");
    let start = Instant::now();
    let mut c = Command::new(probe());
    c.args(["create", "0x1234"])
        .env("LD_PRELOAD", lib())
        .env("IPCSHIM_DIR", &dir)
        .env("IPCSHIM_BROKER", "/nonexistent/ipcshim")
        .env("IPCSHIM_LOG", "warn");
    let out = c.output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(15), "never hangs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("err {}", libc::ENOSYS));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ipcshim") && err.contains("broker"), "one line says why: {err:?}");
}

#[test]
fn warnings_are_on_by_default_and_off_silences_them() {
    let dir = scratch("warn");
    let probe_stderr = |log: Option<&str>| {
        let mut c = Command::new(probe());
        c.args(["create", "0x1234"]).env("LD_PRELOAD", lib()).env("IPCSHIM_DIR", &dir);
        c.env("IPCSHIM_BROKER", "/nonexistent/ipcshim").env_remove("IPCSHIM_LOG");
        if let Some(level) = log {
            c.env("IPCSHIM_LOG", level);
        }
        String::from_utf8_lossy(&c.output().unwrap().stderr).to_string()
    };
    assert!(probe_stderr(None).contains("cannot start a broker"), "warn is the default");
    assert_eq!(probe_stderr(Some("off")), "");
}

#[test]
fn trace_writes_one_line_per_call_with_result_and_errno() {
    let dir = scratch("trace");
    let log = dir.join("trace.log");
    let env = [
        ("IPCSHIM_DIR", dir.to_str().unwrap()),
        ("IPCSHIM_LOG", "trace"),
        ("IPCSHIM_LOG_FILE", log.to_str().unwrap()),
    ];
    let id = value(&run(&env, None, &["create", "0x4242"]));
    assert_eq!(run(&env, None, &["lookup", "0x4343"]), format!("err {}", libc::ENOENT));
    run(&env, None, &["rm", &id.to_string()]);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "one line per call, appended by each process: {text}");
    assert!(lines[0].contains(&format!("shmget(0x4242, 4096, IPC_CREAT|0666) = {id} (")), "{}", lines[0]);
    assert!(lines[1].contains("shmget(0x4343, 0, 0) = -1 ENOENT ("), "{}", lines[1]);
    assert!(lines[2].contains(&format!("shmctl({id}, IPC_RMID, 0x0) = 0 (")), "{}", lines[2]);
    assert!(lines.iter().all(|l| l.starts_with("ipcshim[") && l.ends_with(" µs)")));
    stop(&env);
}

#[test]
fn objects_persist_and_namespaces_are_separate() {
    let dir = scratch("ns");
    let d = dir.to_str().unwrap();
    let a = [("IPCSHIM_DIR", d), ("IPCSHIM_NAMESPACE", "a")];
    let b = [("IPCSHIM_DIR", d), ("IPCSHIM_NAMESPACE", "b")];
    let id = value(&run(&a, None, &["create", "0x5151"]));
    // Another process of namespace a finds it; namespace b does not.
    assert_eq!(value(&run(&a, None, &["lookup", "0x5151"])), id);
    assert_eq!(run(&b, None, &["lookup", "0x5151"]), format!("err {}", libc::ENOENT));
    assert!(dir.join("ipcshim/a.sock").exists() && dir.join("ipcshim/b.sock").exists());
    assert!(dir.join("ipcshim/a.sock.lock").exists());
    stop(&[("IPCSHIM_SOCKET", dir.join("ipcshim/a.sock").to_str().unwrap())]);
    stop(&[("IPCSHIM_SOCKET", dir.join("ipcshim/b.sock").to_str().unwrap())]);
    // A stopped broker leaves neither its socket nor its lock file (stop returns once the
    // broker said yes; it removes them as it exits).
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = || ["a.sock", "a.sock.lock", "b.sock", "b.sock.lock"].into_iter().filter(|f| dir.join("ipcshim").join(f).exists()).collect::<Vec<_>>();
    while !left().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(left(), Vec::<&str>::new());
    // And a broker starts there again.
    assert_eq!(value(&run(&a, None, &["create", "0x5151"])), value(&run(&a, None, &["lookup", "0x5151"])));
    stop(&[("IPCSHIM_SOCKET", dir.join("ipcshim/a.sock").to_str().unwrap())]);
}

#[test]
fn a_started_broker_keeps_none_of_the_programs_descriptors() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let dir = scratch("inherit");
    // A pipe whose write end the program holds as descriptor 7, not close-on-exec: its
    // reader sees end-of-file only when every holder has closed it.
    let mut ends = [0; 2];
    assert_eq!(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    let w = writer.as_raw_fd();
    let mut c = Command::new(probe());
    c.args(["create", "0x6161"])
        .env("LD_PRELOAD", lib())
        .env("IPCSHIM_BROKER", bin())
        .env("IPCSHIM_DIR", &dir)
        .env_remove("IPCSHIM_NAMESPACE")
        .env_remove("IPCSHIM_SOCKET");
    unsafe {
        c.pre_exec(move || {
            libc::dup2(w, 7);
            Ok(())
        });
    }
    let out = c.output().unwrap();
    value(String::from_utf8_lossy(&out.stdout).trim());
    drop(writer);
    // The probe has exited and the broker it started lives on, without descriptor 7.
    let mut p = libc::pollfd { fd: reader.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    assert_eq!(unsafe { libc::poll(&mut p, 1, 5000) }, 1, "the pipe is still held open");
    let mut byte = 0u8;
    assert_eq!(unsafe { libc::read(reader.as_raw_fd(), &mut byte as *mut u8 as *mut libc::c_void, 1) }, 0);
    stop(&[("IPCSHIM_SOCKET", dir.join("ipcshim/default.sock").to_str().unwrap())]);
}

#[test]
fn status_of_a_stopped_broker_fails_instead_of_hanging() {
    let (_dir, socket, pid) = running_broker("stopped", "0x6262");
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Without a limit of its own, status would wait for ever: give up on it after a minute.
    let mut child = Command::new(bin()).arg("status").arg("--socket").arg(&socket).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break Some(exit);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let exit = exit.expect("status still waits for a stopped broker after a minute");
    assert!(!exit.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("does not answer"), "{err}");
    stop(&[("IPCSHIM_SOCKET", socket.to_str().unwrap())]);
}

/// A request posted while the broker cannot run: the client spins, then sleeps on its
/// mailbox (wire::ring); the broker answers it once it runs again, and wakes it.
#[test]
fn a_request_to_a_stopped_broker_is_answered_when_it_runs_again() {
    use std::io::{BufRead, BufReader, Write};
    // (The broker is asleep when stopped here: the request rings its doorbell.)
    let (dir, socket, pid) = running_broker("paused", "0x6363");
    let env = [("IPCSHIM_DIR", dir.to_str().unwrap())];
    let mut asker = preloaded(&probe(), &dir).args(["create_on_input", "0x6464"]).spawn().unwrap();
    // The probe's lines, each within a minute (a lost answer fails the test, not hangs it).
    let (tx, lines) = std::sync::mpsc::channel();
    let mut out = BufReader::new(asker.stdout.take().unwrap());
    std::thread::spawn(move || loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 || tx.send(line).is_err() {
            return;
        }
    });
    let next_line = || lines.recv_timeout(Duration::from_secs(60)).expect("no answer within a minute");
    assert_eq!(next_line().trim(), "ready");
    /// Lets the broker run again however the test ends.
    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    let resume = Resume(pid);
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    asker.stdin.take().unwrap().write_all(b"go\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let waited = asker.try_wait().unwrap().is_none();
    drop(resume);
    let line = next_line();
    assert!(asker.wait().unwrap().success());
    let id = value(line.trim());
    assert!(waited, "answered by a stopped broker?");
    assert_eq!(run(&env, None, &["lookup", "0x6464"]), format!("ok {id}"));
    stop(&[("IPCSHIM_SOCKET", socket.to_str().unwrap())]);
}

#[test]
fn a_killed_broker_is_a_reboot_and_the_next_call_starts_a_new_one() {
    let dir = scratch("killed");
    let env = [("IPCSHIM_DIR", dir.to_str().unwrap())];
    let id = value(&run(&env, None, &["create", "0x7171"]));
    let pid = broker_pid(&dir.join("ipcshim/default.sock"));
    kill_and_wait(pid);
    // The old id is gone (EINVAL, as an id that never existed); a new broker answers.
    assert_eq!(run(&env, None, &["stat", &id.to_string()]), format!("err {}", libc::EINVAL));
    assert_eq!(run(&env, None, &["lookup", "0x7171"]), format!("err {}", libc::ENOENT));
    value(&run(&env, None, &["create", "0x7171"]));
    stop(&[("IPCSHIM_SOCKET", dir.join("ipcshim/default.sock").to_str().unwrap())]);
}

#[test]
fn a_killed_broker_wakes_its_sleepers_with_eidrm_and_leaves_mappings_readable() {
    use std::io::{BufRead, BufReader, Write};
    let dir = scratch("reboot");
    let helper = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reboot");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reboot.c");
    assert!(Command::new("cc").arg("-o").arg(&helper).arg(&src).status().unwrap().success());
    let mut child = preloaded(&helper, &dir).env("IPCSHIM_LOG", "off").spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let socket = dir.join("ipcshim/default.sock");
    let pid = broker_pid(&socket);
    kill_and_wait(pid);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    let lines: Vec<&str> = rest.lines().collect();
    let einval = libc::EINVAL;
    let eidrm = libc::EIDRM;
    assert_eq!(
        lines,
        [
            "segment kept".to_string(),
            format!("old_shmctl -1 {einval}"),
            format!("old_msgsnd -1 {einval}"),
            format!("old_semop -1 {einval}"),
            "new_msgget 0 0".to_string(),
            "new_msgsnd 0 0".to_string(),
            format!("receiver ended {eidrm}"),
            format!("waiter ended {eidrm}"),
        ]
    );
    stop(&[("IPCSHIM_SOCKET", socket.to_str().unwrap())]);
}

#[test]
fn a_broker_of_another_unprivileged_user_is_not_trusted() {
    if !is_root() {
        eprintln!("needs root to run processes as two uids; CI runs as root");
        return;
    }
    let dir = scratch("trust");
    let env = [("IPCSHIM_DIR", dir.to_str().unwrap())];
    // uid 1001 starts the shared broker and makes an object anyone could open.
    let id = value(&run(&env, Some(1001), &["create", "0x6161"]));
    assert!(id >= 0);
    // uid 1002 does not trust it: it gets a namespace of its own, where the key is unknown.
    assert_eq!(run(&env, Some(1002), &["lookup", "0x6161"]), format!("err {}", libc::ENOENT));
    assert!(dir.join("ipcshim-1002/default.sock").exists());
    // root trusts no one but root and itself either.
    assert_eq!(run(&env, None, &["lookup", "0x6161"]), format!("err {}", libc::ENOENT));
    // uid 1001 itself still meets its object.
    assert_eq!(value(&run(&env, Some(1001), &["lookup", "0x6161"])), id);
    for sock in ["ipcshim/default.sock", "ipcshim-1002/default.sock", "ipcshim-0/default.sock"] {
        stop(&[("IPCSHIM_SOCKET", dir.join(sock).to_str().unwrap())]);
    }
}

#[test]
fn garbage_on_the_socket_does_not_hurt_the_broker() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let dir = scratch("garbage");
    let env = [("IPCSHIM_DIR", dir.to_str().unwrap())];
    let id = value(&run(&env, None, &["create", "0x4141"]));
    let sock = dir.join("ipcshim/default.sock");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let (addr, len) = ipcshim::broker::sockaddr(&sock).unwrap();
        let r = unsafe { libc::connect(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) };
        assert_eq!(r, 0, "round {round}: {}", std::io::Error::last_os_error());
        for _ in 0..(1 + rnd() % 8) {
            let n = (rnd() % 200) as usize;
            let mut bytes: Vec<u8> = (0..n).map(|_| rnd() as u8).collect();
            // Half the frames start with a real opcode, to reach deeper into the handlers;
            // never Stop, which from its owner is no garbage: the broker obeys it.
            if round % 2 == 0 && n >= 8 {
                let op = match rnd() % 12 {
                    op if op == ipcshim::wire::Op::Stop as u64 => 0,
                    op => op,
                };
                bytes[..8].copy_from_slice(&(op as i64).to_le_bytes());
            }
            unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr() as *const libc::c_void, bytes.len(), libc::MSG_NOSIGNAL) };
        }
    }
    // The broker still serves, and still holds the object.
    assert_eq!(value(&run(&env, None, &["lookup", "0x4141"])), id);
    assert_eq!(value(&run(&env, None, &["rm", &id.to_string()])), 0);
    stop(&[("IPCSHIM_SOCKET", sock.to_str().unwrap())]);
}

/// `ipcshim broker` serving at `sock` (its directory made) with these limits.
fn broker_command(sock: &Path, limits: &str) -> Command {
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let mut broker = Command::new(bin());
    broker.arg("broker").arg("--socket").arg(sock).env("IPCSHIM_LIMITS", limits);
    broker
}

/// Kills the broker however the test ends (it holds the test harness's output).
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the broker and waits for its socket.
fn spawn_broker(broker: &mut Command, sock: &Path) -> Reap {
    let reap = Reap(broker.spawn().unwrap());
    wait_for_socket(sock);
    reap
}

#[test]
fn a_broker_out_of_descriptors_refuses_clearly_and_recovers() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let sock = scratch("emfile").join("ipcshim/default.sock");
    // A broker that may hold only 64 descriptors (and no connection quota to meet first:
    // this is about descriptors).
    let mut broker = broker_command(&sock, "conns_per_uid=100000");
    unsafe {
        broker.pre_exec(|| {
            let r = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            // Without CAP_SYS_RESOURCE, as an unprivileged broker: a root broker would
            // raise its hard limit again (raise_descriptor_limit).
            libc::prctl(libc::PR_CAPBSET_DROP, ipcshim::ipc::perm::CAP_SYS_RESOURCE as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
    let _broker = spawn_broker(&mut broker, &sock);
    let env = [("IPCSHIM_SOCKET", sock.to_str().unwrap())];
    let id = value(&run(&env, None, &["create", "0x2121"]));
    // Someone holds a hundred connections.
    let mut held = Vec::new();
    for _ in 0..100 {
        let fd = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)) };
        let (addr, len) = ipcshim::broker::sockaddr(&sock).unwrap();
        unsafe { libc::connect(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) };
        held.push(fd);
    }
    std::thread::sleep(Duration::from_millis(200));
    // Another client is refused at once with the errno of a missing broker (or served, if
    // the broker had a descriptor to spare); it never hangs.
    let start = Instant::now();
    let answer = run(&env, None, &["lookup", "0x2121"]);
    assert!(answer == format!("err {}", libc::ENOSYS) || answer == format!("ok {id}"), "{answer}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // When they go, the broker serves again, with its objects.
    drop(held);
    answers_within_10s(&env, "0x2121", id);
    stop(&env);
}

#[test]
fn one_uid_cannot_take_every_connection() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let sock = scratch("quota").join("ipcshim/default.sock");
    let _broker = spawn_broker(&mut broker_command(&sock, "conns_per_uid=4"), &sock);
    let env = [("IPCSHIM_SOCKET", sock.to_str().unwrap())];
    let id = value(&run(&env, None, &["create", "0x3131"]));
    // This uid holds its four connections, each answered (the probe's connection may
    // still count for a moment after it exited: a refused one is made again).
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < 4 {
        assert!(Instant::now() < deadline, "cannot hold four connections");
        let fd = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)) };
        let (addr, len) = ipcshim::broker::sockaddr(&sock).unwrap();
        assert_eq!(unsafe { libc::connect(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) }, 0);
        let _ = ipcshim::wire::send(fd.as_raw_fd(), &[ipcshim::wire::Op::Hello as i64, 0], None);
        match ipcshim::wire::recv(fd.as_raw_fd(), 0) {
            Ok(Some(reply)) if reply.words.first().is_some_and(|&w| w >= 0) => held.push(fd),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    // Its next process fails its calls with EAGAIN, at once.
    let start = Instant::now();
    assert_eq!(run(&env, None, &["lookup", "0x3131"]), format!("err {}", libc::EAGAIN));
    assert!(start.elapsed() < Duration::from_secs(10));
    // Another uid is served meanwhile.
    if is_root() {
        assert_eq!(value(&run(&env, Some(65534), &["lookup", "0x3131"])), id);
    }
    // When they close, this uid is served again.
    drop(held);
    answers_within_10s(&env, "0x3131", id);
    stop(&env);
}
