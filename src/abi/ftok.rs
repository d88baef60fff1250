//! ftok(3), bit for bit glibc's.

use std::ffi::CStr;

/// glibc's key: `(st_ino & 0xffff) | ((st_dev & 0xff) << 16) | ((proj_id & 0xff) << 24)`.
pub fn key_of(st: &libc::stat, proj_id: i32) -> libc::key_t {
    ((st.st_ino & 0xffff) as u32 | ((st.st_dev & 0xff) as u32) << 16 | ((proj_id as u32 & 0xff) << 24)) as libc::key_t
}

/// # Safety
/// `pathname` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ftok(pathname: *const libc::c_char, proj_id: libc::c_int) -> libc::key_t {
    super::trace::traced!("ftok", "{:?}, {}", Path(pathname), proj_id; super::call(-1, || {
        if pathname.is_null() {
            return Err(crate::ipc::Errno(libc::EFAULT));
        }
        let path = CStr::from_ptr(pathname);
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(path.as_ptr(), &mut st) < 0 {
            return Err(crate::ipc::Errno::last());
        }
        Ok(key_of(&st, proj_id))
    }))
}

/// A path argument as a trace shows it.
struct Path(*const libc::c_char);

impl std::fmt::Debug for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Read through the fault-catching copy: the pointer may be bad (stat said EFAULT).
        let mut bytes = Vec::new();
        for i in 0..256 {
            match crate::ipc::usercopy::read_user(self.0.wrapping_add(i) as *const u8) {
                Ok(0) => return write!(f, "{:?}", String::from_utf8_lossy(&bytes)),
                Ok(b) => bytes.push(b),
                Err(_) => return write!(f, "{:p}", self.0),
            }
        }
        write!(f, "{:?}...", String::from_utf8_lossy(&bytes))
    }
}
