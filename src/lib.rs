//! ipcshim: System V IPC — message queues, semaphore sets, shared memory — in user space,
//! with the kernel's semantics. See docs/architecture.md.

pub mod abi;
pub mod broker;
pub mod client;
pub mod ipc;
pub mod msg;
pub mod sem;
pub mod shm;
pub mod sys;
pub mod wire;
