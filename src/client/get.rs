//! The `*get` calls: `ipcget` against the namespace table for existing keys (no round
//! trip), the broker for everything that may create.

use super::{client, creds};
use crate::ipc::table::Entry;
use crate::ipc::{Errno, Family, Result, IPC_CREAT, IPC_EXCL, IPC_PRIVATE};
use crate::wire::Op;

/// `more_checks` is the family's check on an existing object (size, nsems).
pub fn get(family: Family, key: i32, flags: i32, size: u64, more_checks: impl Fn(&Entry) -> Result<()>) -> Result<i32> {
    let exclusive = flags & IPC_CREAT != 0 && flags & IPC_EXCL != 0;
    if key != IPC_PRIVATE {
        if let Ok(found) = client().table()?.lookup_key(family, key) {
            match found {
                Some(_) if exclusive => return Err(Errno(libc::EEXIST)),
                Some(e) => {
                    more_checks(&e)?;
                    if !e.perm.allows(&creds::own(), (flags & 0o777) as u32) {
                        return Err(Errno(libc::EACCES));
                    }
                    return Ok(e.id());
                }
                None if flags & IPC_CREAT == 0 => return Err(Errno(libc::ENOENT)),
                None => {}
            }
        }
    }
    let reply = client().request(&[Op::Get as i64, family as i64, key as i64, flags as i64, size as i64])?;
    Ok(reply.word(0)? as i32)
}
