//! Small formatting helpers shared by the listings: names of users and groups, times as
//! ctime(3) writes them, and JSON strings.

use std::ffi::CStr;

/// The user's name, or None if the password database has no entry.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found = std::ptr::null_mut();
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    (r == 0 && !found.is_null()).then(|| unsafe { CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned())
}

/// The group's name, or None if the group database has no entry.
pub fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut found = std::ptr::null_mut();
    let r = unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut found) };
    (r == 0 && !found.is_null()).then(|| unsafe { CStr::from_ptr(gr.gr_name) }.to_string_lossy().into_owned())
}

/// A user as ipcs shows it: the name, else the number.
pub fn user(uid: u32) -> String {
    user_name(uid).unwrap_or_else(|| uid.to_string())
}

/// A group as ipcs shows it: the name, else the number.
pub fn group(gid: u32) -> String {
    group_name(gid).unwrap_or_else(|| gid.to_string())
}

/// `ctime(3)` without its newline: "Thu Jan  1 00:00:00 1970", local time.
pub fn ctime(t: i64) -> String {
    let mut buf = [0 as libc::c_char; 64];
    let t = t as libc::time_t;
    if unsafe { libc::ctime_r(&t, buf.as_mut_ptr()) }.is_null() {
        return t.to_string();
    }
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().trim_end_matches('\n').to_string()
}

/// A time as ipcs's listings show it: ctime, or "Not set" for 0.
pub fn time_or_not_set(t: i64) -> String {
    if t == 0 {
        "Not set".to_string()
    } else {
        ctime(t)
    }
}

/// At most `n` characters of `s` (printf's `%.Ns`).
pub fn cut(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// `s` as a JSON string, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The C library's message for `errno`, as err(3) prints it (without Rust's "(os error N)").
pub fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; 256];
    if unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) } != 0 {
        return format!("Unknown error {errno}");
    }
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}
