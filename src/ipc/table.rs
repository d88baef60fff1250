//! The namespace table: a memfd the broker writes and every client maps read-only, so that
//! `*get` of an existing key and the permission checks of the fast paths need no round trip.
//!
//! Per family it holds one slot per index (the object's `ipc_perm`, its sequence number and
//! its size) and a hash index from key to slot. The broker is the only writer; readers use
//! the family's seqlock and retry. The mapping is read-only in clients, but every index read
//! from it is still bounds-checked, so a torn or corrupt table yields "not found", never a
//! wild access.

use super::ids::MAX_INDEX;
use super::perm::Perm;
use super::Family;
use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, Ordering::*};

const MAGIC: u64 = 0x6970_6373_6869_6d31; // "ipcshim1"
/// 3: connections have a mailbox (wire::ring).
pub const VERSION: u32 = 3;
const BUCKETS: usize = 1 << 16;
/// A reader gives up (and asks the broker instead) after this many torn reads.
const MAX_RETRIES: u32 = 10_000;

#[repr(C)]
struct Slot {
    live: AtomicU32,
    seq: AtomicU32,
    key: AtomicI32,
    uid: AtomicU32,
    gid: AtomicU32,
    cuid: AtomicU32,
    cgid: AtomicU32,
    mode: AtomicU32,
    /// shm: segment size in bytes; sem: number of semaphores; msg: unused.
    size: AtomicU64,
    /// Next slot in the same hash bucket, as index + 1 (0 ends the chain).
    next: AtomicU32,
    _pad: u32,
}

#[repr(C, align(64))]
struct FamilyArea {
    seqlock: AtomicU64,
    _pad: [u64; 7],
    slots: [Slot; MAX_INDEX],
    buckets: [AtomicU32; BUCKETS],
}

#[repr(C)]
struct Layout {
    magic: AtomicU64,
    version: AtomicU32,
    _pad: u32,
    families: [FamilyArea; 3],
}

/// Bytes the table's memfd must hold.
pub const TABLE_SIZE: usize = std::mem::size_of::<Layout>();

/// What the table says of one live object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: usize,
    pub seq: u32,
    pub perm: Perm,
    pub size: u64,
}

impl Entry {
    pub fn id(&self) -> i32 {
        super::ids::make_id(self.index, self.seq)
    }
}

fn bucket_of(key: i32) -> usize {
    ((key as u32).wrapping_mul(0x9E37_79B1) >> 16) as usize % BUCKETS
}

/// A view of a mapped table. `base` must point to `TABLE_SIZE` mapped bytes that stay
/// mapped while the view lives.
pub struct Table {
    base: *const Layout,
}

unsafe impl Send for Table {}
unsafe impl Sync for Table {}

impl Table {
    /// # Safety
    /// `base` must point to at least `TABLE_SIZE` mapped, 64-byte aligned bytes that outlive
    /// the returned value.
    pub unsafe fn new(base: *const u8) -> Table {
        Table { base: base as *const Layout }
    }

    fn layout(&self) -> &Layout {
        unsafe { &*self.base }
    }

    fn area(&self, family: Family) -> &FamilyArea {
        &self.layout().families[family as usize]
    }

    pub fn is_valid(&self) -> bool {
        self.layout().magic.load(Acquire) == MAGIC && self.layout().version.load(Relaxed) == VERSION
    }

    fn read_slot(area: &FamilyArea, index: usize) -> Option<Entry> {
        let s = area.slots.get(index)?;
        if s.live.load(Relaxed) == 0 {
            return None;
        }
        Some(Entry {
            index,
            seq: s.seq.load(Relaxed),
            perm: Perm {
                key: s.key.load(Relaxed),
                uid: s.uid.load(Relaxed),
                gid: s.gid.load(Relaxed),
                cuid: s.cuid.load(Relaxed),
                cgid: s.cgid.load(Relaxed),
                mode: s.mode.load(Relaxed),
            },
            size: s.size.load(Relaxed),
        })
    }

    /// Runs `read` under the family's seqlock until it sees a consistent snapshot.
    /// `Err(())` when the writer seems stuck (the caller asks the broker instead).
    fn consistent<T>(&self, family: Family, read: impl Fn(&FamilyArea) -> T) -> Result<T, ()> {
        let area = self.area(family);
        for attempt in 0..MAX_RETRIES {
            let before = area.seqlock.load(Acquire);
            if before & 1 == 0 {
                let value = read(area);
                fence(Acquire);
                if area.seqlock.load(Relaxed) == before {
                    return Ok(value);
                }
            }
            if attempt > 100 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        Err(())
    }

    /// The family's seqlock: it changes whenever any of the family's entries changes, so a
    /// decision made from an entry stays valid while it reads the same (and is even).
    pub fn version(&self, family: Family) -> u64 {
        self.version_word(family).load(Acquire)
    }

    /// The word `version` reads.
    pub fn version_word(&self, family: Family) -> &AtomicU64 {
        &self.area(family).seqlock
    }

    /// The live object with this key, if any.
    pub fn lookup_key(&self, family: Family, key: i32) -> Result<Option<Entry>, ()> {
        self.consistent(family, |area| {
            let mut link = area.buckets[bucket_of(key)].load(Relaxed) as usize;
            // A chain can be no longer than the number of slots; a longer one is torn.
            for _ in 0..MAX_INDEX {
                if link == 0 {
                    return None;
                }
                let entry = Self::read_slot(area, link - 1);
                match entry {
                    Some(e) if e.perm.key == key => return Some(e),
                    _ => {}
                }
                link = area.slots.get(link - 1).map(|s| s.next.load(Relaxed) as usize).unwrap_or(0);
            }
            None
        })
    }

    /// The live object at this index, if any.
    pub fn entry(&self, family: Family, index: usize) -> Result<Option<Entry>, ()> {
        self.consistent(family, |area| Self::read_slot(area, index))
    }

    /// The live object with this id (index and sequence number both match).
    pub fn by_id(&self, family: Family, id: i32) -> Result<Option<Entry>, ()> {
        let Some((index, seq)) = super::ids::split_id(id) else { return Ok(None) };
        Ok(self.entry(family, index)?.filter(|e| e.seq == seq))
    }
}

/// The broker's handle on the table: the only writer.
pub struct TableWriter {
    table: Table,
}

impl TableWriter {
    /// # Safety
    /// As `Table::new`, and the mapping must be writable and zero-filled or a table.
    pub unsafe fn new(base: *mut u8) -> TableWriter {
        let w = TableWriter { table: Table::new(base) };
        w.table.layout().version.store(VERSION, Relaxed);
        w.table.layout().magic.store(MAGIC, Release);
        w
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    fn write<T>(&self, family: Family, f: impl FnOnce(&FamilyArea) -> T) -> T {
        let area = self.table.area(family);
        let s = area.seqlock.load(Relaxed);
        area.seqlock.store(s + 1, Relaxed);
        fence(Release);
        let r = f(area);
        area.seqlock.store(s + 2, Release);
        r
    }

    fn unlink(area: &FamilyArea, index: usize, key: i32) {
        let bucket = &area.buckets[bucket_of(key)];
        let target = (index + 1) as u32;
        if bucket.load(Relaxed) == target {
            bucket.store(area.slots[index].next.load(Relaxed), Relaxed);
            return;
        }
        let mut link = bucket.load(Relaxed) as usize;
        for _ in 0..MAX_INDEX {
            if link == 0 {
                return;
            }
            let slot = &area.slots[link - 1];
            if slot.next.load(Relaxed) == target {
                slot.next.store(area.slots[index].next.load(Relaxed), Relaxed);
                return;
            }
            link = slot.next.load(Relaxed) as usize;
        }
    }

    /// Publishes (or republishes, after IPC_SET or a key change) one object.
    pub fn publish(&self, family: Family, e: &Entry) {
        self.write(family, |area| {
            let s = &area.slots[e.index];
            let was_live = s.live.load(Relaxed) != 0;
            let old_key = s.key.load(Relaxed);
            if was_live && old_key != e.perm.key {
                Self::unlink(area, e.index, old_key);
            }
            s.seq.store(e.seq, Relaxed);
            s.key.store(e.perm.key, Relaxed);
            s.uid.store(e.perm.uid, Relaxed);
            s.gid.store(e.perm.gid, Relaxed);
            s.cuid.store(e.perm.cuid, Relaxed);
            s.cgid.store(e.perm.cgid, Relaxed);
            s.mode.store(e.perm.mode, Relaxed);
            s.size.store(e.size, Relaxed);
            s.live.store(1, Relaxed);
            // Only keyed objects are reachable by key.
            if e.perm.key != super::IPC_PRIVATE && (!was_live || old_key != e.perm.key) {
                let bucket = &area.buckets[bucket_of(e.perm.key)];
                s.next.store(bucket.load(Relaxed), Relaxed);
                bucket.store((e.index + 1) as u32, Relaxed);
            }
        })
    }

    /// Removes one object from the table.
    pub fn clear(&self, family: Family, index: usize) {
        self.write(family, |area| {
            let s = &area.slots[index];
            if s.live.load(Relaxed) == 0 {
                return;
            }
            let key = s.key.load(Relaxed);
            if key != super::IPC_PRIVATE {
                Self::unlink(area, index, key);
            }
            s.live.store(0, Relaxed);
            s.next.store(0, Relaxed);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Vec<u64>, TableWriter) {
        let mut mem = vec![0u64; TABLE_SIZE / 8 + 16];
        // Align to 64 bytes inside the buffer.
        let off = (64 - (mem.as_ptr() as usize % 64)) % 64;
        let w = unsafe { TableWriter::new((mem.as_mut_ptr() as *mut u8).add(off)) };
        (mem, w)
    }

    fn entry(index: usize, key: i32) -> Entry {
        Entry { index, seq: 3, perm: Perm { key, mode: 0o600, ..Default::default() }, size: 10 }
    }

    #[test]
    fn publish_lookup_clear() {
        let (_mem, w) = table();
        let t = w.table();
        assert!(t.is_valid());
        // Keys in the same bucket chain: 0 and BUCKETS-colliding keys all work.
        let keys = [1, 2, 65537, 42, -7];
        for (i, &k) in keys.iter().enumerate() {
            w.publish(Family::Sem, &entry(i * 3, k));
        }
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(t.lookup_key(Family::Sem, k).unwrap().unwrap().index, i * 3);
            assert_eq!(t.lookup_key(Family::Msg, k).unwrap(), None);
        }
        w.clear(Family::Sem, 3);
        assert_eq!(t.lookup_key(Family::Sem, 2).unwrap(), None);
        assert_eq!(t.lookup_key(Family::Sem, 65537).unwrap().unwrap().index, 6);
        // IPC_RMID of an attached segment: key becomes private, the slot stays.
        let mut e = entry(6, 0);
        e.perm.mode |= 0o1000;
        w.publish(Family::Sem, &e);
        assert_eq!(t.lookup_key(Family::Sem, 65537).unwrap(), None);
        assert_eq!(t.by_id(Family::Sem, e.id()).unwrap().unwrap().perm.mode, 0o1600);
        assert_eq!(t.by_id(Family::Sem, e.id() + 32768).unwrap(), None);
        assert_eq!(t.entry(Family::Sem, MAX_INDEX + 5).unwrap(), None);
    }
}
