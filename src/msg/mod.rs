//! System V message queues, as the kernel's ipc/msg.c: the broker's registry of queues and
//! msgctl (`queue`), the shared-memory layout of a queue (`layout`), and msgsnd / msgrcv in
//! the calling process (`client`, with `usercopy` for the caller's buffers).

pub mod client;
pub mod layout;
pub mod queue;
pub mod usercopy;

/// msgrcv flags (<linux/msg.h>).
pub const MSG_NOERROR: i32 = 0o10000;
pub const MSG_EXCEPT: i32 = 0o20000;
pub const MSG_COPY: i32 = 0o40000;

/// msgctl commands beside IPC_*.
pub const MSG_STAT: i32 = 11;
pub const MSG_INFO: i32 = 12;
pub const MSG_STAT_ANY: i32 = 13;
