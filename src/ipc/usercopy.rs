//! Copies between the caller's buffers and shared memory that fail with EFAULT, as the kernel's
//! `copy_from_user`/`copy_to_user` do, instead of crashing the program on a bad pointer.
//!
//! A system call per copy (process_vm_readv) would cost more than the whole msgsnd is
//! allowed to, so on x86_64 the copy is one `rep movsb` at a known address, and a SIGSEGV /
//! SIGBUS handler (installed on first use, chaining to the program's previous handler for
//! every other fault) resumes a faulting copy at a fixup that reports the failure — the
//! kernel's exception-table technique. If the program later installs its own SIGSEGV
//! handler, a bad buffer reaches that handler instead (a divergence listed in the README).
//! Elsewhere only NULL is recognised.

use crate::ipc::{Errno, Result};

const EFAULT: Errno = Errno(libc::EFAULT);

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::EFAULT;
    use crate::ipc::{Errno, Result};
    use std::sync::atomic::{AtomicU32, Ordering::{Acquire, Release}};

    // Each faultable instruction has a fixup the handler jumps to: rep movsb (copy), a
    // byte load (probe for reading), a locked OR of zero (probe for writing: changes
    // nothing, even under a concurrent writer). Each returns 0, or 1 after a fault. The
    // probes take the first byte and the start of the last page, and touch the first byte
    // and then every following page start up to the last (one call per range).
    std::arch::global_asm!(
        ".pushsection .text.ipcshim_user_copy,\"ax\",@progbits",
        ".globl ipcshim_user_copy",
        ".hidden ipcshim_user_copy",
        ".type ipcshim_user_copy,@function",
        "ipcshim_user_copy:",
        "mov rcx, rdx",
        ".globl ipcshim_user_copy_insn",
        ".hidden ipcshim_user_copy_insn",
        "ipcshim_user_copy_insn:",
        "rep movsb",
        "xor eax, eax",
        "ret",
        ".size ipcshim_user_copy, .-ipcshim_user_copy",
        ".globl ipcshim_probe_read",
        ".hidden ipcshim_probe_read",
        ".type ipcshim_probe_read,@function",
        "ipcshim_probe_read:",
        ".globl ipcshim_probe_read_insn",
        ".hidden ipcshim_probe_read_insn",
        "ipcshim_probe_read_insn:",
        "movzx eax, byte ptr [rdi]",
        "and rdi, -4096",
        "add rdi, 4096",
        "jc 2f", // past the top of the address space: nothing left
        "cmp rdi, rsi",
        "jbe ipcshim_probe_read_insn",
        "2:",
        "xor eax, eax",
        "ret",
        ".size ipcshim_probe_read, .-ipcshim_probe_read",
        ".globl ipcshim_probe_write",
        ".hidden ipcshim_probe_write",
        ".type ipcshim_probe_write,@function",
        "ipcshim_probe_write:",
        ".globl ipcshim_probe_write_insn",
        ".hidden ipcshim_probe_write_insn",
        "ipcshim_probe_write_insn:",
        "lock or byte ptr [rdi], 0",
        "and rdi, -4096",
        "add rdi, 4096",
        "jc 2f",
        "cmp rdi, rsi",
        "jbe ipcshim_probe_write_insn",
        "2:",
        "xor eax, eax",
        "ret",
        ".size ipcshim_probe_write, .-ipcshim_probe_write",
        ".globl ipcshim_user_fixup",
        ".hidden ipcshim_user_fixup",
        "ipcshim_user_fixup:",
        "mov eax, 1",
        "ret",
        ".popsection",
    );

    extern "C" {
        fn ipcshim_user_copy(dst: *mut u8, src: *const u8, len: usize) -> u32;
        fn ipcshim_probe_read(p: *const u8, last_page: usize) -> u32;
        fn ipcshim_probe_write(p: *mut u8, last_page: usize) -> u32;
        static ipcshim_user_copy_insn: u8;
        static ipcshim_probe_read_insn: u8;
        static ipcshim_probe_write_insn: u8;
        static ipcshim_user_fixup: u8;
    }

    static mut PREVIOUS: [std::mem::MaybeUninit<libc::sigaction>; 2] = [std::mem::MaybeUninit::zeroed(), std::mem::MaybeUninit::zeroed()];

    fn slot(sig: libc::c_int) -> usize {
        if sig == libc::SIGSEGV {
            0
        } else {
            1
        }
    }

    unsafe extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        let uc = ctx as *mut libc::ucontext_t;
        let rip = &mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize];
        let at = *rip as usize;
        if at == std::ptr::addr_of!(ipcshim_user_copy_insn) as usize
            || at == std::ptr::addr_of!(ipcshim_probe_read_insn) as usize
            || at == std::ptr::addr_of!(ipcshim_probe_write_insn) as usize
        {
            *rip = std::ptr::addr_of!(ipcshim_user_fixup) as usize as i64;
            return;
        }
        // Not our copy: do what the program's previous disposition says.
        let prev = (*std::ptr::addr_of!(PREVIOUS))[slot(sig)].assume_init_ref();
        let handler = prev.sa_sigaction;
        let sent = !info.is_null() && (*info).si_code <= 0;
        if handler == libc::SIG_IGN && sent {
            return;
        }
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
            // A fault recurs when we return; a signal sent by kill must be raised again.
            if sent {
                libc::raise(sig);
            }
            return;
        }
        if prev.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(handler);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
    }

    /// Whether our fault handler is in place: 0 not yet, INSTALLED, or the id of the thread
    /// installing it (not a `Once`: a signal handler's call waiting for the installation
    /// its own thread was interrupted in would wait for ever).
    static INSTALL: AtomicU32 = AtomicU32::new(0);
    const INSTALLED: u32 = u32::MAX;

    #[inline(always)]
    fn install() -> Result<()> {
        if INSTALL.load(Acquire) == INSTALLED {
            return Ok(());
        }
        install_slow()
    }

    #[cold]
    fn install_slow() -> Result<()> {
        let me = crate::ipc::sync::my_tid();
        loop {
            match INSTALL.compare_exchange(0, me, Acquire, Acquire) {
                Ok(_) => break,
                Err(INSTALLED) => return Ok(()),
                // A signal handler's call, interrupting its thread's installation.
                Err(t) if t == me => return Err(Errno(libc::EDEADLK)),
                // Another thread's: a few system calls away.
                Err(_) => std::thread::yield_now(),
            }
        }
        unsafe {
            for sig in [libc::SIGSEGV, libc::SIGBUS] {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_fault as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
                libc::sigemptyset(&mut sa.sa_mask);
                let prev = (*std::ptr::addr_of_mut!(PREVIOUS))[slot(sig)].as_mut_ptr();
                libc::sigaction(sig, &sa, prev);
            }
        }
        INSTALL.store(INSTALLED, Release);
        Ok(())
    }

    /// Copies `len` bytes; EFAULT if either side faulted.
    pub unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> Result<()> {
        install()?;
        if ipcshim_user_copy(dst, src, len) == 0 {
            Ok(())
        } else {
            Err(EFAULT)
        }
    }

    /// Whether the first byte at `p` and every page start after it up to `last_page` can
    /// be read (`write`: written): EFAULT if not.
    #[inline(always)]
    pub unsafe fn probe(p: *const u8, last_page: usize, write: bool) -> Result<()> {
        install()?;
        if (if write { ipcshim_probe_write(p as *mut u8, last_page) } else { ipcshim_probe_read(p, last_page) }) == 0 {
            Ok(())
        } else {
            Err(EFAULT)
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use crate::ipc::Result;
    pub unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> Result<()> {
        std::ptr::copy_nonoverlapping(src, dst, len);
        Ok(())
    }
    pub unsafe fn probe(_p: *const u8, _last_page: usize, _write: bool) -> Result<()> {
        Ok(())
    }
}

fn bad_range(p: usize, len: usize) -> bool {
    p < 4096 || p.checked_add(len).is_none()
}

/// Copies from the caller's memory at `src` (EFAULT if unreadable).
///
/// # Safety
/// `dst` must be valid for `len` bytes.
pub unsafe fn copy_from_user(dst: *mut u8, src: *const u8, len: usize) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    if bad_range(src as usize, len) {
        return Err(EFAULT);
    }
    imp::copy(dst, src, len)
}

/// Copies into the caller's memory at `dst` (EFAULT if not writable).
///
/// # Safety
/// `src` must be valid for `len` bytes.
pub unsafe fn copy_to_user(dst: *mut u8, src: *const u8, len: usize) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    if bad_range(dst as usize, len) {
        return Err(EFAULT);
    }
    imp::copy(dst, src, len)
}

/// No page is smaller: probing at this stride touches every page of a range (the probes
/// in the assembly above step by it).
const PROBE_STRIDE: usize = 4096;

/// EFAULT unless every byte of `[p, p + len)` can be read (`write`: written), probed
/// once per 4 KiB page. The copies that follow can then be plain ones.
#[inline(always)]
pub fn check_user(p: *const u8, len: usize, write: bool) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let start = p as usize;
    if bad_range(start, len) {
        return Err(EFAULT);
    }
    let last_page = (start + len - 1) & !(PROBE_STRIDE - 1);
    unsafe { imp::probe(p, last_page, write) }
}

/// Reads a `T` from the caller's memory (EFAULT if unreadable).
pub fn read_user<T: Copy>(p: *const T) -> Result<T> {
    let mut v = std::mem::MaybeUninit::<T>::uninit();
    unsafe {
        copy_from_user(v.as_mut_ptr() as *mut u8, p as *const u8, std::mem::size_of::<T>())?;
        Ok(v.assume_init())
    }
}

/// Writes a `T` into the caller's memory (EFAULT if not writable).
pub fn write_user<T>(p: *mut T, v: &T) -> Result<()> {
    unsafe { copy_to_user(p as *mut u8, v as *const T as *const u8, std::mem::size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four pages: read-write, read-write, read-only, none.
    struct Pages(*mut u8);
    const PAGE: usize = 4096;
    impl Pages {
        fn new() -> Pages {
            let p = unsafe {
                libc::mmap(std::ptr::null_mut(), 4 * PAGE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            } as *mut u8;
            assert_ne!(p as *mut libc::c_void, libc::MAP_FAILED);
            unsafe {
                assert_eq!(libc::mprotect(p.add(2 * PAGE) as *mut libc::c_void, PAGE, libc::PROT_READ), 0);
                assert_eq!(libc::mprotect(p.add(3 * PAGE) as *mut libc::c_void, PAGE, libc::PROT_NONE), 0);
            }
            Pages(p)
        }
    }
    impl Drop for Pages {
        fn drop(&mut self) {
            unsafe { libc::munmap(self.0 as *mut libc::c_void, 4 * PAGE) };
        }
    }

    #[test]
    fn check_user_probes_every_page_of_a_range() {
        let m = Pages::new();
        let at = |off: usize| m.0.wrapping_add(off) as *const u8;
        // Within the writable pages, from any start to any end.
        for (off, len) in [(0, 1), (5, PAGE), (PAGE - 1, 2), (0, 2 * PAGE), (PAGE + 7, PAGE - 7)] {
            assert_eq!(check_user(at(off), len, true), Ok(()), "{off} {len}");
            assert_eq!(check_user(at(off), len, false), Ok(()), "{off} {len}");
        }
        // Into the read-only page: readable, not writable, whichever page the range starts on.
        for (off, len) in [(2 * PAGE, 1), (2 * PAGE - 1, 2), (10, 2 * PAGE + 1), (0, 3 * PAGE)] {
            assert_eq!(check_user(at(off), len, false), Ok(()), "{off} {len}");
            assert_eq!(check_user(at(off), len, true), Err(EFAULT), "{off} {len}");
        }
        // Into the inaccessible page, by its last byte only, or from it.
        for (off, len) in [(3 * PAGE - 1, 2), (0, 4 * PAGE), (PAGE, 3 * PAGE), (3 * PAGE + 100, 1)] {
            assert_eq!(check_user(at(off), len, false), Err(EFAULT), "{off} {len}");
            assert_eq!(check_user(at(off), len, true), Err(EFAULT), "{off} {len}");
        }
        // Nothing to check; NULL and wrapping ranges.
        assert_eq!(check_user(at(3 * PAGE), 0, false), Ok(()));
        assert_eq!(check_user(std::ptr::null(), 1, false), Err(EFAULT));
        assert_eq!(check_user(usize::MAX as *const u8, 2, false), Err(EFAULT));
        assert_eq!(check_user((usize::MAX - 4095) as *const u8, 4096, false), Err(EFAULT));
        assert_eq!(check_user((usize::MAX - 4095) as *const u8, 1, true), Err(EFAULT)); // kernel space
    }
}
