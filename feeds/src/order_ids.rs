//! The table from order id to slab slot: directly indexed pages for the dense ids ITCH uses, a hash map for the
//! rest.
//!
//! ITCH order reference numbers are assigned in arrival order over the day, and most orders leave soon after
//! they arrive, so the ids a replay touches cluster near the newest ones. Pages of [`PAGE`] consecutive ids,
//! indexed directly, keep those lookups within a few cache lines; a hash map (the first version) scattered
//! them, and its entry and the slab entry behind it were two cache misses per execute or cancel, most of the
//! replay's time (`benches/benches/feeds_itch.rs`). A page is freed when its last order leaves, so memory
//! follows the span of live ids, not the day's count. Ids beyond [`MAX_PAGES`] pages (venue-assigned 64-bit
//! ids in DBN, say) go to the hash map.

use rustc_hash::FxHashMap;

const PAGE_BITS: u32 = 14;
/// Ids per page (64 KiB of slots).
pub(crate) const PAGE: usize = 1 << PAGE_BITS;
/// Pages directly indexed: ids below 2^30.
pub(crate) const MAX_PAGES: usize = 1 << 16;
const NONE: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Page {
    slots: Box<[u32; PAGE]>,
    live: u32,
}

/// Order id → slot.
#[derive(Clone, Debug, Default)]
pub(crate) struct OrderIds {
    pages: Vec<Option<Page>>,
    far: FxHashMap<u64, u32>,
    len: usize,
}

impl OrderIds {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, id: u64) -> Option<u32> {
        let p = (id >> PAGE_BITS) as usize;
        if p < MAX_PAGES {
            let page = self.pages.get(p)?.as_ref()?;
            let s = page.slots[id as usize & (PAGE - 1)];
            (s != NONE).then_some(s)
        } else {
            self.far.get(&id).copied()
        }
    }

    /// Maps `id` to `slot`; false (and no change) when `id` is already mapped.
    pub(crate) fn insert(&mut self, id: u64, slot: u32) -> bool {
        let p = (id >> PAGE_BITS) as usize;
        if p >= MAX_PAGES {
            return match self.far.entry(id) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(slot);
                    self.len += 1;
                    true
                }
            };
        }
        if self.pages.len() <= p {
            self.pages.resize_with(p + 1, || None);
        }
        let page = self.pages[p].get_or_insert_with(|| Page { slots: Box::new([NONE; PAGE]), live: 0 });
        let s = &mut page.slots[id as usize & (PAGE - 1)];
        if *s != NONE {
            return false;
        }
        *s = slot;
        page.live += 1;
        self.len += 1;
        true
    }

    /// Unmaps `id`; its slot, if it was mapped.
    pub(crate) fn remove(&mut self, id: u64) -> Option<u32> {
        let p = (id >> PAGE_BITS) as usize;
        if p >= MAX_PAGES {
            let s = self.far.remove(&id);
            self.len -= s.is_some() as usize;
            return s;
        }
        let entry = self.pages.get_mut(p)?;
        let page = entry.as_mut()?;
        let s = std::mem::replace(&mut page.slots[id as usize & (PAGE - 1)], NONE);
        if s == NONE {
            return None;
        }
        page.live -= 1;
        self.len -= 1;
        if page.live == 0 {
            *entry = None;
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_dense_and_far_ids_map_and_pages_are_freed() {
        let mut m = OrderIds::default();
        for id in [0, 1, PAGE as u64 * 3 + 5, u64::MAX, 1 << 40] {
            assert!(m.insert(id, id as u32 & 0xffff));
            assert!(!m.insert(id, 7), "{id} is mapped already");
            assert_eq!(m.get(id), Some(id as u32 & 0xffff));
        }
        assert_eq!(m.len(), 5);
        assert_eq!(m.get(2), None);
        assert_eq!(m.remove(PAGE as u64 * 3 + 5), Some(PAGE as u32 * 3 + 5));
        assert!(m.pages[3].is_none(), "an emptied page is freed");
        assert_eq!(m.remove(u64::MAX), Some(0xffff));
        assert_eq!((m.remove(u64::MAX), m.remove(99), m.len()), (None, None, 3));
    }
}
