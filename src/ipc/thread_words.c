/* This thread's words for the fast paths (src/ipc/thread.rs). Initial-exec TLS: the
 * address is the thread pointer plus a constant, found without a call to __tls_get_addr,
 * which Rust's thread_local! pays in a shared library (stable rustc has no TLS-model
 * option). The words live as long as the thread, start at zero, and have no destructor. */
#include <stdint.h>

__attribute__((visibility("hidden"), tls_model("initial-exec")))
__thread uintptr_t ipcshim_thread_words[4];

__attribute__((visibility("hidden")))
uintptr_t *ipcshim_thread_words_addr(void)
{
    return ipcshim_thread_words;
}
