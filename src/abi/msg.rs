//! msgget, msgsnd, msgrcv, msgctl: not implemented yet (ENOSYS, in the README's table of
//! divergences), never a silent success and never the kernel's.

#[no_mangle]
pub extern "C" fn msgget(_key: libc::key_t, _msgflg: libc::c_int) -> libc::c_int {
    super::set_errno(libc::ENOSYS);
    -1
}

#[no_mangle]
pub extern "C" fn msgsnd(_msqid: libc::c_int, _msgp: *const libc::c_void, _msgsz: libc::size_t, _msgflg: libc::c_int) -> libc::c_int {
    super::set_errno(libc::ENOSYS);
    -1
}

#[no_mangle]
pub extern "C" fn msgrcv(
    _msqid: libc::c_int,
    _msgp: *mut libc::c_void,
    _msgsz: libc::size_t,
    _msgtyp: libc::c_long,
    _msgflg: libc::c_int,
) -> libc::ssize_t {
    super::set_errno(libc::ENOSYS);
    -1
}

#[no_mangle]
pub extern "C" fn msgctl(_msqid: libc::c_int, _cmd: libc::c_int, _buf: *mut libc::msqid_ds) -> libc::c_int {
    super::set_errno(libc::ENOSYS);
    -1
}
