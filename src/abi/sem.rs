//! semget, semop, semtimedop, semctl: not implemented yet (ENOSYS, in the README's table of
//! divergences), never a silent success and never the kernel's.

#[no_mangle]
pub extern "C" fn semget(_key: libc::key_t, _nsems: libc::c_int, _semflg: libc::c_int) -> libc::c_int {
    super::set_errno(libc::ENOSYS);
    -1
}

#[no_mangle]
pub extern "C" fn semop(_semid: libc::c_int, _sops: *mut libc::sembuf, _nsops: libc::size_t) -> libc::c_int {
    super::set_errno(libc::ENOSYS);
    -1
}

#[no_mangle]
pub extern "C" fn semtimedop(
    _semid: libc::c_int,
    _sops: *mut libc::sembuf,
    _nsops: libc::size_t,
    _timeout: *const libc::timespec,
) -> libc::c_int {
    super::set_errno(libc::ENOSYS);
    -1
}

/// `semctl` is variadic in C. Its fourth argument, when there is one, is a `union semun`
/// (an int or a pointer): on x86_64 and aarch64 Linux a variadic argument of that class is
/// passed exactly like a named integer argument (rcx / x3), so a fixed fourth parameter of
/// pointer width reads it correctly; for commands without one we never look at it.
#[no_mangle]
pub extern "C" fn semctl(_semid: libc::c_int, _semnum: libc::c_int, _cmd: libc::c_int, _arg: libc::c_ulong) -> libc::c_int {
    super::set_errno(libc::ENOSYS);
    -1
}
