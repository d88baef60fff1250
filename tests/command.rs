//! The `ipcshim` command: `run` (exit status, private namespaces and their teardown),
//! `status` and `stop`.

mod common;

use common::{bin, compile, is_root, lib, scratch, scratch_with_mode};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The command, with the namespaces' files in `dir` (the library must be built: `run`
/// preloads it).
fn ipcshim(dir: &Path, args: &[&str]) -> std::process::Output {
    lib();
    Command::new(bin()).args(args).env("IPCSHIM_DIR", dir).env_remove("IPCSHIM_NAMESPACE").output().unwrap()
}

#[test]
fn run_passes_the_exit_status_through() {
    let dir = scratch("status");
    assert_eq!(ipcshim(&dir, &["run", "--", "sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(ipcshim(&dir, &["run", "--private", "sh", "-c", "kill -9 $$"]).status.code(), Some(137));
    assert_eq!(ipcshim(&dir, &["run", "/nonexistent/command"]).status.code(), Some(127));
    assert_eq!(ipcshim(&dir, &["run"]).status.code(), Some(2));
}

#[test]
fn run_private_gives_a_fresh_namespace_and_removes_it() {
    let dir = scratch("private");
    // The command sees the library and a private namespace of its own.
    let out = ipcshim(&dir, &["run", "--private", "--", "sh", "-c", "echo $LD_PRELOAD; echo $IPCSHIM_NAMESPACE"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().contains("libipcshim.so"));
    assert!(lines.next().unwrap().starts_with("private-"));
    // A command that used the namespace (the probe creates a segment): afterwards neither a
    // broker nor its socket is left.
    let probe = compile("probe", "probe-cmd");
    let out = ipcshim(&dir, &["run", "--private", "--", probe.to_str().unwrap(), "create", "0x3131"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok "), "{out:?}");
    let left: Vec<_> = std::fs::read_dir(dir.join("ipcshim")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "private namespace files left behind: {left:?}");
}

/// The probe (tests/probe.c: one shm call per run) built once for this file's tests.
fn probe() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| compile("probe", "probe-run")).clone()
}

#[test]
fn run_private_lasts_while_a_daemon_it_started_lives_even_one_that_uses_it_only_later() {
    let dir = scratch("daemon");
    let out_file = dir.join("daemon.out");
    let p = probe();
    let p = p.to_str().unwrap();
    // The command creates a segment and leaves a background job that uses the namespace
    // again only after `run` has returned (it waits for a file this test makes then): as
    // with a kernel IPC namespace, the job still finds the segment, and the namespace goes
    // when the job has gone. Were `run` to wait for the job, the job would give up waiting
    // (30 s) and say "no go".
    let go = dir.join("go");
    let script = format!(
        "{p} create 0x5353; ({p} lookup 0x5353; i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; \
         if [ -e {go} ]; then echo go; else echo no go; fi; {p} lookup 0x5353) > {out} 2>&1 &",
        go = go.display(),
        out = out_file.display()
    );
    let out = ipcshim(&dir, &["run", "--private", "--", "sh", "-c", &script]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok "), "{out:?}");
    std::fs::write(&go, "").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let files = || -> Vec<_> { std::fs::read_dir(dir.join("ipcshim")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default() };
    while !files().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let job = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert_eq!(job.lines().collect::<Vec<_>>(), ["ok 0", "go", "ok 0"], "the job found the segment both times, the second after run returned");
    assert!(files().is_empty(), "the namespace is removed once the job has gone: {:?}", files());
}

#[test]
fn run_private_serves_children_that_switch_to_another_uid() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        panic!("this test needs root and util-linux's setpriv (make check runs as root in CI)");
    }
    let dir = scratch_with_mode("otheruid", 0o1777);
    let p = probe();
    let p = p.to_str().unwrap();
    // Root creates a segment (mode 0666), a child running as nobody finds and removes it.
    let script = format!("{p} create 0x5454 && setpriv --reuid 65534 --regid 65534 --clear-groups {p} lookup 0x5454");
    let out = ipcshim(&dir, &["run", "--private", "--", "sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0], lines[1], "the other uid sees the same segment: {out:?}");
}

#[test]
fn stop_refuses_while_objects_exist_unless_forced() {
    let dir = scratch("stop");
    let probe = compile("probe", "probe-stop");
    let out = ipcshim(&dir, &["run", "--namespace", "keep", "--", probe.to_str().unwrap(), "create", "0x3232"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok "));
    let sock = dir.join("ipcshim/keep.sock");
    let s = sock.to_str().unwrap();
    let status = ipcshim(&dir, &["status", "--socket", s]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("objects:     1"));
    let refused = ipcshim(&dir, &["stop", "--socket", s]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert!(ipcshim(&dir, &["stop", "--force", "--socket", s]).status.success());
    assert!(!ipcshim(&dir, &["status", "--socket", s]).status.success());
}
