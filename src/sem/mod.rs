//! System V semaphore sets, as the kernel's ipc/sem.c:
//! - `ops`: the operation engine (`perform_atomic_semop`), pure;
//! - `layout`: a set's shared memory (values, waiters, undo slots, journal, lock);
//! - `array`: the operations under the set's lock (semop, wake-ups, SETVAL/SETALL, exit);
//! - `set`: the broker's registry (semget, IPC_STAT/IPC_SET/IPC_RMID/…_INFO, deaths);
//! - `wait`: sleeping in semop, and waking a sleeper in another process;
//! - `client`: the calls made in the process, semop without leaving it when it need not
//!   wait.

pub mod array;
pub mod client;
pub mod layout;
pub mod ops;
pub mod set;
pub mod wait;

/// semctl commands (include/uapi/linux/sem.h).
pub const GETPID: i32 = 11;
pub const GETVAL: i32 = 12;
pub const GETALL: i32 = 13;
pub const GETNCNT: i32 = 14;
pub const GETZCNT: i32 = 15;
pub const SETVAL: i32 = 16;
pub const SETALL: i32 = 17;
pub const SEM_STAT: i32 = 18;
pub const SEM_INFO: i32 = 19;
pub const SEM_STAT_ANY: i32 = 20;

/// The kernel's compile-time constants reported by IPC_INFO/SEM_INFO.
pub const SEMMAP: i64 = 1_024_000_000;
pub const SEMMNU: i64 = 1_024_000_000;
pub const SEMUME: i64 = 500;
pub const SEMUSZ: i64 = 20;

