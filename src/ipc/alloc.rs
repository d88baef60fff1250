//! The library's global allocator: the system's (malloc), with the calling thread marked
//! while inside it (`thread::not_reentrant`). A signal handler's call into the library that
//! interrupts a malloc or free of ours then fails with EDEADLK at its entry instead of
//! entering malloc again, which is not async-signal-safe (a handler's first use of an
//! object, made while the interrupted call was allocating, corrupted the heap).

use super::thread::not_reentrant;
use std::alloc::{GlobalAlloc, Layout, System};

pub struct MarkedMalloc;

unsafe impl GlobalAlloc for MarkedMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        not_reentrant(|| System.alloc(layout))
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        not_reentrant(|| System.alloc_zeroed(layout))
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        not_reentrant(|| System.dealloc(ptr, layout))
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        not_reentrant(|| System.realloc(ptr, layout, new_size))
    }
}
