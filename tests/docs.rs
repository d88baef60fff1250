//! The documentation stays true to the code: every option a command's `--help` lists is in
//! the man page, and every environment variable the library or command reads is in both the
//! man page and the README.

mod common;

use common::bin;
use std::path::Path;
use std::process::Command;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// The man page's text with roff's escaped hyphens made plain.
fn man_page() -> String {
    read("docs/ipcshim.1").replace("\\-", "-")
}

fn help(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(out.status.success(), "ipcshim {args:?} --help fails");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_man_page_documents_every_option_of_every_command() {
    let man = man_page();
    for cmd in ["run", "ls", "rm", "status", "stop", "broker"] {
        assert!(help(&["--help"]).contains(cmd), "ipcshim --help lists {cmd}");
        assert!(man.contains(&format!(".B {cmd}")) || man.contains(&format!(".B ipcshim {cmd}")), "man page has {cmd}");
        for word in help(&[cmd, "--help"]).split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
            let option = word.split('=').next().unwrap().trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            if option.starts_with("--") && option.len() > 2 {
                assert!(man.contains(option), "the man page lacks `ipcshim {cmd} {option}`");
            }
        }
    }
}

#[test]
fn every_environment_variable_is_documented() {
    let man = man_page();
    let readme = read("README.md");
    let mut sources = String::new();
    for dir in ["src", "src/bin/ipcshim"] {
        for entry in walk(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).as_path()) {
            sources.push_str(&std::fs::read_to_string(entry).unwrap());
        }
    }
    let mut names: Vec<&str> = sources
        .match_indices("\"IPCSHIM_")
        .map(|(i, _)| {
            let rest = &sources[i + 1..];
            &rest[..rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_')).unwrap_or(rest.len())]
        })
        .collect();
    names.sort();
    names.dedup();
    // Build-time variables (build.rs, the header test) are for developers, not users.
    names.retain(|n| !matches!(*n, "IPCSHIM_GENERATED_HEADER" | "IPCSHIM_UPDATE_HEADER"));
    assert!(names.len() >= 6, "found the variables: {names:?}");
    for name in names {
        assert!(man.contains(&format!(".B {name}")), "the man page lacks {name}");
        assert!(readme.contains(&format!("`{name}`")), "the README lacks {name}");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
