//! The destinations reachable through one routing slot (a direct key, a topic trie node, a
//! fanout), each with how many bindings lead to it there. Knows nothing of keys or matching.

use std::collections::HashMap;

use super::Destination;

/// Above this many destinations, lookups go through a hash index instead of a linear scan:
/// a fanout or a popular key may have thousands, a typical slot has one.
const INDEX_ABOVE: usize = 8;
/// Below this many, the index is dropped again (lower than `INDEX_ABOVE` so that a slot
/// hovering around the limit does not rebuild it on every change).
const UNINDEX_BELOW: usize = 4;

pub(super) struct Targets<D> {
    /// Destination and the number of bindings that lead to it through this slot.
    entries: Vec<(D, u32)>,
    /// Position of each destination in `entries`; empty while the slot is small.
    positions: HashMap<D, usize>,
}

impl<D: Destination> Targets<D> {
    pub(super) fn new() -> Self {
        Targets {
            entries: Vec::new(),
            positions: HashMap::new(),
        }
    }

    fn position(&self, destination: &D) -> Option<usize> {
        if self.positions.is_empty() {
            self.entries.iter().position(|(d, _)| d == destination)
        } else {
            self.positions.get(destination).copied()
        }
    }

    pub(super) fn add(&mut self, destination: D) {
        if let Some(at) = self.position(&destination) {
            self.entries[at].1 += 1;
            return;
        }
        if !self.positions.is_empty() {
            self.positions
                .insert(destination.clone(), self.entries.len());
        }
        self.entries.push((destination, 1));
        if self.positions.is_empty() && self.entries.len() > INDEX_ABOVE {
            self.positions = self
                .entries
                .iter()
                .enumerate()
                .map(|(at, (d, _))| (d.clone(), at))
                .collect();
        }
    }

    /// Forgets one binding to `destination`; false if none led there.
    pub(super) fn remove_one(&mut self, destination: &D) -> bool {
        let Some(at) = self.position(destination) else {
            return false;
        };
        self.entries[at].1 -= 1;
        if self.entries[at].1 == 0 {
            self.entries.swap_remove(at);
            if !self.positions.is_empty() {
                self.positions.remove(destination);
                if let Some((moved, _)) = self.entries.get(at) {
                    if let Some(p) = self.positions.get_mut(moved) {
                        *p = at;
                    }
                }
                if self.entries.len() < UNINDEX_BELOW {
                    self.positions = HashMap::new();
                }
            }
        }
        true
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn append_to(&self, out: &mut Vec<D>) {
        out.extend(self.entries.iter().map(|(d, _)| d.clone()));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_growing_past_the_index_and_shrinking_back() {
        let mut targets = Targets::new();
        for d in 0..50u32 {
            targets.add(d);
            targets.add(d);
        }
        assert_eq!(targets.len(), 50);
        assert!(!targets.positions.is_empty());
        for d in 0..50u32 {
            assert!(targets.remove_one(&d));
        }
        assert_eq!(targets.len(), 50, "each still has one binding");
        for d in (0..50u32).rev().step_by(2).chain((0..50u32).step_by(2)) {
            assert!(targets.remove_one(&d), "{d}");
            assert!(!targets.remove_one(&d), "{d}");
            for (at, (e, _)) in targets.entries.iter().enumerate() {
                if !targets.positions.is_empty() {
                    assert_eq!(targets.positions[e], at);
                }
            }
        }
        assert!(targets.is_empty());
        assert!(targets.positions.is_empty());
        targets.add(3);
        let mut out = Vec::new();
        targets.append_to(&mut out);
        assert_eq!(out, vec![3]);
    }
}
