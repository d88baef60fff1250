//! Retiring a process's handles on mapped objects (semaphore sets, message queues).
//!
//! A handle is found through a lock-free array of pointers and used without a lock, so one
//! taken out of the array (the object removed, or mapped again) cannot be freed at once: a
//! thread may still hold it. It goes on a `Retired` list and is freed only after a grace
//! period, which covers calls that hold it for nanoseconds without counting themselves,
//! and once no thread counted in its `users` (an `InUse` guard: one that sleeps or waits
//! for the object's lock) is left.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering::*};
use std::time::{Duration, Instant};

/// A handle with a count of the threads that use it for longer than the grace period.
pub trait Counted {
    fn users(&self) -> &AtomicU32;
}

/// A call that neither sleeps nor waits for the lock holds its handle for nanoseconds
/// without counting itself in `users`; one that was preempted gets this long.
const GRACE: Duration = Duration::from_secs(2);

/// Handles replaced or found removed, freed once no thread can still be using them.
pub struct Retired<T: Counted>(Mutex<List<T>>);

struct List<T>(Vec<(Instant, *mut T)>);
// The list owns the handles on it (each came from `Box::into_raw`) and frees them from
// whichever thread sweeps.
unsafe impl<T: Send> Send for List<T> {}

impl<T: Counted + Send> Retired<T> {
    pub const fn new() -> Retired<T> {
        Retired(Mutex::new(List(Vec::new())))
    }

    /// Takes `h` out of `slot` and retires it, unless another thread already did (or put
    /// another handle there).
    pub fn take(&self, slot: &AtomicPtr<T>, h: &T) {
        let p = h as *const T as *mut T;
        if slot.compare_exchange(p, std::ptr::null_mut(), AcqRel, Acquire).is_ok() {
            self.push(p);
        }
    }

    /// Puts `h` in `slot`, retiring the handle it replaces.
    pub fn install(&self, slot: &AtomicPtr<T>, h: Box<T>) -> &'static T {
        let h = Box::into_raw(h);
        let old = slot.swap(h, AcqRel);
        if !old.is_null() {
            self.push(old);
        }
        unsafe { &*h }
    }

    /// Adds `p` (from `Box::into_raw`, no longer reachable from the array) to the list and
    /// frees the handles whose time has come.
    fn push(&self, p: *mut T) {
        // try_lock: in a child forked while another thread held the list, the lock stays
        // held forever; the handle is then simply never freed.
        if let Some(mut r) = self.0.try_lock() {
            r.0.push((Instant::now(), p));
            let now = Instant::now();
            r.0.retain(|&(when, p)| {
                let h = unsafe { &*p };
                if now.duration_since(when) < GRACE || h.users().load(Acquire) > 0 {
                    return true;
                }
                drop(unsafe { Box::from_raw(p) });
                false
            });
        }
    }
}

/// Counts a thread in a handle's `users` while it sleeps or waits for the object's lock,
/// however long that takes (the grace period only covers the fast path's nanoseconds).
pub struct InUse(&'static AtomicU32);

impl InUse {
    #[inline]
    pub fn new<T: Counted>(h: &'static T) -> InUse {
        let users = h.users();
        users.fetch_add(1, AcqRel);
        InUse(users)
    }
}

impl Drop for InUse {
    #[inline]
    fn drop(&mut self) {
        self.0.fetch_sub(1, AcqRel);
    }
}
