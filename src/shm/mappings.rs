//! The process's own file mappings, as shmdt needs them to act as the kernel's does: the
//! first file mapping ending above an address. Asked of /proc/self/maps with the
//! PROCMAP_QUERY ioctl (Linux 6.11), one mapping per call, through a descriptor kept open
//! (opening /proc/self/maps costs 6 µs, a query 1 µs); on older kernels the whole file is
//! read and parsed once per use.

use crate::client::{client, creds};
use crate::sys::fd_identity;
use once_cell::sync::OnceCell;
use crate::ipc::thread::Exclusive;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// A file mapping: its range, its offset in the file, and the file's (st_dev, st_ino).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileMapping {
    pub start: usize,
    pub end: usize,
    pub offset: u64,
    pub identity: (u64, u64),
}

pub enum Mappings {
    /// A descriptor of /proc/self/maps, and the owner of it when it is not our kept one
    /// (closed with the value).
    Query(RawFd, #[allow(dead_code)] Option<OwnedFd>),
    /// Parsed from the text, in address order; mappings are taken out as we unmap them.
    Parsed(Vec<FileMapping>),
}

/// The kernel's `struct procmap_query` (include/uapi/linux/fs.h).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// _IOWR('f', 17, struct procmap_query)
const PROCMAP_QUERY: libc::c_ulong = 0xC000_0000 | ((std::mem::size_of::<ProcmapQuery>() as libc::c_ulong) << 16) | (0x66 << 8) | 17;
const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;
const PROCMAP_QUERY_FILE_BACKED_VMA: u64 = 0x20;

const MAPS: &std::ffi::CStr = c"/proc/self/maps";

/// Our kept descriptor of /proc/self/maps: its number, its identity (checked before each
/// use: a program may have closed it) and the process it describes (a forked child
/// inherits its parent's).
static KEPT: Exclusive<Option<(RawFd, (u64, u64), i32)>> = Exclusive::new(None);

/// In a forked child: another thread of the parent may have held the lock.
pub(crate) fn after_fork() {
    KEPT.unlock_after_fork();
}

impl Mappings {
    /// None if /proc/self/maps cannot be opened (no /proc; a descriptor table full even
    /// with our reserve's slot).
    pub fn open() -> Option<Mappings> {
        let pid = creds::own_pid();
        let mut kept = KEPT.lock();
        if let Some((fd, identity, of)) = *kept {
            if fd_identity(fd) == Some(identity) {
                if of == pid {
                    return Some(Mappings::Query(fd, None));
                }
                unsafe { libc::close(fd) };
            }
            *kept = None;
        }
        let fd = unsafe { libc::open(MAPS.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EMFILE) {
                return None;
            }
            return client().with_reserve_released(read_all).map(Mappings::Parsed);
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Whether the kernel knows PROCMAP_QUERY, learnt once.
        static QUERY: OnceCell<bool> = OnceCell::new();
        if !*QUERY.get_or_init(|| query(fd.as_raw_fd(), 0).is_ok()) {
            return read_from(fd).map(Mappings::Parsed);
        }
        match fd_identity(fd.as_raw_fd()) {
            Some(identity) if client().can_spare_descriptor() => {
                let raw = fd.into_raw_fd();
                *kept = Some((raw, identity, pid));
                Some(Mappings::Query(raw, None))
            }
            _ => Some(Mappings::Query(fd.as_raw_fd(), Some(fd))),
        }
    }

    /// The first file mapping that ends above `addr`.
    pub fn next_from(&self, addr: usize) -> Option<FileMapping> {
        match self {
            Mappings::Query(fd, _) => query(*fd, addr).ok().flatten(),
            Mappings::Parsed(list) => list.iter().find(|m| m.end > addr).copied(),
        }
    }

    /// Forgets a mapping we unmapped (the ioctl sees that by itself).
    pub fn unmapped(&mut self, m: &FileMapping) {
        if let Mappings::Parsed(list) = self {
            list.retain(|x| x != m);
        }
    }
}

/// PROCMAP_QUERY for the first file mapping ending above `addr`: Ok(None) when there is
/// none, Err when the kernel does not know the ioctl.
fn query(fd: RawFd, addr: usize) -> Result<Option<FileMapping>, i32> {
    let mut q = ProcmapQuery {
        size: std::mem::size_of::<ProcmapQuery>() as u64,
        query_flags: PROCMAP_QUERY_COVERING_OR_NEXT_VMA | PROCMAP_QUERY_FILE_BACKED_VMA,
        query_addr: addr as u64,
        ..Default::default()
    };
    if unsafe { libc::ioctl(fd, PROCMAP_QUERY, &mut q) } != 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            e => Err(e.unwrap_or(libc::EINVAL)),
        };
    }
    Ok(Some(FileMapping {
        start: q.vma_start as usize,
        end: q.vma_end as usize,
        offset: q.vma_offset,
        identity: (libc::makedev(q.dev_major, q.dev_minor) as u64, q.inode),
    }))
}

fn read_all() -> Option<Vec<FileMapping>> {
    let fd = unsafe { libc::open(MAPS.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    read_from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the whole file in large reads (each read makes the kernel generate the text anew
/// from where the last one stopped) and parses it.
fn read_from(fd: OwnedFd) -> Option<Vec<FileMapping>> {
    let mut text = Vec::with_capacity(64 * 1024);
    loop {
        if text.capacity() - text.len() < 16 * 1024 {
            text.reserve(64 * 1024);
        }
        let spare = text.spare_capacity_mut();
        let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr() as *mut libc::c_void, spare.len()) };
        match n {
            0 => break,
            n if n > 0 => unsafe { text.set_len(text.len() + n as usize) },
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => return None,
        }
    }
    Some(text.split(|&b| b == b'\n').filter_map(parse_line).collect())
}

/// "start-end perms offset major:minor inode path"; None for anonymous mappings.
fn parse_line(line: &[u8]) -> Option<FileMapping> {
    // The fields we need are ASCII and come before the path, which may not be UTF-8.
    let ascii = line.iter().position(|&b| b >= 0x80).unwrap_or(line.len());
    let line = std::str::from_utf8(&line[..ascii]).ok()?;
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let _perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode: u64 = fields.next()?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    let dev = libc::makedev(u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?);
    Some(FileMapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        offset,
        identity: (dev as u64, inode),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_skips_anonymous_lines() {
        let m = parse_line(b"7f0000001000-7f0000004000 rw-s 00002000 00:01 4321 /memfd:x (deleted)").unwrap();
        assert_eq!((m.start, m.end, m.offset), (0x7f0000001000, 0x7f0000004000, 0x2000));
        assert_eq!(m.identity, (libc::makedev(0, 1) as u64, 4321));
        assert!(parse_line(b"7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]").is_none());
        assert!(parse_line(b"1000-2000 r--p 00000000 fd:01 77 /a/\xff\xfe").is_some());
    }
}
