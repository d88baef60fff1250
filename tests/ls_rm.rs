//! `ipcshim ls` and `ipcshim rm` against util-linux's `ipcs` and `ipcrm` on the kernel: the
//! same objects are made in the kernel and in a private namespace (tests/ipc_maker.c), and
//! the two commands' outputs must have the same sections, headers, columns and messages.
//! Values that legitimately differ (ids, times, pids, other users' kernel objects) are
//! masked. Every kernel object a test makes is removed when the test ends.

mod common;

use common::{as_user, bin, compile, is_root, lib, scratch_with_mode};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The maker program, compiled once per test run.
fn maker() -> &'static Path {
    static MAKER: OnceLock<PathBuf> = OnceLock::new();
    MAKER.get_or_init(|| compile("ipc_maker", &format!("ipc_maker-{}", std::process::id())))
}

/// A key base of this test process and test: the objects get keys base+1..3.
fn key_base(test: i32) -> i32 {
    0x5c00_0000 | ((std::process::id() as i32 & 0xffff) << 8) | (test << 4)
}

/// The ids the maker printed: queue, segment, set.
#[derive(Clone, Copy, Debug)]
struct Ids {
    msg: i32,
    shm: i32,
    sem: i32,
}

fn parse_ids(out: &Output) -> Ids {
    let text = String::from_utf8_lossy(&out.stdout);
    let w: Vec<&str> = text.split_whitespace().collect();
    assert!(out.status.success() && w.len() == 6, "maker failed: {out:?}");
    Ids { msg: w[1].parse().unwrap(), shm: w[3].parse().unwrap(), sem: w[5].parse().unwrap() }
}

/// Objects made in the kernel, removed on drop.
struct Kernel {
    ids: Ids,
    base: i32,
}

impl Kernel {
    fn make(test: i32) -> Kernel {
        // As root, the kernel's side lives in an IPC namespace of this test's thread alone
        // (the thread's children inherit it): its ids start at 0, as a fresh namespace's
        // do under ipcshim. The machine's ids grow with every run and, once wider than
        // ipcs's columns, would shift its rows.
        if is_root() {
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWIPC) }, 0, "{}", std::io::Error::last_os_error());
        }
        let base = key_base(test);
        let out = Command::new(maker()).arg(base.to_string()).env_remove("LD_PRELOAD").output().unwrap();
        Kernel { ids: parse_ids(&out), base }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        unsafe {
            libc::msgctl(self.ids.msg, libc::IPC_RMID, std::ptr::null_mut());
            libc::shmctl(self.ids.shm, libc::IPC_RMID, std::ptr::null_mut());
            libc::semctl(self.ids.sem, 0, libc::IPC_RMID);
        }
    }
}

/// A private namespace (an IPCSHIM_DIR of its own), its broker stopped on drop.
struct Ns {
    dir: PathBuf,
}

impl Ns {
    fn new(name: &str) -> Ns {
        lib();
        // Others (the tests' unprivileged users) must reach the socket inside.
        Ns { dir: scratch_with_mode(&format!("lsrm-{name}"), 0o755) }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).env("IPCSHIM_DIR", &self.dir).env_remove("IPCSHIM_NAMESPACE").env_remove("IPCSHIM_SOCKET").env_remove("LD_PRELOAD");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_as(&self, uid: u32, args: &[&str]) -> Output {
        as_user(&mut self.command(args), uid).output().unwrap()
    }

    fn make(&self, test: i32) -> Ids {
        let base = key_base(test).to_string();
        parse_ids(&self.run(&["run", "--", maker().to_str().unwrap(), &base]))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.run(&["stop", "--force"]);
    }
}

/// The real util-linux command against the kernel.
fn util(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(name);
    c.args(args).env_remove("LD_PRELOAD").env("LC_ALL", "C");
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---- comparing layouts ----

/// A line of a listing: its text, and whether it is an object's row.
struct Line {
    text: String,
    row: bool,
    summary: bool,
}

/// The lines of an ipcs-style listing, keeping only rows of the given objects (the kernel
/// holds other users' objects too). Rows start with the key (default listing) or the id.
fn lines(out: &str, ids: Ids, base: i32) -> Vec<Line> {
    let keys: Vec<String> = (1..=3).map(|k| format!("0x{:08x}", (base + k) as u32)).collect();
    let mut result = Vec::new();
    let mut family = None;
    let (mut listing, mut title_next, mut summary) = (false, false, false);
    for text in out.lines() {
        if text.starts_with("------") {
            family = ["Message", "Shared", "Semaphore"].iter().position(|w| text.contains(w));
            summary = text.contains("Status");
            listing = !text.contains("Limits") && !summary;
            title_next = listing;
            result.push(Line { text: text.into(), row: false, summary: false });
            continue;
        }
        if text.is_empty() {
            listing = false;
        }
        if title_next || !listing || text.is_empty() {
            title_next = false;
            result.push(Line { text: text.into(), row: false, summary });
            continue;
        }
        let first = text.split_whitespace().next().unwrap_or("");
        let id = [ids.msg, ids.shm, ids.sem][family.expect("rows follow a section header")];
        if keys.iter().any(|k| k == first) || first == id.to_string() {
            result.push(Line { text: text.into(), row: true, summary: false });
        }
    }
    result
}

fn mask(token: &str) -> &str {
    if token.chars().any(|c| c.is_ascii_digit()) {
        "N"
    } else {
        token
    }
}

/// Digit runs replaced by N.
fn mask_digits(s: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Words with their start and end columns.
fn tokens(s: &str) -> Vec<(usize, usize, &str)> {
    let mut v = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices().chain(std::iter::once((s.len(), ' '))) {
        match (c == ' ' || c == '\t', start) {
            (true, Some(b)) => {
                v.push((b, i, &s[b..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    v
}

/// Asserts that `ours` has the layout of `kernel`: the same lines; headers identical; rows
/// with the same words (numbers masked), each starting — or, for right-aligned numbers,
/// ending — in the same column; summary figures masked.
fn assert_same_layout(what: &str, kernel: &str, kernel_ids: Ids, ours: &str, our_ids: Ids, base: i32) {
    let (k, o) = (lines(kernel, kernel_ids, base), lines(ours, our_ids, base));
    let show = || format!("{what}\n--- ipcs (kernel):\n{kernel}\n--- ipcshim ls:\n{ours}");
    assert_eq!(k.len(), o.len(), "different lines: {}", show());
    for (k, o) in k.iter().zip(&o) {
        assert_eq!(k.row, o.row, "{}", show());
        if k.row {
            let (kt, ot) = (tokens(&k.text), tokens(&o.text));
            assert_eq!(kt.len(), ot.len(), "row {:?} vs {:?}: {}", k.text, o.text, show());
            for (a, b) in kt.iter().zip(&ot) {
                assert_eq!(mask(a.2), mask(b.2), "row {:?} vs {:?}: {}", k.text, o.text, show());
                let numeric = mask(a.2) == "N";
                assert!(a.0 == b.0 || (numeric && a.1 == b.1), "column of {:?} in {:?} vs {:?}: {}", b.2, k.text, o.text, show());
            }
            // Trailing padding too.
            assert_eq!(k.text.len() - kt.last().map_or(0, |t| t.1), o.text.len() - ot.last().map_or(0, |t| t.1), "{}", show());
        } else if k.summary {
            assert_eq!(mask_digits(&k.text), mask_digits(&o.text), "{}", show());
        } else {
            assert_eq!(k.text, o.text, "{}", show());
        }
    }
}

/// `ipcs -i` output against `ls -i`: the same lines, numbers masked.
fn assert_same_detail(what: &str, kernel: &str, ours: &str) {
    let (k, o): (Vec<String>, Vec<String>) = (kernel.lines().map(mask_digits).collect(), ours.lines().map(mask_digits).collect());
    assert_eq!(k, o, "{what}\n--- ipcs (kernel):\n{kernel}\n--- ipcshim ls:\n{ours}");
}

// ---- tests ----

#[test]
fn ls_has_the_layout_of_ipcs_for_every_option() {
    let kernel = Kernel::make(1);
    let ns = Ns::new("layout");
    let ours = ns.make(1);
    for opts in [&[][..], &["-a"], &["-t"], &["-p"], &["-c"], &["-u"], &["-l"], &["-b"], &["-q"], &["-m", "-s"], &["-s", "-t"], &["-q", "-p"], &["-u", "-b"], &["-l", "-b"], &["-mqs"], &["--queues", "--pid"]] {
        let k = util("ipcs", opts).output().unwrap();
        let mut args = vec!["ls"];
        args.extend_from_slice(opts);
        let o = ns.run(&args);
        assert!(k.status.success() && o.status.success(), "{opts:?}: {o:?}");
        assert_same_layout(&format!("options {opts:?}"), &stdout(&k), kernel.ids, &stdout(&o), ours, kernel.base);
        if opts.contains(&"-l") {
            // Limits: a namespace starts with the machine's.
            assert_eq!(stdout(&k), stdout(&o), "limits differ from the machine's");
        }
    }
    for (flag, k_id, o_id) in [("-q", kernel.ids.msg, ours.msg), ("-m", kernel.ids.shm, ours.shm), ("-s", kernel.ids.sem, ours.sem)] {
        let k = util("ipcs", &[flag, "-i", &k_id.to_string()]).output().unwrap();
        let o = ns.run(&["ls", flag, "-i", &o_id.to_string()]);
        assert!(k.status.success() && o.status.success(), "{flag}: {o:?}");
        assert_same_detail(&format!("-i ID {flag}"), &stdout(&k), &stdout(&o));
    }
    // The semaphore values themselves: 1 2 3 plus the maker's semop on #0.
    let o = stdout(&ns.run(&["ls", "-s", "-i", &ours.sem.to_string()]));
    let values: Vec<&str> = o.lines().skip_while(|l| !l.starts_with("semnum")).skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(values, ["2", "2", "3"], "{o}");
}

#[test]
fn ls_id_errors_are_those_of_ipcs() {
    let ns = Ns::new("iderr");
    let ours = ns.make(2);
    // An unknown id: a warning, and success.
    let o = ns.run(&["ls", "-q", "-i", "2147480000"]);
    let k = util("ipcs", &["-q", "-i", "2147480000"]).output().unwrap();
    assert_eq!((o.status.code(), k.status.code()), (Some(0), Some(0)));
    assert_eq!(stderr(&o).replace("ipcshim ls:", "ipcs:"), stderr(&k));
    assert!(stdout(&o).is_empty());
    // Zero or two families with -i, or an id that is not a number: usage errors.
    for args in [&["ls", "-i", "0"][..], &["ls", "-q", "-s", "-i", "0"], &["ls", "-q", "-i", "x"]] {
        let o = ns.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("try 'ipcshim ls --help'"), "{}", stderr(&o));
    }
    assert!(stderr(&ns.run(&["ls", "-i", "0"])).contains("when using an ID, a single resource must be specified"));
    let _ = ours;
}

#[test]
fn ls_json_describes_what_was_made() {
    let ns = Ns::new("json");
    let ids = ns.make(3);
    let base = key_base(3);
    let o = ns.run(&["ls", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ls --json is one JSON document");
    let me = unsafe { libc::geteuid() } as u64;
    assert_eq!(doc["broker_running"], true);
    let q = &doc["message_queues"].as_array().unwrap()[..];
    assert_eq!(q.len(), 1);
    assert_eq!((q[0]["key"].as_i64(), q[0]["msqid"].as_i64()), (Some(base as i64 + 1), Some(ids.msg as i64)));
    assert_eq!((q[0]["perms"].as_str(), q[0]["messages"].as_u64(), q[0]["used_bytes"].as_u64()), (Some("640"), Some(2), Some(20)));
    assert_eq!((q[0]["uid"].as_u64(), q[0]["cuid"].as_u64()), (Some(me), Some(me)));
    assert!(q[0]["stime"].as_i64().unwrap() > 0 && q[0]["rtime"].as_i64() == Some(0) && q[0]["lspid"].as_i64().unwrap() > 0);
    let s = &doc["shared_memory"].as_array().unwrap()[..];
    assert_eq!(s.len(), 1);
    assert_eq!((s[0]["key"].as_i64(), s[0]["shmid"].as_i64(), s[0]["perms"].as_str()), (Some(base as i64 + 2), Some(ids.shm as i64), Some("600")));
    assert_eq!((s[0]["bytes"].as_u64(), s[0]["nattch"].as_u64(), s[0]["dest"].as_bool()), (Some(5000), Some(0), Some(false)));
    assert!(s[0]["atime"].as_i64().unwrap() > 0 && s[0]["dtime"].as_i64().unwrap() > 0);
    let sets = &doc["semaphore_arrays"].as_array().unwrap()[..];
    assert_eq!(sets.len(), 1);
    assert_eq!((sets[0]["key"].as_i64(), sets[0]["semid"].as_i64(), sets[0]["nsems"].as_u64()), (Some(base as i64 + 3), Some(ids.sem as i64), Some(3)));
    let values: Vec<i64> = sets[0]["semaphores"].as_array().unwrap().iter().map(|v| v["value"].as_i64().unwrap()).collect();
    assert_eq!(values, [2, 2, 3]);
    assert!(sets[0]["semaphores"][0]["pid"].as_i64().unwrap() > 0 && sets[0]["otime"].as_i64().unwrap() > 0);
    assert_eq!((doc["summary"]["queues"].as_i64(), doc["summary"]["messages"].as_i64(), doc["summary"]["semaphores"].as_i64()), (Some(1), Some(2), Some(3)));
    assert!(doc["limits"]["msgmni"].as_u64().unwrap() > 0);

    // A selection of families, and one object.
    let o = ns.run(&["ls", "-q", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(doc.get("message_queues").is_some() && doc.get("shared_memory").is_none() && doc.get("semaphore_arrays").is_none());
    let o = ns.run(&["ls", "-s", "-i", &ids.sem.to_string(), "--json"]);
    let set: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(set["semid"].as_i64(), Some(ids.sem as i64));
    assert_eq!(set["semaphores"].as_array().map(|a| a.len()), Some(3));
}

#[test]
fn without_a_broker_the_namespace_is_empty_and_none_is_started() {
    let ns = Ns::new("nobroker");
    let o = ns.run(&["ls"]);
    assert!(o.status.success(), "{o:?}");
    let k = "\n------ Message Queues --------\nkey        msqid      owner      perms      used-bytes   messages    \n\n\
             ------ Shared Memory Segments --------\nkey        shmid      owner      perms      bytes      nattch     status      \n\n\
             ------ Semaphore Arrays --------\nkey        semid      owner      perms      nsems     \n\n";
    assert_eq!(stdout(&o), k);
    let doc: serde_json::Value = serde_json::from_slice(&ns.run(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(doc["broker_running"], false);
    assert_eq!(doc["message_queues"].as_array().map(|a| a.len()), Some(0));
    // rm finds nothing: ipcrm's messages for a namespace without the objects.
    let o = ns.run(&["rm", "-q", "5", "-S", "0x1234"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "ipcshim rm: invalid id (5)\nipcshim rm: invalid key (0x1234)\n");
    assert!(ns.run(&["rm", "-a"]).status.success());
    // Still no broker, no socket.
    assert!(!ns.run(&["status"]).status.success());
    assert!(!ns.dir.join("ipcshim").join("default.sock").exists());
}

#[test]
fn rm_removes_by_id_key_and_all() {
    let ns = Ns::new("rm");
    let ids = ns.make(4);
    let base = key_base(4);
    let rows = |flag: &str| stdout(&ns.run(&["ls", flag])).lines().filter(|l| l.starts_with("0x")).count();
    assert_eq!((rows("-q"), rows("-m"), rows("-s")), (1, 1, 1));
    let o = ns.run(&["rm", "-q", &ids.msg.to_string()]);
    assert!(o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
    assert_eq!(rows("-q"), 0);
    let o = ns.run(&["rm", "--shmem-key", &format!("{:#x}", base + 2)]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(rows("-m"), 0);
    // Removing it again: ipcrm's message, exit status 1.
    let o = ns.run(&["rm", "-m", &ids.shm.to_string()]);
    assert_eq!((o.status.code(), stderr(&o)), (Some(1), format!("ipcshim rm: invalid id ({})\n", ids.shm)));
    // --all=msg leaves the set; -v says what it does; --all removes it.
    assert!(ns.run(&["rm", "--all=msg"]).status.success());
    assert_eq!(rows("-s"), 1);
    let o = ns.run(&["rm", "-v", "-a"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), format!("removing semaphore id `{}'\n", ids.sem));
    assert_eq!(rows("-s"), 0);
    assert!(stdout(&ns.run(&["status"])).contains("objects:     0 (0 message queues, 0 semaphore arrays, 0 shared memory segments)"));

    // The old form.
    let ids = ns.make(5);
    let o = ns.run(&["rm", "sem", &ids.sem.to_string()]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "resource(s) deleted\n".to_string()));
    let o = ns.run(&["rm", "shm", &ids.shm.to_string(), "x"]);
    assert_eq!((o.status.code(), stderr(&o)), (Some(1), "ipcshim rm: invalid id: x\n".to_string()));
    assert_eq!(rows("-m"), 0, "the good id is still removed");
    assert!(ns.run(&["rm", "-Q", &(key_base(5) + 1).to_string()]).status.success());
    assert_eq!(rows("-q"), 0);
}

#[test]
fn rm_errors_are_those_of_ipcrm() {
    let ns = Ns::new("rmerr");
    let _ids = ns.make(6);
    let absent_key = format!("{:#x}", key_base(6) + 9);
    let cases: Vec<Vec<String>> = [
        &["-q", "2147480000"][..],
        &["-m", "2147480001", "-s", "2147480002"],
        &["-Q", &absent_key],
        &["--semaphore-key", "0"],
        &["-m", "abc"],
        &["-s", "99999999999"],
        &["-M", "0xzz"],
        &["-afoo"],
        &["msg", "2147480003", "y"],
        &["shm"],
        &["-q", " 2147480004", "-q", "+2147480005", "-q", "7 ", "-q", ""],
        &["-Q", "-1"],
        &["-Q", "0x"],
        &["-S", "01777777777"],
        &["--queue-key", "99999999999999999999"],
        &["-s"],
        &["--all=shm", "extra"],
    ]
    .iter()
    .map(|c| c.iter().map(|s| s.to_string()).collect())
    .collect();
    for case in cases {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        let k = util("ipcrm", &args).output().unwrap();
        let mut ours = vec!["rm"];
        ours.extend_from_slice(&args);
        let o = ns.run(&ours);
        // ipcrm's usage errors exit 1 with a "Try" line; ours are one line and exit 2.
        let usage = stderr(&k).contains("Try 'ipcrm --help'");
        let expect_code = if usage { 2 } else { k.status.code().unwrap() };
        assert_eq!(o.status.code(), Some(expect_code), "{args:?}: {o:?} vs ipcrm {k:?}");
        if usage {
            assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
            assert_eq!(stderr(&o).lines().next().unwrap().split(';').next(), stderr(&k).lines().next().map(|l| l.replacen("ipcrm:", "ipcshim rm:", 1)).as_deref());
        } else {
            assert_eq!(stderr(&o), stderr(&k).replace("ipcrm:", "ipcshim rm:"), "{args:?}");
        }
    }
    // Unknown options: one line saying what to do, exit status 2.
    let o = ns.run(&["rm", "-x"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "ipcshim rm: invalid option -- 'x'; try 'ipcshim rm --help'\n");
}

#[test]
fn permissions_are_those_of_the_kernel() {
    if !is_root() {
        eprintln!("permissions_are_those_of_the_kernel: needs root to act as another user; not run");
        return;
    }
    let nobody = 65534;
    let kernel = Kernel::make(7);
    let ns = Ns::new("perm");
    let ours = ns.make(7);
    // Removing another user's objects: refused, by id and by key (which names the id).
    for (flag, k_id, o_id) in [("-q", kernel.ids.msg, ours.msg), ("-m", kernel.ids.shm, ours.shm), ("-s", kernel.ids.sem, ours.sem)] {
        let k = as_user(&mut util("ipcrm", &[flag, &k_id.to_string()]), nobody).output().unwrap();
        let o = ns.run_as(nobody, &["rm", flag, &o_id.to_string()]);
        assert_eq!(k.status.code(), Some(1));
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(stderr(&o).replace(&o_id.to_string(), "ID"), stderr(&k).replace("ipcrm:", "ipcshim rm:").replace(&k_id.to_string(), "ID"));
    }
    let key = format!("{:#x}", key_base(7) + 1);
    let k = as_user(&mut util("ipcrm", &["-Q", &key]), nobody).output().unwrap();
    let o = ns.run_as(nobody, &["rm", "-Q", &key]);
    assert_eq!((k.status.code(), o.status.code()), (Some(1), Some(1)));
    assert_eq!(stderr(&o).replace(&ours.msg.to_string(), "ID"), stderr(&k).replace("ipcrm:", "ipcshim rm:").replace(&kernel.ids.msg.to_string(), "ID"));
    // -a removes only what the caller may read (*_STAT): nothing here, and no error.
    let o = ns.run_as(nobody, &["rm", "-a"]);
    assert!(o.status.success() && o.stderr.is_empty(), "{o:?}");
    // Listing shows every object (as ipcs does through /proc/sysvipc) ...
    let k = as_user(&mut util("ipcs", &[]), nobody).output().unwrap();
    let o = ns.run_as(nobody, &["ls"]);
    assert_same_layout("ls as another user", &stdout(&k), kernel.ids, &stdout(&o), ours, kernel.base);
    // ... but a set's values need read permission.
    let k = as_user(&mut util("ipcs", &["-s", "-i", &kernel.ids.sem.to_string()]), nobody).output().unwrap();
    let o = ns.run_as(nobody, &["ls", "-s", "-i", &ours.sem.to_string()]);
    assert_eq!((k.status.code(), o.status.code()), (Some(1), Some(1)));
    assert_eq!(stderr(&o), stderr(&k).replace("ipcs:", "ipcshim ls:"));
    // Exactly what the real ipcs prints for another user under ipcshim (qbytes is 0 in
    // `ipcs -q -i` without read permission: ipcs takes it from IPC_STAT).
    for opts in [&["ls"][..], &["ls", "-q", "-i", &ours.msg.to_string()], &["ls", "-m", "-i", &ours.shm.to_string()]] {
        let mut theirs = vec!["run", "--", "ipcs"];
        theirs.extend_from_slice(&opts[1..]);
        let t = as_user(&mut ns.command(&theirs), nobody).env("LC_ALL", "C").output().unwrap();
        let o = ns.run_as(nobody, opts);
        assert_eq!((stdout(&o), o.status.code()), (stdout(&t), t.status.code()), "{opts:?}");
    }
    assert!(stdout(&ns.run_as(nobody, &["ls", "-q", "-i", &ours.msg.to_string()])).contains("qbytes=0\t"));
    let doc: serde_json::Value = serde_json::from_slice(&ns.run_as(nobody, &["ls", "--json"]).stdout).unwrap();
    assert!(doc["semaphore_arrays"][0]["semaphores"].is_null());
    // The owner still has them all.
    assert_eq!(ns.run(&["ls"]).stdout.split(|&b| b == b'\n').filter(|l| l.starts_with(b"0x")).count(), 3);
}

#[test]
fn status_counts_objects_per_family_and_memory() {
    let ns = Ns::new("status");
    ns.make(8);
    let o = ns.run(&["status"]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("namespace:   default\n"), "{text}");
    assert!(text.contains("objects:     3 (1 message queues, 1 semaphore arrays, 1 shared memory segments)\n"), "{text}");
    let field = |name: &str| -> i64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
        line[name.len()..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let pid = field("broker pid:");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // The segment's 5000 bytes were written: at least two pages are held.
    assert!(field("memory:") >= 8192, "{text}");
    assert!(field("processes:") >= 0 && field("connections:") >= 0);
}

#[test]
fn every_command_has_help_and_rejects_unknown_options() {
    let ns = Ns::new("help");
    let top = ns.run(&["--help"]);
    assert!(top.status.success());
    for cmd in ["run", "ls", "rm", "status", "stop", "broker"] {
        assert!(stdout(&top).contains(&format!(" {cmd} ")), "{cmd} missing from --help");
        let o = ns.run(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd} --help: {o:?}");
        assert!(stdout(&o).starts_with(&format!("Usage:\n ipcshim {cmd}")), "{cmd}: {}", stdout(&o));
        let o = ns.run(&[cmd, "--no-such-option"]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {o:?}");
        assert_eq!(stderr(&o), format!("ipcshim {cmd}: unrecognized option '--no-such-option'; try 'ipcshim {cmd} --help'\n"));
    }
    let help = |cmd: &str| stdout(&ns.run(&[cmd, "--help"]));
    for opt in ["--id", "--json", "--shmems", "--queues", "--semaphores", "--all", "--time", "--pid", "--creator", "--limits", "--summary", "--bytes", "--socket"] {
        assert!(help("ls").contains(opt), "ls --help lacks {opt}");
    }
    for opt in ["--shmem-id", "--shmem-key", "--queue-id", "--queue-key", "--semaphore-id", "--semaphore-key", "--all[=shm|msg|sem]", "--verbose", "--socket"] {
        assert!(help("rm").contains(opt), "rm --help lacks {opt}");
    }
    let o = ns.run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("try 'ipcshim --help'"));
}

#[test]
fn ls_prints_exactly_what_ipcs_prints_under_ipcshim() {
    // The real ipcs, preloaded, reads the namespace through ipcshim's /proc/sysvipc views:
    // the same objects, so the same bytes.
    let ns = Ns::new("sameipcs");
    let ids = ns.make(9);
    for opts in [&[][..], &["-t"], &["-p"], &["-c"], &["-u"], &["-l"], &["-b"], &["-q", "-i", &ids.msg.to_string()], &["-m", "-i", &ids.shm.to_string()], &["-s", "-i", &ids.sem.to_string()]] {
        let mut theirs = vec!["run", "--", "ipcs"];
        theirs.extend_from_slice(opts);
        let mut ours = vec!["ls"];
        ours.extend_from_slice(opts);
        let (t, o) = (ns.command(&theirs).env("LC_ALL", "C").output().unwrap(), ns.run(&ours));
        assert!(t.status.success() && o.status.success(), "{opts:?}: {t:?} {o:?}");
        assert_eq!(stdout(&o), stdout(&t), "{opts:?}");
    }
}

#[test]
fn rm_does_what_ipcrm_does_under_ipcshim() {
    // Two namespaces made alike (fresh namespaces number their objects alike): ipcshim rm in
    // one, the real ipcrm preloaded in the other; same output, status and what is left.
    let (a, b) = (Ns::new("rm-a"), Ns::new("rm-b"));
    let (ia, ib) = (a.make(10), b.make(10));
    assert_eq!((ia.msg, ia.shm, ia.sem), (ib.msg, ib.shm, ib.sem));
    let key = |n: i32| format!("{:#x}", key_base(10) + n);
    let cases: Vec<Vec<String>> = vec![
        vec!["-v".into(), "-q".into(), ia.msg.to_string(), "-q".into(), ia.msg.to_string()],
        vec!["-M".into(), key(2), "-S".into(), key(9)],
        vec!["--all=sem".into(), "-v".into()],
        vec!["-a".into()],
    ];
    for case in cases {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        let mut ours = vec!["rm"];
        ours.extend_from_slice(&args);
        let mut theirs = vec!["run", "--", "ipcrm"];
        theirs.extend_from_slice(&args);
        let (o, t) = (a.run(&ours), b.command(&theirs).env("LC_ALL", "C").output().unwrap());
        assert_eq!(o.status.code(), t.status.code(), "{args:?}: {o:?} vs {t:?}");
        assert_eq!(stdout(&o), stdout(&t), "{args:?}");
        assert_eq!(stderr(&o), stderr(&t).replace("ipcrm:", "ipcshim rm:"), "{args:?}");
        assert_eq!(stdout(&a.run(&["ls"])), stdout(&b.run(&["ls"])), "after {args:?}");
    }
    assert_eq!(stdout(&a.run(&["ls"])).lines().filter(|l| l.starts_with("0x")).count(), 0);
}
