//! System V message queues, as the kernel's ipc/msg.c: the broker's registry of queues
//! (`queue`) — the messages themselves live in each queue's shared memory.

pub mod queue;
