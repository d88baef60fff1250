//! `IPCSHIM_LOG=trace`: one line per intercepted call, written when it returns —
//! `semop(32769, 0x7ffc…, 1) = -1 EAGAIN (0.4 µs)`. When tracing is off an entry point
//! pays one load and a branch (see `traced!`).

use std::fmt;
use std::time::Instant;

/// What an entry point returns, as a trace shows it.
pub trait Outcome: Copy {
    fn failed(self) -> bool;
    fn show(self, f: &mut fmt::Formatter) -> fmt::Result;
}

impl Outcome for libc::c_int {
    fn failed(self) -> bool {
        self == -1
    }
    fn show(self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Outcome for libc::ssize_t {
    fn failed(self) -> bool {
        self == -1
    }
    fn show(self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Outcome for *mut libc::c_void {
    fn failed(self) -> bool {
        self as usize == usize::MAX
    }
    fn show(self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{self:p}")
    }
}

struct Shown<T: Outcome>(T);

impl<T: Outcome> fmt::Display for Shown<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0.failed() {
            let errno = unsafe { *libc::__errno_location() };
            write!(f, "-1 {}", errno_name(errno))
        } else {
            self.0.show(f)
        }
    }
}

/// Runs an entry point's body and writes its trace line (the caller checked that tracing
/// is on). errno is the body's, whatever writing the line does.
#[cold]
#[inline(never)]
pub fn call<T: Outcome>(name: &str, args: fmt::Arguments, body: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = body();
    let micros = start.elapsed().as_secs_f64() * 1e6;
    crate::log::write_line(format_args!("{name}({args}) = {} ({micros:.1} µs)", Shown(result)));
    result
}

/// `traced!("name", "format of the arguments", args…; body)`: the body, traced when
/// `IPCSHIM_LOG=trace`.
macro_rules! traced {
    ($name:literal, $($fmt:expr),+; $body:expr) => {{
        // The body twice rather than one closure for both: the untraced path then builds
        // no closure (the arguments' addresses stored for the tracing path's sake).
        if $crate::log::tracing() {
            $crate::abi::trace::call($name, format_args!($($fmt),+), || $body)
        } else {
            $body
        }
    }};
}
pub(crate) use traced;

/// A key as strace shows it.
pub struct Key(pub libc::key_t);

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("IPC_PRIVATE")
        } else {
            write!(f, "{:#x}", self.0 as u32)
        }
    }
}

/// Flags as strace shows them: the named bits, then the rest (permission bits) in octal.
pub struct Flags(pub libc::c_int, pub &'static [(libc::c_int, &'static str)]);

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut rest = self.0;
        let mut named = false;
        for &(bit, name) in self.1 {
            if rest & bit == bit && bit != 0 {
                write!(f, "{}{name}", if named { "|" } else { "" })?;
                named = true;
                rest &= !bit;
            }
        }
        match (named, rest) {
            (true, 0) => Ok(()),
            (true, _) => write!(f, "|0{rest:o}"),
            (false, 0) => f.write_str("0"),
            (false, _) => write!(f, "0{rest:o}"),
        }
    }
}

pub const GET_FLAGS: &[(libc::c_int, &str)] = &[(crate::ipc::IPC_CREAT, "IPC_CREAT"), (crate::ipc::IPC_EXCL, "IPC_EXCL")];

/// A control command by name (IPC_64 shown when set, as the kernel sees it).
pub struct Cmd(pub libc::c_int, pub &'static [(libc::c_int, &'static str)]);

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        use crate::ipc::{IPC_64, IPC_INFO, IPC_RMID, IPC_SET, IPC_STAT};
        let common = [(IPC_RMID, "IPC_RMID"), (IPC_SET, "IPC_SET"), (IPC_STAT, "IPC_STAT"), (IPC_INFO, "IPC_INFO")];
        let cmd = self.0 & !IPC_64;
        match common.iter().chain(self.1).find(|(c, _)| *c == cmd) {
            Some((_, name)) if self.0 & IPC_64 != 0 => write!(f, "IPC_64|{name}"),
            Some((_, name)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// The symbolic name of the errnos System V calls return; others by number.
fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOMSG => "ENOMSG",
        libc::EIDRM => "EIDRM",
        libc::EPROTO => "EPROTO",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}
