//! The engine's one `unsafe` module: ring memory that costs nothing until it is written.
//!
//! A topic's ring is a few MiB of atomics that start at zero. Built element by element, or through the global
//! allocator (the server's is mimalloc, which zeroes reused or eagerly committed memory), every page is touched
//! at creation: a replay naming 3,000 symbols made 12 GB resident before its first message was published, and
//! 8,000 (a NASDAQ day) would not fit this machine. [`ZeroedWords`] takes the words from the system allocator's
//! `alloc_zeroed` (`calloc`), which for blocks this large maps fresh pages the kernel zero-fills on first write,
//! so a ring costs memory as its slots fill.

use crate::sync::AtomicU64;
#[cfg(not(loom))]
use std::alloc::{GlobalAlloc, Layout, System};

/// A fixed slice of atomics, all zero at first. Derefs to `[AtomicU64]`.
#[cfg(not(loom))]
pub(crate) struct ZeroedWords {
    ptr: std::ptr::NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: `ZeroedWords` owns its words exclusively, like a `Box<[AtomicU64]>`, and `AtomicU64` is `Send + Sync`:
// moving the owner to another thread or sharing `&ZeroedWords` (which only hands out `&[AtomicU64]`) is sound.
#[cfg(not(loom))]
unsafe impl Send for ZeroedWords {}
// SAFETY: see `Send` above; every access through `&ZeroedWords` is an atomic operation.
#[cfg(not(loom))]
unsafe impl Sync for ZeroedWords {}

#[cfg(not(loom))]
impl ZeroedWords {
    /// `len` words, all zero.
    pub(crate) fn new(len: usize) -> ZeroedWords {
        let layout = Layout::array::<AtomicU64>(len).expect("ring size overflows the address space");
        if layout.size() == 0 {
            return ZeroedWords { ptr: std::ptr::NonNull::dangling(), len: 0 };
        }
        // SAFETY: `layout` has a non-zero size (checked above), as `alloc_zeroed` requires.
        let raw = unsafe { System.alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw.cast::<AtomicU64>()) else { std::alloc::handle_alloc_error(layout) };
        ZeroedWords { ptr, len }
    }
}

#[cfg(not(loom))]
impl std::ops::Deref for ZeroedWords {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` points to `len` zero-initialized words allocated for this value (or is dangling with
        // `len` 0), aligned for `AtomicU64` by its layout, alive until `drop`; all-zero bytes are a valid
        // `AtomicU64` (it has the representation of `u64`), and the slice is only ever shared, never `&mut`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(not(loom))]
impl Drop for ZeroedWords {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        let layout = Layout::array::<AtomicU64>(self.len).expect("the layout it was allocated with");
        // SAFETY: `ptr` came from `System.alloc_zeroed(layout)` with this same layout and is freed once, here.
        unsafe { System.dealloc(self.ptr.as_ptr().cast(), layout) }
    }
}

/// Under loom the atomics are loom's model types, built one by one (rings there are tiny).
#[cfg(loom)]
pub(crate) struct ZeroedWords(Box<[AtomicU64]>);

#[cfg(loom)]
impl ZeroedWords {
    pub(crate) fn new(len: usize) -> ZeroedWords {
        ZeroedWords((0..len).map(|_| AtomicU64::new(0)).collect())
    }
}

#[cfg(loom)]
impl std::ops::Deref for ZeroedWords {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        &self.0
    }
}

impl std::fmt::Debug for ZeroedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZeroedWords({} words)", self.len())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::Ordering;

    #[test]
    fn zeroed_words_start_at_zero_and_hold_what_is_stored() {
        let w = ZeroedWords::new(1 << 16);
        assert!(w.iter().all(|x| x.load(Ordering::Relaxed) == 0));
        w[12345].store(7, Ordering::Relaxed);
        assert_eq!(w[12345].load(Ordering::Relaxed), 7);
        assert_eq!(ZeroedWords::new(0).len(), 0);
    }
}
