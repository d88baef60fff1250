//! fork: a child inherits shm attachments (the kernel counts them in nattch at once) but not
//! the parent's connection, and not its SEM_UNDO adjustments (those are per pid anyway).
//!
//! The `fork` wrapper (src/abi/process.rs) tells the broker which attachments the new child
//! holds before fork returns in the parent; the atfork child handler forgets the parent's
//! connection and, if the child holds attachments, says hello at once with the same list, so
//! that the broker also sees the child's connection close when it execs (and its mappings go).

use super::client;
use crate::ipc::thread::Exclusive;

/// Attachments this process inherited and has not yet reported in a hello.
static INHERITED: Exclusive<Vec<i32>> = Exclusive::new(Vec::new());

pub fn install_handlers() {
    unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
}

extern "C" fn in_child() {
    after_fork_in_child();
}

/// What a forked child must do before it makes any call: the atfork handler's work, also
/// run by the `_Fork` wrapper (src/abi/process.rs), in whose children glibc runs no
/// handler.
pub(crate) fn after_fork_in_child() {
    crate::ipc::sync::after_fork();
    crate::ipc::handles::after_fork();
    INHERITED.unlock_after_fork();
    super::creds::after_fork();
    client().forget_connection_after_fork();
    let ids = crate::shm::attach::attached_ids_after_fork();
    if !ids.is_empty() {
        *INHERITED.lock() = ids;
        // Best effort: without a broker the child still has its mappings.
        let _ = client().connect_now();
    }
}

pub(crate) fn inherited_attachments() -> Vec<i32> {
    INHERITED.lock().clone()
}

pub(crate) fn hello_done() {
    INHERITED.lock().clear();
}
