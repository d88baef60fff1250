//! `ipc_perm` and the kernel's permission rules (ipc/util.c `ipcperms`,
//! `ipcctl_obtain_check`), applied to a caller's credentials.

/// Capabilities the SysV IPC code consults (bit numbers as in <linux/capability.h>).
pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_IPC_OWNER: u32 = 15;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;

/// The credentials a permission check is made against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Creds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Effective capability set, as a bit mask.
    pub caps: u64,
}

impl Creds {
    pub fn has_cap(&self, cap: u32) -> bool {
        self.caps & (1u64 << cap) != 0
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// The ownership and mode of one object: the kernel's `kern_ipc_perm` less its id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perm {
    pub key: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// The low 9 bits are the access mode; families keep state flags above them
    /// (SHM_DEST, SHM_LOCKED).
    pub mode: u32,
}

/// Read and write permission as requested in `ipcperms`' flag (0o444 / 0o222 / 0o111).
pub const S_IRUGO: u32 = 0o444;
pub const S_IWUGO: u32 = 0o222;
pub const S_IXUGO: u32 = 0o111;

impl Perm {
    pub fn new(key: i32, mode: u32, creds: &Creds) -> Perm {
        Perm { key, uid: creds.uid, gid: creds.gid, cuid: creds.uid, cgid: creds.gid, mode: mode & 0o777 }
    }

    /// `ipcperms`: may `creds` access with the requested mode bits (any of the three
    /// triplets in `flag`)? CAP_IPC_OWNER overrides.
    pub fn allows(&self, creds: &Creds, flag: u32) -> bool {
        let requested = (flag >> 6) | (flag >> 3) | flag;
        let mut granted = self.mode;
        if creds.uid == self.cuid || creds.uid == self.uid {
            granted >>= 6;
        } else if creds.in_group(self.cgid) || creds.in_group(self.gid) {
            granted >>= 3;
        }
        requested & !granted & 0o7 == 0 || creds.has_cap(CAP_IPC_OWNER)
    }

    /// `ipcctl_obtain_check`: IPC_SET and IPC_RMID need the owner, the creator or
    /// CAP_SYS_ADMIN.
    pub fn may_control(&self, creds: &Creds) -> bool {
        creds.uid == self.cuid || creds.uid == self.uid || creds.has_cap(CAP_SYS_ADMIN)
    }

    /// `ipc_update_perm`: IPC_SET changes uid, gid and the low 9 mode bits.
    pub fn set(&mut self, uid: u32, gid: u32, mode: u32) {
        self.uid = uid;
        self.gid = gid;
        self.mode = (self.mode & !0o777) | (mode & 0o777);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, gid: u32, groups: &[u32]) -> Creds {
        Creds { pid: 1, uid, gid, groups: groups.to_vec(), caps: 0 }
    }

    #[test]
    fn owner_group_other_triplets() {
        let p = Perm { key: 1, uid: 100, gid: 200, cuid: 101, cgid: 201, mode: 0o640 };
        assert!(p.allows(&user(100, 1, &[]), S_IRUGO | S_IWUGO));
        assert!(p.allows(&user(101, 1, &[]), S_IWUGO), "creator gets the owner triplet");
        assert!(p.allows(&user(5, 200, &[]), S_IRUGO));
        assert!(!p.allows(&user(5, 200, &[]), S_IWUGO));
        assert!(p.allows(&user(5, 1, &[201]), S_IRUGO), "supplementary creator group");
        assert!(!p.allows(&user(5, 1, &[]), S_IRUGO));
        // The owner triplet decides for the owner even when group/other would grant.
        let q = Perm { mode: 0o077, ..p };
        assert!(!q.allows(&user(100, 200, &[]), S_IRUGO));
    }

    #[test]
    fn cap_ipc_owner_overrides_and_control_rules() {
        let p = Perm { key: 1, uid: 100, gid: 200, cuid: 101, cgid: 201, mode: 0 };
        let mut root = user(0, 0, &[]);
        assert!(!p.allows(&root, S_IRUGO));
        root.caps = 1 << CAP_IPC_OWNER;
        assert!(p.allows(&root, S_IRUGO | S_IWUGO));
        assert!(!p.may_control(&root));
        root.caps |= 1 << CAP_SYS_ADMIN;
        assert!(p.may_control(&root));
        assert!(p.may_control(&user(101, 0, &[])));
        assert!(!p.may_control(&user(102, 200, &[])));
    }

    #[test]
    fn set_keeps_state_bits() {
        let mut p = Perm { mode: 0o1600, ..Default::default() };
        p.set(7, 8, 0o7777);
        assert_eq!((p.uid, p.gid, p.mode), (7, 8, 0o1777));
    }
}
