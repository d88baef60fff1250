//! ipcshim: System V IPC — message queues, semaphore sets, shared memory — in user space,
//! with the kernel's semantics. See docs/architecture.md.

pub mod abi;
pub mod broker;
pub mod client;
pub mod inspect;
pub mod ipc;
pub mod log;
pub mod msg;
pub mod sem;
pub mod shm;
pub mod sys;
pub mod wire;

/// malloc, marked per thread while a call is inside it (ipc/alloc.rs).
#[global_allocator]
static ALLOCATOR: ipc::alloc::MarkedMalloc = ipc::alloc::MarkedMalloc;

/// At load time: the fork handlers must be in place before the program's first fork, so
/// that a child never mistakes its parent's connection or pid for its own.
#[used]
#[link_section = ".init_array"]
static INSTALL_FORK_HANDLERS: extern "C" fn() = {
    extern "C" fn install() {
        client::fork::install_handlers();
    }
    install
};
