//! What the three families share, as the kernel's ipc/util.c: ids, `ipc_perm` and its
//! checks, limits, and the namespace table that clients read without asking the broker.

pub mod alloc;
pub mod ids;
pub mod handles;
pub mod limits;
pub mod perm;
pub mod sync;
pub mod table;
pub mod thread;
pub mod usercopy;

/// An errno value. Every fallible operation in the core returns `Result<T>`; the C shims
/// turn `Err(Errno(e))` into `-1` with `errno = e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type Result<T> = std::result::Result<T, Errno>;

impl Errno {
    /// The calling thread's errno after a failed libc call.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

/// The three object families. The discriminant is used on the wire and as the table index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Msg = 0,
    Sem = 1,
    Shm = 2,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Msg, Family::Sem, Family::Shm];

    pub fn from_i64(v: i64) -> Option<Family> {
        match v {
            0 => Some(Family::Msg),
            1 => Some(Family::Sem),
            2 => Some(Family::Shm),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Msg => "msg",
            Family::Sem => "sem",
            Family::Shm => "shm",
        }
    }
}

/// The flag bits of `*get` and `ipc_perm.mode`, as in <linux/ipc.h>.
pub const IPC_CREAT: i32 = 0o1000;
pub const IPC_EXCL: i32 = 0o2000;
pub const IPC_NOWAIT: i32 = 0o4000;
pub const IPC_PRIVATE: i32 = 0;

pub const IPC_RMID: i32 = 0;
pub const IPC_SET: i32 = 1;
pub const IPC_STAT: i32 = 2;
pub const IPC_INFO: i32 = 3;
/// The 64-bit layouts flag of 32-bit ABIs. x86_64 and aarch64 kernels parse no version:
/// a `cmd` with it is unknown (EINVAL), and glibc does not set it there. Traces name it.
pub const IPC_64: i32 = 0x100;

/// Seconds since the epoch, as the kernel's `ktime_get_real_seconds`: the coarse clock
/// that time() reads (through the vDSO: no system call). The precise clock may already be
/// a second ahead of it, and a program comparing an object's times with time() would see
/// them in its future.
pub fn now_secs() -> i64 {
    unsafe { libc::time(std::ptr::null_mut()) as i64 }
}
