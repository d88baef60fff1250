//! The set*id, setgroups and capset calls, wrapped: after a successful change the cached
//! credentials are stale, and so is the broker's view of us (it reads our credentials from
//! the socket), so the connection is remade on next use.

macro_rules! credential_setter {
    ($name:ident ( $($arg:ident : $ty:ty),* )) => {
        /// # Safety
        /// As the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> libc::c_int {
            type F = unsafe extern "C" fn($($ty),*) -> libc::c_int;
            static REAL: once_cell::sync::Lazy<usize> = once_cell::sync::Lazy::new(|| unsafe {
                libc::dlsym(libc::RTLD_NEXT, concat!(stringify!($name), "\0").as_ptr() as *const libc::c_char) as usize
            });
            if *REAL == 0 {
                super::set_errno(libc::ENOSYS);
                return -1;
            }
            let real: F = std::mem::transmute::<usize, F>(*REAL);
            let r = real($($arg),*);
            if r == 0 {
                crate::client::creds_changed();
            }
            r
        }
    };
}

credential_setter!(setuid(uid: libc::uid_t));
credential_setter!(setgid(gid: libc::gid_t));
credential_setter!(seteuid(uid: libc::uid_t));
credential_setter!(setegid(gid: libc::gid_t));
credential_setter!(setreuid(r: libc::uid_t, e: libc::uid_t));
credential_setter!(setregid(r: libc::gid_t, e: libc::gid_t));
credential_setter!(setresuid(r: libc::uid_t, e: libc::uid_t, s: libc::uid_t));
credential_setter!(setresgid(r: libc::gid_t, e: libc::gid_t, s: libc::gid_t));
credential_setter!(setgroups(n: libc::size_t, list: *const libc::gid_t));
// Dropping capabilities (CAP_IPC_OWNER, CAP_SYS_ADMIN…) changes what the kernel allows.
credential_setter!(capset(header: *mut libc::c_void, data: *const libc::c_void));
