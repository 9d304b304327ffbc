//! The identity of bindings, (destination, routing_key, arguments), shared by every exchange
//! kind; knows nothing of how a kind routes.

use std::collections::HashMap;

use amqp::{FieldTable, FieldValue, ShortStr};

use super::{BindingKey, Destination};

/// One binding to a destination (the destination is the map key of `BindingTable`).
pub(super) struct Record {
    pub(super) routing_key: ShortStr,
    /// Sorted by key, see `sort_arguments`.
    pub(super) arguments: FieldTable,
    /// Insertion order, for listings.
    seq: u64,
}

pub(super) struct BindingTable<D> {
    by_destination: HashMap<D, Vec<Record>>,
    next_seq: u64,
    len: usize,
}

impl<D: Destination> BindingTable<D> {
    pub(super) fn new() -> Self {
        BindingTable {
            by_destination: HashMap::new(),
            next_seq: 0,
            len: 0,
        }
    }

    /// False if an identical binding exists already.
    pub(super) fn insert(
        &mut self,
        destination: D,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> bool {
        let arguments = sort_arguments(arguments);
        let records = self.by_destination.entry(destination).or_default();
        if records
            .iter()
            .any(|r| r.routing_key == *routing_key && tables_identical(&r.arguments, &arguments))
        {
            return false;
        }
        records.push(Record {
            routing_key: routing_key.clone(),
            arguments,
            seq: self.next_seq,
        });
        self.next_seq += 1;
        self.len += 1;
        true
    }

    pub(super) fn remove(
        &mut self,
        destination: &D,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> bool {
        let Some(records) = self.by_destination.get_mut(destination) else {
            return false;
        };
        let arguments = sort_arguments(arguments);
        let Some(at) = records.iter().position(|r| {
            r.routing_key == *routing_key && tables_identical(&r.arguments, &arguments)
        }) else {
            return false;
        };
        records.remove(at);
        if records.is_empty() {
            self.by_destination.remove(destination);
        }
        self.len -= 1;
        true
    }

    /// Removes and returns every binding to `destination`.
    pub(super) fn remove_destination(&mut self, destination: &D) -> Vec<Record> {
        let removed = self.by_destination.remove(destination).unwrap_or_default();
        self.len -= removed.len();
        removed
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&D, &Record)> {
        self.by_destination
            .iter()
            .flat_map(|(d, records)| records.iter().map(move |r| (d, r)))
    }

    pub(super) fn bindings(&self) -> Vec<(D, BindingKey)> {
        let mut all: Vec<(&D, &Record)> = self.iter().collect();
        all.sort_unstable_by_key(|(_, r)| r.seq);
        all.into_iter()
            .map(|(d, r)| {
                let key = BindingKey {
                    routing_key: r.routing_key.clone(),
                    arguments: r.arguments.clone(),
                };
                (d.clone(), key)
            })
            .collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn contains_destination(&self, destination: &D) -> bool {
        self.by_destination.contains_key(destination)
    }
}

/// RabbitMQ keeps binding arguments sorted by key (a stable sort on the key's bytes, so
/// repeated keys keep their order); identity and headers matching both rely on that order.
pub(super) fn sort_arguments(arguments: &FieldTable) -> FieldTable {
    let mut sorted = arguments.0.clone();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    FieldTable(sorted)
}

/// Exact equality of stored terms: same keys, same types, same values; floats compare by
/// bits so that a binding made with NaN can still be found and removed.
fn tables_identical(a: &FieldTable, b: &FieldTable) -> bool {
    a.0.len() == b.0.len()
        && a.0
            .iter()
            .zip(&b.0)
            .all(|((ka, va), (kb, vb))| ka == kb && values_identical(va, vb))
}

fn values_identical(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::F32(x), FieldValue::F32(y)) => x.to_bits() == y.to_bits(),
        (FieldValue::F64(x), FieldValue::F64(y)) => x.to_bits() == y.to_bits(),
        (FieldValue::Array(x), FieldValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| values_identical(x, y))
        }
        (FieldValue::Table(x), FieldValue::Table(y)) => tables_identical(x, y),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ShortStr {
        ShortStr::new(s).unwrap()
    }

    #[test]
    fn sorting_is_bytewise_and_stable() {
        let t = FieldTable(vec![
            (key("b"), FieldValue::I32(1)),
            (key("a"), FieldValue::I32(2)),
            (key("B"), FieldValue::I32(3)),
            (key("a"), FieldValue::I32(1)),
        ]);
        let sorted = sort_arguments(&t);
        let keys: Vec<(&str, &FieldValue)> = sorted.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(
            keys,
            vec![
                ("B", &FieldValue::I32(3)),
                ("a", &FieldValue::I32(2)),
                ("a", &FieldValue::I32(1)),
                ("b", &FieldValue::I32(1)),
            ]
        );
    }

    #[test]
    fn identity_distinguishes_types_and_keeps_nan_findable() {
        let mut table = BindingTable::<u8>::new();
        let rk = key("");
        let int = FieldTable(vec![(key("a"), FieldValue::I32(1))]);
        let long = FieldTable(vec![(key("a"), FieldValue::I64(1))]);
        let nan = FieldTable(vec![(
            key("n"),
            FieldValue::Array(vec![FieldValue::F64(f64::NAN)]),
        )]);
        assert!(table.insert(1, &rk, &int));
        assert!(table.insert(1, &rk, &long));
        assert!(table.insert(1, &rk, &nan));
        assert!(!table.insert(1, &rk, &nan));
        assert!(table.remove(&1, &rk, &nan));
        assert!(!table.remove(&1, &rk, &nan));
        assert!(!table.remove(&2, &rk, &int));
        assert_eq!(table.remove_destination(&1).len(), 2);
        assert!(table.is_empty());
    }
}
