//! open/openat/fopen (and their 64-bit and fortified aliases): a read-only open of
//! /proc/sysvipc/{msg,sem,shm} or of a limit file in /proc/sys/kernel gets the namespace's
//! view of it (src/inspect/procfs.rs); every other open goes to libc untouched. fopen needs
//! its own wrapper: glibc's fopen opens through an internal call, not the `open` symbol.
//! Opening for writing (`echo 100 > /proc/sys/kernel/msgmni`) goes to the kernel.

use super::{call, set_errno};
use crate::inspect::procfs::{self, View};
use libc::{c_char, c_int, mode_t, FILE};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

/// libc's own function, looked up once (no lock: a lookup racing another is harmless).
macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static ADDR: AtomicUsize = AtomicUsize::new(0);
        let mut addr = ADDR.load(Relaxed);
        if addr == 0 {
            addr = unsafe { libc::dlsym(libc::RTLD_NEXT, concat!($name, "\0").as_ptr().cast()) } as usize;
            ADDR.store(addr, Relaxed);
        }
        (addr != 0).then(|| unsafe { std::mem::transmute::<usize, $ty>(addr) })
    }};
}

type OpenFn = unsafe extern "C-unwind" fn(*const c_char, c_int, mode_t) -> c_int;
type OpenatFn = unsafe extern "C-unwind" fn(c_int, *const c_char, c_int, mode_t) -> c_int;
type Open2Fn = unsafe extern "C-unwind" fn(*const c_char, c_int) -> c_int;
type Openat2Fn = unsafe extern "C-unwind" fn(c_int, *const c_char, c_int) -> c_int;
type FopenFn = unsafe extern "C-unwind" fn(*const c_char, *const c_char) -> *mut FILE;

/// The views belong to the library a program loads. The same code linked into an
/// executable (the `ipcshim` command, whose broker reads the machine's limits, and Rust
/// tests) opens the real files.
fn loaded_as_library() -> bool {
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let base = |addr: *const libc::c_void| {
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        (unsafe { libc::dladdr(addr, &mut info) } != 0).then_some(info.dli_fbase as usize)
    };
    let program = base(unsafe { libc::getauxval(libc::AT_ENTRY) } as *const libc::c_void);
    let ours = base(loaded_as_library as *const libc::c_void);
    let library = ours.is_some() && ours != program;
    STATE.store(if library { 1 } else { 2 }, Relaxed);
    library
}

/// The view a read-only open of `path` gets, if any. Cheap for every other path.
#[inline]
unsafe fn view(path: *const c_char, readonly: bool) -> Option<View> {
    if !readonly || path.is_null() || *path != b'/' as c_char || libc::strncmp(path, c"/proc/sys".as_ptr(), 9) != 0 {
        return None;
    }
    let view = procfs::view_for(std::ffi::CStr::from_ptr(path).to_bytes())?;
    (!procfs::building() && loaded_as_library()).then_some(view)
}

/// Flags open(2) serves a view for: read-only, not creating, not a directory or a path.
fn readonly(flags: c_int) -> bool {
    flags & libc::O_ACCMODE == libc::O_RDONLY && flags & (libc::O_CREAT | libc::O_PATH | libc::O_DIRECTORY) == 0
}

fn serve(view: View, cloexec: bool) -> c_int {
    call(-1, || procfs::open(view, cloexec))
}

unsafe fn raw_openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    libc::syscall(libc::SYS_openat, dirfd, path, flags, mode) as c_int
}

// These are cancellation points (glibc's open, openat and fopen are): "C-unwind", so that
// pthread_cancel's unwinding passes through our frame from libc's function to the caller.
// open's mode is variadic in C; the x86_64 and aarch64 ABIs pass it in the same register
// as a fixed third argument (as semctl's fourth, see cbindgen.toml).

#[no_mangle]
pub unsafe extern "C-unwind" fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    if let Some(v) = view(path, readonly(flags)) {
        return serve(v, flags & libc::O_CLOEXEC != 0);
    }
    match real!("open", OpenFn) {
        Some(f) => f(path, flags, mode),
        None => raw_openat(libc::AT_FDCWD, path, flags, mode),
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    if let Some(v) = view(path, readonly(flags)) {
        return serve(v, flags & libc::O_CLOEXEC != 0);
    }
    match real!("open64", OpenFn) {
        Some(f) => f(path, flags, mode),
        None => raw_openat(libc::AT_FDCWD, path, flags, mode),
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    if let Some(v) = view(path, readonly(flags)) {
        return serve(v, flags & libc::O_CLOEXEC != 0);
    }
    match real!("openat", OpenatFn) {
        Some(f) => f(dirfd, path, flags, mode),
        None => raw_openat(dirfd, path, flags, mode),
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    if let Some(v) = view(path, readonly(flags)) {
        return serve(v, flags & libc::O_CLOEXEC != 0);
    }
    match real!("openat64", OpenatFn) {
        Some(f) => f(dirfd, path, flags, mode),
        None => raw_openat(dirfd, path, flags, mode),
    }
}

// The _FORTIFY_SOURCE entry points (open without a mode when the flags are not constant).

#[no_mangle]
pub unsafe extern "C-unwind" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    if let Some(v) = view(path, readonly(flags)) {
        return serve(v, flags & libc::O_CLOEXEC != 0);
    }
    match real!("__open_2", Open2Fn) {
        Some(f) => f(path, flags),
        None => raw_openat(libc::AT_FDCWD, path, flags, 0),
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    if let Some(v) = view(path, readonly(flags)) {
        return serve(v, flags & libc::O_CLOEXEC != 0);
    }
    match real!("__open64_2", Open2Fn) {
        Some(f) => f(path, flags),
        None => raw_openat(libc::AT_FDCWD, path, flags, 0),
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    if let Some(v) = view(path, readonly(flags)) {
        return serve(v, flags & libc::O_CLOEXEC != 0);
    }
    match real!("__openat_2", Openat2Fn) {
        Some(f) => f(dirfd, path, flags),
        None => raw_openat(dirfd, path, flags, 0),
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    if let Some(v) = view(path, readonly(flags)) {
        return serve(v, flags & libc::O_CLOEXEC != 0);
    }
    match real!("__openat64_2", Openat2Fn) {
        Some(f) => f(dirfd, path, flags),
        None => raw_openat(dirfd, path, flags, 0),
    }
}

/// fopen's view: for a read-only mode ("r", "re", "rb"…, no '+'), a FILE on the view's
/// descriptor.
unsafe fn fopen_view(path: *const c_char, mode: *const c_char) -> Option<*mut FILE> {
    let mode_bytes = if mode.is_null() { &[][..] } else { std::ffi::CStr::from_ptr(mode).to_bytes() };
    let readonly = mode_bytes.first() == Some(&b'r') && !mode_bytes.contains(&b'+');
    let v = view(path, readonly)?;
    let fd = serve(v, mode_bytes.contains(&b'e'));
    if fd < 0 {
        return Some(std::ptr::null_mut());
    }
    let file = libc::fdopen(fd, mode);
    if file.is_null() {
        let e = *libc::__errno_location();
        libc::close(fd);
        set_errno(e);
    }
    Some(file)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
    if let Some(file) = fopen_view(path, mode) {
        return file;
    }
    match real!("fopen", FopenFn) {
        Some(f) => f(path, mode),
        None => {
            set_errno(libc::ENOSYS);
            std::ptr::null_mut()
        }
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE {
    if let Some(file) = fopen_view(path, mode) {
        return file;
    }
    match real!("fopen64", FopenFn) {
        Some(f) => f(path, mode),
        None => {
            set_errno(libc::ENOSYS);
            std::ptr::null_mut()
        }
    }
}
