//! The operation engine of semop, as the kernel's `perform_atomic_semop` (ipc/sem.c): pure,
//! on a scratch copy of the values and adjustments a call touches, so that all operations
//! of one call succeed together or none does.

use crate::ipc::Errno;

pub const SEM_UNDO: i16 = 0x1000;
pub const IPC_NOWAIT: i16 = 0o4000;
/// Largest semaphore value (include/uapi/linux/sem.h).
pub const SEMVMX: i32 = 32767;
/// Largest adjustment on exit (`SEMAEM`, = SEMVMX in Linux).
pub const SEMAEM: i32 = SEMVMX;

/// One `struct sembuf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemOp {
    pub num: u16,
    pub op: i16,
    pub flg: i16,
}

impl SemOp {
    pub fn undo(&self) -> bool {
        self.flg & SEM_UNDO != 0
    }

    pub fn nowait(&self) -> bool {
        self.flg & IPC_NOWAIT != 0
    }

    /// Packed into one word for the waiter slots in shared memory.
    pub fn pack(&self) -> u64 {
        self.num as u64 | (self.op as u16 as u64) << 16 | (self.flg as u16 as u64) << 32
    }

    pub fn unpack(w: u64) -> SemOp {
        SemOp { num: w as u16, op: (w >> 16) as u16 as i16, flg: (w >> 32) as u16 as i16 }
    }
}

/// Whether a call alters semaphores (needs write permission) or only waits for zero.
pub fn alters(ops: &[SemOp]) -> bool {
    ops.iter().any(|o| o.op != 0)
}

/// One semaphore a call touches: its value and the caller's adjustment, before and (after
/// `evaluate` said Proceed) after the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touched {
    pub num: u16,
    pub value: i32,
    pub adj: i32,
}

/// What `evaluate` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every operation can be performed: `Touched` holds the new values and adjustments.
    Proceed,
    /// Operation `at` must wait (and has no IPC_NOWAIT).
    Block { at: usize },
    /// EAGAIN (IPC_NOWAIT on the operation that would block) or ERANGE.
    Fail(Errno),
}

/// The distinct semaphores of `ops`, in order of first appearance.
pub fn distinct(ops: &[SemOp]) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::with_capacity(ops.len().min(16));
    for o in ops {
        if !out.contains(&o.num) {
            out.push(o.num);
        }
    }
    out
}

/// `perform_atomic_semop`: the operations in order, each on the value left by the ones
/// before (the same semaphore may appear several times). `touched` must hold one entry
/// per distinct semaphore of `ops`; on `Proceed` it holds the results, otherwise garbage.
pub fn evaluate(ops: &[SemOp], touched: &mut [Touched]) -> Outcome {
    for (i, op) in ops.iter().enumerate() {
        let Some(t) = touched.iter_mut().find(|t| t.num == op.num) else {
            return Outcome::Fail(Errno(libc::EFBIG));
        };
        let result = t.value + op.op as i32;
        if op.op == 0 && t.value != 0 || result < 0 {
            return if op.nowait() { Outcome::Fail(Errno(libc::EAGAIN)) } else { Outcome::Block { at: i } };
        }
        if result > SEMVMX {
            return Outcome::Fail(Errno(libc::ERANGE));
        }
        if op.undo() {
            let adj = t.adj - op.op as i32;
            if !(-SEMAEM - 1..=SEMAEM).contains(&adj) {
                return Outcome::Fail(Errno(libc::ERANGE));
            }
            t.adj = adj;
        }
        t.value = result;
    }
    Outcome::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: the kernel's loop on whole arrays, with explicit roll-back.
    fn model(ops: &[SemOp], values: &mut [i32], adj: &mut [i32]) -> Outcome {
        let (v0, a0) = (values.to_vec(), adj.to_vec());
        for (i, op) in ops.iter().enumerate() {
            let n = op.num as usize;
            let result = values[n] + op.op as i32;
            let fail = if op.op == 0 && values[n] != 0 || result < 0 {
                Some(if op.nowait() { Outcome::Fail(Errno(libc::EAGAIN)) } else { Outcome::Block { at: i } })
            } else if result > SEMVMX {
                Some(Outcome::Fail(Errno(libc::ERANGE)))
            } else if op.undo() && !(-SEMAEM - 1..=SEMAEM).contains(&(adj[n] - op.op as i32)) {
                Some(Outcome::Fail(Errno(libc::ERANGE)))
            } else {
                None
            };
            if let Some(f) = fail {
                values.copy_from_slice(&v0);
                adj.copy_from_slice(&a0);
                return f;
            }
            if op.undo() {
                adj[n] -= op.op as i32;
            }
            values[n] = result;
        }
        Outcome::Proceed
    }

    fn op_strategy(nsems: u16) -> impl Strategy<Value = SemOp> {
        (0..nsems, prop_oneof![-3i16..=3, Just(i16::MIN), Just(i16::MAX), Just(-32767i16)], 0..4i16).prop_map(
            |(num, op, f)| SemOp { num, op, flg: (if f & 1 != 0 { SEM_UNDO } else { 0 }) | (if f & 2 != 0 { IPC_NOWAIT } else { 0 }) },
        )
    }

    proptest! {
        #[test]
        fn evaluate_matches_the_model(
            values in proptest::collection::vec(prop_oneof![0i32..4, Just(SEMVMX), Just(SEMVMX - 1)], 3),
            adj in proptest::collection::vec(prop_oneof![-2i32..3, Just(SEMAEM), Just(-SEMAEM - 1)], 3),
            ops in proptest::collection::vec(op_strategy(3), 1..6),
        ) {
            let mut touched: Vec<Touched> = distinct(&ops)
                .iter()
                .map(|&n| Touched { num: n, value: values[n as usize], adj: adj[n as usize] })
                .collect();
            let got = evaluate(&ops, &mut touched);
            let (mut mv, mut ma) = (values.clone(), adj.clone());
            let want = model(&ops, &mut mv, &mut ma);
            prop_assert_eq!(got, want);
            if got == Outcome::Proceed {
                for t in &touched {
                    prop_assert_eq!(t.value, mv[t.num as usize]);
                    prop_assert_eq!(t.adj, ma[t.num as usize]);
                }
            }
        }

        #[test]
        fn pack_round_trips(num in any::<u16>(), op in any::<i16>(), flg in any::<i16>()) {
            let o = SemOp { num, op, flg };
            prop_assert_eq!(SemOp::unpack(o.pack()), o);
        }
    }

    #[test]
    fn order_of_block_and_range() {
        let mut t = [Touched { num: 0, value: 0, adj: 0 }, Touched { num: 1, value: SEMVMX, adj: 0 }];
        let ops = [SemOp { num: 0, op: -1, flg: IPC_NOWAIT }, SemOp { num: 1, op: 1, flg: 0 }];
        assert_eq!(evaluate(&ops, &mut t), Outcome::Fail(Errno(libc::EAGAIN)));
        let ops = [SemOp { num: 1, op: 1, flg: 0 }, SemOp { num: 0, op: -1, flg: 0 }];
        assert_eq!(evaluate(&ops, &mut t), Outcome::Fail(Errno(libc::ERANGE)));
    }
}
