//! Id numbering, as the kernel's ipc/util.c: `id = index + seq * SEQ_MULTIPLIER`, indexes
//! allocated cyclically, the sequence number bumped each time allocation wraps around.

/// `IPCMNI`: the kernel's multiplier between sequence number and index.
pub const SEQ_MULTIPLIER: i32 = 32768;
/// The largest index any family can use (`IPCMNI`).
pub const MAX_INDEX: usize = SEQ_MULTIPLIER as usize;
/// `IPCID_SEQ_MAX`: sequence numbers wrap to 0 here.
const SEQ_MAX: u32 = (i32::MAX / SEQ_MULTIPLIER) as u32;

pub fn make_id(index: usize, seq: u32) -> i32 {
    index as i32 + seq as i32 * SEQ_MULTIPLIER
}

/// Splits an id into (index, seq). Negative ids have no index.
pub fn split_id(id: i32) -> Option<(usize, u32)> {
    if id < 0 {
        return None;
    }
    Some(((id % SEQ_MULTIPLIER) as usize, (id / SEQ_MULTIPLIER) as u32))
}

/// `ipc_min_cycle`: the smallest window new indexes are picked from.
const MIN_CYCLE: usize = 64;

/// `ipc_idr_alloc`'s window for a new index while `in_use` objects exist: indexes cycle
/// through `[0, in_use * 3 / 2)`, at least 64, at most IPCMNI (not the msgmni / semmni /
/// shmmni limit), so a few objects keep small ids that are soon reused.
pub fn alloc_window(in_use: usize) -> usize {
    (in_use * 3 / 2).max(MIN_CYCLE).min(MAX_INDEX)
}

/// The kernel's `idr_alloc_cyclic` + `ids->seq` bookkeeping for one family.
#[derive(Debug)]
pub struct IdAllocator {
    seq: u32,
    last_index: Option<usize>,
}

impl Default for IdAllocator {
    fn default() -> Self {
        IdAllocator { seq: 0, last_index: None }
    }
}

impl IdAllocator {
    /// Picks the next free index in `[0, limit)`, searching cyclically after the last one
    /// handed out. Returns (index, seq) or None when every index is taken.
    pub fn allocate(&mut self, limit: usize, is_free: impl Fn(usize) -> bool) -> Option<(usize, u32)> {
        let limit = limit.min(MAX_INDEX);
        if limit == 0 {
            return None;
        }
        // idr_alloc_cyclic: from after the last index, or from 0 when that lies outside
        // the window (which shrinks as objects are removed).
        let start = self.last_index.map(|i| i + 1).filter(|&i| i < limit).unwrap_or(0);
        let index = (0..limit).map(|k| (start + k) % limit).find(|&i| is_free(i))?;
        if let Some(last) = self.last_index {
            if index <= last {
                self.seq += 1;
                if self.seq >= SEQ_MAX {
                    self.seq = 0;
                }
            }
        }
        self.last_index = Some(index);
        Some((index, self.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for &(i, s) in &[(0usize, 0u32), (5, 3), (32767, 65534)] {
            assert_eq!(split_id(make_id(i, s)), Some((i, s)));
        }
        assert_eq!(split_id(-1), None);
    }

    #[test]
    fn allocation_is_cyclic_and_bumps_seq_on_wrap() {
        let mut a = IdAllocator::default();
        let mut used = vec![false; 4];
        let take = |a: &mut IdAllocator, used: &mut Vec<bool>| {
            let (i, s) = a.allocate(4, |i| !used[i]).unwrap();
            used[i] = true;
            (i, s)
        };
        assert_eq!(take(&mut a, &mut used), (0, 0));
        assert_eq!(take(&mut a, &mut used), (1, 0));
        used[0] = false;
        assert_eq!(take(&mut a, &mut used), (2, 0));
        assert_eq!(take(&mut a, &mut used), (3, 0));
        // Wraps around to the freed index 0: a new sequence number.
        assert_eq!(take(&mut a, &mut used), (0, 1));
        assert!(a.allocate(4, |i| !used[i]).is_none());
        // A window that shrank below the last index: the search starts over at 0.
        let mut a = IdAllocator::default();
        assert_eq!(a.allocate(64, |i| i == 40), Some((40, 0)));
        assert_eq!(a.allocate(20, |i| i >= 5), Some((5, 1)));
    }

    #[test]
    fn window_follows_the_number_in_use() {
        assert_eq!(alloc_window(0), 64);
        assert_eq!(alloc_window(43), 64);
        assert_eq!(alloc_window(100), 150);
        assert_eq!(alloc_window(30000), MAX_INDEX);
    }
}
