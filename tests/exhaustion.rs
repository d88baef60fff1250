//! Resource exhaustion that a C conformance test cannot arrange in every mode: SHMALL
//! reached (the kernel's run in an IPC namespace of its own, where the test may lower
//! it without touching the machine's), and file-size limits (RLIMIT_FSIZE), which never
//! limit the kernel's objects but do limit memfds. tests/exhaustion_probe.c makes the
//! calls and prints one line; the kernel's line and ipcshim's must be the same.
//! (Root is needed for the IPC namespace; the suite runs as root.)

mod common;

use common::{bin, compile, lib, scratch, stop_broker, wait_for_socket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn probe() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| compile("exhaustion_probe", "exhaustion_probe")).clone()
}

fn socket(name: &str) -> PathBuf {
    scratch(name).join("ns.sock")
}

/// Stops the namespace's broker however the test ends.
struct Namespace(PathBuf);

impl Drop for Namespace {
    fn drop(&mut self) {
        stop_broker(&self.0);
    }
}

/// The probe's line, and its exit status (0: it left nothing behind).
fn output(c: &mut Command) -> String {
    let out = c.output().expect("probe runs");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "probe failed ({}): {line} {}", out.status, String::from_utf8_lossy(&out.stderr));
    line
}

/// The probe against the kernel, in a fresh IPC namespace whose `sysctl` values are set
/// first (other programs' objects are not there, and the machine's limits stay as they are).
fn on_kernel(args: &[&str], sysctl: &'static [(&'static str, &'static str)], prepare: fn()) -> String {
    let mut c = Command::new(probe());
    c.args(args);
    unsafe {
        c.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWIPC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (name, value) in sysctl {
                std::fs::write(format!("/proc/sys/kernel/{name}"), value)?;
            }
            prepare();
            Ok(())
        });
    }
    output(&mut c)
}

/// The probe under the library, in a new namespace at `sock` whose broker it starts.
fn on_ipcshim(sock: &Path, args: &[&str], limits: &str, prepare: fn()) -> String {
    let mut c = Command::new(probe());
    c.args(args).env("LD_PRELOAD", lib()).env("IPCSHIM_BROKER", bin()).env("IPCSHIM_SOCKET", sock).env("IPCSHIM_LIMITS", limits);
    unsafe {
        c.pre_exec(move || {
            prepare();
            Ok(())
        });
    }
    output(&mut c)
}

fn nothing() {}

#[test]
fn shmall_reached_then_recovered_as_the_kernel() {
    let want = "shmall=20 segments=6 err=ENOSPC pages=18 rest=ok one=ENOSPC rm=ok again=ok more=ENOSPC attached_rm=ENOSPC detached=ok";
    assert_eq!(on_kernel(&["shmall"], &[("shmall", "20")], nothing), want);
    let sock = socket("shmall");
    let _ns = Namespace(sock.clone());
    assert_eq!(on_ipcshim(&sock, &["shmall"], "shmall=20", nothing), want);
}

/// A client under `ulimit -f` (soft) starts the broker, which inherits the limit: its
/// memfds must not be held to it (ftruncate past it raises SIGXFSZ, which killed it).
#[test]
fn a_clients_file_size_limit_does_not_limit_objects() {
    fn small_soft_limit() {
        let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
        unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut r) };
        r.rlim_cur = 4096;
        unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &r) };
    }
    let want = "big=ok queue=ok set=ok small=ok segments=2";
    assert_eq!(on_kernel(&["create", "16777216"], &[], small_soft_limit), want);
    let sock = socket("fsize-soft");
    let _ns = Namespace(sock.clone());
    assert_eq!(on_ipcshim(&sock, &["create", "16777216"], "", small_soft_limit), want);
}

/// A broker that may not lift its hard file-size limit (no CAP_SYS_RESOURCE) cannot size
/// memfds past it: creating such an object fails with ENOMEM, as the kernel's *get when it
/// has no memory for an object, and nothing is left half made; the broker lives on.
#[test]
fn a_broker_that_cannot_size_an_object_says_enomem() {
    let sock = socket("fsize-hard");
    let _ns = Namespace(sock.clone());
    // Room for the namespace table and small objects; not for 64 MiB, nor for a queue
    // (whose memfd is sized, sparse, for four times MSGMNB).
    const LIMIT: u64 = 8 << 20;
    assert!((ipcshim::ipc::table::TABLE_SIZE as u64) < LIMIT);
    let mut broker = Command::new(bin());
    broker.arg("broker").arg("--socket").arg(&sock);
    unsafe {
        broker.pre_exec(|| {
            let r = libc::rlimit { rlim_cur: LIMIT, rlim_max: LIMIT };
            libc::setrlimit(libc::RLIMIT_FSIZE, &r);
            libc::prctl(libc::PR_CAPBSET_DROP, ipcshim::ipc::perm::CAP_SYS_RESOURCE as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
    let mut broker = broker.spawn().unwrap();
    wait_for_socket(&sock);
    let line = on_ipcshim(&sock, &["create", "67108864"], "", nothing);
    assert_eq!(line, "big=ENOMEM queue=ENOMEM set=ok small=ok segments=1");
    // Again: the failures changed nothing, and the broker still serves.
    assert_eq!(on_ipcshim(&sock, &["create", "67108864"], "", nothing), line);
    assert!(broker.try_wait().unwrap().is_none(), "the broker is alive");
    let status = Command::new(bin()).arg("status").arg("--socket").arg(&sock).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.contains("objects:     0 "), "nothing left behind: {status}");
    stop_broker(&sock);
    let _ = broker.wait();
}
