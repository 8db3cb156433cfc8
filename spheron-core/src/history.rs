//! [`History`]: a map that keeps only its last `capacity` entries, for records of closed
//! things (settled leases, closed orders) that must stay readable for a while but not forever.

use std::collections::{BTreeMap, VecDeque};

/// A bounded map: inserting beyond `capacity` forgets the oldest entry.
#[derive(Clone, Debug)]
pub struct History<K: Ord + Clone, V> {
    map: BTreeMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Ord + Clone, V> History<K, V> {
    /// An empty history keeping at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        History {
            map: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `key` (replacing an earlier value, which keeps its place in the order); the
    /// oldest entries beyond the capacity are forgotten.
    pub fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// The value recorded for `key`, if still kept.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Whether `key` is still kept.
    pub fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_are_forgotten() {
        let mut h = History::new(2);
        h.insert(1, "a");
        h.insert(2, "b");
        h.insert(1, "a2");
        assert_eq!(h.len(), 2);
        h.insert(3, "c");
        assert!(!h.contains_key(&1));
        assert_eq!(h.get(&2), Some(&"b"));
        assert_eq!(h.get(&3), Some(&"c"));
        assert!(!h.is_empty());
    }
}
