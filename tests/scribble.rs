//! Shared memory is untrusted: a process scribbles random bytes over a message queue's
//! and a semaphore set's memfd mappings while other processes use them (tests/scribble.c,
//! run with the library preloaded). The users may get errors (EIDRM, EINVAL, ERANGE…) but
//! never crash or hang, and the broker survives: the namespace works afterwards. Only
//! ipcshim has such memory: the kernel's objects cannot be written, so this is not a
//! kernel-oracle C test.

mod common;

use common::{bin, compile, lib, scratch, stop_broker};
use std::path::PathBuf;
use std::process::Command;

fn build(name: &str) -> PathBuf {
    compile(name, &format!("{name}-{}", std::process::id()))
}

#[test]
fn scribbled_queues_and_sets_give_errors_never_crashes_or_hangs() {
    let scribble = build("scribble");
    let probe = build("probe");
    let dir = scratch("scribble-ns");
    let env = |c: &mut Command| {
        c.env("LD_PRELOAD", lib()).env("IPCSHIM_BROKER", bin()).env("IPCSHIM_DIR", &dir);
        c.env_remove("IPCSHIM_NAMESPACE").env_remove("IPCSHIM_SOCKET").env("IPCSHIM_LOG", "off");
    };
    let broker_pid = || {
        let out = Command::new(bin()).arg("status").arg("--socket").arg(dir.join("ipcshim/default.sock")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().find_map(|l| l.strip_prefix("broker pid:")).map(|p| p.trim().to_string())
    };
    let mut first_broker = None;
    // A few seeds, 1.5 s each (the program bounds its own waits; timeout is the backstop).
    for seed in ["0x5eed1", "0x5eed2", "0x5eed3"] {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", "60"]).arg(&scribble).args([seed, "1500"]);
        env(&mut c);
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{text}");
        assert!(out.status.success() && text.contains("crashes 0, hangs 0"), "seed {seed}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
        let pid = broker_pid();
        assert!(pid.is_some(), "the broker is running");
        // One broker throughout: it never died (a dead one would be replaced silently).
        assert_eq!(*first_broker.get_or_insert(pid.clone()), pid);
    }
    // The same broker still answers another process.
    let mut c = Command::new(&probe);
    c.args(["create", "0x5c21"]);
    env(&mut c);
    let out = String::from_utf8_lossy(&c.output().unwrap().stdout).to_string();
    assert!(out.starts_with("ok "), "{out}");
    stop_broker(&dir.join("ipcshim/default.sock"));
}
