//! One family's objects, as the kernel's `struct ipc_ids`: index → object, key → index, the
//! id allocator, and the generic `ipcget` logic (ipc/util.c) shared by msgget, semget and
//! shmget.

use crate::ipc::ids::{alloc_window, make_id, split_id, IdAllocator};
use crate::ipc::perm::{Creds, Perm};
use crate::ipc::{Errno, Result, IPC_CREAT, IPC_EXCL, IPC_PRIVATE};
use std::collections::HashMap;

#[derive(Debug)]
pub struct Object<T> {
    pub seq: u32,
    pub perm: Perm,
    pub data: T,
}

#[derive(Debug)]
pub struct Registry<T> {
    /// Index → object. Indexes are handed out cyclically (as the kernel's), so the vector
    /// grows to the highest index used and stays there (at most MAX_INDEX pointers):
    /// shrinking it at each removal made the next create at a higher index refill it, a
    /// cost that grew with every create-and-remove cycle.
    slots: Vec<Option<Box<Object<T>>>>,
    keys: HashMap<i32, usize>,
    alloc: IdAllocator,
    in_use: usize,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry { slots: Vec::new(), keys: HashMap::new(), alloc: IdAllocator::default(), in_use: 0 }
    }
}

/// What a request changed, so the broker can mirror it into the namespace table.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// The object at this index changed (perm, key or mode) or is new: republish it.
    Updated(usize),
    /// The object at this index is gone.
    Removed(usize),
}

/// What `ipcget` decided.
pub enum Lookup {
    /// An existing object's id (checks passed).
    Found(i32),
    /// No object with that key and IPC_CREAT given (or IPC_PRIVATE): create one.
    Create,
}

impl<T> Registry<T> {
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// The highest index in use, or -1 (the kernel's `ipc_get_maxidx`).
    pub fn max_index(&self) -> i32 {
        self.slots.iter().rposition(|s| s.is_some()).map(|i| i as i32).unwrap_or(-1)
    }

    pub fn by_index(&self, index: usize) -> Option<&Object<T>> {
        self.slots.get(index)?.as_deref()
    }

    pub fn by_index_mut(&mut self, index: usize) -> Option<&mut Object<T>> {
        self.slots.get_mut(index)?.as_deref_mut()
    }

    /// The object with this id: EINVAL if it does not exist or the sequence number is stale.
    pub fn by_id(&self, id: i32) -> Result<&Object<T>> {
        let (index, seq) = split_id(id).ok_or(Errno(libc::EINVAL))?;
        self.by_index(index).filter(|o| o.seq == seq).ok_or(Errno(libc::EINVAL))
    }

    pub fn by_id_mut(&mut self, id: i32) -> Result<&mut Object<T>> {
        let (index, seq) = split_id(id).ok_or(Errno(libc::EINVAL))?;
        self.by_index_mut(index).filter(|o| o.seq == seq).ok_or(Errno(libc::EINVAL))
    }

    pub fn id_of(&self, index: usize) -> Option<i32> {
        self.by_index(index).map(|o| make_id(index, o.seq))
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Object<T>)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_deref().map(|o| (i, o)))
    }

    /// `ipcget`: EEXIST for IPC_CREAT|IPC_EXCL on an existing key, then the family's own
    /// check (`more_checks`: size or nsems), then the access check with the mode bits of
    /// `flags`; ENOENT for a missing key without IPC_CREAT.
    pub fn get(
        &self,
        key: i32,
        flags: i32,
        creds: &Creds,
        more_checks: impl Fn(&Object<T>) -> Result<()>,
    ) -> Result<Lookup> {
        if key == IPC_PRIVATE {
            return Ok(Lookup::Create);
        }
        match self.keys.get(&key).and_then(|&i| self.by_index(i).map(|o| (i, o))) {
            None if flags & IPC_CREAT != 0 => Ok(Lookup::Create),
            None => Err(Errno(libc::ENOENT)),
            Some(_) if flags & IPC_CREAT != 0 && flags & IPC_EXCL != 0 => Err(Errno(libc::EEXIST)),
            Some((index, obj)) => {
                more_checks(obj)?;
                if !obj.perm.allows(creds, (flags & 0o777) as u32) {
                    return Err(Errno(libc::EACCES));
                }
                Ok(Lookup::Found(make_id(index, obj.seq)))
            }
        }
    }

    /// `ipc_addid`: a new object at the next free index; ENOSPC past `limit` objects.
    pub fn insert(&mut self, limit: usize, perm: Perm, data: T) -> Result<(usize, i32)> {
        if self.in_use >= limit {
            return Err(Errno(libc::ENOSPC));
        }
        let slots = &self.slots;
        let (index, seq) = self
            .alloc
            .allocate(alloc_window(self.in_use), |i| slots.get(i).map(|s| s.is_none()).unwrap_or(true))
            .ok_or(Errno(libc::ENOSPC))?;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        if perm.key != IPC_PRIVATE {
            self.keys.insert(perm.key, index);
        }
        self.slots[index] = Some(Box::new(Object { seq, perm, data }));
        self.in_use += 1;
        Ok((index, make_id(index, seq)))
    }

    /// Makes an object unreachable by key (IPC_RMID of an attached segment).
    pub fn make_private(&mut self, index: usize) {
        if let Some(obj) = self.slots.get_mut(index).and_then(|s| s.as_mut()) {
            if obj.perm.key != IPC_PRIVATE {
                self.keys.remove(&obj.perm.key);
                obj.perm.key = IPC_PRIVATE;
            }
        }
    }

    pub fn remove(&mut self, index: usize) -> Option<Object<T>> {
        let obj = self.slots.get_mut(index)?.take()?;
        if obj.perm.key != IPC_PRIVATE {
            self.keys.remove(&obj.perm.key);
        }
        self.in_use -= 1;
        Some(*obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Creds {
        Creds { pid: 1, uid: 0, gid: 0, groups: vec![], caps: 0 }
    }

    #[test]
    fn get_follows_ipcget_order() {
        let mut r: Registry<u32> = Registry::default();
        let c = root();
        assert!(matches!(r.get(5, 0, &c, |_| Ok(())), Err(Errno(libc::ENOENT))));
        assert!(matches!(r.get(5, IPC_CREAT, &c, |_| Ok(())), Ok(Lookup::Create)));
        let (index, id) = r.insert(10, Perm::new(5, 0o600, &c), 7).unwrap();
        assert_eq!((index, id), (0, 0));
        assert!(matches!(r.get(5, 0, &c, |_| Ok(())), Ok(Lookup::Found(0))));
        // EEXIST comes before the family check and the permission check.
        assert!(matches!(
            r.get(5, IPC_CREAT | IPC_EXCL, &c, |_| Err(Errno(libc::EINVAL))),
            Err(Errno(libc::EEXIST))
        ));
        assert!(matches!(r.get(5, 0, &c, |_| Err(Errno(libc::EINVAL))), Err(Errno(libc::EINVAL))));
        let stranger = Creds { uid: 9, gid: 9, ..root() };
        assert!(matches!(r.get(5, 0o400, &stranger, |_| Ok(())), Err(Errno(libc::EACCES))));
        assert!(matches!(r.get(5, 0, &stranger, |_| Ok(())), Ok(Lookup::Found(0))));
    }

    #[test]
    fn ids_limits_and_removal() {
        let mut r: Registry<()> = Registry::default();
        let c = root();
        let (_, a) = r.insert(2, Perm::new(0, 0o600, &c), ()).unwrap();
        let (_, b) = r.insert(2, Perm::new(0, 0o600, &c), ()).unwrap();
        assert_eq!(r.insert(2, Perm::new(0, 0o600, &c), ()).unwrap_err(), Errno(libc::ENOSPC));
        assert_eq!(r.max_index(), 1);
        r.remove(0).unwrap();
        assert_eq!(r.by_id(a).unwrap_err(), Errno(libc::EINVAL));
        assert!(r.by_id(b).is_ok());
        let (index, c2) = r.insert(2, Perm::new(0, 0o600, &c), ()).unwrap();
        // The next index, not the freed one: the window (at least 64), not the limit,
        // bounds the indexes, as the kernel's.
        assert_eq!(index, 2);
        assert_ne!(c2, a);
        assert_eq!(r.in_use(), 2);
        assert_eq!(r.by_id(-3).unwrap_err(), Errno(libc::EINVAL));
    }
}
