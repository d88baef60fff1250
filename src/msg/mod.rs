//! System V message queues, as the kernel's ipc/msg.c: the broker's registry of queues and
//! msgctl (`queue`), the shared-memory layout of a queue (`layout`), and msgsnd / msgrcv in
//! the calling process (`client`, with `crate::ipc::usercopy` for the caller's buffers).
//!
//! msgsnd and msgrcv that need not wait never leave the process: the id and the caller's
//! rights are checked against the namespace table, the queue's memfd is mapped once per
//! process, and the operation runs under the queue's robust lock (long texts are copied
//! before and after it: layout.rs, "Copies outside the lock"). Waiting first spins
//! (adaptively, see client.rs `Spin`), then sleeps on a futex
//! word in the queue's header (one for senders, one for receivers), counted so that wakers
//! skip the system call when nobody sleeps. msgget of an existing key reads the table; the
//! broker creates queues and answers msgctl, reading the counters from the queue's header.
//! A blocking call sleeps in the C entry point, outside the panic guard, with asynchronous
//! cancellation enabled (as glibc's own blocking calls), so it is a cancellation point.
//!
//! Where this differs from the kernel, and why:
//! - EFAULT for a bad buffer comes from probing it (one access per page) under our SIGSEGV /
//!   SIGBUS handler (x86_64). A program that replaces that handler gets the fault itself; on
//!   other architectures only NULL and the first page are recognised. A buffer another
//!   thread unmaps between the probe and the copy faults in the program.
//! - msgrcv into a buffer it cannot write fails with EFAULT and leaves the message queued
//!   (the kernel has already taken it off the queue and loses it).
//! - A receiver SIGKILLed in the few instructions between taking the message off the queue
//!   and storing its type into the caller's buffer loses that message (the kernel's
//!   msgrcv cannot be interrupted between the two). Anywhere else, no message is lost or
//!   duplicated: inserting and removing are each one store, and a lock whose holder died
//!   is repaired from the message list.
//! - No direct hand-off to a blocked receiver (the kernel's pipelined_send): every matching
//!   waiter is woken and they race, so a receiver arriving later may take the message, and
//!   blocked senders are not served in arrival order.
//! - Each queue's memfd holds 4 × MSGMNB bytes and messages; msg_qbytes may be raised
//!   further (with CAP_SYS_RESOURCE) but sends then find the queue full at that capacity.
//! - The broker reads a queue's counters under its lock when it can have it at once; if a
//!   client is stopped holding it, IPC_STAT / MSG_INFO read them without it.
//! - MSGMAX is asked from the broker once per process.
//! - A signal handler that runs while a waiting call spins (its first 10 µs at most) or
//!   in the instant before its futex sleep does not make the call fail with EINTR: the
//!   call sleeps on (the kernel checks for signals inside its sleep).
//! - Only the sleep is a cancellation point (glibc also acts on a pending cancellation
//!   when a non-blocking msgsnd / msgrcv is entered in a multi-threaded process).
//! - msg_lrpid is the receiving thread's id whenever the receiver had slept during the
//!   call (Linux: when the message was handed to it by pipelined_send); a receiver woken
//!   by IPC_SET that then finds a message also records its thread id.

pub mod client;
pub mod layout;
pub mod queue;

/// msgrcv flags (<linux/msg.h>).
pub const MSG_NOERROR: i32 = 0o10000;
pub const MSG_EXCEPT: i32 = 0o20000;
pub const MSG_COPY: i32 = 0o40000;

/// msgctl commands beside IPC_*.
pub const MSG_STAT: i32 = 11;
pub const MSG_INFO: i32 = 12;
pub const MSG_STAT_ANY: i32 = 13;

/// Whether the process owning a stash (layout.rs `Stash`) still lives: what it holds may
/// be given to others only once it is gone.
pub(crate) fn stash_owner_alive(pid: i32) -> bool {
    pid > 0 && !crate::ipc::sync::holder_gone(pid as u32, 0)
}
