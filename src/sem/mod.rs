//! System V semaphore sets, as the kernel's ipc/sem.c: the broker's registry of sets
//! (`set`) — the data plane (values, waiters, undo) lives in each set's shared memory.

pub mod set;
