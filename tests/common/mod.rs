//! Helpers shared by the integration tests: the built command and library, scratch
//! directories, C programs from tests/ compiled for a test, and commands run as another uid.
//! Each test file uses what it needs (hence `dead_code` allowed).
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The `ipcshim` command cargo built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ipcshim"))
}

/// The cdylib: `make` builds it (`make check` builds before testing). A
/// missing preload would be ignored by ld.so and the programs would talk to the kernel.
pub fn lib() -> PathBuf {
    let lib = bin().parent().unwrap().join("libipcshim.so");
    assert!(lib.exists(), "{} missing: run `make` (or `make check`) first", lib.display());
    lib
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A fresh, empty directory `NAME-PID` in the target's scratch space.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `scratch` with this mode, so that the tests' other uids can reach the sockets inside.
pub fn scratch_with_mode(name: &str, mode: u32) -> PathBuf {
    let d = scratch(name);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
    d
}

/// Compiles tests/SRC.c to OUT in the target's scratch space.
pub fn compile(src: &str, out: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(out);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/{src}.c"));
    let st = Command::new("cc").arg("-O1").arg("-o").arg(&out).arg(&src).status().expect("cc");
    assert!(st.success(), "cc {} failed", src.display());
    out
}

/// Runs `c` as `uid` (group `uid`, no supplementary groups).
pub fn as_user(c: &mut Command, uid: u32) -> &mut Command {
    c.uid(uid).gid(uid);
    unsafe {
        c.pre_exec(|| {
            libc::setgroups(0, std::ptr::null());
            Ok(())
        });
    }
    c
}

/// Stops the broker of the namespace at `sock`, objects or not (the end of a test).
pub fn stop_broker(sock: &Path) {
    let _ = Command::new(bin()).args(["stop", "--force", "--socket"]).arg(sock).output();
}

/// Waits (up to 10 s) for a broker just started to make its socket.
pub fn wait_for_socket(sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs `pid` (not our child: a broker lives on its own) and waits up to 10 s until it
/// is dead, so that what a test checks next happens after the death, however slow the
/// machine.
pub fn kill_and_wait(pid: i32) {
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(pidfd >= 0, "pidfd_open({pid}): {}", std::io::Error::last_os_error());
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // A pidfd is readable once its process has exited.
    let mut p = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
    let ready = unsafe { libc::poll(&mut p, 1, 10_000) };
    unsafe { libc::close(pidfd) };
    assert_eq!(ready, 1, "pid {pid} still alive 10 s after SIGKILL");
}
